"""`registry invoices`: register (one, or a CSV in batches), confirm, dispute, cancel; list and show."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
    console,
    day,
    err_console,
    errors,
    event_arg,
    money,
    print_json,
    revert_message,
    run_write,
)
from registry.errors import FieldError, InvalidInvoice

app = typer.Typer(
    help="Invoices: register (one or a CSV file), confirm or dispute (debtor), cancel (creditor); list, show.",
    no_args_is_help=True,
)

IdArg = Annotated[int, typer.Argument(help="the receivable id", min=1)]
CSV_FIELDS = ("debtor", "invoice_number", "face_value", "currency", "issue_date", "due_date")
MAX_BATCH = 500  # the contract's MAX_BATCH_SIZE


def invoice_fields(
    debtor: int | None,
    number: str | None,
    amount: str | None,
    currency: str | None,
    issue_date: str | None,
    due_date: str | None,
    document_hash: str | None = None,
) -> dict[str, Any]:
    """The API's InvoiceFields from options, checked here first: a missing or malformed one is a usage
    error naming each bad option (and the field it fills), before any key is unlocked or request sent."""
    fields: dict[str, Any] = {
        "debtor": debtor,
        "invoice_number": number,
        "face_value": amount,
        "currency": currency,
        "issue_date": issue_date,
        "due_date": due_date,
    }
    missing = [_OPTION_OF[k] for k, v in fields.items() if v is None]
    if missing:
        raise CliError(f"missing {', '.join(missing)}", 2, "give every invoice field: see --help")
    if document_hash:
        fields["document_hash"] = document_hash
    from registry.invoice import Invoice

    try:
        Invoice.parse(**fields)
    except InvalidInvoice as exc:
        named = "; ".join(f"{_OPTION_OF.get(field, field)} ({field}): {message}" for field, message in exc.problems)
        raise CliError(f"invalid {named}", 2, "fix those options and run the command again") from None
    return fields


_OPTION_OF = {
    "debtor": "--debtor",
    "invoice_number": "--number",
    "face_value": "--amount",
    "currency": "--currency",
    "issue_date": "--issue-date",
    "due_date": "--due-date",
    "document_hash": "--document-hash",
}


DebtorOpt = Annotated[int | None, typer.Option("--debtor", help="the debtor's entity id", min=1, show_default=False)]
NumberOpt = Annotated[str | None, typer.Option("--number", help="invoice number as printed", show_default=False)]
AmountOpt = Annotated[
    str | None, typer.Option("--amount", help="face value in major units, e.g. 1,850,600.00", show_default=False)
]
CurrencyOpt = Annotated[str | None, typer.Option("--currency", help="ISO 4217 code, e.g. CNY", show_default=False)]
IssueOpt = Annotated[str | None, typer.Option("--issue-date", help="YYYY-MM-DD", show_default=False)]
DueOpt = Annotated[str | None, typer.Option("--due-date", help="YYYY-MM-DD", show_default=False)]
DocOpt = Annotated[
    str | None, typer.Option("--document-hash", help="hash of the invoice document (0x hex32)", show_default=False)
]


@app.command("register")
def register(
    debtor: DebtorOpt = None,
    number: NumberOpt = None,
    amount: AmountOpt = None,
    currency: CurrencyOpt = None,
    issue_date: IssueOpt = None,
    due_date: DueOpt = None,
    document_hash: DocOpt = None,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register one invoice as the creditor; prints the new receivable id."""
    with errors():
        fields = invoice_fields(debtor, number, amount, currency, issue_date, due_date, document_hash)
    result = run_write(Who(as_, keystore, password_file, api), "register", {"invoice": fields}, as_json)
    if not as_json:
        console.print(f"registered as receivable {event_arg(result, 'ReceivableRegistered', 'id')}")


# ---------------------------------------------------------------------------------------- CSV import


def invoice_rows(path: Path) -> list[tuple[int, dict[str, Any], bool]]:
    """Each line of an invoice CSV (the import header; UTF-8, a BOM allowed) as (file line, its fields
    as InvoiceFields text with the debtor an int when it reads as one, whether the line has more columns
    than the header). An unreadable file, a header lacking a column or no lines is a usage error."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", 2) from None
    rows: list[tuple[int, dict[str, Any], bool]] = []
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = [h.strip() for h in reader.fieldnames or []]
        except UnicodeDecodeError:  # (decoded a block at a time: the first block is read here)
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise CliError(f"{path}: not a readable CSV file (its header line): {exc}", 2) from None
        missing = [f for f in CSV_FIELDS if f not in header]
        if missing:
            raise CliError(
                f"{path}: the header lacks {', '.join(missing)}",
                2,
                "the header is debtor,invoice_number,face_value,currency,issue_date,due_date[,document_hash]",
            )
        reader.fieldnames = header
        try:
            for row in reader:
                fields: dict[str, Any] = {k: (row.get(k) or "").strip() for k in CSV_FIELDS}
                if row.get("document_hash"):
                    fields["document_hash"] = str(row["document_hash"]).strip()
                if fields["debtor"].isascii() and fields["debtor"].isdigit():
                    fields["debtor"] = int(fields["debtor"])  # (else Invoice.parse names it with the rest)
                rows.append((reader.line_num, fields, None in row))
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise CliError(f"{path}: not a readable CSV file near line {reader.line_num}: {exc}", 2) from None
    if not rows:
        raise CliError(f"{path}: no invoice lines after the header", 2, "one invoice a line, under the header")
    return rows


def read_csv(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """Good lines as (file line, InvoiceFields) and malformed ones as report entries (line, field, why)."""
    from registry.invoice import Invoice

    good: list[tuple[int, dict[str, Any]]] = []
    bad: list[dict[str, Any]] = []
    for line, fields, too_wide in invoice_rows(path):
        if too_wide:
            bad.append(_bad(line, fields["invoice_number"], FieldError("line", "more columns than the header")))
            continue
        try:
            Invoice.parse(**fields)
        except InvalidInvoice as exc:
            bad.append(_bad(line, fields["invoice_number"], exc))
            continue
        good.append((line, fields))
    return good, bad


def _bad(line: int, number: str, error: FieldError) -> dict[str, Any]:
    """A malformed line's report entry: its first problem (``field``, ``message``) and all of them."""
    return {
        "line": line,
        "invoice_number": number,
        "outcome": "malformed",
        "field": error.field,
        "message": error.message,
        "errors": error.field_errors(),
    }


def _not_utf8(path: Path) -> CliError:
    return CliError(f"{path}: not UTF-8 text, so not a CSV file this command reads", 2, "save it as CSV UTF-8")


@app.command("import")
def import_csv(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="CSV",
            help="header: debtor,invoice_number,face_value,currency,issue_date,due_date[,document_hash]",
        ),
    ],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=MAX_BATCH, help="invoices per registerBatch transaction")
    ] = 100,
    report: Annotated[
        Path | None, typer.Option("--report", help="write the per-line report as JSON to this file")
    ] = None,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register every invoice of a CSV file in batches (registerBatch). A malformed or refused line is
    reported with its line number and reason and does not sink the others. Exit 1 if any line was not
    registered."""
    who = Who(as_, keystore, password_file, api)
    with errors():
        good, lines = read_csv(path)
    with errors(), backend(who) as chosen:
        batches = [good[i : i + batch_size] for i in range(0, len(good), batch_size)]
        with Progress(
            TextColumn("registering"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=as_json or not err_console.is_terminal,
        ) as progress:
            task = progress.add_task("register", total=len(good))
            for batch in batches:
                lines.extend(_register_batch(chosen, batch))
                progress.advance(task, len(batch))
    lines.sort(key=lambda r: int(r["line"]))
    registered = sum(1 for r in lines if r["outcome"] == "registered")
    summary = {"file": str(path), "lines": len(lines), "registered": registered, "refused": len(lines) - registered}
    document = {**summary, "report": lines}
    if report is not None:
        report.write_text(json.dumps(document, indent=2))
    if as_json:
        print_json(document)
    else:
        _print_report(lines)
        console.print(
            f"{registered} of {len(lines)} lines registered, {len(lines) - registered} not"
            + (f"; report written to {report}" if report else "")
        )
    raise typer.Exit(0 if registered == len(lines) else 1)


def _register_batch(chosen: Any, batch: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One registerBatch; each line's outcome. A refusal of the whole transaction refuses its lines."""
    from registry.chain.reverts import ContractRevert
    from registry.relay import RelayError

    try:
        result = chosen.write("register-batch", {"invoices": [fields for _, fields in batch]})
    except CliError as exc:
        if exc.code == 2:
            raise
        return [_refused(line, fields, "batch", exc.message) for line, fields in batch]
    except ContractRevert as exc:
        message, hint = revert_message(exc.error_name, exc.fields)
        return [_refused(line, fields, exc.error_name, f"{message}: {hint}") for line, fields in batch]
    except RelayError as exc:
        return [_refused(line, fields, "relay", str(exc)) for line, fields in batch]
    outcomes = {int(o["line"]): o for o in result.get("line_outcomes") or []}
    out = []
    for index, (line, fields) in enumerate(batch):
        outcome = outcomes.get(index)
        if outcome is None:
            out.append(_refused(line, fields, "batch", "no outcome reported for this line"))
        elif outcome.get("id") is not None:
            out.append(
                {
                    "line": line,
                    "invoice_number": fields["invoice_number"],
                    "outcome": "registered",
                    "id": outcome["id"],
                    "tx_hash": result.get("tx_hash"),
                }
            )
        else:
            message, hint = revert_message(str(outcome.get("error")), outcome.get("fields") or {})
            out.append(_refused(line, fields, str(outcome.get("error")), f"{message}: {hint}"))
    return out


def _refused(line: int, fields: dict[str, Any], error: str, message: str) -> dict[str, Any]:
    return {
        "line": line,
        "invoice_number": fields["invoice_number"],
        "outcome": "refused",
        "error": error,
        "message": message,
    }


def _print_report(lines: list[dict[str, Any]]) -> None:
    table = Table(title="Import report")
    for col in ("line", "invoice", "outcome", "detail"):
        table.add_column(col)
    for r in lines:
        if r["outcome"] == "registered":
            detail, style = f"receivable {r['id']}", "green"
        elif r["outcome"] == "malformed":
            detail, style = "; ".join(f"{e['field']}: {e['message']}" for e in r["errors"]), "yellow"
        else:
            detail, style = r["message"], "red"
        table.add_row(str(r["line"]), r["invoice_number"], f"[{style}]{r['outcome']}[/]", detail)
    console.print(table)


# ---------------------------------------------------------------------------------------- debtor / creditor


@app.command("confirm")
def confirm(
    receivable_id: IdArg,
    fingerprint: Annotated[
        str | None, typer.Option("--fingerprint", help="the invoice fingerprint from your own records (0x hex32)")
    ] = None,
    debtor: DebtorOpt = None,
    number: NumberOpt = None,
    amount: AmountOpt = None,
    currency: CurrencyOpt = None,
    issue_date: IssueOpt = None,
    due_date: DueOpt = None,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Confirm (确权) a receivable as its debtor: with --fingerprint, or with the invoice's fields from your
    own records (--number --amount --currency --issue-date --due-date; --debtor defaults to your entity).
    The contract refuses a confirmation whose fields differ from the registration (FingerprintMismatch)."""
    who = Who(as_, keystore, password_file, api)
    args: dict[str, Any] = {"id": receivable_id}
    given = [v for v in (number, amount, currency, issue_date, due_date) if v is not None]
    with errors():
        if fingerprint is not None and given:
            raise CliError("give --fingerprint or the invoice fields, not both", 2)
        if fingerprint is not None:
            args["fingerprint"] = fingerprint
        elif given:
            if debtor is None:
                with backend(who) as chosen:
                    debtor = chosen.entity()
            args["invoice"] = invoice_fields(debtor, number, amount, currency, issue_date, due_date)
        else:
            raise CliError("say what you confirm", 2, "pass --fingerprint, or the invoice fields from your records")
    run_write(who, "confirm", args, as_json)


@app.command("dispute")
def dispute(
    receivable_id: IdArg,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="GOODS_NOT_RECEIVED, QUALITY_DEFECT, AMOUNT_INCORRECT, ALREADY_PAID, NOT_OUR_INVOICE or OTHER",
        ),
    ],
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Dispute a receivable as its debtor, with a reason code."""
    run_write(Who(as_, keystore, password_file, api), "dispute", {"id": receivable_id, "reason": reason}, as_json)


@app.command("cancel")
def cancel(
    receivable_id: IdArg,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel your own unconfirmed registration as its creditor (frees the invoice key)."""
    run_write(Who(as_, keystore, password_file, api), "cancel", {"id": receivable_id}, as_json)


# ---------------------------------------------------------------------------------------- reads


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="registered, confirmed, assigned, settled, ...")] = None,
    debtor: Annotated[int | None, typer.Option(min=1, help="debtor entity id")] = None,
    creditor: Annotated[int | None, typer.Option(min=1, help="creditor entity id")] = None,
    holder: Annotated[int | None, typer.Option(min=1, help="holder entity id")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code, e.g. CNY")] = None,
    due_from: Annotated[str | None, typer.Option(help="due on or after this day (2027-01-31) or Unix time")] = None,
    due_to: Annotated[str | None, typer.Option(help="due on or before this day (2027-03-31) or Unix time")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="open receivables past their due date")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most this many")] = 50,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Receivables (in API mode: those you are party to), filtered, in id order."""
    from registry.domain import Status
    from registry.invoice import normalize_currency
    from registry.store.queries import due_window

    with errors():
        if status is not None and status.upper() not in Status.__members__:
            names = ", ".join(s.name.lower() for s in Status if s is not Status.NONE)
            raise CliError(f"invalid --status {status!r}: one of {names}", 2)
        try:
            low, high = due_window(due_from, due_to)
            code = None if currency is None else normalize_currency(currency)
        except InvalidInvoice as exc:
            raise CliError(f"invalid --{exc.field.replace('_', '-')}: {exc.message}", 2) from None
        filters = {
            "status": status,
            "debtor": debtor,
            "creditor": creditor,
            "holder": holder,
            "currency": code,
            "due_from": low,
            "due_to": high,
            "overdue": overdue,
        }
        with backend(Who(as_, keystore, password_file, api), signs=False) as chosen:
            page = chosen.receivables(filters, limit)
    if as_json:
        print_json(page)
        return
    table = Table(title=f"Receivables (as of block {(page.get('as_of') or {}).get('block', '-')})")
    for col in ("id", "status", "creditor", "debtor", "holder", "face value", "unpaid", "due"):
        table.add_column(col)
    for r in page["items"]:
        table.add_row(
            str(r["id"]),
            r["status"],
            str(r["creditor"]),
            str(r["debtor"]),
            str(r["holder"]),
            money(r["face_value"], r["currency"]),
            money(r["unpaid"], r["currency"]),
            day(r["due_date"]),
        )
    console.print(table)
    console.print(f"{len(page['items'])} shown" + (" (more: raise --limit)" if page.get("next_cursor") else ""))


@app.command("show")
def show(
    receivable_id: IdArg,
    block: Annotated[
        int | None, typer.Option(min=0, help="as it stood at this block (its history up to then)", show_default=False)
    ] = None,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One receivable: state, history of versions, assignments, payments and lineage (parent, parts);
    with --block, as it stood at that block."""
    with errors(), backend(Who(as_, keystore, password_file, api), signs=False) as chosen:
        detail = chosen.receivable(receivable_id, block)
    if as_json:
        print_json(detail)
        return
    r = detail["receivable"]
    cur = r["currency"]
    at = detail["as_of"]["block"] if block is None else block
    console.print(f"[bold]Receivable {r['id']}[/]: {r['status']} (as of block {at})")
    console.print(
        f"creditor {r['creditor']}, debtor {r['debtor']}, holder {r['holder']}"
        f"{', with recourse' if r['recourse'] else ''}"
    )
    console.print(
        f"face value {money(r['face_value'], cur)}, paid {money(r['paid'], cur)}, unpaid {money(r['unpaid'], cur)}"
    )
    console.print(f"issued {day(r['issue_date'])}, due {day(r['due_date'])}; invoice key {r['invoice_key']}")
    if detail.get("parent_id"):
        console.print(f"part of receivable {detail['parent_id']}")
    if detail.get("parts"):
        console.print(f"split into {', '.join(str(p) for p in detail['parts'])}")
    history = Table(title="History")
    for col in ("from block", "status", "holder", "paid"):
        history.add_column(col)
    for v in detail["versions"]:
        history.add_row(str(v["valid_from_block"]), v["status"], str(v["holder"]), money(v["paid"], cur))
    console.print(history)
    for a in detail["assignments"]:
        advance = "-" if a.get("advance") is None else money(a["advance"], cur)
        console.print(f"block {a['block']}: assigned {a['from_entity']} -> {a['to_entity']}, advance {advance}")
    for p in detail["payments"]:
        console.print(f"block {p['block']}: paid {money(p['amount'], cur)} to {p['payee']}")
