"""`registry pay`: payments recorded by the payee of record, or reported by the debtor and
acknowledged (or rejected) by the payee named in the claim."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from registry.cli._common import (
    ApiOpt,
    AsOpt,
    JsonOpt,
    KeystoreOpt,
    PasswordFileOpt,
    Who,
    console,
    currency_of,
    errors,
    event_arg,
    run_write,
    to_minor,
)
from registry.cli.finance import MinorOpt
from registry.cli.invoices import IdArg

app = typer.Typer(
    help="Payments: record (payee), report (debtor), acknowledge or reject (payee).", no_args_is_help=True
)

AmountArg = Annotated[str, typer.Option("--amount", help="in the receivable's major units, e.g. 1,200.50 (or --minor)")]
RefOpt = Annotated[
    str | None, typer.Option("--ref", help="payment reference: 0x hex32, or free text (hashed on the way)")
]
ClaimArg = Annotated[int, typer.Argument(help="the payment claim id (from `pay report`)", min=1)]


@app.command("record")
def record(
    receivable_id: IdArg,
    amount: AmountArg,
    ref: RefOpt = None,
    minor: MinorOpt = False,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a payment received, as the payee of record (settles the receivable when fully paid)."""
    who = Who(as_, keystore, password_file, api)
    with errors():
        cur = "" if minor else currency_of(who, receivable_id)
        args: dict[str, Any] = {"id": receivable_id, "amount": to_minor(amount, cur, minor=minor, field="--amount")}
        if ref:
            args["payment_ref"] = ref
    run_write(who, "record-payment", args, as_json)


@app.command("report")
def report(
    receivable_id: IdArg,
    paid_to: Annotated[int, typer.Option("--paid-to", min=1, help="the entity you paid")],
    amount: AmountArg,
    ref: RefOpt = None,
    minor: MinorOpt = False,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report a payment you made, as the debtor; it counts once the payee acknowledges it, and only a
    payment to the payee of record discharges you (see `registry finance payee ID`)."""
    who = Who(as_, keystore, password_file, api)
    with errors():
        cur = "" if minor else currency_of(who, receivable_id)
        args: dict[str, Any] = {
            "id": receivable_id,
            "paid_to": paid_to,
            "amount": to_minor(amount, cur, minor=minor, field="--amount"),
        }
        if ref:
            args["payment_ref"] = ref
    result = run_write(who, "report-payment", args, as_json)
    if not as_json:
        console.print(f"payment claim {event_arg(result, 'PaymentReported', 'claimId')}: the payee acknowledges it")


@app.command("acknowledge")
def acknowledge(
    claim_id: ClaimArg,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge a payment claim reported by the debtor, as the payee named in it."""
    run_write(Who(as_, keystore, password_file, api), "acknowledge-payment", {"claim_id": claim_id}, as_json)


@app.command("reject")
def reject(
    claim_id: ClaimArg,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a payment claim (the money never arrived), as the payee named in it."""
    run_write(Who(as_, keystore, password_file, api), "reject-payment", {"claim_id": claim_id}, as_json)
