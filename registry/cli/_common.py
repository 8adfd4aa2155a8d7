"""Plumbing shared by every command group: output, errors and exit codes, identity, backends.

Exit codes scripts can trust: 0 success; 1 a refused or failed operation (a contract revert, a refused
line of an import, an unknown id); 2 bad usage or setup (a malformed argument, a wrong keystore
password, an unknown identity, no node, API or deployment).

A command talks to one :class:`Backend`: the API when ``--api URL`` or ``REGISTRY_CLI_API`` is set
(sign-in with the user's key, writes prepared by the API and signed here after checking that the call
is exactly the one asked for), else the chain and the mirror directly (the user's key signs an
ERC-2771 request and the configured relayer submits it, so keys holding no ether work).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol

import click
import httpx
import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console

from registry.errors import ConfigurationError, FieldError, InvalidInvoice, RegistryError
from registry.settings import Settings, get_settings

console = Console()
err_console = Console(stderr=True)

PASSWORD_ENV = "REGISTRY_KEYSTORE_PASSWORD"
INDEX_FILE = "identities.json"

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON only (for scripts)")]
AsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="act as this identity: a keystore under the keys directory, by file name, name or address "
        "(see `registry keys list`)",
        show_default=False,
    ),
]
KeystoreOpt = Annotated[
    Path | None, typer.Option("--keystore", help="act with this keystore file instead of --as", show_default=False)
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help=f"file holding the keystore password (else ${PASSWORD_ENV}, else a hidden prompt)",
        show_default=False,
    ),
]
ApiOpt = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="talk to the registry API at this URL (default: REGISTRY_CLI_API; unset = chain and mirror directly)",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Who:
    """Whom a command acts as, and through which backend (the common options of every command)."""

    as_: str | None = None
    keystore: Path | None = None
    password_file: Path | None = None
    api: str | None = None


# ---------------------------------------------------------------------------------------- errors


class CliError(Exception):
    """Raised when a command must stop with a message, an exit code and a hint of what to do."""

    def __init__(self, message: str, code: int = 1, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def fail(message: str, code: int = 1, hint: str | None = None) -> typer.Exit:
    """Prints ``message`` (and ``hint``) on stderr; returns the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False)
    return typer.Exit(code)


# One line of what to do, per contract error (the rest get a generic line).
REVERT_HINTS: dict[str, str] = {
    "InvoiceKeyTaken": "this invoice is already registered as receivable {existingId}: run `registry finance check` "
    "with its fields to see its state before financing or registering it",
    "FingerprintTaken": "an invoice with the same fields is already registered as receivable {existingId}: run "
    "`registry finance check`",
    "FingerprintMismatch": "the fields you confirmed differ from what the creditor registered: compare your own "
    "records with the invoice, or dispute it with `registry invoices dispute ID --reason AMOUNT_INCORRECT`",
    "NotDebtorOfRecord": "only the debtor named on the receivable may do this: act --as the debtor's key",
    "NotCreditorOfRecord": "only the creditor of record may do this: act --as the creditor's key",
    "NotHolder": "only the current holder (entity {holder}) may do this: act --as its key",
    "InvalidStatus": "receivable {id} is {status_name}, which does not allow this: see `registry invoices show {id}`",
    "UnknownReceivable": "there is no receivable {id}: list them with `registry invoices list`",
    "UnknownKey": "this key belongs to no participant: ask the consortium operator to admit you or add your key "
    "(`registry participants add-key`)",
    "KeyIsRevoked": "this key was revoked: act with another key of your entity",
    "EntityIsSuspended": "entity {entityId} is suspended: ask the consortium operator (`participants reinstate`)",
    "EntityMissingRole": "your entity lacks the role this needs: ask the operator (`participants grant-role`)",
    "AccessControlUnauthorizedAccount": "only the consortium operator (admin key) may do this",
    "AdvanceExceedsBalance": "the advance is larger than the unpaid balance ({unpaid} minor units)",
    "PaymentExceedsBalance": "the payment is larger than the unpaid balance ({unpaid} minor units)",
    "PayeeNotOfRecord": "entity {payeeOfRecord} is the payee of record: see `registry finance payee {id}`",
    "SplitDoesNotConserve": "the parts must add up to the unpaid balance ({unpaid} minor units)",
    "NotYetDue": "the receivable is not due yet (due date {dueDate}): default only after it",
    "NoRecourse": "the assignment was without recourse: there is nothing to buy back",
    "DueDateInPast": "the due date has passed: registration needs a due date in the future",
    "DueDateNotAfterIssueDate": "the due date must come after the issue date",
    "InvalidAssignee": "the assignee must be an admitted factor other than the current holder and the creditor",
    "ClaimNotPending": "this payment claim was already acknowledged or rejected",
    "NotPayeeOfClaim": "only the payee named in the claim (entity {payee}) may decide on it",
    "EnforcedPause": "the registry is paused by the consortium operator: try again once it is unpaused",
    "DebtorIsCreditor": "an entity cannot issue an invoice to itself",
}


def revert_message(name: str, fields: Mapping[str, Any]) -> tuple[str, str]:
    """``(ErrorName(field=value, ...), what to do)`` for a contract error."""
    shown = ", ".join(f"{k}={_show(v)}" for k, v in fields.items())
    values = {k: _show(v) for k, v in fields.items()}
    if "status" in fields:
        values["status_name"] = _status_name(fields["status"])
    template = REVERT_HINTS.get(name, "the contract refused the call: see the error's fields above")
    try:
        hint = template.format(**values)
    except (KeyError, IndexError):
        hint = re.sub(r"\{[^}]*\}", "?", template)
    return f"{name}({shown})", hint


def _status_name(value: Any) -> str:
    from registry.domain import Status

    try:
        return Status(int(value)).name.lower()
    except (ValueError, TypeError):
        return str(value)


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


@contextmanager
def errors() -> Iterator[None]:
    """Every expected failure becomes a message, a hint and a trustworthy exit code."""
    from registry.chain.reverts import ContractRevert
    from registry.chain.rpc import NodeUnavailable
    from registry.checks import MirrorNotReady
    from registry.keys import KeystoreError
    from registry.relay import RelayError

    try:
        yield
    except CliError as exc:
        raise fail(exc.message, exc.code, exc.hint) from None
    except ContractRevert as exc:
        message, hint = revert_message(exc.error_name, exc.fields)
        raise fail(f"refused by the contract: {message}", 1, hint) from None
    except FieldError as exc:  # InvalidInvoice, registry.actions.ActionError: each bad argument named
        raise fail(f"invalid {exc}", 2, "fix those arguments and run the command again") from None
    except KeystoreError as exc:
        raise fail(str(exc), 2, f"check --password-file or ${PASSWORD_ENV}, or the keystore file") from None
    except NodeUnavailable as exc:
        raise fail(
            str(exc), 2, "start the node (`registry up` or `registry chain node`) or set REGISTRY_RPC_URL"
        ) from None
    except MirrorNotReady as exc:
        raise fail(str(exc), 2, "index the chain first: `registry index --once`, or run `registry up`") from None
    except RelayError as exc:
        raise fail(f"not relayed ({exc.reason}): {exc}", 1, "run the command again to sign a fresh request") from None
    except ConfigurationError as exc:
        raise fail(
            str(exc), 2, "deploy with `registry chain deploy` or `registry up`, or check REGISTRY_* settings"
        ) from None
    except httpx.TransportError as exc:
        raise fail(f"cannot reach the API: {exc}", 2, "start it with `registry serve`, or check --api") from None
    except RegistryError as exc:
        raise fail(f"{type(exc).__name__}: {exc}", 1) from None


# ---------------------------------------------------------------------------------------- settings, chain


def settings() -> Settings:
    return get_settings()


def registry_client(s: Settings) -> Any:
    """The registry at the configured deployment (checked against the node)."""
    from registry.chain.client import ChainClient
    from registry.chain.contract import RegistryClient
    from registry.chain.deployment import Deployment, check_deployment

    if not s.deployment_path.exists():
        raise CliError(
            f"no deployment file at {s.deployment_path}",
            2,
            "run `registry up` (local stack) or `registry chain deploy`, or set REGISTRY_DEPLOYMENT_FILE",
        )
    chain = ChainClient(s.node_url)
    deployment = Deployment.load(s.deployment_path)
    check_deployment(chain, deployment)
    return RegistryClient(chain, deployment)


def api_url(who: Who, s: Settings) -> str | None:
    url = who.api or getattr(s, "cli_api_url", None)
    return url.rstrip("/") if url else None


# ---------------------------------------------------------------------------------------- identity


def keys_dir(s: Settings) -> Path:
    configured = getattr(s, "keys_dir", None)
    return Path(configured) if configured else s.data_dir / "keys"


def slug(name: str) -> str:
    """A file-name-safe form of an identity name: ``Everbright Factoring`` -> ``everbright-factoring``."""
    return re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")


@dataclass(frozen=True)
class KeystoreEntry:
    name: str
    address: str | None
    path: Path
    extra: dict[str, Any]


def read_index(directory: Path) -> list[dict[str, Any]]:
    """The identities index (``identities.json``), as a list of objects; tolerant of a missing file."""
    path = directory / INDEX_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}", 2, "fix or remove the index file") from None
    if isinstance(data, Mapping):
        data = data.get("identities", data.get("members", list(data.values())))
    return [dict(item) for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _keystore_address(path: Path) -> str | None:
    try:
        raw = json.loads(path.read_text()).get("address")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(raw, str) or not raw:
        return None
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(raw if raw.startswith("0x") else "0x" + raw))


def list_keystores(directory: Path) -> list[KeystoreEntry]:
    """Every keystore under ``directory``, named by the index when it names them, else by file name."""
    by_file: dict[str, dict[str, Any]] = {}
    for item in read_index(directory):
        file = item.get("keystore") or item.get("file") or item.get("path")
        if isinstance(file, str):
            by_file[Path(file).name] = item
    out: list[KeystoreEntry] = []
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        if path.name == INDEX_FILE:
            continue
        address = _keystore_address(path)
        if address is None:
            continue
        item = by_file.get(path.name, {})
        name = str(item.get("name") or path.stem)
        extra = {k: v for k, v in item.items() if k not in ("name", "address", "keystore", "file", "path")}
        out.append(KeystoreEntry(name, address, path, extra))
    return out


def find_keystore(name: str, directory: Path) -> KeystoreEntry:
    """The keystore of identity ``name``: by file name (slug), by name, or by address."""
    wanted = name.strip().lower()
    entries = list_keystores(directory)
    tests: list[Callable[[KeystoreEntry], bool]] = [
        lambda e: e.path.stem.lower() == wanted or e.path.stem == slug(name),
        lambda e: e.name.lower() == wanted or slug(e.name) == slug(name),
        lambda e: (e.address or "").lower() == wanted,
        lambda e: str(e.extra.get("slug", "")).lower() == wanted,
    ]
    for test in tests:
        found = [e for e in entries if test(e)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CliError(f"{name!r} matches several keystores: {', '.join(str(e.path) for e in found)}", 2)
    known = ", ".join(e.path.stem for e in entries) or "none"
    raise CliError(
        f"no identity {name!r} in {directory} (known: {known})",
        2,
        "create one with `registry keys create NAME` or `registry keys import NAME`, or pass --keystore PATH",
    )


def read_password(password_file: Path | None, *, confirm: bool = False, prompt: str = "Keystore password") -> str:
    """From --password-file, else $REGISTRY_KEYSTORE_PASSWORD, else a hidden prompt (never echoed)."""
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read the password file {password_file}: {exc.strerror}", 2) from None
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    try:
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
    except click.exceptions.Abort:
        raise CliError("no keystore password given", 2, f"pass --password-file FILE or set ${PASSWORD_ENV}") from None


def load_identity(who: Who, s: Settings) -> LocalAccount:
    """The user's key, decrypted from its keystore (--keystore or --as)."""
    from registry.keys import load_keystore

    if who.keystore is not None:
        path = who.keystore
        if not path.exists():
            raise CliError(f"no keystore file {path}", 2)
    elif who.as_ is not None:
        path = find_keystore(who.as_, keys_dir(s)).path
    else:
        raise CliError(
            "this command signs: say who you are", 2, "pass --as NAME (see `registry keys list`) or --keystore PATH"
        )
    return load_keystore(path, read_password(who.password_file))


# ---------------------------------------------------------------------------------------- JSON


def hexed(value: Any) -> Any:
    """Decoded values as JSON: bytes as 0x-hex, tuples as lists."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [hexed(v) for v in value]
    if isinstance(value, dict):
        return {k: hexed(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    """JSON only, on stdout (no rich markup, no wrapping)."""
    print(json.dumps(hexed(value), indent=None, default=str))


def receivable_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A mirror row in the API's ReceivablePublic shape."""
    from registry.domain import Status

    return {
        "id": row["id"],
        "status": Status(row["status"]).name.lower(),
        "creditor": row["creditor"],
        "debtor": row["debtor"],
        "holder": row["holder"],
        "recourse": bool(row["recourse"]),
        "face_value": row["face_value"],
        "paid": row["paid"],
        "unpaid": row["face_value"] - row["paid"],
        "currency": row["currency"],
        "issue_date": row["issue_date"],
        "due_date": row["due_date"],
        "fingerprint": hexed(row["fingerprint"]),
        "invoice_key": hexed(row["invoice_key"]),
        "document_hash": hexed(row["document_hash"]),
        "parent_id": row["parent_id"],
        "supersedes": row["supersedes"],
        "registered_block": row["registered_block"],
        "valid_from_block": row["valid_from"],
        "valid_to_block": row["valid_to"],
    }


def money(minor: int, currency: str) -> str:
    from registry.invoice import format_amount

    try:
        return f"{format_amount(minor, currency)} {currency}"
    except RegistryError:
        return f"{minor} (minor units) {currency}"


def day(seconds: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def to_minor(value: str, currency: str, *, minor: bool, field: str) -> int:
    """An amount option in major units (``1,200.50``, by the currency's ISO 4217 exponent), or in
    minor units with ``minor``."""
    from registry.invoice import parse_amount

    text = value.strip()
    if minor:
        if not text.isdigit():
            raise CliError(f"invalid {field}: {value!r} is not a whole number of minor units", 2)
        return int(text)
    try:
        return int(parse_amount(text, currency))
    except InvalidInvoice as exc:
        raise CliError(f"invalid {field}: {exc.message}", 2, "amounts are major units, e.g. 1,200.50") from None


# ---------------------------------------------------------------------------------------- backends


class Backend(Protocol):
    """What a command needs from the registry, whichever way it is reached."""

    mode: str

    def address(self) -> str: ...

    def entity(self) -> int | None: ...

    def write(self, action: str, args: Mapping[str, Any]) -> dict[str, Any]: ...

    def receivables(self, filters: Mapping[str, Any], limit: int) -> dict[str, Any]: ...

    def receivable(self, receivable_id: int, block: int | None = None) -> dict[str, Any]: ...

    def payee(self, receivable_id: int) -> dict[str, Any]: ...

    def priority(self, invoice_key: str) -> dict[str, Any]: ...

    def check(self, invoices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


@contextmanager
def backend(who: Who, *, signs: bool = True) -> Iterator[Backend]:
    """The backend for ``who``: API mode if an API URL is set, else direct. ``signs``: load the key
    (always needed in API mode, which signs in)."""
    s = settings()
    url = api_url(who, s)
    chosen: Backend
    if url:
        from registry.cli._api import ApiBackend

        chosen = ApiBackend(url, load_identity(who, s))
    else:
        from registry.cli._direct import DirectBackend

        account = load_identity(who, s) if signs else None
        chosen = DirectBackend(s, account)
    try:
        yield chosen
    finally:
        chosen.close()


def print_write(result: Mapping[str, Any], as_json: bool) -> None:
    """The outcome of a relayed write: function, transaction, block, events."""
    if as_json:
        print_json(result)
        return
    dup = " (identical request relayed before: this is its outcome)" if result.get("duplicate") else ""
    where = f"block {result.get('block')}"
    indexed = "indexed" if result.get("indexed") else "not yet indexed (no indexer running?)"
    console.print(f"[green]done:[/] {result['function']} in {where}, tx {result['tx_hash']}{dup}; {indexed}")
    for event in result.get("events", []):
        args = ", ".join(f"{k}={v}" for k, v in event.get("args", {}).items())
        console.print(f"  {event['name']}({args})", highlight=False)


def event_arg(result: Mapping[str, Any], event: str, arg: str) -> Any:
    for e in result.get("events", []):
        if e["name"] == event:
            return e["args"].get(arg)
    return None


def raise_on_problem(status: int, body: Mapping[str, Any]) -> NoReturn:
    """An API problem+json as the CLI's error: contract errors by name, exit codes by kind."""
    code = str(body.get("code", f"http_{status}"))
    detail = str(body.get("detail", ""))
    if code.startswith("contract."):
        message, hint = revert_message(code.removeprefix("contract."), body.get("fields") or {})
        raise CliError(f"refused by the contract: {message}", 1, hint)
    if status == 422:
        raise CliError(f"invalid input ({code}): {detail}", 2, "fix that argument and run the command again")
    if status == 401:
        raise CliError(
            f"sign-in refused ({code}): {detail}", 1, "is your key an active key of an admitted participant?"
        )
    if status == 403:
        raise CliError(f"forbidden: {detail}", 1, "act --as a key of the party entitled to this")
    if status == 404:
        raise CliError(f"not found: {detail}", 1, "check the id; you only see receivables you are party to")
    if status in (502, 503):
        raise CliError(f"the API cannot serve this now ({code}): {detail}", 2, "is its node up and its mirror indexed?")
    raise CliError(f"the API refused ({status} {code}): {detail}", 1)


def check_reasons(result: Mapping[str, Any]) -> list[str]:
    """Why a checked invoice would be refused or is flagged, in words (as CheckResult.reasons)."""
    out: list[str] = []
    if result.get("error"):
        err = result["error"]
        out.append(f"malformed: {err.get('field')}: {err.get('message')}")
    if result.get("registered"):
        what = "financed" if result.get("financed") else "not financed"
        out.append(f"already registered as receivable {result.get('receivable_id')} ({result.get('status')}, {what})")
    if result.get("duplicate_of_line") is not None:
        out.append(f"duplicate of line {result['duplicate_of_line']} of this batch")
    for flag in result.get("near_duplicates", []):
        where = (
            f"receivable {flag['receivable_id']}"
            if flag.get("receivable_id") is not None
            else f"line {flag['batch_line']} of this batch"
            if flag.get("batch_line") is not None
            else "a registration of another party"
        )
        out.append(f"suspiciously similar ({flag['reason']}, {flag['risk']} risk) to {where}")
    return out


def run_write(who: Who, action: str, args: Mapping[str, Any], as_json: bool) -> dict[str, Any]:
    """Signs and relays one action through the backend; prints the outcome (refusals exit non-zero)."""
    with errors(), backend(who) as chosen:
        result = chosen.write(action, args)
    print_write(result, as_json)
    return result


def currency_of(who: Who, receivable_id: int) -> str:
    """The receivable's currency (to read amount options in its major units), from the backend."""
    with errors(), backend(who) as chosen:
        return str(chosen.receivable(receivable_id)["receivable"]["currency"])
