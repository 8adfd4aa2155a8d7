"""`registry finance`: check an invoice before financing it, assign and re-assign, split, buy back,
declare default; who the debtor must pay, and who ranks first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from registry.cli._common import (
    ApiOpt,
    AsOpt,
    CliError,
    JsonOpt,
    KeystoreOpt,
    PasswordFileOpt,
    Who,
    backend,
    check_reasons,
    console,
    currency_of,
    errors,
    print_json,
    run_write,
    to_minor,
)
from registry.cli.invoices import (
    AmountOpt,
    CurrencyOpt,
    DebtorOpt,
    DueOpt,
    IdArg,
    IssueOpt,
    NumberOpt,
    invoice_fields,
    invoice_rows,
)

app = typer.Typer(
    help="Financing: double-financing checks, assignment to a factor, re-assignment, split, buy-back, default.",
    no_args_is_help=True,
)

MinorOpt = Annotated[
    bool, typer.Option("--minor", help="amounts are integer minor units (fen, cents) instead of major units")
]


# ---------------------------------------------------------------------------------------- reads


def _read_check_file(path: Path) -> list[dict[str, Any]]:
    """Invoices to check from a JSON list (or {"invoices": [...]}) or a CSV with the import header."""
    if path.suffix.lower() == ".json":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}", 2) from None
        except UnicodeDecodeError:
            raise CliError(f"{path}: not UTF-8 text, so not JSON this command reads", 2) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}: not JSON ({exc})", 2) from None
        items = data.get("invoices") if isinstance(data, dict) else data
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise CliError(f"{path}: expected a non-empty list of invoice objects", 2)
        return [dict(i) for i in items]
    # A line with more columns than the header is checked on the header's columns.
    return [fields for _, fields, _ in invoice_rows(path)]


@app.command("check")
def check(
    debtor: DebtorOpt = None,
    number: NumberOpt = None,
    amount: AmountOpt = None,
    currency: CurrencyOpt = None,
    issue_date: IssueOpt = None,
    due_date: DueOpt = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="check many: a CSV (import header) or a JSON list of invoices")
    ] = None,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Before financing: is this invoice registered, in which state, financed already? Plus "suspiciously
    similar" flags (reformatted numbers, amounts, other parties). Exit 0 when checked, whatever the answer."""
    with errors():
        if file is not None:
            invoices = _read_check_file(file)
        else:
            invoices = [invoice_fields(debtor, number, amount, currency, issue_date, due_date)]
        with backend(Who(as_, keystore, password_file, api), signs=False) as chosen:
            results = chosen.check(invoices)
    if as_json:
        print_json({"results": results})
        return
    table = Table(title="Double-financing check")
    for col in ("#", "invoice", "registered", "state", "financed", "reasons"):
        table.add_column(col)
    for i, (inv, r) in enumerate(zip(invoices, results, strict=True)):
        reasons = check_reasons(r) or ["clean: not registered, nothing similar"]
        table.add_row(
            str(i + 1),
            str(inv.get("invoice_number", "")),
            "yes" if r.get("registered") else "no",
            str(r.get("status", "-")),
            "[red]yes[/]" if r.get("financed") else "no",
            "\n".join(reasons),
        )
    console.print(table)


@app.command("payee")
def payee(
    receivable_id: IdArg,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Whom the debtor must pay now to be discharged, and why (the chain of assignments = notices)."""
    with errors(), backend(Who(as_, keystore, password_file, api), signs=False) as chosen:
        answer = chosen.payee(receivable_id)
    if as_json:
        print_json(answer)
        return
    console.print(f"receivable {receivable_id}: pay entity [bold]{answer['payee_of_record']}[/]")
    console.print(answer["because"])


@app.command("priority")
def priority(
    invoice_key: Annotated[str, typer.Argument(metavar="KEY", help="the invoice key (0x hex32)")],
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Competing registrations of one invoice: who ranks first and why (PRC Civil Code art. 768)."""
    with errors(), backend(Who(as_, keystore, password_file, api), signs=False) as chosen:
        answer = chosen.priority(invoice_key)
    if as_json:
        print_json(answer)
        return
    for c in answer["claims"]:
        rank = f"#{c['rank']}" if c["live"] else "--"
        console.print(f"{rank} receivable {c['receivable_id']} ({c['status']}): {c['reason']}")
    console.print(answer["explanation"])


# ---------------------------------------------------------------------------------------- writes


def _assign(
    receivable_id: int,
    factor: int,
    advance: str,
    recourse: bool,
    terms: str | None,
    minor: bool,
    who: Who,
    as_json: bool,
) -> None:
    with errors():
        cur = "" if minor else currency_of(who, receivable_id)
        args: dict[str, Any] = {
            "id": receivable_id,
            "factor": factor,
            "advance": to_minor(advance, cur, minor=minor, field="--advance"),
            "recourse": recourse,
        }
        if terms:
            args["terms_hash"] = terms
    run_write(who, "assign", args, as_json)


FactorOpt = Annotated[int, typer.Option("--factor", min=1, help="the assignee factor's entity id")]
AdvanceOpt = Annotated[
    str, typer.Option("--advance", help="the advance paid, in the receivable's major units (or --minor)")
]
RecourseOpt = Annotated[bool, typer.Option("--recourse", help="with recourse: the creditor may have to buy back")]
TermsOpt = Annotated[
    str | None, typer.Option("--terms", help="factoring terms: 0x hex32 hash, or a reference text (hashed)")
]


@app.command("assign")
def assign(
    receivable_id: IdArg,
    factor: FactorOpt,
    advance: AdvanceOpt,
    recourse: RecourseOpt = False,
    terms: TermsOpt = None,
    minor: MinorOpt = False,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Assign a confirmed receivable to a factor (as its holder, usually the creditor)."""
    _assign(receivable_id, factor, advance, recourse, terms, minor, Who(as_, keystore, password_file, api), as_json)


@app.command("reassign")
def reassign(
    receivable_id: IdArg,
    factor: FactorOpt,
    advance: AdvanceOpt,
    recourse: RecourseOpt = False,
    terms: TermsOpt = None,
    minor: MinorOpt = False,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-assign an assigned receivable to another factor (as its current holder, a factor); the debtor's
    payee of record follows."""
    _assign(receivable_id, factor, advance, recourse, terms, minor, Who(as_, keystore, password_file, api), as_json)


@app.command("split")
def split(
    receivable_id: IdArg,
    amounts: Annotated[str, typer.Option("--amounts", help="comma-separated parts, adding up to the unpaid balance")],
    minor: MinorOpt = False,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split a confirmed receivable's unpaid balance into parts (assigned separately later). Parts are
    separated by ';' or by ',' when they have no thousands separators (e.g. 600.00,400.00)."""
    who = Who(as_, keystore, password_file, api)
    with errors():
        cur = "" if minor else currency_of(who, receivable_id)
        texts = [t for t in (amounts.split(";") if ";" in amounts else amounts.split(",")) if t.strip()]
        parts = [to_minor(t, cur, minor=minor, field=f"--amounts part {i + 1}") for i, t in enumerate(texts)]
    run_write(who, "split", {"id": receivable_id, "amounts": parts}, as_json)


def _by_id_command(name: str, action: str, doc: str) -> None:
    def command(
        receivable_id: IdArg,
        as_: AsOpt = None,
        keystore: KeystoreOpt = None,
        password_file: PasswordFileOpt = None,
        api: ApiOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        run_write(Who(as_, keystore, password_file, api), action, {"id": receivable_id}, as_json)

    command.__doc__ = doc
    app.command(name)(command)


_by_id_command("buy-back", "buy-back", "Buy back an assigned receivable under recourse (as the creditor).")
_by_id_command("default", "declare-default", "Declare a past-due receivable in default (as its holder).")
_by_id_command("write-off", "write-off", "Write off a defaulted receivable (as its holder).")
