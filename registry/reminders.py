"""The reminder worker: notices from the mirror, delivered by webhook and e-mail through an outbox.

Runs beside the indexer with the same settings (``ReminderWorker.from_settings(settings).run()``).
"Now" is the indexed chain's time (the cursor block's timestamp), never the wall clock, so notices are
reproducible from the chain and tests drive time by mining blocks.

**Kinds.** For an open receivable (confirmed, assigned, partially paid; unpaid > 0), addressed to the
debtor and the holder: ``due_soon`` (each of ``reminder_days_before`` days before the due date),
``due_today`` (from the start of the due date's UTC day), ``overdue`` (each of ``reminder_overdue_steps``
days after it). ``unconfirmed``: a registration the debtor has not confirmed ``reminder_unconfirmed_days``
after its block, escalated to the debtor (and told to the creditor). ``payment_unacknowledged``: a
payment the debtor reported that the payee has not acknowledged ``reminder_unacknowledged_days`` after
its block, to the payee (and the debtor).

**One notice per reason.** A notice's id is a hash of (kind, receivable, claim, step, recipient, and the
receivable's identifying fields), so a rescan, a restart or a second worker finds the notice it already
made. Each cycle makes, per receivable and recipient, the most advanced step reached (a worker that
catches up after a long pause sends "overdue 30 days", not the five notices before it as well).

**Incremental cycles.** A cycle remembers where it read (:class:`Watermark`: the cursor's block, hash
and time, and the highest receivable and payment-claim row ids it saw). The next cycle, if that block is
still on the mirror's chain, reads only what can have changed: receivables and claims with rows written
since (the indexer appends versions in block order, one writer), receivables whose next step falls due
between the two block times (due-date windows per step, registration and claim blocks by the block
clock), and the notices of those subjects. Nothing else can change: a reason, once reached, holds while
its rows stay the same and time moves forward. The first cycle of a process, and the one after a
rollback below the watermark (a cursor below it, or a hash at its block the mirror no longer has),
rescans everything: a rollback reopens older row versions without a trace, so "what changed since the
common ancestor" cannot be read back from the mirror.

**Reorgs.** The outbox is not part of the mirror's rollback. Each cycle re-checks every active notice
that still has an undelivered delivery, or was made within ``finality_depth`` blocks of the cursor:
if its reason no longer holds at the cursor (the confirmation, the payment or the block time that made
it due was rolled back, or the receivable was paid since), it is **withdrawn** and its pending deliveries
with it: never sent. Delivered ones are never sent again; if the reason comes back, the same id is
re-armed and only its undelivered deliveries are sent.

**Delivery.** Each notice fans out to its recipient's active subscriptions of that kind (one delivery
row each). A delivery is claimed (``sending``, with a lease), sent, then recorded; a failure is retried
with exponential backoff up to ``notify_backoff_cap`` and moved to the dead-letter list after
``notify_max_attempts`` attempts; every attempt is recorded. A crash between send and record leaves the
claim to expire and the notice is sent again with the same id: at-least-once delivery with the notice
id as idempotency key (see registry/notify.py), exactly once for a receiver that dedups by it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from registry.domain import ClaimStatus, Status
from registry.errors import RegistryError
from registry.invoice import format_amount
from registry.notify import DeliveryFailed, Outgoing, SmtpTransport, Transport, WebhookTransport
from registry.settings import Settings
from registry.stats import BlockClock
from registry.store.models import (
    BlockHeader,
    Notice,
    NoticeAttempt,
    NoticeDelivery,
    NoticeSubscription,
    PaymentClaimRow,
    Receivable,
    table_of,
)
from registry.store.queries import freshness

log = logging.getLogger("registry.reminders")

DAY = 86_400


class NoticeKind(StrEnum):
    DUE_SOON = "due_soon"
    DUE_TODAY = "due_today"
    OVERDUE = "overdue"
    UNCONFIRMED = "unconfirmed"
    PAYMENT_UNACKNOWLEDGED = "payment_unacknowledged"


class NoticeState(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEAD = "dead"
    WITHDRAWN = "withdrawn"


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


# Receivables whose unpaid balance someone is still waiting for.
DUE_STATUSES = (Status.CONFIRMED, Status.ASSIGNED, Status.PARTIALLY_PAID)
UNDELIVERED = (DeliveryState.PENDING.value, DeliveryState.SENDING.value)


class InvalidSubscription(RegistryError, ValueError):
    """Raised when a subscription's channel, target or kinds are not acceptable."""


# ---------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rules:
    """When notices fall due, in days of block time."""

    days_before: tuple[int, ...] = (7, 1)
    overdue_steps: tuple[int, ...] = (1, 7, 30)
    unconfirmed_days: int = 5
    unacknowledged_days: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            days_before=tuple(settings.reminder_days_before),
            overdue_steps=tuple(settings.reminder_overdue_steps),
            unconfirmed_days=settings.reminder_unconfirmed_days,
            unacknowledged_days=settings.reminder_unacknowledged_days,
        )

    def due_thresholds(self, due_date: int) -> list[tuple[NoticeKind, int, int]]:
        """(kind, step, block time it falls due) for a receivable due at ``due_date``, in time order."""
        day_start = due_date - due_date % DAY
        out = [(NoticeKind.DUE_SOON, d, due_date - d * DAY) for d in sorted(self.days_before, reverse=True)]
        out.append((NoticeKind.DUE_TODAY, 0, day_start))
        out.extend((NoticeKind.OVERDUE, s, due_date + s * DAY) for s in sorted(self.overdue_steps))
        return sorted(out, key=lambda t: t[2])


@dataclass(frozen=True)
class Candidate:
    """A notice that the mirror, as of one block, says is due."""

    kind: NoticeKind
    step: int
    recipient: int
    receivable: Mapping[str, Any]
    due_at: int
    claim: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        r = self.receivable
        # What the receivable is, not where it was mined: a reorg that re-mines it elsewhere keeps the id.
        basis = [r["creditor"], r["debtor"], r["currency"], r["face_value"], r["due_date"]]
        if self.claim is not None:
            basis += [self.claim["amount"], "0x" + bytes(self.claim["payment_ref"]).hex()]
        key = [str(self.kind), r["id"], self.claim["claim_id"] if self.claim else None, self.step, self.recipient]
        return hashlib.sha256(json.dumps([key, basis], separators=(",", ":")).encode()).hexdigest()

    def payload(self, block: int, timestamp: int) -> dict[str, Any]:
        r = self.receivable
        return {
            "id": self.id,
            "kind": str(self.kind),
            "step": self.step,
            "recipient": self.recipient,
            "due_at": self.due_at,
            "message": self.message(timestamp),
            "receivable": {
                "id": r["id"],
                "status": Status(r["status"]).name.lower(),
                "creditor": r["creditor"],
                "debtor": r["debtor"],
                "holder": r["holder"],
                "currency": r["currency"],
                "face_value": r["face_value"],
                "paid": r["paid"],
                "unpaid": r["face_value"] - r["paid"],
                "due_date": r["due_date"],
            },
            "claim": None
            if self.claim is None
            else {"id": self.claim["claim_id"], "payee": self.claim["payee"], "amount": self.claim["amount"]},
            "as_of": {"block": block, "timestamp": timestamp},
        }

    def message(self, now: int | None = None) -> str:
        """The notice in words; ``now`` (the block time it is made at) gives the days actually left, which
        are fewer than the step's when the receivable was registered or seen late."""
        r = self.receivable
        unpaid = f"{r['currency']} {_grouped(format_amount(r['face_value'] - r['paid'], r['currency']))}"
        due = datetime.fromtimestamp(r["due_date"], UTC).date().isoformat()
        rid = f"Receivable {r['id']}"
        match self.kind:
            case NoticeKind.DUE_SOON:
                days = self.step if now is None else max(1, -(-(r["due_date"] - now) // DAY))
                return f"{rid} ({unpaid} unpaid) falls due in {_days(days)}, on {due}."
            case NoticeKind.DUE_TODAY:
                return f"{rid} ({unpaid} unpaid) is due today, {due}."
            case NoticeKind.OVERDUE:
                return f"{rid} ({unpaid} unpaid) is {_days(self.step)} overdue (due {due})."
            case NoticeKind.UNCONFIRMED:
                return f"{rid} has waited {_days(self.step)} for the debtor's confirmation."
            case NoticeKind.PAYMENT_UNACKNOWLEDGED:
                assert self.claim is not None
                paid = _grouped(format_amount(self.claim["amount"], r["currency"]))
                return (
                    f"Payment claim {self.claim['claim_id']} of {r['currency']} {paid} on {rid} has waited "
                    f"{_days(self.step)} for the payee's acknowledgement."
                )


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _grouped(amount: str) -> str:
    """ "1850600.00" -> "1,850,600.00" (for people; the payload keeps integer minor units)."""
    whole, _, fraction = amount.partition(".")
    sign = "-" if whole.startswith("-") else ""
    grouped = f"{int(whole.lstrip('-')):,}"
    return f"{sign}{grouped}.{fraction}" if fraction else f"{sign}{grouped}"


RECEIVABLE_COLUMNS = ("id", "creditor", "debtor", "holder", "status", "face_value", "paid", "currency", "due_date")


def _recipients(*entities: int) -> list[int]:
    return list(dict.fromkeys(entities))


class Evaluator:
    """Which notices hold at one block: all thresholds reached (``reached``), or the latest per receivable
    and recipient (what a cycle makes)."""

    def __init__(self, rules: Rules, clock: BlockClock, block: int, now: int) -> None:
        self.rules = rules
        self.clock = clock
        self.block = block
        self.now = now

    def block_time(self, block: int) -> int:
        return self.clock.timestamp(block, self.block)

    def due(self, r: Mapping[str, Any]) -> list[Candidate]:
        if Status(r["status"]) not in DUE_STATUSES or r["paid"] >= r["face_value"]:
            return []
        reached = [t for t in self.rules.due_thresholds(r["due_date"]) if t[2] <= self.now]
        return [Candidate(k, s, e, r, at) for k, s, at in reached for e in _recipients(r["debtor"], r["holder"])]

    def unconfirmed(self, r: Mapping[str, Any]) -> list[Candidate]:
        if Status(r["status"]) is not Status.REGISTERED:
            return []
        at = self.block_time(r["registered_block"]) + self.rules.unconfirmed_days * DAY
        if at > self.now:
            return []
        step = self.rules.unconfirmed_days
        return [Candidate(NoticeKind.UNCONFIRMED, step, e, r, at) for e in _recipients(r["debtor"], r["creditor"])]

    def unacknowledged(self, claim: Mapping[str, Any], r: Mapping[str, Any]) -> list[Candidate]:
        if ClaimStatus(claim["status"]) is not ClaimStatus.PENDING:
            return []
        at = self.block_time(claim["valid_from"]) + self.rules.unacknowledged_days * DAY
        if at > self.now:
            return []
        step = self.rules.unacknowledged_days
        return [
            Candidate(NoticeKind.PAYMENT_UNACKNOWLEDGED, step, e, r, at, claim)
            for e in _recipients(claim["payee"], r["debtor"])
        ]

    @staticmethod
    def latest(candidates: list[Candidate]) -> list[Candidate]:
        """Per recipient, the candidate with the latest threshold (``due`` lists them in time order)."""
        best: dict[int, Candidate] = {}
        for c in candidates:
            if c.recipient not in best or c.due_at >= best[c.recipient].due_at:
                best[c.recipient] = c
        return list(best.values())


# ---------------------------------------------------------------------------------------- reads


def _receivable_select() -> Any:
    t = table_of(Receivable)
    return select(*(t.c[name] for name in RECEIVABLE_COLUMNS), t.c.registered_block).where(t.c.valid_to.is_(None))


def _receivables_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    t = table_of(Receivable)
    ids = sorted(set(ids))
    out: dict[int, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        rows = conn.execute(_receivable_select().where(t.c.id.in_(ids[i : i + 500]))).mappings()
        out.update({r["id"]: dict(r) for r in rows})
    return out


def _claim_select() -> Any:
    c = table_of(PaymentClaimRow)
    return select(
        c.c.claim_id, c.c.receivable_id, c.c.payee, c.c.amount, c.c.status, c.c.payment_ref, c.c.valid_from
    ).where(c.c.valid_to.is_(None))


# ---------------------------------------------------------------------------------------- the worker


@dataclass
class CycleReport:
    """What one cycle did."""

    as_of_block: int | None = None
    as_of_timestamp: int | None = None
    scanned: int = 0
    created: int = 0
    rearmed: int = 0
    withdrawn: int = 0
    checked: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    scan_seconds: float = 0.0
    deliver_seconds: float = 0.0
    full: bool = False  # rescanned everything (first cycle, or after a rollback below the watermark)
    since_block: int | None = None  # incremental: read what changed after this block
    created_ids: list[str] = field(default_factory=list, repr=False)
    withdrawn_ids: list[str] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Watermark:
    """Where a cycle read the mirror: the cursor's block, hash and time, and the highest row ids it saw."""

    block: int
    block_hash: str
    timestamp: int
    receivable_row: int
    claim_row: int


def webhook_secret(settings: Settings) -> bytes:
    """``webhook_secret``, else a random key kept in ``data_dir/webhook.secret`` (give it to receivers)."""
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    path = settings.data_dir / "webhook.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


class ReminderWorker:
    """Makes notices from the mirror and delivers them; one cycle per :meth:`run_once`."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        transports: Mapping[Channel, Transport] | None = None,
        block_timestamp: Callable[[int], int] | None = None,
        clock: Callable[[], float] = time.time,
        delivery_batch: int = 1_000,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.rules = Rules.from_settings(settings)
        self.clock = clock
        self.delivery_batch = delivery_batch
        self._chain_timestamp = block_timestamp
        self.block_clock = BlockClock(self._block_timestamp, finality_depth=settings.finality_depth)
        self.transports: dict[Channel, Transport] = dict(transports) if transports is not None else {}
        self._known: dict[str, str] | None = None  # notice id -> state, loaded once
        self._mark: Watermark | None = None  # the last cycle's, once its writes committed
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> ReminderWorker:
        from registry.store.db import make_engine, migrate

        engine = make_engine(settings.database)
        migrate(engine)
        return cls(engine, settings)

    def transport(self, channel: Channel) -> Transport:
        if channel not in self.transports:
            s = self.settings
            if channel is Channel.WEBHOOK:
                self.transports[channel] = WebhookTransport(webhook_secret(s), timeout=s.webhook_timeout)
            else:
                self.transports[channel] = SmtpTransport(s.smtp_host, s.smtp_port, s.smtp_from)
        return self.transports[channel]

    def _block_timestamp(self, block: int) -> int:
        """A block's time: from the mirror's recent headers, else from the node."""
        with self.engine.connect() as conn:
            stamp = conn.execute(select(BlockHeader.timestamp).where(BlockHeader.number == block)).scalar()
        if stamp is not None:
            return int(stamp)
        if self._chain_timestamp is None:
            from registry.chain.client import ChainClient

            s = self.settings
            chain = ChainClient(s.node_url)
            self._chain_timestamp = lambda n: int(chain.get_block(n)["timestamp"], 16)
        return self._chain_timestamp(block)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Cycles every ``reminder_interval`` seconds until :meth:`stop`; a failed cycle is logged and retried."""
        while not self._stop.is_set():
            try:
                report = self.run_once()
                log.info("reminder cycle: %s", report)
            except Exception:
                log.exception("reminder cycle failed; retrying in %.1fs", self.settings.reminder_interval)
            self._stop.wait(self.settings.reminder_interval)

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> CycleReport:
        report = CycleReport()
        t0 = time.perf_counter()
        self.scan(report)
        t1 = time.perf_counter()
        self.deliver(report)
        report.scan_seconds = t1 - t0
        report.deliver_seconds = time.perf_counter() - t1
        return report

    # ------------------------------------------------------------------ scan

    def _snapshot(self, conn: Connection) -> Connection:
        """One consistent view of the mirror for the whole scan (the indexer commits meanwhile)."""
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")
            return conn
        return conn.execution_options(isolation_level="REPEATABLE READ")

    def scan(self, report: CycleReport) -> None:
        with self.engine.connect() as raw:
            conn = self._snapshot(raw)
            fresh = freshness(conn)
            if fresh is None:
                return
            block, now = fresh.block_number, fresh.block_timestamp
            report.as_of_block, report.as_of_timestamp = block, now
            ev = Evaluator(self.rules, self.block_clock, block, now)
            mark = self._mark_at(conn, block, fresh.block_hash, now)
            since = self._since(conn, block, fresh.block_hash)
            if since is None:
                report.full = True
                wanted = self._wanted(conn, ev, report)
                to_check = self._to_check(conn, block)
            else:
                report.since_block = since.block
                wanted, subjects = self._wanted_since(conn, ev, since, report)
                to_check = self._to_check(conn, block, subjects)
            held = self._reached_ids(conn, ev, to_check)
            conn.rollback()
        if self._known is None:
            with self.engine.connect() as conn:
                self._known = {i: s for i, s in conn.execute(select(Notice.id, Notice.state))}
        known = self._known
        new = [c for c in wanted if c.id not in known]
        rearm = [c.id for c in wanted if known.get(c.id) == NoticeState.WITHDRAWN]
        withdraw = [nid for nid, _ in to_check if nid not in held]
        report.checked = len(to_check)
        if not (new or rearm or withdraw):
            self._mark = mark
            return
        wall = self.clock()
        with self.engine.begin() as conn:
            if withdraw:
                self._withdraw(conn, withdraw, wall)
            if rearm:
                self._rearm(conn, rearm, wall)
            if new:
                self._create(conn, new, block, now, wall)
        for nid in withdraw:
            known[nid] = NoticeState.WITHDRAWN
        for nid in rearm:
            known[nid] = NoticeState.ACTIVE
        for c in new:
            known[c.id] = NoticeState.ACTIVE
        self._mark = mark  # only now: a cycle whose writes failed is read again
        report.created, report.rearmed, report.withdrawn = len(new), len(rearm), len(withdraw)
        report.created_ids = [c.id for c in new]
        report.withdrawn_ids = withdraw

    def _wanted(self, conn: Connection, ev: Evaluator, report: CycleReport) -> list[Candidate]:
        """The latest notice due per receivable (or claim) and recipient, as of the scan's block."""
        t = table_of(Receivable)
        horizon = ev.now + max(self.rules.days_before, default=0) * DAY
        out: list[Candidate] = []
        due_rows = conn.execute(
            _receivable_select().where(t.c.status.in_([int(s) for s in DUE_STATUSES]), t.c.due_date <= horizon)
        ).mappings()
        for r in due_rows:
            report.scanned += 1
            out.extend(ev.latest(ev.due(dict(r))))
        # Registrations older than the threshold: every block before the first one at or after it.
        before = ev.clock.first_block_at(ev.now - self.rules.unconfirmed_days * DAY + 1, 0, ev.block)
        for r in conn.execute(
            _receivable_select().where(t.c.status == int(Status.REGISTERED), t.c.registered_block < before)
        ).mappings():
            report.scanned += 1
            out.extend(ev.unconfirmed(dict(r)))
        c = table_of(PaymentClaimRow)
        before = ev.clock.first_block_at(ev.now - self.rules.unacknowledged_days * DAY + 1, 0, ev.block)
        claims = [
            dict(m)
            for m in conn.execute(
                _claim_select().where(c.c.status == int(ClaimStatus.PENDING), c.c.valid_from < before)
            ).mappings()
        ]
        receivables = _receivables_by_id(conn, (cl["receivable_id"] for cl in claims))
        for cl in claims:
            report.scanned += 1
            if cl["receivable_id"] in receivables:
                out.extend(ev.unacknowledged(cl, receivables[cl["receivable_id"]]))
        return out

    def _to_check(
        self, conn: Connection, block: int, subjects: Iterable[int] | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Active notices a reorg or a later transition may have taken the reason from: made within the
        finality depth of the cursor (or above it), or with a delivery still to make; only those about
        ``subjects`` (receivable ids) when given."""
        n, d = table_of(Notice), table_of(NoticeDelivery)
        undelivered = select(d.c.notice_id).where(d.c.state.in_(UNDELIVERED))
        stmt = select(n.c.id, n.c.kind, n.c.receivable_id, n.c.claim_id).where(
            n.c.state == NoticeState.ACTIVE.value,
            or_(n.c.as_of_block > block - self.settings.finality_depth, n.c.id.in_(undelivered)),
        )
        if subjects is None:
            return [(r["id"], dict(r)) for r in conn.execute(stmt).mappings()]
        ids = sorted(set(subjects))
        out: list[tuple[str, dict[str, Any]]] = []
        for i in range(0, len(ids), 500):
            rows = conn.execute(stmt.where(n.c.receivable_id.in_(ids[i : i + 500]))).mappings()
            out.extend((r["id"], dict(r)) for r in rows)
        return out

    # ------------------------------------------------------------------ incremental reads

    @staticmethod
    def _mark_at(conn: Connection, block: int, block_hash: str, now: int) -> Watermark:
        t, c = table_of(Receivable), table_of(PaymentClaimRow)
        top_receivable = conn.execute(select(func.max(t.c.row_id))).scalar()
        top_claim = conn.execute(select(func.max(c.c.row_id))).scalar()
        return Watermark(block, block_hash, now, int(top_receivable or 0), int(top_claim or 0))

    def _since(self, conn: Connection, block: int, block_hash: str) -> Watermark | None:
        """The last cycle's watermark if its block is still on the mirror's chain, else None (rescan all).
        A block without a stored header counts as final once it is ``finality_depth`` below the cursor (the
        indexer refuses deeper reorgs); nearer the cursor, a missing header means it was rolled back."""
        mark = self._mark
        if mark is None or block < mark.block:
            return None
        if block == mark.block:
            return mark if block_hash == mark.block_hash else None
        stored = conn.execute(select(BlockHeader.hash).where(BlockHeader.number == mark.block)).scalar()
        if stored is None:
            return mark if mark.block <= block - self.settings.finality_depth else None
        return mark if stored == mark.block_hash else None

    def _wanted_since(
        self, conn: Connection, ev: Evaluator, since: Watermark, report: CycleReport
    ) -> tuple[list[Candidate], set[int]]:
        """As :meth:`_wanted`, over what can have changed since ``since``: receivables and claims with
        rows written since, and those whose next step falls due in ``(since.timestamp, ev.now]``. Also
        the receivable ids whose rows (or claims' rows) changed, whose notices must be checked again."""
        t, c = table_of(Receivable), table_of(PaymentClaimRow)
        changed = {int(i) for i in conn.execute(select(t.c.id).where(t.c.row_id > since.receivable_row)).scalars()}
        changed_claims = {
            int(i) for i in conn.execute(select(c.c.claim_id).where(c.c.row_id > since.claim_row)).scalars()
        }
        receivables = _receivables_by_id(conn, changed)
        claims: dict[int, dict[str, Any]] = {}
        ids = sorted(changed_claims)
        for i in range(0, len(ids), 500):
            for m in conn.execute(_claim_select().where(c.c.claim_id.in_(ids[i : i + 500]))).mappings():
                claims[m["claim_id"]] = dict(m)
        subjects = changed | {cl["receivable_id"] for cl in claims.values()}
        # A changed receivable's pending claims: their notices carry its fields.
        ids = sorted(changed)
        for i in range(0, len(ids), 500):
            for m in conn.execute(
                _claim_select().where(c.c.status == int(ClaimStatus.PENDING), c.c.receivable_id.in_(ids[i : i + 500]))
            ).mappings():
                claims[m["claim_id"]] = dict(m)
        low, high = since.timestamp, ev.now
        if high > low:
            for row in conn.execute(self._due_window(low, high)).mappings():
                receivables.setdefault(row["id"], dict(row))
            days = self.rules.unconfirmed_days * DAY
            first = ev.clock.first_block_at(low - days + 1, 0, ev.block)
            last = ev.clock.first_block_at(high - days + 1, 0, ev.block)
            if last > first:
                for row in conn.execute(
                    _receivable_select().where(
                        t.c.status == int(Status.REGISTERED),
                        t.c.registered_block >= first,
                        t.c.registered_block < last,
                    )
                ).mappings():
                    receivables.setdefault(row["id"], dict(row))
            days = self.rules.unacknowledged_days * DAY
            first = ev.clock.first_block_at(low - days + 1, 0, ev.block)
            last = ev.clock.first_block_at(high - days + 1, 0, ev.block)
            if last > first:
                for m in conn.execute(
                    _claim_select().where(
                        c.c.status == int(ClaimStatus.PENDING), c.c.valid_from >= first, c.c.valid_from < last
                    )
                ).mappings():
                    claims.setdefault(m["claim_id"], dict(m))
        out: list[Candidate] = []
        for r in receivables.values():
            report.scanned += 1
            out.extend(ev.latest(ev.due(r)))
            out.extend(ev.unconfirmed(r))
        missing = {cl["receivable_id"] for cl in claims.values()} - receivables.keys()
        subjects_rows = {**_receivables_by_id(conn, missing), **receivables}
        for cl in claims.values():
            report.scanned += 1
            if cl["receivable_id"] in subjects_rows:
                out.extend(ev.unacknowledged(cl, subjects_rows[cl["receivable_id"]]))
        return out, subjects

    def _due_window(self, low: int, high: int) -> Any:
        """Open receivables with a due-kind threshold in ``(low, high]``: per step, a due-date range."""
        t = table_of(Receivable)
        due = t.c.due_date
        ranges = [and_(due > low + d * DAY, due <= high + d * DAY) for d in set(self.rules.days_before)]
        ranges += [and_(due > low - s * DAY, due <= high - s * DAY) for s in set(self.rules.overdue_steps)]
        # due today: the UTC day's start (due - due % DAY) in (low, high]
        ranges.append(and_(due >= (low // DAY + 1) * DAY, due < (high // DAY + 1) * DAY))
        return _receivable_select().where(t.c.status.in_([int(s) for s in DUE_STATUSES]), or_(*ranges))

    def _reached_ids(self, conn: Connection, ev: Evaluator, notices: list[tuple[str, dict[str, Any]]]) -> set[str]:
        """Ids of every notice (any step) the mirror still gives a reason for, among these notices' subjects."""
        if not notices:
            return set()
        receivables = _receivables_by_id(conn, (row["receivable_id"] for _, row in notices))
        claim_ids = sorted({row["claim_id"] for _, row in notices if row["claim_id"] is not None})
        c = table_of(PaymentClaimRow)
        claims: list[dict[str, Any]] = []
        for i in range(0, len(claim_ids), 500):
            claims += [
                dict(m)
                for m in conn.execute(_claim_select().where(c.c.claim_id.in_(claim_ids[i : i + 500]))).mappings()
            ]
        held: set[str] = set()
        for r in receivables.values():
            held.update(x.id for x in ev.due(r) + ev.unconfirmed(r))
        for cl in claims:
            subject = receivables.get(cl["receivable_id"])
            if subject is not None:
                held.update(x.id for x in ev.unacknowledged(cl, subject))
        return held

    # ------------------------------------------------------------------ outbox writes

    def _create(self, conn: Connection, new: list[Candidate], block: int, now: int, wall: float) -> None:
        subscriptions = active_subscriptions(conn, {c.recipient for c in new})
        notices = []
        deliveries = []
        for c in new:
            notices.append(
                {
                    "id": c.id,
                    "kind": str(c.kind),
                    "step": c.step,
                    "recipient": c.recipient,
                    "receivable_id": c.receivable["id"],
                    "claim_id": c.claim["claim_id"] if c.claim else None,
                    "due_at": c.due_at,
                    "as_of_block": block,
                    "as_of_timestamp": now,
                    "state": NoticeState.ACTIVE.value,
                    "payload": json.dumps(c.payload(block, now), sort_keys=True, separators=(",", ":")),
                    "created_at": wall,
                    "withdrawn_at": None,
                }
            )
            for sub_id, kinds in subscriptions.get(c.recipient, []):
                if not kinds or c.kind in kinds:
                    deliveries.append(
                        {
                            "notice_id": c.id,
                            "subscription_id": sub_id,
                            "state": DeliveryState.PENDING.value,
                            "attempts": 0,
                            "next_attempt_at": wall,
                            "last_error": None,
                            "delivered_at": None,
                        }
                    )
        for i in range(0, len(notices), 5_000):
            conn.execute(insert(table_of(Notice)), notices[i : i + 5_000])
        for i in range(0, len(deliveries), 5_000):
            conn.execute(insert(table_of(NoticeDelivery)), deliveries[i : i + 5_000])

    def _withdraw(self, conn: Connection, ids: list[str], wall: float) -> None:
        n, d = table_of(Notice), table_of(NoticeDelivery)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            conn.execute(
                update(n).where(n.c.id.in_(chunk)).values(state=NoticeState.WITHDRAWN.value, withdrawn_at=wall)
            )
            conn.execute(
                update(d)
                .where(d.c.notice_id.in_(chunk), d.c.state.in_(UNDELIVERED))
                .values(state=DeliveryState.WITHDRAWN.value)
            )
        log.info("withdrew %d notice(s) whose reason is gone", len(ids))

    def _rearm(self, conn: Connection, ids: list[str], wall: float) -> None:
        n, d = table_of(Notice), table_of(NoticeDelivery)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            conn.execute(update(n).where(n.c.id.in_(chunk)).values(state=NoticeState.ACTIVE.value, withdrawn_at=None))
            conn.execute(
                update(d)
                .where(d.c.notice_id.in_(chunk), d.c.state == DeliveryState.WITHDRAWN.value)
                .values(state=DeliveryState.PENDING.value, next_attempt_at=wall)
            )

    # ------------------------------------------------------------------ delivery

    def deliver(self, report: CycleReport) -> None:
        """Sends every delivery whose time has come (pending, or a claim whose lease ran out)."""
        d, s, n = table_of(NoticeDelivery), table_of(NoticeSubscription), table_of(Notice)
        while not self._stop.is_set():
            now = self.clock()
            with self.engine.connect() as conn:
                rows = (
                    conn.execute(
                        select(d.c.id, d.c.state, d.c.attempts, s.c.channel, s.c.target, n.c.id.label("notice_id"))
                        .add_columns(n.c.kind, n.c.payload)
                        .join(s, s.c.id == d.c.subscription_id)
                        .join(n, n.c.id == d.c.notice_id)
                        .where(d.c.state.in_(UNDELIVERED), d.c.next_attempt_at <= now)
                        .order_by(d.c.next_attempt_at, d.c.id)
                        .limit(self.delivery_batch)
                    )
                    .mappings()
                    .all()
                )
            if not rows:
                return
            for row in rows:
                self._deliver_one(dict(row), report)
            if len(rows) < self.delivery_batch:
                return

    def _deliver_one(self, row: Mapping[str, Any], report: CycleReport) -> None:
        d = table_of(NoticeDelivery)
        attempt = row["attempts"] + 1
        now = self.clock()
        with self.engine.begin() as conn:  # claim: only one sender gets a given attempt
            claimed = conn.execute(
                update(d)
                .where(d.c.id == row["id"], d.c.state == row["state"], d.c.attempts == row["attempts"])
                .values(
                    state=DeliveryState.SENDING.value,
                    attempts=attempt,
                    next_attempt_at=now + self.settings.notify_lease,
                )
            ).rowcount
        if claimed != 1:
            return
        payload = json.loads(row["payload"])
        message = Outgoing(
            notice_id=row["notice_id"],
            kind=row["kind"],
            subject=f"[registry] {row['kind'].replace('_', ' ')}: receivable {payload['receivable']['id']}",
            body=row["payload"].encode(),
            text=payload["message"] + f"\n\nNotice {row['notice_id']} (as of block {payload['as_of']['block']}).\n",
        )
        error: str | None = None
        try:
            self.transport(Channel(row["channel"])).send(row["target"], message)
        except DeliveryFailed as exc:
            error = str(exc)
        now = self.clock()
        values: dict[str, Any]
        if error is None:
            values = {"state": DeliveryState.DELIVERED.value, "delivered_at": now, "last_error": None}
            report.delivered += 1
        elif attempt >= self.settings.notify_max_attempts:
            values = {"state": DeliveryState.DEAD.value, "last_error": error}
            report.dead += 1
            log.warning(
                "notice %s to %s is a dead letter after %d attempts: %s",
                row["notice_id"],
                row["target"],
                attempt,
                error,
            )
        else:
            delay = backoff(attempt, self.settings)
            values = {"state": DeliveryState.PENDING.value, "next_attempt_at": now + delay, "last_error": error}
            report.failed += 1
        with self.engine.begin() as conn:
            conn.execute(
                update(d)
                .where(d.c.id == row["id"], d.c.state == DeliveryState.SENDING.value, d.c.attempts == attempt)
                .values(values)
            )
            conn.execute(
                insert(table_of(NoticeAttempt)).values(
                    delivery_id=row["id"], attempt=attempt, at=now, ok=error is None, detail=error
                )
            )


def backoff(attempt: int, settings: Settings) -> float:
    from registry.notify import backoff_delay

    return backoff_delay(attempt, settings.notify_backoff, settings.notify_backoff_cap)


# ---------------------------------------------------------------------------------------- store (API)

_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")


def validate_subscription(channel: str, target: str, kinds: Iterable[str]) -> tuple[Channel, str, str]:
    """(channel, target, kinds column) or :class:`InvalidSubscription` naming the field."""
    try:
        ch = Channel(channel)
    except ValueError:
        raise InvalidSubscription(f"channel: one of {', '.join(c.value for c in Channel)}") from None
    if ch is Channel.WEBHOOK:
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(ch in target for ch in "\r\n "):
            raise InvalidSubscription("target: a webhook must be an http(s) URL with a host")
    elif not _EMAIL.match(target) or len(target) > 254:
        raise InvalidSubscription("target: not an e-mail address")
    names = sorted(set(kinds))
    known = {k.value for k in NoticeKind}
    unknown = [k for k in names if k not in known]
    if unknown:
        raise InvalidSubscription(f"kinds: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return ch, target, ",".join(names)


def subscription_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**row, "kinds": [k for k in row["kinds"].split(",") if k], "active": bool(row["active"])}


def active_subscriptions(conn: Connection, entities: set[int]) -> dict[int, list[tuple[int, frozenset[str]]]]:
    s = table_of(NoticeSubscription)
    out: dict[int, list[tuple[int, frozenset[str]]]] = {}
    ids = sorted(entities)
    for i in range(0, len(ids), 500):
        rows = conn.execute(
            select(s.c.id, s.c.entity_id, s.c.kinds).where(s.c.active.is_(True), s.c.entity_id.in_(ids[i : i + 500]))
        )
        for sub_id, entity, kinds in rows:
            out.setdefault(entity, []).append((sub_id, frozenset(k for k in kinds.split(",") if k)))
    return out


def list_subscriptions(conn: Connection, entity: int) -> list[dict[str, Any]]:
    s = table_of(NoticeSubscription)
    rows = conn.execute(select(s).where(s.c.entity_id == entity, s.c.active.is_(True)).order_by(s.c.id)).mappings()
    return [subscription_row(dict(r)) for r in rows]


def get_subscription(conn: Connection, entity: int, sub_id: int) -> dict[str, Any] | None:
    s = table_of(NoticeSubscription)
    row = (
        conn.execute(select(s).where(s.c.id == sub_id, s.c.entity_id == entity, s.c.active.is_(True)))
        .mappings()
        .first()
    )
    return subscription_row(dict(row)) if row else None


def create_subscription(
    conn: Connection, entity: int, channel: str, target: str, kinds: Iterable[str]
) -> dict[str, Any]:
    ch, target, kinds_column = validate_subscription(channel, target, kinds)
    s = table_of(NoticeSubscription)
    sub_id = conn.execute(
        insert(s).values(
            entity_id=entity, channel=ch.value, target=target, kinds=kinds_column, active=True, created_at=time.time()
        )
    ).inserted_primary_key
    assert sub_id is not None
    found = get_subscription(conn, entity, int(sub_id[0]))
    assert found is not None
    return found


def update_subscription(
    conn: Connection, entity: int, sub_id: int, channel: str, target: str, kinds: Iterable[str]
) -> dict[str, Any] | None:
    ch, target, kinds_column = validate_subscription(channel, target, kinds)
    s = table_of(NoticeSubscription)
    changed = conn.execute(
        update(s)
        .where(s.c.id == sub_id, s.c.entity_id == entity, s.c.active.is_(True))
        .values(channel=ch.value, target=target, kinds=kinds_column)
    ).rowcount
    return get_subscription(conn, entity, sub_id) if changed else None


def delete_subscription(conn: Connection, entity: int, sub_id: int) -> bool:
    """Deactivates the subscription (its dead letters stay visible) and withdraws its pending deliveries."""
    s, d = table_of(NoticeSubscription), table_of(NoticeDelivery)
    changed = conn.execute(
        update(s).where(s.c.id == sub_id, s.c.entity_id == entity, s.c.active.is_(True)).values(active=False)
    ).rowcount
    if changed:
        conn.execute(
            update(d)
            .where(d.c.subscription_id == sub_id, d.c.state.in_(UNDELIVERED))
            .values(state=DeliveryState.WITHDRAWN.value)
        )
    return bool(changed)


def list_notices(
    conn: Connection,
    recipient: int | None,
    *,
    kind: str | None = None,
    state: str | None = None,
    receivable_id: int | None = None,
    after: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Notices addressed to ``recipient`` (every notice when None), oldest first, after sequence ``after``."""
    n, d = table_of(Notice), table_of(NoticeDelivery)
    stmt = select(n).where(n.c.seq > after)
    if recipient is not None:
        stmt = stmt.where(n.c.recipient == recipient)
    if kind is not None:
        stmt = stmt.where(n.c.kind == kind)
    if state is not None:
        stmt = stmt.where(n.c.state == state)
    if receivable_id is not None:
        stmt = stmt.where(n.c.receivable_id == receivable_id)
    rows = [dict(r) for r in conn.execute(stmt.order_by(n.c.seq).limit(limit)).mappings()]
    counts: dict[str, dict[str, int]] = {}
    ids = [r["id"] for r in rows]
    if ids:
        for nid, st, k in conn.execute(
            select(d.c.notice_id, d.c.state, func.count())
            .where(d.c.notice_id.in_(ids))
            .group_by(d.c.notice_id, d.c.state)
        ):
            counts.setdefault(nid, {})[st] = int(k)
    for r in rows:
        r["payload"] = json.loads(r["payload"])
        r["deliveries"] = counts.get(r["id"], {})
    return rows


def dead_letters(conn: Connection, entity: int | None, *, after: int = 0, limit: int = 50) -> list[dict[str, Any]]:
    """Deliveries that gave up, to ``entity``'s subscriptions (all when None), with the notice and last error."""
    d, s, n = table_of(NoticeDelivery), table_of(NoticeSubscription), table_of(Notice)
    stmt = (
        select(
            d.c.id,
            d.c.notice_id,
            d.c.subscription_id,
            d.c.attempts,
            d.c.last_error,
            s.c.entity_id,
            s.c.channel,
            s.c.target,
            n.c.kind,
            n.c.receivable_id,
        )
        .join(s, s.c.id == d.c.subscription_id)
        .join(n, n.c.id == d.c.notice_id)
        .where(d.c.state == DeliveryState.DEAD.value, d.c.id > after)
    )
    if entity is not None:
        stmt = stmt.where(s.c.entity_id == entity)
    return [dict(r) for r in conn.execute(stmt.order_by(d.c.id).limit(limit)).mappings()]


def retry_dead_letter(conn: Connection, delivery_id: int, entity: int | None, *, now: float | None = None) -> bool:
    """Puts a dead letter back in the queue for a fresh round of attempts; False if no such dead letter
    (of ``entity``'s subscriptions, unless None)."""
    d, s = table_of(NoticeDelivery), table_of(NoticeSubscription)
    owned = select(s.c.id).where(s.c.active.is_(True))
    if entity is not None:
        owned = owned.where(s.c.entity_id == entity)
    changed = conn.execute(
        update(d)
        .where(and_(d.c.id == delivery_id, d.c.state == DeliveryState.DEAD.value, d.c.subscription_id.in_(owned)))
        .values(state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=now if now is not None else time.time())
    ).rowcount
    return bool(changed)
