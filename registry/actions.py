"""Lifecycle actions as users ask for them: friendly, named arguments -> one registry call.

The one place that turns ``{"id": 5, "invoice": {...}}`` into ``confirm(5, fingerprint)``: the API's
``/actions/{action}/prepare``, the CLI (both through the API and directly) and the portal (through the
API) all build their calls here, so that what a user signs is the same whichever way they came.

:func:`typed_data` turns a call into the EIP-712 ``ForwardRequest`` the user signs with its own key;
the relayer (registry/relay.py) submits it exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak

from registry.chain.contract import FORWARD_REQUEST_TYPES, RegistryClient
from registry.domain import ROLES_BY_NAME, DisputeReason, DisputeResolution
from registry.errors import FieldError, InvalidInvoice
from registry.invoice import Invoice, format_amount

# Each lifecycle action's slug (URL, CLI) and the registry function it calls.
ACTIONS: dict[str, str] = {
    "register": "register",
    "register-batch": "registerBatch",
    "confirm": "confirm",
    "dispute": "dispute",
    "resolve-dispute": "resolveDispute",
    "cancel": "cancel",
    "assign": "assign",
    "split": "split",
    "report-payment": "reportPayment",
    "acknowledge-payment": "acknowledgePayment",
    "reject-payment": "rejectPayment",
    "record-payment": "recordPayment",
    "buy-back": "buyBack",
    "declare-default": "declareDefault",
    "write-off": "writeOff",
    "admit-participant": "admitParticipant",
    "grant-entity-role": "grantEntityRole",
    "revoke-entity-role": "revokeEntityRole",
    "suspend-participant": "suspendParticipant",
    "reinstate-participant": "reinstateParticipant",
    "add-key": "addKey",
    "revoke-key": "revokeKey",
    "pause": "pause",
    "unpause": "unpause",
}

MAX_BATCH_LINES = 500  # ReceivableRegistry.MAX_BATCH_SIZE
ZERO32 = b"\x00" * 32

EIP712_DOMAIN_TYPES: list[dict[str, str]] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
GAS_MARGIN = 20_000  # the forwarder's own work on top of the simulated call


class ActionError(FieldError):
    """Raised when an action's arguments are missing or malformed; ``field`` names the argument (and
    ``problems`` every bad one, for an invoice's fields)."""


@dataclass(frozen=True)
class PreparedCall:
    action: str
    function: str
    args: tuple[Any, ...]
    """Ready for ``RegistryClient.abi.encode_call(function, args)``."""
    summary: dict[str, Any]
    """The normalised arguments, JSON-able, for the user to read before signing."""

    def encode(self, registry: RegistryClient) -> bytes:
        return registry.abi.encode_call(self.function, self.args)


# ---------------------------------------------------------------------------------------- arguments


class _Args:
    """Reads one action's arguments, naming the field in every error; unknown names are refused."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        if not isinstance(args, Mapping):
            raise ActionError("args", "must be an object of named arguments")
        self.args = args
        self.used: set[str] = set()

    def get(self, name: str, default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.args or self.args[name] is None:
            if default is ...:
                raise ActionError(name, "is required")
            return default
        return self.args[name]

    def uint(self, name: str, bits: int, *, positive: bool = True, default: Any = ...) -> int:
        value = self.get(name, default)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise ActionError(name, f"must be an integer, not {value!r}")
        if value < (1 if positive else 0) or value >= 2**bits:
            low = 1 if positive else 0
            raise ActionError(name, f"must be between {low} and {2**bits - 1}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ActionError(name, f"must be true or false, not {value!r}")
        return value

    def hash32(self, name: str, *, text_ok: bool = False, default: Any = ...) -> bytes:
        """A 0x-hex 32-byte value; with ``text_ok``, free text is accepted and hashed (keccak256)."""
        value = self.get(name, default)
        if isinstance(value, bytes) and len(value) == 32:
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("0x") and len(text) == 66:
                try:
                    return bytes.fromhex(text[2:])
                except ValueError:
                    pass
            if text_ok and text:
                return keccak(text=text)
        raise ActionError(name, "must be 32 bytes as 0x-hex" + (" or a non-empty reference text" if text_ok else ""))

    def address(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str) or not is_address(value):
            raise ActionError(name, f"must be an Ethereum address, not {value!r}")
        return to_checksum_address(value)

    def enum(self, name: str, kind: type[DisputeReason] | type[DisputeResolution]) -> int:
        value = self.get(name)
        names = [m.name for m in kind if m.value != 0]
        if isinstance(value, str) and value.strip().upper().replace("-", "_").replace(" ", "_") in names:
            return int(kind[value.strip().upper().replace("-", "_").replace(" ", "_")])
        if isinstance(value, int) and not isinstance(value, bool) and value in [m.value for m in kind if m.value]:
            return int(value)
        raise ActionError(name, f"must be one of {', '.join(names)}")

    def role(self, name: str, value: Any = ...) -> bytes:
        value = self.get(name) if value is ... else value
        if isinstance(value, str) and value.strip().lower() in ROLES_BY_NAME and value.strip().lower() != "admin":
            return bytes(ROLES_BY_NAME[value.strip().lower()])
        raise ActionError(name, f"must be one of creditor, debtor, factor, auditor, not {value!r}")

    def invoice(self, name: str, value: Any = ...) -> Invoice:
        fields = self.get(name) if value is ... else value
        if not isinstance(fields, Mapping):
            raise ActionError(name, "must be an object of invoice fields")
        allowed = {"debtor", "invoice_number", "face_value", "currency", "issue_date", "due_date", "document_hash"}
        problems = [(f"{name}.{field}", "is not an invoice field") for field in sorted(set(fields) - allowed)]
        problems += [
            (f"{name}.{field}", "is required")
            for field in sorted(allowed - {"document_hash"})
            if fields.get(field) in (None, "")
        ]
        problems += [
            (f"{name}.{field}", "must be text")
            for field in ("invoice_number", "currency")
            if fields.get(field) not in (None, "") and not isinstance(fields[field], str)
        ]
        if problems:
            raise ActionError.of(problems)
        debtor = fields["debtor"]
        if isinstance(debtor, str) and debtor.strip().isdigit():
            debtor = int(debtor)
        try:
            return Invoice.parse(
                debtor=debtor,
                invoice_number=fields["invoice_number"],
                face_value=fields["face_value"],
                currency=fields["currency"],
                issue_date=fields["issue_date"],
                due_date=fields["due_date"],
                document_hash=fields.get("document_hash"),
            )
        except InvalidInvoice as exc:
            raise ActionError.of([(f"{name}.{field}", message) for field, message in exc.problems]) from None
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # e.g. a list where a date goes
            raise ActionError(name, f"malformed invoice fields: {exc}") from None

    def done(self) -> None:
        unknown = sorted(set(self.args) - self.used)
        if unknown:
            raise ActionError(unknown[0], "is not an argument of this action")


def _invoice_summary(invoice: Invoice) -> dict[str, Any]:
    return {
        "debtor": invoice.debtor,
        "invoice_number": invoice.invoice_number,
        "normalized_number": invoice.normalized_number,
        "face_value": invoice.face_value,
        "face_value_text": format_amount(invoice.face_value, invoice.currency),
        "currency": invoice.currency,
        "issue_date": invoice.issue_date,
        "due_date": invoice.due_date,
        "invoice_key": "0x" + invoice.key.hex(),
        "fingerprint": "0x" + invoice.fingerprint.hex(),
    }


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _register(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    invoice = a.invoice("invoice")
    return (invoice.as_contract_input(),), {"invoice": _invoice_summary(invoice)}


def _register_batch(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    lines = a.get("invoices")
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_BATCH_LINES:
        raise ActionError("invoices", f"must be a list of 1 to {MAX_BATCH_LINES} invoices")
    invoices: list[Invoice] = []
    problems: list[tuple[str, str]] = []  # every malformed line's every bad field, not the first line's
    for i, fields in enumerate(lines):
        try:
            invoices.append(a.invoice(f"invoices.{i}", fields))
        except ActionError as exc:
            problems += exc.problems
    if problems:
        raise ActionError.of(problems)
    return ([i.as_contract_input() for i in invoices],), {
        "lines": len(invoices),
        "invoices": [_invoice_summary(i) for i in invoices],
    }


def _confirm(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid = a.uint("id", 64)
    if a.get("invoice", None) is not None:
        if a.get("fingerprint", None) is not None:
            raise ActionError("fingerprint", "give either the fingerprint or the invoice fields, not both")
        invoice = a.invoice("invoice")
        return (rid, invoice.fingerprint), {
            "id": rid,
            "fingerprint": _hex(invoice.fingerprint),
            "invoice": _invoice_summary(invoice),
        }
    fp = a.hash32("fingerprint")
    return (rid, fp), {"id": rid, "fingerprint": _hex(fp)}


def _dispute(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid, reason = a.uint("id", 64), a.enum("reason", DisputeReason)
    return (rid, reason), {"id": rid, "reason": DisputeReason(reason).name}


def _resolve(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid, resolution = a.uint("id", 64), a.enum("resolution", DisputeResolution)
    return (rid, resolution), {"id": rid, "resolution": DisputeResolution(resolution).name}


def _by_id(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid = a.uint("id", 64)
    return (rid,), {"id": rid}


def _assign(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid, factor = a.uint("id", 64), a.uint("factor", 24)
    advance = a.uint("advance", 64, positive=False)
    recourse = a.boolean("recourse", False)
    terms = a.hash32("terms_hash", text_ok=True, default=ZERO32)
    summary = {"id": rid, "factor": factor, "advance": advance, "recourse": recourse, "terms_hash": _hex(terms)}
    return (rid, factor, advance, recourse, terms), summary


def _split(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid = a.uint("id", 64)
    amounts = a.get("amounts")
    if not isinstance(amounts, list) or len(amounts) < 2:
        raise ActionError("amounts", "must be a list of at least two amounts (minor units)")
    parts = [_Args({f"amounts.{i}": v}).uint(f"amounts.{i}", 64) for i, v in enumerate(amounts)]
    return (rid, parts), {"id": rid, "amounts": parts}


def _report_payment(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid, paid_to, amount = a.uint("id", 64), a.uint("paid_to", 24), a.uint("amount", 64)
    ref = a.hash32("payment_ref", text_ok=True, default=ZERO32)
    return (rid, paid_to, amount, ref), {"id": rid, "paid_to": paid_to, "amount": amount, "payment_ref": _hex(ref)}


def _claim(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    claim = a.uint("claim_id", 64)
    return (claim,), {"claim_id": claim}


def _record_payment(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    rid, amount = a.uint("id", 64), a.uint("amount", 64)
    ref = a.hash32("payment_ref", text_ok=True, default=ZERO32)
    return (rid, amount, ref), {"id": rid, "amount": amount, "payment_ref": _hex(ref)}


def _admit(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    from registry.demo import registration_hash  # the one place that hashes registration numbers

    number = a.get("registration_number", None)
    if number is not None:
        if a.get("registration_hash", None) is not None:
            raise ActionError("registration_hash", "give either the registration number or its hash, not both")
        if not isinstance(number, str) or not number.strip():
            raise ActionError("registration_number", "must be a non-empty text (e.g. a Unified Social Credit Code)")
        reg_hash = registration_hash(number)
    else:
        reg_hash = a.hash32("registration_hash")
    roles = a.get("roles")
    if not isinstance(roles, list) or not roles:
        raise ActionError("roles", "must be a non-empty list of creditor, debtor, factor, auditor")
    role_ids = [a.role(f"roles.{i}", r) for i, r in enumerate(roles)]
    key = a.address("first_key")
    summary = {"registration_hash": _hex(reg_hash), "roles": [str(r).lower() for r in roles], "first_key": key}
    return (reg_hash, role_ids, key), summary


def _entity_role(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    entity, role = a.uint("entity", 24), a.role("role")
    return (entity, role), {"entity": entity, "role": str(a.args["role"]).lower()}


def _entity(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    entity = a.uint("entity", 24)
    return (entity,), {"entity": entity}


def _add_key(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    entity, key = a.uint("entity", 24), a.address("key")
    return (entity, key), {"entity": entity, "key": key}


def _revoke_key(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    key = a.address("key")
    return (key,), {"key": key}


def _no_args(a: _Args) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (), {}


_BUILDERS: dict[str, Callable[[_Args], tuple[tuple[Any, ...], dict[str, Any]]]] = {
    "register": _register,
    "register-batch": _register_batch,
    "confirm": _confirm,
    "dispute": _dispute,
    "resolve-dispute": _resolve,
    "cancel": _by_id,
    "assign": _assign,
    "split": _split,
    "report-payment": _report_payment,
    "acknowledge-payment": _claim,
    "reject-payment": _claim,
    "record-payment": _record_payment,
    "buy-back": _by_id,
    "declare-default": _by_id,
    "write-off": _by_id,
    "admit-participant": _admit,
    "grant-entity-role": _entity_role,
    "revoke-entity-role": _entity_role,
    "suspend-participant": _entity,
    "reinstate-participant": _entity,
    "add-key": _add_key,
    "revoke-key": _revoke_key,
    "pause": _no_args,
    "unpause": _no_args,
}
assert set(_BUILDERS) == set(ACTIONS)


def build_call(action: str, args: Mapping[str, Any]) -> PreparedCall:
    """The registry call for ``action`` with friendly ``args`` (see the module docstring of each
    builder above for the names); raises :class:`ActionError` naming the offending argument."""
    if action not in ACTIONS:
        raise ActionError("action", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    reader = _Args(args)
    call_args, summary = _BUILDERS[action](reader)
    reader.done()
    return PreparedCall(action, ACTIONS[action], call_args, {"action": action, **summary})


# ---------------------------------------------------------------------------------------- EIP-712


def forward_request_types() -> dict[str, list[dict[str, str]]]:
    return {"EIP712Domain": EIP712_DOMAIN_TYPES, "ForwardRequest": FORWARD_REQUEST_TYPES}


def typed_data(
    registry: RegistryClient,
    signer: str,
    call: PreparedCall,
    *,
    ttl: int = 600,
    nonce: int | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The EIP-712 ForwardRequest that ``signer`` signs to have ``call`` relayed. The call is simulated
    as the signer first: a would-be revert raises the contract's typed error before anything is signed."""
    signer = to_checksum_address(signer)
    data = call.encode(registry)
    gas = registry.chain.estimate_gas(signer, registry.address, data) + GAS_MARGIN
    return {
        "domain": registry.forwarder_domain(),
        "types": forward_request_types(),
        "primaryType": "ForwardRequest",
        "message": {
            "from": signer,
            "to": registry.address,
            "value": 0,
            "gas": gas,
            "nonce": registry.forwarder_nonce(signer) if nonce is None else nonce,
            "deadline": (int(time.time()) if now is None else now) + ttl,
            "data": "0x" + data.hex(),
        },
    }
