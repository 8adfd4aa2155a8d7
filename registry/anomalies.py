"""Anomaly flags over the SQL mirror (issue 6, "Anomaly flags").

Rules and simple statistics, one detector per :class:`Kind`; each reads the mirror *as of* a block and
returns :class:`Flag` s for the events in a window of blocks ``(since_block, as_of_block]``:

``amount_outlier``
    The face value is far outside the debtor's history: robust z-score (Iglewicz and Hoaglin's
    ``0.6745 (x - median) / MAD``) of ``log(face value)`` against the debtor's previous
    ``history_window`` original registrations in the same currency (split parts excluded). Needs
    ``min_history`` of them.
``burst``
    Many invoices to one debtor in a short time: the registrations to the debtor within ``burst_window``
    seconds up to each new registration, against a Poisson expectation from the debtor's own rate over
    the ``burst_lookback`` before that window (smoothed towards ``burst_prior_per_day`` for a debtor with
    little history). Every registration inside a significant window is flagged (the burst, not only the
    one that completed it). Score: ``-log10`` of the Poisson tail probability.
``rapid_reassignment``
    An assignment chain: ``reassign_min_hops`` or more assignments of one receivable within
    ``reassign_window`` seconds, or a chain that returns to an earlier holder (round-tripping).
``late_registration``
    Registered just before the due date: less than ``late_days`` left *and* less than ``late_fraction``
    of the payment term (so that short-term invoices registered promptly pass).
``near_duplicate``
    The mirror's side of :mod:`registry.checks`: a registration with the same debtor, currency, face value
    and due date as an *earlier* live registration of another invoice, or the same non-zero document hash
    (``NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE`` / ``SAME_DOCUMENT_HASH``, severity from their
    ``risk``). The later registration is flagged and names the earlier one (``related_id``). A split part
    or the same invoice number (same debtor and number hash) is never its own near-duplicate, as in the
    checker. ``SIMILAR_INVOICE_NUMBER`` cannot be computed here: the mirror holds number hashes only, and
    the checker needs the plaintext number of the invoice being checked (it runs at registration time).
``confirmation_speed``
    The debtor confirmed far faster or slower than it usually does: robust z-score of
    ``log(latency + confirm_floor)`` (latency = confirmation time - registration time) against the debtor's
    previous ``history_window`` confirmations.

Severity (low / medium / high) comes from how extreme the statistic is; the cut-offs are in
:class:`AnomalyParams`, whose defaults were set on generated ledgers (``scripts/anomalies.py``, two seeds).

Time
    Block numbers become Unix times through :class:`BlockClock`: the stored block headers (the indexer
    keeps a window of them), the cursor, and the anchors the scanner itself keeps
    (``anomaly_scan_blocks``: a block with events and its exact time, recorded while the header was still
    there); a block between anchors is interpolated linearly (blocks come at a fixed interval on the
    production chain).

Incremental scanning, reorgs (:class:`Scanner`)
    Flags are keyed by (kind, receivable id): a rescan updates a flag, never duplicates it. The scanner's
    watermark is its highest ``anomaly_scan_blocks`` row; each run scans ``(watermark, cursor]``. Every
    detector looks back only through the debtor's history, so scanning a ledger in one window or in many
    gives the same flags, with one exception: a near-duplicate is judged against registrations live at the
    scan's block, so an earlier registration cancelled later counts in a scan before its cancellation and
    not in one after (1 flag of 20,046 receivables differed between 1 and 10 windows on a generated ledger).
    A reorg shows as a watermark above the cursor or a watermark hash the mirror no
    longer has: the scanner finds the common ancestor among its anchors, retires the open flags whose
    ``evidence_block`` is above it (the evidence was rolled back with the mirror's rows, whose
    ``valid_from`` is above it too), forgets its anchors above it and rescans from it; a flag whose
    evidence is on the new fork as well is reopened. A flag whose receivable has no current row is
    retired too. A cleared flag stays cleared: a person judged that receivable for that kind.

Wiring
    ``Scanner(...).run_once(engine)`` is the worker's call; ``Scanner.hook(engine)`` adapts it to the
    indexer's ``on_batch(last_block, events)`` callback, called after each committed batch.

Who sees and clears a flag
    A flag is visible to whoever may read its receivable (its creditor, debtor, current or earlier holder;
    an auditor sees all; the consortium admin none): :func:`list_flags` takes the same
    :class:`~registry.store.queries.Visibility` as receivable reads. It may be cleared, with a non-empty
    note, by the receivable's **current holder** (the creditor before assignment, the factor after: the
    party that bears the risk and may finance or refinance it) or by an **auditor**; not by the debtor,
    which may itself be the subject of the flag, nor by an earlier holder (:func:`clear_flag`).
"""

from __future__ import annotations

import bisect
import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final, Protocol

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from registry.checks import NearDuplicateReason, Risk
from registry.domain import Status
from registry.errors import RegistryError
from registry.invoice import ZERO_HASH
from registry.store.models import (
    AnomalyFlag,
    AnomalyScanBlock,
    Assignment,
    BlockHeader,
    Cursor,
    RawEvent,
    Receivable,
    table_of,
)
from registry.store.queries import Visibility, visible_clause

__all__ = [
    "DETECTORS",
    "AnomalyParams",
    "BlockClock",
    "Detector",
    "Flag",
    "FlagNotFound",
    "FlagState",
    "InvalidNote",
    "Kind",
    "MirrorView",
    "NotEntitledToClear",
    "ScanReport",
    "Scanner",
    "Severity",
    "clear_flag",
    "list_flags",
    "open_flags",
    "readable_ids",
    "scan",
]

DAY: Final = 86_400
HOUR: Final = 3_600


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------


class Kind(StrEnum):
    AMOUNT_OUTLIER = "amount_outlier"
    BURST = "burst"
    RAPID_REASSIGNMENT = "rapid_reassignment"
    LATE_REGISTRATION = "late_registration"
    NEAR_DUPLICATE = "near_duplicate"
    CONFIRMATION_SPEED = "confirmation_speed"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK: Final = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2}
_RISK_SEVERITY: Final = {Risk.HIGH: Severity.HIGH, Risk.MEDIUM: Severity.MEDIUM}


class FlagState(StrEnum):
    OPEN = "open"
    CLEARED = "cleared"
    RETIRED = "retired"


class FlagNotFound(RegistryError):
    """Raised when a flag id does not exist or is not visible to the caller."""


class InvalidNote(RegistryError, ValueError):
    """Raised when a flag is cleared without a note (or with one too long)."""


class NotEntitledToClear(RegistryError):
    """Raised when someone other than the receivable's current holder or an auditor clears a flag."""


class FlagNotOpen(RegistryError):
    """Raised when clearing a flag that is already cleared or retired."""


@dataclass(frozen=True, slots=True)
class Flag:
    """What a detector found: the receivable, why, how severe, and the newest block of its evidence."""

    kind: Kind
    receivable_id: int
    severity: Severity
    score: float
    reason: str
    evidence_block: int
    related_id: int | None = None


@dataclass(frozen=True)
class AnomalyParams:
    """Detector parameters; every default is documented and was set on generated ledgers (two seeds)."""

    # -- shared by the robust z-scores (amount, confirmation speed)
    z_threshold: float = 4.5
    """Flag at ``|z| >=`` this. Iglewicz and Hoaglin's cut-off for one test is 3.5; a ledger runs one test per
    registration, and on generated ledgers (seed 1) 3.5 flagged about as many normal registrations as
    injected ones (estimates from 15-200 points have heavier tails than the normal)."""
    z_medium: float = 6.0
    z_high: float = 9.0
    history_window: int = 200
    """The debtor's most recent registrations (confirmations) a statistic is computed over."""

    # -- amount_outlier
    amount_min_history: int = 20
    """Fewer earlier registrations to the debtor in the currency than this: no opinion."""

    # -- burst
    burst_window: int = 6 * HOUR
    burst_lookback: int = 90 * DAY
    burst_min_count: int = 8
    """At least this many registrations to one debtor inside ``burst_window`` (batches of a few are normal)."""
    burst_prior_per_day: float = 1.0
    burst_prior_days: float = 7.0
    """The debtor's rate is smoothed with this many days at ``burst_prior_per_day`` (new debtors)."""
    burst_threshold: float = 10.0
    """Flag when the Poisson tail probability is below ``10 ** -burst_threshold`` (a low bar for one test,
    but there is one per registration, and submissions do not arrive as a Poisson process)."""
    burst_medium: float = 14.0
    burst_high: float = 20.0

    # -- rapid_reassignment
    reassign_window: int = 7 * DAY
    reassign_min_hops: int = 3
    """Assignments (the first one included) within ``reassign_window``: 3 = assigned and re-assigned twice."""
    reassign_fast: int = DAY
    """A chain of the minimum length inside this span is medium; a cycle or 2 hops more than the minimum is high."""

    # -- late_registration
    late_days: float = 5.0
    late_fraction: float = 0.1
    late_medium_days: float = 3.0
    late_high_days: float = 1.0

    # -- confirmation_speed
    confirm_min_history: int = 15
    confirm_floor: int = 60
    """Seconds added to every latency before the logarithm (a confirmation in the registration's block is 0 s)."""


# ---------------------------------------------------------------------------------------------
# Time: block numbers to Unix seconds
# ---------------------------------------------------------------------------------------------


class BlockClock:
    """Unix time of a block from anchors (block, timestamp): exact at an anchor, linear between two,
    extrapolated at ``default_block_time`` (or the nearest anchors' pace) beyond them."""

    def __init__(self, anchors: Iterable[tuple[int, int]], default_block_time: float = 1.0) -> None:
        merged = dict(anchors)
        self.blocks = sorted(merged)
        self.times = [merged[b] for b in self.blocks]
        self.default_block_time = default_block_time

    @classmethod
    def load(cls, conn: Connection, as_of_block: int) -> BlockClock:
        h, s, c = table_of(BlockHeader), table_of(AnomalyScanBlock), table_of(Cursor)
        anchors = [
            (int(n), int(t))
            for n, t in conn.execute(select(s.c.block_number, s.c.timestamp).where(s.c.block_number <= as_of_block))
        ]
        anchors += [(int(n), int(t)) for n, t in conn.execute(select(h.c.number, h.c.timestamp))]
        anchors += [(int(n), int(t)) for n, t in conn.execute(select(c.c.block_number, c.c.block_timestamp))]
        return cls(anchors)

    def __call__(self, block: int) -> float:
        blocks, times = self.blocks, self.times
        if not blocks:
            return block * self.default_block_time
        i = bisect.bisect_left(blocks, block)
        if i < len(blocks) and blocks[i] == block:
            return float(times[i])
        if 0 < i < len(blocks):
            b0, b1, t0, t1 = blocks[i - 1], blocks[i], times[i - 1], times[i]
            return t0 + (t1 - t0) * (block - b0) / (b1 - b0)
        pace = self.default_block_time
        if len(blocks) >= 2:
            j = 0 if i == 0 else len(blocks) - 2
            span = blocks[j + 1] - blocks[j]
            pace = max(0.0, (times[j + 1] - times[j]) / span) if span else pace
        if i == 0:
            return times[0] - (blocks[0] - block) * pace
        return times[-1] + (block - blocks[-1]) * pace


# ---------------------------------------------------------------------------------------------
# The mirror as of one block (loaded lazily, shared by the detectors of one scan)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    id: int
    creditor: int
    debtor: int
    holder: int
    status: Status
    face_value: int
    currency: str
    issue_date: int
    due_date: int
    number_hash: bytes | None
    document_hash: bytes | None
    block: int


@dataclass(frozen=True, slots=True)
class Confirmation:
    block: int
    log_index: int
    receivable_id: int
    debtor: int


_R = table_of(Receivable)
_A = table_of(Assignment)
_E = table_of(RawEvent)
_F = table_of(AnomalyFlag)
_S = table_of(AnomalyScanBlock)
_CHUNK: Final = 500


def _valid_at(block: int) -> Any:
    return and_(_R.c.valid_from <= block, or_(_R.c.valid_to.is_(None), _R.c.valid_to > block))


_REG_COLUMNS: Final = (
    _R.c.id,
    _R.c.creditor,
    _R.c.debtor,
    _R.c.holder,
    _R.c.status,
    _R.c.face_value,
    _R.c.currency,
    _R.c.issue_date,
    _R.c.due_date,
    _R.c.number_hash,
    _R.c.document_hash,
    _R.c.registered_block,
)


def _registration(row: Any) -> Registration:
    doc = None if row.document_hash is None or bytes(row.document_hash) == ZERO_HASH else bytes(row.document_hash)
    return Registration(
        id=int(row.id),
        creditor=int(row.creditor),
        debtor=int(row.debtor),
        holder=int(row.holder),
        status=Status(row.status),
        face_value=int(row.face_value),
        currency=str(row.currency),
        issue_date=int(row.issue_date),
        due_date=int(row.due_date),
        number_hash=None if row.number_hash is None else bytes(row.number_hash),
        document_hash=doc,
        block=int(row.registered_block),
    )


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class MirrorView:
    """The mirror as of ``as_of_block``: original registrations (split parts excluded), confirmations and
    assignments, read on demand and cached for the detectors of one scan."""

    conn: Connection
    as_of_block: int
    clock: BlockClock = field(init=False)
    _by_debtor: dict[int, list[Registration]] = field(default_factory=dict, init=False)
    _confirmations: list[Confirmation] | None = field(default=None, init=False)
    _new: dict[int, list[Registration]] = field(default_factory=dict, init=False)
    _logs: dict[tuple[int, str], tuple[list[int], list[float]]] = field(default_factory=dict, init=False)
    _valid: Any = field(init=False)

    def __post_init__(self) -> None:
        self.clock = BlockClock.load(self.conn, self.as_of_block)
        cursor = self.conn.execute(select(Cursor.block_number)).scalar()
        # At the cursor, "valid at the block" is "current": the partial indexes on current rows apply.
        current = cursor is not None and self.as_of_block >= int(cursor)
        self._valid = _R.c.valid_to.is_(None) if current else _valid_at(self.as_of_block)

    def _originals(self) -> Any:
        return select(*_REG_COLUMNS).where(
            self._valid, _R.c.parent_id.is_(None), _R.c.registered_block <= self.as_of_block
        )

    def new_registrations(self, since_block: int) -> list[Registration]:
        """Original registrations in ``(since_block, as_of_block]``, by id."""
        if since_block not in self._new:
            rows = self.conn.execute(self._originals().where(_R.c.registered_block > since_block).order_by(_R.c.id))
            new = self._new[since_block] = [_registration(r) for r in rows]
            if since_block < 0:  # everything: the debtors' histories too
                by_debtor: dict[int, list[Registration]] = defaultdict(list)
                for reg in new:
                    by_debtor[reg.debtor].append(reg)
                self._by_debtor.update(by_debtor)
        return self._new[since_block]

    def log_amounts(self, debtor: int, currency: str) -> tuple[list[int], list[float]]:
        """Ids and log face values of the debtor's registrations in ``currency`` (cached)."""
        key = (debtor, currency)
        cached = self._logs.get(key)
        if cached is None:
            regs = [r for r in self.registrations_of([debtor])[debtor] if r.currency == currency and r.face_value > 0]
            cached = self._logs[key] = ([r.id for r in regs], [math.log(r.face_value) for r in regs])
        return cached

    def registrations_of(self, debtors: Iterable[int]) -> dict[int, list[Registration]]:
        """Every original registration to each debtor up to the as-of block, by id."""
        wanted = sorted({d for d in debtors if d not in self._by_debtor})
        for chunk in _chunks(wanted):
            found: dict[int, list[Registration]] = {d: [] for d in chunk}
            for row in self.conn.execute(self._originals().where(_R.c.debtor.in_(chunk)).order_by(_R.c.id)):
                reg = _registration(row)
                found[reg.debtor].append(reg)
            self._by_debtor.update(found)
        return {d: self._by_debtor[d] for d in debtors}

    def by_document(self, hashes: Sequence[bytes]) -> list[Registration]:
        out: list[Registration] = []
        for chunk in _chunks(sorted(set(hashes))):
            rows = self.conn.execute(self._originals().where(_R.c.document_hash.in_(chunk)).order_by(_R.c.id))
            out += [_registration(r) for r in rows]
        return out

    def registered_blocks(self, ids: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for chunk in _chunks(sorted(set(ids))):
            rows = self.conn.execute(select(_R.c.id, _R.c.registered_block).where(self._valid, _R.c.id.in_(chunk)))
            out.update({int(i): int(b) for i, b in rows})
        return out

    def confirmations(self) -> list[Confirmation]:
        """Every ``ReceivableConfirmed`` event up to the as-of block, in chain order."""
        if self._confirmations is None:
            rows = self.conn.execute(
                select(_E.c.block_number, _E.c.log_index, _E.c.args)
                .where(_E.c.name == "ReceivableConfirmed", _E.c.block_number <= self.as_of_block)
                .order_by(_E.c.block_number, _E.c.log_index)
            )
            out = []
            for block, log_index, args in rows:
                fields = json.loads(args)
                out.append(Confirmation(int(block), int(log_index), int(fields["id"]), int(fields["debtor"])))
            self._confirmations = out
        return self._confirmations

    def assigned_since(self, since_block: int) -> list[int]:
        rows = self.conn.execute(
            select(_A.c.receivable_id)
            .distinct()
            .where(_A.c.block_number > since_block, _A.c.block_number <= self.as_of_block)
        )
        return sorted(int(r[0]) for r in rows)

    def assignments_of(self, ids: Sequence[int]) -> dict[int, list[tuple[int, int, int]]]:
        """receivable id -> [(block, from, to)] in chain order, up to the as-of block."""
        out: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for chunk in _chunks(sorted(set(ids))):
            rows = self.conn.execute(
                select(_A.c.receivable_id, _A.c.block_number, _A.c.from_entity, _A.c.to_entity)
                .where(_A.c.receivable_id.in_(chunk), _A.c.block_number <= self.as_of_block)
                .order_by(_A.c.receivable_id, _A.c.block_number, _A.c.log_index)
            )
            for rid, block, frm, to in rows:
                out[int(rid)].append((int(block), int(frm), int(to)))
        return out


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

_MAD_SCALE: Final = 0.6745  # Phi^-1(3/4): makes the MAD a consistent estimator of sigma
_MEAN_AD_SCALE: Final = 0.7979  # sqrt(2/pi): the same for the mean absolute deviation (MAD == 0 fallback)
_Z_CAP: Final = 99.0


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def robust_z(value: float, history: Sequence[float]) -> float:
    """Iglewicz and Hoaglin's modified z-score of ``value`` against ``history``; when over half the history
    is one value (MAD 0) the mean absolute deviation is used; a value off a constant history is capped."""
    med = _median(sorted(history))
    mad = _median(sorted([abs(x - med) for x in history]))
    if mad > 0:
        z = _MAD_SCALE * (value - med) / mad
    else:
        mean_ad = statistics.fmean([abs(x - med) for x in history])
        if mean_ad > 0:
            z = _MEAN_AD_SCALE * (value - med) / mean_ad
        else:
            z = 0.0 if value == med else math.copysign(_Z_CAP, value - med)
    return max(-_Z_CAP, min(_Z_CAP, z))


def poisson_tail_log10(k: int, mu: float) -> float:
    """``-log10 P(X >= k)`` for ``X ~ Poisson(mu)``: how surprising ``k`` events are where ``mu`` were expected."""
    if k <= 0:
        return 0.0
    if mu <= 0:
        return 300.0
    log_term = -mu + k * math.log(mu) - math.lgamma(k + 1)
    # Sum the tail term by term (ratios mu / (i + 1)), in units of the first term.
    total, term, i = 1.0, 1.0, k
    while term > 1e-17 * total and i < k + 100_000:
        term *= mu / (i + 1)
        total += term
        i += 1
    log_p = log_term + math.log(total)
    return max(0.0, -log_p / math.log(10))


def _z_severity(z: float, p: AnomalyParams) -> Severity | None:
    a = abs(z)
    if a >= p.z_high:
        return Severity.HIGH
    if a >= p.z_medium:
        return Severity.MEDIUM
    if a >= p.z_threshold:
        return Severity.LOW
    return None


def _days(seconds: float) -> str:
    if abs(seconds) < HOUR:
        return f"{seconds / 60:.0f} min"
    if abs(seconds) < DAY:
        return f"{seconds / HOUR:.1f} h"
    return f"{seconds / DAY:.1f} days"


# ---------------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------------


class Detector(Protocol):
    kind: Kind

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        """Flags for the events in ``(since_block, view.as_of_block]``."""
        ...


@dataclass(frozen=True)
class _Base:
    params: AnomalyParams = field(default_factory=AnomalyParams)
    kind: ClassVar[Kind]

    def scan(self, conn: Connection, as_of_block: int, since_block: int = -1) -> list[Flag]:
        """This detector's flags for the events in ``(since_block, as_of_block]`` of the mirror on ``conn``."""
        return self.detect(MirrorView(conn, as_of_block), since_block)

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        raise NotImplementedError


@dataclass(frozen=True)
class AmountOutlier(_Base):
    kind: ClassVar[Kind] = Kind.AMOUNT_OUTLIER

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        p = self.params
        flags = []
        for reg in view.new_registrations(since_block):
            ids, logs = view.log_amounts(reg.debtor, reg.currency)
            end = bisect.bisect_left(ids, reg.id)
            earlier = logs[max(0, end - p.history_window) : end]
            if len(earlier) < p.amount_min_history or reg.face_value <= 0:
                continue
            z = robust_z(math.log(reg.face_value), earlier)
            severity = _z_severity(z, p)
            if severity is None:
                continue
            median = math.exp(statistics.median(earlier))
            ratio = reg.face_value / median
            direction = f"{ratio:.1f}x" if ratio >= 1 else f"1/{1 / ratio:.1f}"
            flags.append(
                Flag(
                    self.kind,
                    reg.id,
                    severity,
                    round(z, 3),
                    f"face value {direction} the debtor's median in {reg.currency} over its last {len(earlier)} "
                    f"registrations (robust z {z:+.1f})",
                    reg.block,
                )
            )
        return flags


@dataclass(frozen=True)
class Burst(_Base):
    kind: ClassVar[Kind] = Kind.BURST

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        p = self.params
        new = view.new_registrations(since_block)
        history = view.registrations_of({r.debtor for r in new})
        clock = view.clock
        best: dict[int, Flag] = {}
        new_ids = {r.id for r in new}
        for debtor, regs in history.items():
            times = [clock(r.block) for r in regs]  # by id == registration order
            # Submissions (one creditor's registrations in one block: a batch) so far, as a prefix count.
            submissions = [0]
            seen: set[tuple[int, int]] = set()
            for r in regs:
                fresh = (r.creditor, r.block) not in seen
                seen.add((r.creditor, r.block))
                submissions.append(submissions[-1] + fresh)
            first = times[0] if times else 0.0
            for j, reg in enumerate(regs):
                if reg.id not in new_ids:
                    continue
                t = times[j]
                lo = bisect.bisect_left(times, t - p.burst_window, 0, j + 1)
                count = j + 1 - lo
                if count < p.burst_min_count:
                    continue
                start = t - p.burst_window
                base_lo = bisect.bisect_left(times, start - p.burst_lookback, 0, lo)
                span_days = max(0.0, min(p.burst_lookback, start - first)) / DAY
                base_subs = submissions[lo] - submissions[base_lo]
                prior = p.burst_prior_per_day * p.burst_prior_days
                rate = (base_subs + prior) / (span_days + p.burst_prior_days)
                expected = rate * p.burst_window / DAY
                # Invoices per submission in the debtor's history (smoothed towards 1): a burst counts in
                # submissions of the usual size, so that the usual batches are not a burst.
                per_submission = (lo - base_lo + prior) / (base_subs + prior)
                effective = int(count / per_submission)
                score = poisson_tail_log10(effective, expected)
                if score < p.burst_threshold:
                    continue
                severity = (
                    Severity.HIGH
                    if score >= p.burst_high
                    else Severity.MEDIUM
                    if score >= p.burst_medium
                    else Severity.LOW
                )
                reason = (
                    f"{count} registrations to debtor {debtor} within {_days(p.burst_window)}: "
                    f"{effective} submissions of its usual size ({per_submission:.1f}) where {expected:.2f} "
                    f"were expected from its rate (-log10 p = {score:.1f})"
                )
                for member in regs[lo : j + 1]:
                    old = best.get(member.id)
                    if old is None or score > old.score:
                        best[member.id] = Flag(self.kind, member.id, severity, round(score, 3), reason, reg.block)
        return sorted(best.values(), key=lambda f: f.receivable_id)


@dataclass(frozen=True)
class RapidReassignment(_Base):
    kind: ClassVar[Kind] = Kind.RAPID_REASSIGNMENT

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        p = self.params
        ids = view.assigned_since(since_block)
        chains = view.assignments_of(ids)
        clock = view.clock
        flags = []
        for rid in ids:
            chain = chains.get(rid, [])
            if len(chain) < 2:
                continue
            times = [clock(b) for b, _, _ in chain]
            hops, span, lo = 0, 0.0, 0
            for j in range(len(chain)):
                while times[j] - times[lo] > p.reassign_window:
                    lo += 1
                if j + 1 - lo > hops:
                    hops, span = j + 1 - lo, times[j] - times[lo]
            holders = [chain[0][1]]
            cycle = False
            for _, _, to in chain:
                cycle = cycle or to in holders
                holders.append(to)
            if hops < p.reassign_min_hops and not cycle:
                continue
            if cycle or hops >= p.reassign_min_hops + 2:
                severity = Severity.HIGH
            elif hops > p.reassign_min_hops or span <= p.reassign_fast:
                severity = Severity.MEDIUM
            else:
                severity = Severity.LOW
            path = " -> ".join(str(h) for h in holders)
            what = "returns to an earlier holder" if cycle else f"{hops} assignments within {_days(span)}"
            flags.append(Flag(self.kind, rid, severity, float(hops), f"assignment chain {path}: {what}", chain[-1][0]))
        return flags


@dataclass(frozen=True)
class LateRegistration(_Base):
    kind: ClassVar[Kind] = Kind.LATE_REGISTRATION

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        p = self.params
        flags = []
        for reg in view.new_registrations(since_block):
            registered_at = view.clock(reg.block)
            left = reg.due_date - registered_at
            term = max(1, reg.due_date - reg.issue_date)
            if left >= p.late_days * DAY or left >= p.late_fraction * term:
                continue
            days = left / DAY
            severity = (
                Severity.HIGH
                if days <= p.late_high_days
                else Severity.MEDIUM
                if days <= p.late_medium_days
                else Severity.LOW
            )
            when = "after its due date" if left < 0 else f"{_days(left)} before its due date"
            flags.append(
                Flag(
                    self.kind,
                    reg.id,
                    severity,
                    round(days, 3),
                    f"registered {when} ({left / term:.0%} of a {term / DAY:.0f}-day term left)",
                    reg.block,
                )
            )
        return flags


@dataclass(frozen=True)
class NearDuplicate(_Base):
    kind: ClassVar[Kind] = Kind.NEAR_DUPLICATE

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        new = [r for r in view.new_registrations(since_block) if r.status.is_live]
        history = view.registrations_of({r.debtor for r in new})
        by_document: dict[bytes, list[Registration]] = defaultdict(list)
        for other in view.by_document([r.document_hash for r in new if r.document_hash is not None]):
            by_document[other.document_hash or b""].append(other)
        by_terms: dict[tuple[int, str, int, int], list[Registration]] = defaultdict(list)
        for regs in history.values():
            for o in regs:
                by_terms[(o.debtor, o.currency, o.face_value, o.due_date)].append(o)
        flags = []
        for reg in new:

            def other_invoice(o: Registration, reg: Registration = reg) -> bool:
                return o.id < reg.id and o.status.is_live and (o.debtor, o.number_hash) != (reg.debtor, reg.number_hash)

            found: list[tuple[NearDuplicateReason, Registration]] = [
                (NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE, o)
                for o in by_terms[(reg.debtor, reg.currency, reg.face_value, reg.due_date)]
                if other_invoice(o)
            ]
            if reg.document_hash is not None:
                found += [
                    (NearDuplicateReason.SAME_DOCUMENT_HASH, o)
                    for o in by_document[reg.document_hash]
                    if other_invoice(o)
                ]
            if not found:
                continue
            reasons = sorted({reason for reason, _ in found}, key=lambda r: r.value)
            severity = max((_near_severity(reason, o, reg) for reason, o in found), key=lambda s: s.rank)
            earliest = min(o.id for _, o in found)
            words = " and ".join(r.value for r in reasons)
            others = len({o.id for _, o in found})
            flags.append(
                Flag(
                    self.kind,
                    reg.id,
                    severity,
                    float(others),
                    f"{words}: like {others} earlier live registration{'s' if others > 1 else ''}",
                    reg.block,
                    related_id=earliest,
                )
            )
        return flags


def _near_severity(reason: NearDuplicateReason, other: Registration, reg: Registration) -> Severity:
    """The checker's risk of the reason; a bare coincidence of amount and due date (other issue date, other
    creditor: two round amounts due the same month end) is low, with the same creditor medium."""
    if reason is NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE and other.issue_date != reg.issue_date:
        return Severity.MEDIUM if other.creditor == reg.creditor else Severity.LOW
    return _RISK_SEVERITY[reason.risk]


@dataclass(frozen=True)
class ConfirmationSpeed(_Base):
    kind: ClassVar[Kind] = Kind.CONFIRMATION_SPEED

    def detect(self, view: MirrorView, since_block: int) -> list[Flag]:
        p = self.params
        confirmations = view.confirmations()
        new = [c for c in confirmations if c.block > since_block]
        if not new:
            return []
        debtors = {c.debtor for c in new}
        relevant = [c for c in confirmations if c.debtor in debtors]
        registered = view.registered_blocks([c.receivable_id for c in relevant])
        clock = view.clock
        latencies: dict[int, list[float]] = defaultdict(list)  # debtor -> log latencies so far, in chain order
        flags = []
        for c in relevant:
            reg_block = registered.get(c.receivable_id)
            if reg_block is None:
                continue
            latency = max(0.0, clock(c.block) - clock(reg_block))
            x = math.log(latency + p.confirm_floor)
            earlier = latencies[c.debtor][-p.history_window :]
            latencies[c.debtor].append(x)
            if c.block <= since_block or len(earlier) < p.confirm_min_history:
                continue
            z = robust_z(x, earlier)
            severity = _z_severity(z, p)
            if severity is None:
                continue
            usual = math.exp(statistics.median(earlier)) - p.confirm_floor
            pace = "faster" if z < 0 else "slower"
            flags.append(
                Flag(
                    self.kind,
                    c.receivable_id,
                    severity,
                    round(z, 3),
                    f"debtor {c.debtor} confirmed after {_days(latency)}, {pace} than its usual {_days(usual)} "
                    f"(robust z {z:+.1f} over {len(earlier)} confirmations)",
                    c.block,
                )
            )
        return flags


DETECTORS: Final[tuple[type[_Base], ...]] = (
    AmountOutlier,
    Burst,
    RapidReassignment,
    LateRegistration,
    NearDuplicate,
    ConfirmationSpeed,
)


def detectors(params: AnomalyParams | None = None, kinds: Iterable[Kind] | None = None) -> list[_Base]:
    params = params or AnomalyParams()
    wanted = set(kinds) if kinds is not None else set(Kind)
    return [d(params) for d in DETECTORS if d.kind in wanted]


def scan(
    conn: Connection,
    as_of_block: int,
    since_block: int = -1,
    params: AnomalyParams | None = None,
    kinds: Iterable[Kind] | None = None,
) -> list[Flag]:
    """Every detector's flags for the events in ``(since_block, as_of_block]`` (nothing is written)."""
    view = MirrorView(conn, as_of_block)
    out: list[Flag] = []
    for detector in detectors(params, kinds):
        out += detector.detect(view, since_block)
    return out


# ---------------------------------------------------------------------------------------------
# The scanner: incremental, idempotent, reorg-aware
# ---------------------------------------------------------------------------------------------


@dataclass
class ScanReport:
    as_of_block: int
    since_block: int
    raised: int = 0
    updated: int = 0
    reopened: int = 0
    retired: int = 0
    reorg_ancestor: int | None = None
    seconds: float = 0.0


class Scanner:
    """Runs the detectors over what the mirror indexed since the last run and stores the flags."""

    def __init__(
        self,
        params: AnomalyParams | None = None,
        *,
        kinds: Iterable[Kind] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.params = params or AnomalyParams()
        self.kinds = list(kinds) if kinds is not None else list(Kind)
        self.clock = clock

    def hook(self, engine: Engine) -> Callable[[int, int], None]:
        """An ``Indexer(on_batch=...)`` callback: a scan after every committed batch."""

        def on_batch(last_block: int, events: int) -> None:
            self.run_once(engine)

        return on_batch

    def run_once(self, engine: Engine, as_of_block: int | None = None) -> ScanReport:
        """Scan ``(watermark, as_of_block]`` (the cursor's block by default) in one transaction."""
        started = time.perf_counter()
        with engine.begin() as conn:
            report = self.run(conn, as_of_block)
        report.seconds = time.perf_counter() - started
        return report

    def run(self, conn: Connection, as_of_block: int | None = None) -> ScanReport:
        cursor = conn.execute(select(Cursor.block_number, Cursor.block_hash, Cursor.block_timestamp)).first()
        if cursor is None:
            return ScanReport(as_of_block=-1, since_block=-1)
        target = int(cursor.block_number) if as_of_block is None else min(as_of_block, int(cursor.block_number))
        headers = self._hashes(conn)
        headers[int(cursor.block_number)] = str(cursor.block_hash)
        since, ancestor = self._watermark(conn, headers, target)
        report = ScanReport(as_of_block=target, since_block=since, reorg_ancestor=ancestor)
        if ancestor is not None:
            report.retired += self._retire(conn, _F.c.evidence_block > ancestor, ancestor)
            conn.execute(delete(_S).where(_S.c.block_number > ancestor))
        report.retired += self._retire(
            conn,
            ~select(_R.c.id).where(_R.c.id == _F.c.receivable_id, _R.c.valid_to.is_(None)).exists(),
            since if ancestor is None else ancestor,
        )
        if target > since:
            self._record_anchors(conn, since, target, headers, cursor)
            found = scan(conn, target, since, self.params, self.kinds)
            self._store(conn, found, target, report)
        return report

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _hashes(conn: Connection) -> dict[int, str]:
        h = table_of(BlockHeader)
        return {int(n): str(x) for n, x in conn.execute(select(h.c.number, h.c.hash))}

    @staticmethod
    def _watermark(conn: Connection, headers: dict[int, str], target: int) -> tuple[int, int | None]:
        """(block to scan from, the reorg's common ancestor or None). An anchor above the cursor, or whose
        block the mirror holds a header of with another hash, is on a fork the mirror rolled back. An anchor
        without a stored header (pruned, or never fetched) is taken as final: the indexer refuses reorgs
        deeper than its finality depth, and the scanner runs after every batch."""
        anchors = conn.execute(select(_S.c.block_number, _S.c.block_hash).order_by(_S.c.block_number.desc())).all()
        if not anchors:
            return -1, None
        top = int(anchors[0][0])
        for number, block_hash in anchors:
            n = int(number)
            known = headers.get(n)
            if n <= target and (known is None or not block_hash or known == block_hash):
                return n, (None if n == top else n)
        return -1, -1

    def _record_anchors(self, conn: Connection, since: int, target: int, headers: dict[int, str], cursor: Any) -> None:
        h = table_of(BlockHeader)
        blocks = {
            int(b)
            for (b,) in conn.execute(
                select(_E.c.block_number).distinct().where(_E.c.block_number > since, _E.c.block_number <= target)
            )
        }
        times = {int(n): int(t) for n, t in conn.execute(select(h.c.number, h.c.timestamp))}
        if int(cursor.block_number) == target:
            times[target] = int(cursor.block_timestamp)
        blocks.add(target)
        rows = [
            {"block_number": b, "block_hash": headers.get(b, ""), "timestamp": times[b]}
            for b in sorted(blocks)
            if b in times and (b in headers or b == target)
        ]
        if not any(r["block_number"] == target for r in rows):
            # No header of the target block (an as-of below the window): keep its estimated time, no hash.
            rows.append(
                {"block_number": target, "block_hash": "", "timestamp": int(BlockClock.load(conn, target)(target))}
            )
        existing = {int(b) for (b,) in conn.execute(select(_S.c.block_number).where(_S.c.block_number > since))}
        rows = [r for r in rows if r["block_number"] not in existing]
        if rows:
            conn.execute(insert(_S), rows)

    def _retire(self, conn: Connection, condition: Any, block: int) -> int:
        result = conn.execute(
            update(_F)
            .where(_F.c.state == FlagState.OPEN.value, condition)
            .values(state=FlagState.RETIRED.value, retired_block=block)
        )
        return int(result.rowcount or 0)

    def _store(self, conn: Connection, found: Sequence[Flag], as_of_block: int, report: ScanReport) -> None:
        now = self.clock()
        keyed = {(f.kind.value, f.receivable_id): f for f in found}
        existing: dict[tuple[str, int], Any] = {}  # Row
        for chunk in _chunks(sorted({f.receivable_id for f in found})):
            for stored in conn.execute(select(_F).where(_F.c.receivable_id.in_(chunk))):
                existing[(str(stored.kind), int(stored.receivable_id))] = stored
        inserts: list[dict[str, Any]] = []
        for key, flag in keyed.items():
            row: Any = existing.get(key)
            values = {
                "severity": flag.severity.value,
                "score": flag.score,
                "reason": flag.reason,
                "related_id": flag.related_id,
                "evidence_block": flag.evidence_block,
            }
            if row is None:
                inserts.append(
                    {
                        "kind": flag.kind.value,
                        "receivable_id": flag.receivable_id,
                        **values,
                        "raised_block": as_of_block,
                        "state": FlagState.OPEN.value,
                        "raised_at": now,
                    }
                )
                report.raised += 1
            elif row.state == FlagState.CLEARED.value:
                continue  # a person's judgement stands
            elif row.state == FlagState.RETIRED.value:
                conn.execute(
                    update(_F)
                    .where(_F.c.id == row.id)
                    .values(
                        **values,
                        state=FlagState.OPEN.value,
                        retired_block=None,
                        raised_block=as_of_block,
                        raised_at=now,
                    )
                )
                report.reopened += 1
            elif any(getattr(row, k) != v for k, v in values.items()):
                conn.execute(update(_F).where(_F.c.id == row.id).values(**values))
                report.updated += 1
        if inserts:
            conn.execute(insert(_F), inserts)


# ---------------------------------------------------------------------------------------------
# Reading and clearing flags
# ---------------------------------------------------------------------------------------------


def _flag_visible(visibility: Visibility) -> Any:
    """Flags on receivables the viewer may read (the same clause as receivable reads)."""
    return (
        select(_R.c.id)
        .where(_R.c.id == _F.c.receivable_id, _R.c.valid_to.is_(None), visible_clause(visibility))
        .exists()
    )


def list_flags(
    conn: Connection,
    visibility: Visibility,
    *,
    receivable_id: int | None = None,
    kind: Kind | None = None,
    states: Sequence[FlagState] = (FlagState.OPEN, FlagState.CLEARED),
    after_id: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Flags the viewer may see, by id. An auditor (``Visibility(everything=True)``) sees retired flags of
    receivables that a reorg removed too; a party sees flags on receivables it may read now."""
    stmt = select(_F).where(_F.c.id > after_id, _F.c.state.in_([s.value for s in states]))
    if not visibility.everything:
        stmt = stmt.where(_flag_visible(visibility))
    if receivable_id is not None:
        stmt = stmt.where(_F.c.receivable_id == receivable_id)
    if kind is not None:
        stmt = stmt.where(_F.c.kind == kind.value)
    return [dict(r) for r in conn.execute(stmt.order_by(_F.c.id).limit(limit)).mappings()]


def get_flag(conn: Connection, flag_id: int, visibility: Visibility) -> dict[str, Any]:
    stmt = select(_F).where(_F.c.id == flag_id)
    if not visibility.everything:
        stmt = stmt.where(_flag_visible(visibility))
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise FlagNotFound(f"no flag {flag_id} visible to you")
    return dict(row)


def readable_ids(conn: Connection, ids: Sequence[int], visibility: Visibility) -> set[int]:
    """Which of the receivable ids the viewer may read (to name a related receivable in a flag or not)."""
    if visibility.everything:
        return set(ids)
    out: set[int] = set()
    for chunk in _chunks(sorted(set(ids))):
        rows = conn.execute(
            select(_R.c.id).where(_R.c.id.in_(chunk), _R.c.valid_to.is_(None), visible_clause(visibility))
        )
        out.update(int(r[0]) for r in rows)
    return out


def open_flags(conn: Connection, receivable_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The open flags of each receivable (for auto-approval's "no open anomaly flag" rule)."""
    out: dict[int, list[dict[str, Any]]] = {rid: [] for rid in receivable_ids}
    for chunk in _chunks(sorted(set(receivable_ids))):
        rows = conn.execute(
            select(_F).where(_F.c.receivable_id.in_(chunk), _F.c.state == FlagState.OPEN.value).order_by(_F.c.id)
        ).mappings()
        for row in rows:
            out[int(row["receivable_id"])].append(dict(row))
    return out


MAX_NOTE: Final = 2_000


def clear_flag(
    conn: Connection,
    flag_id: int,
    *,
    entity: int | None,
    auditor: bool,
    address: str,
    note: str,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Clears an open flag with a note. Entitled: the receivable's current holder (creditor before
    assignment, factor after) or an auditor; the debtor, earlier holders and the admin are not. A party
    that may not read the receivable gets :class:`FlagNotFound`, as for a flag that does not exist."""
    text = note.strip()
    if not text:
        raise InvalidNote("note: say why the flag is cleared (a non-empty note is required)")
    if len(text) > MAX_NOTE:
        raise InvalidNote(f"note: at most {MAX_NOTE} characters")
    visibility = Visibility(everything=True) if auditor else Visibility(entity=entity)
    flag = get_flag(conn, flag_id, visibility)
    holder = conn.execute(select(_R.c.holder).where(_R.c.id == flag["receivable_id"], _R.c.valid_to.is_(None))).scalar()
    if not auditor and (entity is None or holder is None or int(holder) != entity):
        raise NotEntitledToClear(
            f"flag {flag_id}: only the receivable's current holder (entity {holder}) or an auditor may clear it"
        )
    if flag["state"] != FlagState.OPEN.value:
        raise FlagNotOpen(f"flag {flag_id} is {flag['state']}, not open")
    done = conn.execute(
        update(_F)
        .where(_F.c.id == flag_id, _F.c.state == FlagState.OPEN.value)
        .values(
            state=FlagState.CLEARED.value,
            cleared_by=address,
            cleared_entity=entity,
            clear_note=text,
            cleared_at=clock(),
        )
    )
    if not done.rowcount:
        raise FlagNotOpen(f"flag {flag_id} changed while it was cleared")
    return get_flag(conn, flag_id, Visibility(everything=True))


def flag_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """(kind, state) -> number of flags (diagnostics and the evaluation script)."""
    rows = conn.execute(select(_F.c.kind, _F.c.state, func.count()).group_by(_F.c.kind, _F.c.state))
    return {(str(k), str(s)): int(n) for k, s, n in rows}
