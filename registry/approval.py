"""Auto-approval of financing offers within a factor's limits (issue 6, "Auto-approval within limits").

Only the holder of a receivable can assign it, so an **offer** is the holder's financing proposal to one
factor: an ``assign(id, factor, advance, recourse, termsHash)`` request the holder signed (EIP-712, with
its own key) and handed to the factor's desk instead of relaying it at once. The desk checks it as the
relayer would (target, signature, nonce, deadline, a simulation as the signer), decodes the call, and
the factor's **policy** decides:

- every rule met: the offer is **accepted** and the holder's signed request is relayed (exactly once,
  by digest, through :class:`registry.relay.Relayer`) without a person, in the same call;
- a rule not met: the offer is **queued** with the reasons, for the factor to accept by hand (which
  relays it) or decline. The signed request's deadline bounds how long an offer can wait; the
  forwarder's nonces are sequential, so anything else the holder signs meanwhile spends the offer's
  nonce and the offer can no longer be relayed (accepting it then fails and says so).

Every decision is recorded (``offer_decisions``) with the rule that made it and every rule's result.

Rules (:func:`evaluate`, in this order; all are evaluated, so a queued offer lists every reason):
``policy_enabled``, ``currency`` (allowed currencies), ``confirmed_only`` (a first financing of a
confirmed, unpaid receivable, offered by its creditor: no re-assignment, nothing paid yet),
``max_amount`` (face value, per currency), ``max_tenor`` (days from the mirror's block time to the due
date), ``advance_rate`` (advance / unpaid balance within [min, max]), ``debtor_exposure`` and
``total_exposure`` (limits per currency), ``no_anomaly_flag`` (no open flag on the receivable),
``no_near_duplicate`` (no other live registration suspiciously similar to it).

Exposure
    The unpaid balance of every receivable the factor holds in the mirror (open states: not settled,
    cancelled, written off or split), plus the offers it accepted that the mirror does not show yet:
    accepted and not yet mined (until the request's deadline, after which the forwarder would refuse
    it), or mined in a block beyond the mirror's cursor. Both sums are one statement, so an indexer
    commit between them can neither hide nor double an offer.

Race safety
    Decisions for one factor are serialised: on PostgreSQL by ``SELECT ... FOR UPDATE`` on the factor's
    policy row, on SQLite by ``BEGIN IMMEDIATE`` (the database's one writer lock). The exposure is read,
    the offer evaluated and, when accepted, recorded as accepted-pending inside that one transaction, so
    the next decision for the factor counts it: two simultaneous offers cannot together exceed a limit.
    The relay itself happens after the commit, outside the lock.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from eth_abi.abi import decode
from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from registry.anomalies import open_flags
from registry.chain.contract import RegistryClient, SignedRequest
from registry.checks import DuplicateChecker
from registry.domain import KeyStatus, Status
from registry.errors import InvalidInvoice, RegistryError
from registry.invoice import CURRENCY_EXPONENTS, Invoice, format_amount, normalize_currency, parse_amount
from registry.relay import Relayer, RelayError, parse_request, request_digest, request_json
from registry.store.models import (
    ApprovalPolicy,
    Cursor,
    Offer,
    OfferDecision,
    ParticipantKey,
    Receivable,
    table_of,
)

DAY = 86_400
BPS = 10_000  # advance rates in basis points

RULES: tuple[str, ...] = (
    "policy_enabled",
    "currency",
    "confirmed_only",
    "max_amount",
    "max_tenor",
    "advance_rate",
    "debtor_exposure",
    "total_exposure",
    "no_anomaly_flag",
    "no_near_duplicate",
)
ALL_RULES_MET = "all_rules_met"
MANUAL = "manual"

# Offer states. ``queued`` waits for a person; ``accepted`` is being relayed; ``assigned`` is mined.
QUEUED = "queued"
ACCEPTED = "accepted"
ASSIGNED = "assigned"
DECLINED = "declined"
FAILED = "failed"
EXPIRED = "expired"
STATES = (QUEUED, ACCEPTED, ASSIGNED, DECLINED, FAILED, EXPIRED)
# Statuses in which a held receivable is still exposure (unpaid balance at risk).
_CLOSED = (Status.SETTLED, Status.CANCELLED, Status.WRITTEN_OFF, Status.SPLIT)


class OfferError(RegistryError):
    """An offer or a policy refused before any decision; ``status``/``code`` for the API, ``field`` when
    an input names it."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def _policy_error(field_name: str, message: str) -> OfferError:
    return OfferError(422, "invalid_policy", f"{field_name}: {message}", field_name)


# ---------------------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class Policy:
    """A factor's auto-approval policy. Amounts are minor units per currency (ISO 4217); a limit that is
    ``None`` does not constrain; a limit map without the offer's currency refuses it (no limit agreed)."""

    factor: int
    enabled: bool = False
    currencies: tuple[str, ...] = ()
    """Allowed currencies; empty: any."""
    confirmed_only: bool = True
    max_amount: Mapping[str, int] | None = None
    """Largest face value, per currency."""
    max_tenor_days: int | None = None
    min_advance_bps: int | None = None
    max_advance_bps: int | None = None
    debtor_limit: Mapping[str, int] | None = None
    """Exposure limit to any one debtor, per currency."""
    debtor_limits: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    """Per-debtor overrides of ``debtor_limit``."""
    total_limit: Mapping[str, int] | None = None
    no_anomaly_flag: bool = True
    no_near_duplicate: bool = True
    version: int = 0

    # ------------------------------------------------------------------ JSON

    @classmethod
    def parse(cls, factor: int, body: Mapping[str, Any], version: int = 0) -> Policy:
        """A policy from its JSON form (see :meth:`to_json`), every field checked and named in errors.
        Amounts: text in major units ("1,000,000.00") or an integer of minor units; advance rates: a
        fraction as text or number between 0 and 1 ("0.8"), at most 4 decimals."""
        if not isinstance(body, Mapping):
            raise _policy_error("policy", "must be an object")
        known = {
            "enabled",
            "currencies",
            "confirmed_only",
            "max_amount",
            "max_tenor_days",
            "min_advance_rate",
            "max_advance_rate",
            "debtor_limit",
            "debtor_limits",
            "total_limit",
            "no_anomaly_flag",
            "no_near_duplicate",
        }
        unknown = sorted(set(body) - known)
        if unknown:
            raise _policy_error(unknown[0], f"is not a policy field (known: {', '.join(sorted(known))})")

        def flag(name: str, default: bool) -> bool:
            value = body.get(name, default)
            if not isinstance(value, bool):
                raise _policy_error(name, f"must be true or false, not {value!r}")
            return value

        currencies_raw = body.get("currencies") or []
        if not isinstance(currencies_raw, list):
            raise _policy_error("currencies", "must be a list of ISO 4217 codes")
        currencies = tuple(sorted({_currency(f"currencies.{i}", c) for i, c in enumerate(currencies_raw)}))
        tenor = body.get("max_tenor_days")
        if tenor is not None and (isinstance(tenor, bool) or not isinstance(tenor, int) or not 0 < tenor <= 36_500):
            raise _policy_error("max_tenor_days", "must be a whole number of days between 1 and 36500")
        min_bps = _rate("min_advance_rate", body.get("min_advance_rate"))
        max_bps = _rate("max_advance_rate", body.get("max_advance_rate"))
        if min_bps is not None and max_bps is not None and min_bps > max_bps:
            raise _policy_error("min_advance_rate", "must not exceed max_advance_rate")
        overrides_raw = body.get("debtor_limits") or {}
        if not isinstance(overrides_raw, Mapping):
            raise _policy_error(
                "debtor_limits", 'must map debtor entity ids to limits, e.g. {"4": {"CNY": "1,000.00"}}'
            )
        overrides: dict[int, Mapping[str, int]] = {}
        for key, limits in overrides_raw.items():
            text = str(key).strip()
            if not text.isdigit() or not 0 < int(text) < 2**24:
                raise _policy_error(f"debtor_limits.{key}", "must be keyed by a debtor entity id")
            parsed = _amounts(f"debtor_limits.{key}", limits)
            assert parsed is not None
            overrides[int(text)] = parsed
        return cls(
            factor=factor,
            enabled=flag("enabled", False),
            currencies=currencies,
            confirmed_only=flag("confirmed_only", True),
            max_amount=_amounts("max_amount", body.get("max_amount")),
            max_tenor_days=tenor,
            min_advance_bps=min_bps,
            max_advance_bps=max_bps,
            debtor_limit=_amounts("debtor_limit", body.get("debtor_limit")),
            debtor_limits=overrides,
            total_limit=_amounts("total_limit", body.get("total_limit")),
            no_anomaly_flag=flag("no_anomaly_flag", True),
            no_near_duplicate=flag("no_near_duplicate", True),
            version=version,
        )

    def to_json(self) -> dict[str, Any]:
        """The stored and served form: amounts in minor units (integers), rates as decimal text."""

        def amounts(m: Mapping[str, int] | None) -> dict[str, int] | None:
            return None if m is None else dict(sorted(m.items()))

        return {
            "enabled": self.enabled,
            "currencies": list(self.currencies),
            "confirmed_only": self.confirmed_only,
            "max_amount": amounts(self.max_amount),
            "max_tenor_days": self.max_tenor_days,
            "min_advance_rate": _rate_text(self.min_advance_bps),
            "max_advance_rate": _rate_text(self.max_advance_bps),
            "debtor_limit": amounts(self.debtor_limit),
            "debtor_limits": {str(d): amounts(m) for d, m in sorted(self.debtor_limits.items())},
            "total_limit": amounts(self.total_limit),
            "no_anomaly_flag": self.no_anomaly_flag,
            "no_near_duplicate": self.no_near_duplicate,
        }

    def limit_for_debtor(self, debtor: int) -> Mapping[str, int] | None:
        return self.debtor_limits.get(debtor, self.debtor_limit)


def _currency(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _policy_error(name, f"must be an ISO 4217 code, not {value!r}")
    try:
        code = normalize_currency(value)
    except InvalidInvoice as exc:
        raise _policy_error(name, exc.message) from None
    if code not in CURRENCY_EXPONENTS:
        raise _policy_error(name, f"{value!r} is not an ISO 4217 currency")
    return code


def _amounts(name: str, value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _policy_error(name, 'must map currencies to amounts, e.g. {"CNY": "1,000,000.00"}')
    out: dict[str, int] = {}
    for raw_code, amount in value.items():
        code = _currency(f"{name}.{raw_code}", raw_code)
        try:
            out[code] = int(parse_amount(amount, code))
        except InvalidInvoice as exc:
            raise _policy_error(f"{name}.{raw_code}", exc.message) from None
    return out


_RATE = re.compile(r"^(0(\.[0-9]{1,4})?|1(\.0{1,4})?|\.[0-9]{1,4})$")


def _rate(name: str, value: Any) -> int | None:
    """A fraction in [0, 1] with at most 4 decimals, as basis points."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _policy_error(name, 'must be a fraction between 0 and 1, e.g. "0.8"')
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if not _RATE.match(text):
        raise _policy_error(name, f"must be a fraction between 0 and 1 with at most 4 decimals, not {value!r}")
    try:
        return int(Decimal(text) * BPS)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise _policy_error(name, f"not a number: {value!r}") from None


def _rate_text(bps: int | None) -> str | None:
    return None if bps is None else str((Decimal(bps) / BPS).normalize())


# ---------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class OfferedAssignment:
    """What an offer asks, decoded from the holder's signed ``assign`` request."""

    receivable_id: int
    factor: int
    advance: int
    recourse: bool
    terms_hash: bytes
    signer: str
    deadline: int
    digest: bytes


@dataclass(frozen=True)
class Facts:
    """What the decision reads from the mirror, inside the factor's decision transaction."""

    status: Status
    creditor: int
    debtor: int
    holder: int
    face_value: int
    paid: int
    currency: str
    due_date: int
    now: int
    """The mirror's block time (the chain's clock, as the contract's due-date checks use)."""
    debtor_exposure: int
    """The factor's exposure to this debtor in this currency (held + accepted-pending), without this offer."""
    total_exposure: int
    """The factor's exposure in this currency, without this offer."""
    anomaly_flags: tuple[str, ...] = ()
    near_duplicates: tuple[str, ...] = ()

    @property
    def unpaid(self) -> int:
        return self.face_value - self.paid


@dataclass(frozen=True)
class RuleResult:
    rule: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Decision:
    accepted: bool
    rules: tuple[RuleResult, ...]

    @property
    def rule(self) -> str:
        """The rule that made the decision: the first one not met, or ``all_rules_met``."""
        return next((r.rule for r in self.rules if not r.ok), ALL_RULES_MET)

    @property
    def reasons(self) -> list[str]:
        return [f"{r.rule}: {r.detail}" for r in self.rules if not r.ok]


def evaluate(offer: OfferedAssignment, policy: Policy | None, facts: Facts) -> Decision:
    """The policy's verdict on one offer (pure: everything it reads is in its arguments)."""
    policy = policy or Policy(factor=offer.factor)
    cur = facts.currency
    unpaid = facts.unpaid

    def money(minor: int) -> str:
        return f"{format_amount(minor, cur)} {cur}"

    out: list[RuleResult] = []

    def rule(name: str, ok: bool, detail: str) -> None:
        out.append(RuleResult(name, ok, detail))

    if policy.version == 0:
        rule("policy_enabled", False, "the factor has set no auto-approval policy")
    else:
        rule("policy_enabled", policy.enabled, "auto-approval is on" if policy.enabled else "auto-approval is off")

    if not policy.currencies:
        rule("currency", True, f"{cur}: any currency allowed")
    else:
        ok = cur in policy.currencies
        rule("currency", ok, f"{cur} {'is' if ok else 'is not'} among {', '.join(policy.currencies)}")

    if not policy.confirmed_only:
        rule("confirmed_only", True, f"status {facts.status.name.lower()}: not required to be a first financing")
    else:
        problems = []
        if facts.status is not Status.CONFIRMED:
            problems.append(f"status is {facts.status.name.lower()}, not confirmed")
        if facts.holder != facts.creditor:
            problems.append(f"offered by holder {facts.holder}, not by its creditor {facts.creditor} (a re-assignment)")
        if facts.paid:
            problems.append(f"{money(facts.paid)} already paid")
        rule(
            "confirmed_only",
            not problems,
            "; ".join(problems) or "confirmed by its debtor, offered by its creditor, nothing paid",
        )

    def limit_rule(name: str, limits: Mapping[str, int] | None, value: int, what: str) -> None:
        if limits is None:
            rule(name, True, f"{what} {money(value)}: no limit set")
        elif cur not in limits:
            rule(name, False, f"no {name.replace('_', ' ')} agreed for {cur}")
        else:
            ok = value <= limits[cur]
            rule(name, ok, f"{what} {money(value)} {'within' if ok else 'exceeds'} the limit of {money(limits[cur])}")

    limit_rule("max_amount", policy.max_amount, facts.face_value, "face value")

    days_left = (facts.due_date - facts.now) / DAY
    if policy.max_tenor_days is None:
        rule("max_tenor", True, f"due in {days_left:.1f} days: no limit set")
    else:
        ok = days_left <= policy.max_tenor_days
        rule(
            "max_tenor",
            ok,
            f"due in {days_left:.1f} days, {'within' if ok else 'beyond'} the maximum of {policy.max_tenor_days}",
        )

    if policy.min_advance_bps is None and policy.max_advance_bps is None:
        rule("advance_rate", True, "no advance rate limits set")
    elif unpaid <= 0:
        rule("advance_rate", False, "nothing is unpaid: no advance rate can be computed")
    else:
        rate = Decimal(offer.advance) / Decimal(unpaid)
        low = policy.min_advance_bps if policy.min_advance_bps is not None else 0
        high = policy.max_advance_bps if policy.max_advance_bps is not None else BPS
        ok = low * unpaid <= offer.advance * BPS <= high * unpaid
        rule(
            "advance_rate",
            ok,
            f"advance {money(offer.advance)} is {rate:.2%} of the unpaid {money(unpaid)}, "
            f"{'within' if ok else 'outside'} [{Decimal(low) / 100:.2f}%, {Decimal(high) / 100:.2f}%]",
        )

    limit_rule(
        "debtor_exposure",
        policy.limit_for_debtor(facts.debtor),
        facts.debtor_exposure + unpaid,
        f"exposure to debtor {facts.debtor} with this offer",
    )
    limit_rule("total_exposure", policy.total_limit, facts.total_exposure + unpaid, "total exposure with this offer")

    def none_of(name: str, required: bool, found: Sequence[str], clean: str) -> None:
        if not required:
            rule(name, True, "not required")
        else:
            rule(name, not found, "; ".join(found) if found else clean)

    none_of("no_anomaly_flag", policy.no_anomaly_flag, facts.anomaly_flags, "no open anomaly flag")
    none_of(
        "no_near_duplicate", policy.no_near_duplicate, facts.near_duplicates, "no suspiciously similar registration"
    )
    return Decision(all(r.ok for r in out), tuple(out))


# ---------------------------------------------------------------------------------------- mirror reads


def open_anomaly_flags(conn: Connection, receivable_id: int) -> list[str]:
    """Open anomaly flags on a receivable, as "kind (severity): reason": registry.anomalies' own query
    (``open_flags``) over its ``anomaly_flags`` table, the one place the approval reads them."""
    return [f"{f['kind']} ({f['severity']}): {f['reason']}" for f in open_flags(conn, [receivable_id])[receivable_id]]


def near_duplicates_of(conn: Connection, row: Mapping[str, Any]) -> list[str]:
    """Other live registrations suspiciously similar to the receivable in ``row`` (MonetaGo's risk
    classes of registry/checks.py that the mirror's own fields allow): the same debtor, currency, face
    value and due date; or the same non-zero document hash. Registrations of the same invoice (the
    same debtor and number hash: the receivable itself, its parent and parts) are not counted."""
    t = table_of(Receivable)
    same_invoice = and_(t.c.debtor == row["debtor"], t.c.number_hash == row["number_hash"])
    base = select(t.c.id).where(t.c.valid_to.is_(None), t.c.status != int(Status.CANCELLED), t.c.id != row["id"])
    if row["number_hash"] is not None:
        base = base.where(~same_invoice)
    found: list[str] = []
    amount = conn.execute(
        base.where(
            t.c.debtor == row["debtor"],
            t.c.face_value == row["face_value"],
            t.c.due_date == row["due_date"],
            t.c.currency == row["currency"],
        ).limit(5)
    ).all()
    if amount:
        ids = ", ".join(str(r[0]) for r in amount)
        found.append(f"SAME_DEBTOR_AMOUNT_DUE_DATE (high): receivable(s) {ids}")
    document = row.get("document_hash")
    if document is not None and bytes(document) != bytes(32):
        same_doc = conn.execute(base.where(t.c.document_hash == document).limit(5)).all()
        if same_doc:
            found.append(f"SAME_DOCUMENT_HASH (high): receivable(s) {', '.join(str(r[0]) for r in same_doc)}")
    return found


def exposure(conn: Connection, factor: int, currency: str, debtor: int, exclude_receivable: int) -> tuple[int, int]:
    """(exposure to ``debtor``, total exposure) of ``factor`` in ``currency``: unpaid balances it holds in
    the mirror plus its accepted offers the mirror does not show yet; one statement (one snapshot)."""
    r, o, c = table_of(Receivable), table_of(Offer), table_of(Cursor)
    indexed = select(func.coalesce(func.max(c.c.block_number), -1)).scalar_subquery()
    now = int(time.time())
    held = r.c.valid_to.is_(None) & (r.c.holder == factor) & (r.c.currency == currency)
    held &= r.c.status.not_in([int(s) for s in _CLOSED])
    pending = (o.c.factor == factor) & (o.c.currency == currency) & (o.c.receivable_id != exclude_receivable)
    pending &= or_(
        and_(o.c.state == ACCEPTED, o.c.deadline >= now),
        and_(o.c.state == ASSIGNED, o.c.block_number > indexed),
    )

    def total(source: Any, amount: Any, where: Any) -> Any:
        return select(func.coalesce(func.sum(amount), 0)).select_from(source).where(where).scalar_subquery()

    row = conn.execute(
        select(
            total(r, r.c.face_value - r.c.paid, held & (r.c.debtor == debtor)),
            total(r, r.c.face_value - r.c.paid, held),
            total(o, o.c.amount, pending & (o.c.debtor == debtor)),
            total(o, o.c.amount, pending),
        )
    ).one()
    return int(row[0]) + int(row[2]), int(row[1]) + int(row[3])


# ---------------------------------------------------------------------------------------- the desk


@dataclass(frozen=True)
class OfferView:
    """An offer as stored, with its decisions (oldest first)."""

    id: int
    state: str
    factor: int
    holder: int
    signer: str
    receivable_id: int
    debtor: int
    currency: str
    face_value: int
    amount: int
    advance: int
    recourse: bool
    terms_hash: str
    deadline: int
    rule: str
    rules: list[dict[str, Any]]
    created_at: float
    decided_at: float
    tx_hash: str | None
    block_number: int | None
    error: str | None
    decisions: list[dict[str, Any]]
    request: dict[str, Any]


class OfferDesk:
    """Takes offers, decides them by the factor's policy, relays accepted ones; policies and offers in SQL."""

    def __init__(
        self,
        registry: RegistryClient,
        engine: Engine,
        relayer: Relayer,
        checker: DuplicateChecker | None = None,
        *,
        anomaly_flags: Callable[[Connection, int], list[str]] = open_anomaly_flags,
        mirror_wait: float = 5.0,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.relayer = relayer
        self.checker = checker
        self.anomaly_flags = anomaly_flags
        self.mirror_wait = mirror_wait
        self._assign_types = [p["type"] for p in registry.abi.function("assign")["inputs"]]

    # ------------------------------------------------------------------ policies

    def policy(self, factor: int) -> Policy | None:
        t = table_of(ApprovalPolicy)
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.factor == factor)).mappings().first()
        return None if row is None else Policy.parse(factor, json.loads(row["rules"]), version=row["version"])

    def set_policy(self, factor: int, body: Mapping[str, Any], by: str) -> Policy:
        """Replaces the factor's policy (validated first: a bad field changes nothing); versions count up."""
        parsed = Policy.parse(factor, body)
        t = table_of(ApprovalPolicy)
        with self._decision_lock(factor) as conn:
            current = conn.execute(select(t.c.version).where(t.c.factor == factor)).scalar()
            values = {
                "enabled": parsed.enabled,
                "rules": json.dumps(parsed.to_json(), sort_keys=True),
                "updated_by": by,
                "updated_at": time.time(),
            }
            version = (current or 0) + 1
            if current is None:
                conn.execute(insert(t).values(factor=factor, version=version, **values))
            else:
                conn.execute(update(t).where(t.c.factor == factor).values(version=version, **values))
        return replace(parsed, version=version)

    # ------------------------------------------------------------------ offers

    def decode(self, request: SignedRequest) -> OfferedAssignment:
        """The assignment an offer asks for; refuses a request that does not call ``assign``."""
        if request.data[:4] != self.registry.abi.selector("assign"):
            raise OfferError(
                422, "offer.not_assign", "an offer is a signed assign request; this one calls something else"
            )
        try:
            rid, factor, advance, recourse, terms = decode(self._assign_types, request.data[4:])
        except Exception:  # eth_abi raises several decoding errors: all mean malformed call data
            raise OfferError(422, "offer.malformed", "the request's call data is not a valid assign call") from None
        return OfferedAssignment(
            int(rid),
            int(factor),
            int(advance),
            bool(recourse),
            bytes(terms),
            request.sender,
            request.deadline,
            request_digest(request),
        )

    def submit(self, request: SignedRequest, *, invoice: Invoice | None = None, relay: bool = True) -> OfferView:
        """Takes the holder's signed ``assign`` request as an offer to its factor: checked as the relayer
        would (nothing is stored for a request that could not be relayed), decided by the factor's policy,
        and relayed when accepted. Submitting the same signed request again returns the same offer.

        ``invoice``: the invoice's fields, optionally, from the holder's records; they must be the
        receivable's (same fingerprint), and then the near-duplicate rule also compares invoice numbers."""
        offered = self.decode(request)
        existing = self._offer_by_digest(offered.digest)
        if existing is not None:
            return existing
        try:
            self.relayer.check(request, "assign")  # signature, nonce, deadline, and the contract's own checks
            row, holder = self._mirror_row(offered)
        except Exception:
            # The same request offered at the same moment elsewhere may have been decided, relayed and
            # indexed meanwhile (its nonce used, the factor now the holder): then it is that offer.
            found = self._offer_by_digest(offered.digest)
            if found is not None:
                return found
            raise
        if invoice is not None and (row["fingerprint"] is None or invoice.fingerprint != bytes(row["fingerprint"])):
            message = "the invoice fields given are not those of the offered receivable"
            raise OfferError(422, "offer.invoice_mismatch", message, "invoice")
        flags, similar = self._screen(row, invoice, holder)
        now = time.time()
        try:
            with self._decision_lock(offered.factor) as conn:
                again = self._offer_by_digest(offered.digest, conn)
                if again is not None:
                    return again
                policy = self._policy_in(conn, offered.factor)
                facts = self._facts(conn, offered, row, flags, similar)
                decision = evaluate(offered, policy, facts)
                state = ACCEPTED if decision.accepted else QUEUED
                offer_id = self._insert_offer(conn, request, offered, holder, facts, decision, state, policy, now)
                self._record(conn, offer_id, "policy", state, decision.rule, decision, "; ".join(decision.reasons))
        except IntegrityError:  # the same request offered at the same moment elsewhere: one offer, its answer
            found = self._offer_by_digest(offered.digest)
            if found is None:
                raise
            return found
        if decision.accepted and relay:
            return self._relay(offer_id, request)
        return self.get(offer_id)

    def accept(self, offer_id: int, factor: int, by: str) -> OfferView:
        """A person of the factor accepts a queued offer: recorded as a manual decision (with the policy's
        verdict at that moment, for the record) and relayed."""
        with self._decision_lock(factor) as conn:
            row = self._offer_row(conn, offer_id)
            if row is None or row["factor"] != factor:
                raise OfferError(404, "not_found", f"no offer {offer_id} to entity {factor}")
            if row["state"] != QUEUED:
                raise OfferError(409, "offer.not_queued", f"offer {offer_id} is {row['state']}, not queued")
            o = table_of(Offer)
            expired = row["deadline"] < time.time()
            if expired:
                conn.execute(update(o).where(o.c.id == offer_id).values(state=EXPIRED, decided_at=time.time()))
                self._record(conn, offer_id, by, EXPIRED, "deadline", None, "the signed request's deadline has passed")
            else:
                request, decision, detail = self._manual_acceptance(conn, row, factor)
                conn.execute(
                    update(o).where(o.c.id == offer_id).values(state=ACCEPTED, rule=MANUAL, decided_at=time.time())
                )
                self._record(conn, offer_id, by, ACCEPTED, MANUAL, decision, detail)
        if expired:
            raise OfferError(409, "offer.expired", f"offer {offer_id} expired: its signed request's deadline passed")
        return self._relay(offer_id, request, raise_errors=True)

    def _manual_acceptance(
        self, conn: Connection, row: Mapping[str, Any], factor: int
    ) -> tuple[SignedRequest, Decision | None, str]:
        """The stored request, and the policy's verdict now (recorded beside the person's decision)."""
        request = _parse_stored(row["request"])
        offered = self.decode(request)
        mirror_row = self._receivable(conn, offered.receivable_id)
        detail = "accepted by hand"
        decision = None
        if mirror_row is not None:
            flags = self.anomaly_flags(conn, offered.receivable_id)
            facts = self._facts(conn, offered, mirror_row, flags, near_duplicates_of(conn, mirror_row))
            decision = evaluate(offered, self._policy_in(conn, factor), facts)
            if not decision.accepted:
                detail += " despite: " + "; ".join(decision.reasons)
        return request, decision, detail

    def decline(self, offer_id: int, factor: int, by: str, note: str = "") -> OfferView:
        with self._decision_lock(factor) as conn:
            row = self._offer_row(conn, offer_id)
            if row is None or row["factor"] != factor:
                raise OfferError(404, "not_found", f"no offer {offer_id} to entity {factor}")
            if row["state"] != QUEUED:
                raise OfferError(409, "offer.not_queued", f"offer {offer_id} is {row['state']}, not queued")
            o = table_of(Offer)
            conn.execute(
                update(o).where(o.c.id == offer_id).values(state=DECLINED, rule=MANUAL, decided_at=time.time())
            )
            self._record(conn, offer_id, by, DECLINED, MANUAL, None, note.strip() or "declined by hand")
        return self.get(offer_id)

    def get(self, offer_id: int) -> OfferView:
        with self.engine.connect() as conn:
            row = self._offer_row(conn, offer_id)
            if row is None:
                raise OfferError(404, "not_found", f"no offer {offer_id}")
            return self._view(conn, row)

    def offers(
        self,
        *,
        factor: int | None = None,
        holder: int | None = None,
        state: str | None = None,
        after_id: int = 0,
        limit: int = 50,
    ) -> list[OfferView]:
        """Offers to ``factor`` or from ``holder`` (both None: all), newest last."""
        o = table_of(Offer)
        stmt = select(o).where(o.c.id > after_id)
        if factor is not None and holder is not None:
            stmt = stmt.where(or_(o.c.factor == factor, o.c.holder == holder))
        elif factor is not None:
            stmt = stmt.where(o.c.factor == factor)
        elif holder is not None:
            stmt = stmt.where(o.c.holder == holder)
        if state is not None:
            stmt = stmt.where(o.c.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(o.c.id).limit(limit)).mappings().all()
            return [self._view(conn, dict(r)) for r in rows]

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _decision_lock(self, factor: int) -> Iterator[Connection]:
        """One transaction in which the factor's decisions are serialised (see the module docstring)."""
        if self.engine.dialect.name == "sqlite":
            # BEGIN IMMEDIATE takes the database's writer lock (waiting up to the busy timeout).
            with self.engine.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            return
        with self.engine.begin() as conn:
            t = table_of(ApprovalPolicy)
            conn.execute(select(t.c.factor).where(t.c.factor == factor).with_for_update())
            yield conn

    def _policy_in(self, conn: Connection, factor: int) -> Policy | None:
        t = table_of(ApprovalPolicy)
        row = conn.execute(select(t.c.rules, t.c.version).where(t.c.factor == factor)).first()
        return None if row is None else Policy.parse(factor, json.loads(row.rules), version=int(row.version))

    def _receivable(self, conn: Connection, receivable_id: int) -> dict[str, Any] | None:
        t = table_of(Receivable)
        row = conn.execute(select(t).where(t.c.id == receivable_id, t.c.valid_to.is_(None))).mappings().first()
        return None if row is None else dict(row)

    def _entity_of(self, conn: Connection, address: str) -> int | None:
        k = table_of(ParticipantKey)
        row = conn.execute(
            select(k.c.entity_id, k.c.status).where(k.c.address == address, k.c.valid_to.is_(None))
        ).first()
        return int(row.entity_id) if row is not None and row.status == KeyStatus.ACTIVE else None

    def _mirror_row(self, offered: OfferedAssignment) -> tuple[dict[str, Any], int]:
        """The receivable and the signer's entity as the mirror knows them once it has caught up with the
        chain's block the request was just simulated at; the signer must be the holder of record."""
        head = self.registry.chain.block_number()
        if not self.relayer.wait_indexed(head, self.mirror_wait):
            raise OfferError(
                503, "offer.mirror_behind", f"the mirror has not reached block {head} yet: offer again shortly"
            )
        with self.engine.connect() as conn:
            row = self._receivable(conn, offered.receivable_id)
            signer_entity = self._entity_of(conn, offered.signer)
        if row is None:
            raise OfferError(404, "not_found", f"no receivable {offered.receivable_id} in the mirror")
        if signer_entity is None or row["holder"] != signer_entity:
            raise OfferError(
                403,
                "offer.not_holder",
                f"the signer {offered.signer} (entity {signer_entity}) is not the holder of record "
                f"(entity {row['holder']}) of receivable {offered.receivable_id}",
            )
        return row, signer_entity

    def _screen(self, row: Mapping[str, Any], invoice: Invoice | None, holder: int) -> tuple[list[str], list[str]]:
        """Anomaly flags and near-duplicates (read before the decision lock: they do not race)."""
        with self.engine.connect() as conn:
            flags = self.anomaly_flags(conn, int(row["id"]))
            similar = near_duplicates_of(conn, row)
        if invoice is not None and self.checker is not None:
            result = self.checker.check(invoice, viewer_entity=holder)
            for n in result.near_duplicates:
                text = f"{n.reason} ({n.risk})" + (f": receivable {n.receivable_id}" if n.receivable_id else "")
                if not any(s.startswith(str(n.reason)) for s in similar):
                    similar.append(text)
        return flags, similar

    def _facts(
        self,
        conn: Connection,
        offered: OfferedAssignment,
        row: Mapping[str, Any],
        flags: Sequence[str],
        similar: Sequence[str],
    ) -> Facts:
        current = self._receivable(conn, offered.receivable_id) or dict(row)
        debtor_exposure, total_exposure = exposure(
            conn, offered.factor, current["currency"], current["debtor"], offered.receivable_id
        )
        c = table_of(Cursor)
        now = conn.execute(select(c.c.block_timestamp)).scalar()
        return Facts(
            status=Status(current["status"]),
            creditor=current["creditor"],
            debtor=current["debtor"],
            holder=current["holder"],
            face_value=current["face_value"],
            paid=current["paid"],
            currency=current["currency"],
            due_date=current["due_date"],
            now=int(now if now is not None else time.time()),
            debtor_exposure=debtor_exposure,
            total_exposure=total_exposure,
            anomaly_flags=tuple(flags),
            near_duplicates=tuple(similar),
        )

    def _insert_offer(
        self,
        conn: Connection,
        request: SignedRequest,
        offered: OfferedAssignment,
        holder: int,
        facts: Facts,
        decision: Decision,
        state: str,
        policy: Policy | None,
        now: float,
    ) -> int:
        o = table_of(Offer)
        result = conn.execute(
            insert(o).values(
                digest=offered.digest,
                factor=offered.factor,
                holder=holder,
                signer=offered.signer,
                receivable_id=offered.receivable_id,
                debtor=facts.debtor,
                currency=facts.currency,
                face_value=facts.face_value,
                amount=facts.unpaid,
                advance=offered.advance,
                recourse=offered.recourse,
                terms_hash=offered.terms_hash,
                deadline=offered.deadline,
                request=json.dumps(request_json(request)),
                state=state,
                rule=decision.rule,
                rules=json.dumps([r.to_json() for r in decision.rules]),
                policy_version=policy.version if policy is not None else None,
                created_at=now,
                decided_at=now,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def _record(
        self,
        conn: Connection,
        offer_id: int,
        actor: str,
        outcome: str,
        rule: str,
        decision: Decision | None,
        detail: str,
    ) -> None:
        d = table_of(OfferDecision)
        conn.execute(
            insert(d).values(
                offer_id=offer_id,
                at=time.time(),
                actor=actor,
                outcome=outcome,
                rule=rule,
                detail=detail,
                rules=json.dumps([r.to_json() for r in decision.rules] if decision else []),
            )
        )

    def resume(self, *, settle_seconds: float = 60.0, now: float | None = None) -> list[OfferView]:
        """Relays the offers that were accepted but never relayed (the service stopped in between), so an
        accepted offer is not lost by a crash: each is relayed at most once (the relayer keys requests by
        digest, so one relayed just before the crash is recognised, not sent again); one whose signed
        deadline has passed is marked expired. Offers decided less than ``settle_seconds`` ago are left to
        the request that is relaying them (another replica, or this one). Run at start-up."""
        now = time.time() if now is None else now
        o = table_of(Offer)
        with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(o.c.id, o.c.request, o.c.deadline, o.c.decided_at)
                    .where(o.c.state == ACCEPTED, o.c.decided_at <= now - settle_seconds)
                    .order_by(o.c.id)
                ).mappings()
            ]
        resumed: list[OfferView] = []
        for row in rows:
            if row["deadline"] < now:
                with self.engine.begin() as conn:
                    changed = conn.execute(
                        update(o).where(o.c.id == row["id"], o.c.state == ACCEPTED).values(state=EXPIRED)
                    ).rowcount
                    if changed:
                        detail = "accepted, but its signed deadline passed before it could be relayed"
                        self._record(conn, row["id"], "relayer", EXPIRED, "deadline", None, detail)
                resumed.append(self.get(row["id"]))
                continue
            resumed.append(self._relay(row["id"], parse_request(json.loads(row["request"]))))
        return resumed

    def _relay(self, offer_id: int, request: SignedRequest, *, raise_errors: bool = False) -> OfferView:
        """Relays an accepted offer's request (exactly once: the relayer keys it by digest) and records
        the outcome: ``assigned`` with the transaction, or ``failed`` with the reason."""
        o = table_of(Offer)
        try:
            outcome = self.relayer.submit(request, "assign", wait_indexed=0)
        except Exception as exc:
            message = str(exc)
            with self.engine.begin() as conn:
                conn.execute(update(o).where(o.c.id == offer_id).values(state=FAILED, error=message[:2000]))
                self._record(conn, offer_id, "relayer", FAILED, "relay", None, message[:2000])
            if raise_errors:
                raise
            return self.get(offer_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(o)
                .where(o.c.id == offer_id)
                .values(state=ASSIGNED, tx_hash=outcome.tx_hash, block_number=outcome.block_number)
            )
            self._record(
                conn,
                offer_id,
                "relayer",
                ASSIGNED,
                "relay",
                None,
                f"assigned on-chain in block {outcome.block_number}, transaction {outcome.tx_hash}",
            )
        return self.get(offer_id)

    def _offer_row(self, conn: Connection, offer_id: int) -> dict[str, Any] | None:
        o = table_of(Offer)
        row = conn.execute(select(o).where(o.c.id == offer_id)).mappings().first()
        return None if row is None else dict(row)

    def _offer_by_digest(self, digest: bytes, conn: Connection | None = None) -> OfferView | None:
        o = table_of(Offer)
        if conn is not None:
            row = conn.execute(select(o).where(o.c.digest == digest)).mappings().first()
            return None if row is None else self._view(conn, dict(row))
        with self.engine.connect() as own:
            return self._offer_by_digest(digest, own)

    def _view(self, conn: Connection, row: Mapping[str, Any]) -> OfferView:
        d = table_of(OfferDecision)
        decisions = conn.execute(select(d).where(d.c.offer_id == row["id"]).order_by(d.c.id)).mappings().all()
        state = row["state"]
        if state == QUEUED and row["deadline"] < time.time():
            state = EXPIRED  # nothing can relay it any more (the stored row changes on the next accept)
        return OfferView(
            id=row["id"],
            state=state,
            factor=row["factor"],
            holder=row["holder"],
            signer=row["signer"],
            receivable_id=row["receivable_id"],
            debtor=row["debtor"],
            currency=row["currency"],
            face_value=row["face_value"],
            amount=row["amount"],
            advance=row["advance"],
            recourse=bool(row["recourse"]),
            terms_hash="0x" + bytes(row["terms_hash"]).hex(),
            deadline=row["deadline"],
            rule=row["rule"],
            rules=json.loads(row["rules"]),
            created_at=row["created_at"],
            decided_at=row["decided_at"],
            tx_hash=row["tx_hash"],
            block_number=row["block_number"],
            error=row["error"],
            decisions=[
                {
                    "at": r["at"],
                    "actor": r["actor"],
                    "outcome": r["outcome"],
                    "rule": r["rule"],
                    "detail": r["detail"],
                    "rules": json.loads(r["rules"]),
                }
                for r in decisions
            ],
            request=json.loads(row["request"]),
        )


def _parse_stored(text: str) -> SignedRequest:
    from registry.relay import parse_request

    return parse_request(json.loads(text))


__all__ = [
    "RULES",
    "Decision",
    "Facts",
    "OfferDesk",
    "OfferError",
    "OfferView",
    "OfferedAssignment",
    "Policy",
    "RelayError",
    "RuleResult",
    "evaluate",
    "exposure",
    "near_duplicates_of",
    "open_anomaly_flags",
]
