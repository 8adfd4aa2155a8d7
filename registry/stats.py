"""Dashboard statistics and the event feed over the mirror: SQL aggregates, in one place.

Every figure is scoped by a :class:`~registry.store.queries.Visibility` (auditors: everything; a party:
the receivables it may read, as for single reads) and computed in the database (``GROUP BY``), never by
loading receivables into Python.

- **Ageing** of open receivables (confirmed, assigned, partially paid, defaulted) by days overdue at the
  mirror's block time: ``current`` (not yet due), ``1-30``, ``31-60``, ``61-90``, ``>90``; count and
  unpaid amount (minor units) per currency.
- **Exposure**: unpaid amount of open receivables owed by each debtor, and held by each factor (a
  holder other than the creditor), per currency.
- **Volumes**: status transitions per day or week, from the versioned ``receivables`` table: a version
  whose status differs from its predecessor's (or that has none: a registration or a split part) is one
  transition into that status, dated by the block that made it. The mirror keeps no timestamp per
  block, so period boundaries are turned into block numbers by a :class:`BlockClock` (binary search
  over block timestamps, cached) and the transitions are bucketed by block range in SQL.
- **Events**: raw events after a position, filtered by the caller's visibility (:func:`events_after`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.engine import Connection

from registry.domain import Status
from registry.store.models import Cursor, RawEvent, Receivable, table_of
from registry.store.queries import OPEN_STATUSES, Visibility, visible_clause

DAY: Final = 86_400
AGEING_BUCKETS: Final = ("current", "1-30", "31-60", "61-90", ">90")
Period = Literal["day", "week"]


def _open() -> Any:
    r = table_of(Receivable)
    return and_(r.c.valid_to.is_(None), r.c.status.in_([int(s) for s in OPEN_STATUSES]))


# ---------------------------------------------------------------------------------------- ageing


@dataclass(frozen=True)
class AgeingBucket:
    currency: str
    bucket: str
    count: int
    unpaid: int


def ageing(conn: Connection, visibility: Visibility, *, now: int) -> list[AgeingBucket]:
    """Open receivables by currency and days overdue at ``now`` (unix time); every bucket of every
    currency present is listed, empty ones with zeros."""
    r = table_of(Receivable)
    overdue = literal(now) - r.c.due_date
    bucket = case(
        (overdue <= 0, 0),
        (overdue <= 30 * DAY, 1),
        (overdue <= 60 * DAY, 2),
        (overdue <= 90 * DAY, 3),
        else_=4,
    ).label("bucket")
    rows = conn.execute(
        select(r.c.currency, bucket, func.count(), func.sum(r.c.face_value - r.c.paid))
        .where(_open(), visible_clause(visibility))
        .group_by(r.c.currency, bucket)
    ).all()
    found = {(str(currency), int(b)): (int(n), int(unpaid or 0)) for currency, b, n, unpaid in rows}
    return [
        AgeingBucket(currency, name, *found.get((currency, i), (0, 0)))
        for currency in sorted({c for c, _ in found})
        for i, name in enumerate(AGEING_BUCKETS)
    ]


# ---------------------------------------------------------------------------------------- exposure


@dataclass(frozen=True)
class Exposure:
    entity: int
    currency: str
    count: int
    unpaid: int


def _exposure_by(conn: Connection, visibility: Visibility, column: str, *, factored_only: bool) -> list[Exposure]:
    r = table_of(Receivable)
    entity = r.c[column]
    stmt = select(entity, r.c.currency, func.count(), func.sum(r.c.face_value - r.c.paid)).where(
        _open(), visible_clause(visibility)
    )
    if factored_only:
        stmt = stmt.where(r.c.holder != r.c.creditor)
    rows = conn.execute(stmt.group_by(entity, r.c.currency)).all()
    out = [Exposure(int(e), str(c), int(n), int(unpaid or 0)) for e, c, n, unpaid in rows]
    return sorted(out, key=lambda x: (x.currency, -x.unpaid, x.entity))


def exposure_by_debtor(conn: Connection, visibility: Visibility) -> list[Exposure]:
    """Unpaid amount of open receivables owed by each debtor, per currency, largest first."""
    return _exposure_by(conn, visibility, "debtor", factored_only=False)


def exposure_by_factor(conn: Connection, visibility: Visibility) -> list[Exposure]:
    """Unpaid amount of open receivables held by each factor (holder other than the creditor)."""
    return _exposure_by(conn, visibility, "holder", factored_only=True)


# ---------------------------------------------------------------------------------------- volumes


class BlockClock:
    """Which block a moment falls in: the first block whose timestamp is at or after it.

    Block timestamps never decrease, so a binary search over ``timestamp_of`` finds it in about
    log2(blocks) look-ups. Timestamps of blocks at least ``finality_depth`` below the head are cached
    (a reorg cannot change them); shared by the threads of one process."""

    def __init__(self, timestamp_of: Callable[[int], int], *, finality_depth: int = 64, cache_size: int = 100_000):
        self._timestamp_of = timestamp_of
        self._finality_depth = finality_depth
        self._cache_size = cache_size
        self._cache: dict[int, int] = {}
        self._lock = threading.Lock()

    def timestamp(self, block: int, head: int) -> int:
        with self._lock:
            cached = self._cache.get(block)
        if cached is not None:
            return cached
        value = self._timestamp_of(block)
        if block <= head - self._finality_depth:
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[block] = value
        return value

    def first_block_at(self, moment: int, lo: int, hi: int) -> int:
        """The first block in ``[lo, hi]`` with timestamp >= ``moment``; ``hi + 1`` if none."""
        end = hi + 1
        while lo < end:
            mid = (lo + end) // 2
            if self.timestamp(mid, hi) >= moment:
                end = mid
            else:
                lo = mid + 1
        return lo


def period_starts(now: int, period: Period, count: int) -> list[int]:
    """Unix times of the starts of the last ``count`` UTC days (or ISO weeks, Monday) up to ``now``."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    step = timedelta(days=1)
    if period == "week":
        day -= timedelta(days=day.weekday())
        step = timedelta(days=7)
    return [int((day - step * k).timestamp()) for k in reversed(range(count))]


@dataclass(frozen=True)
class VolumePeriod:
    start: int
    first_block: int
    counts: dict[str, int]


def volumes(
    conn: Connection,
    visibility: Visibility,
    clock: BlockClock,
    *,
    period: Period = "day",
    periods: int = 30,
) -> list[VolumePeriod]:
    """Status transitions per period, for the ``periods`` periods ending at the mirror's block."""
    cursor = conn.execute(select(Cursor.block_number, Cursor.block_timestamp, Cursor.deploy_block)).first()
    if cursor is None:
        return []
    head, now, deploy = int(cursor.block_number), int(cursor.block_timestamp), int(cursor.deploy_block)
    starts = period_starts(now, period, periods)
    boundaries: list[int] = []
    lo = deploy
    for moment in starts:
        lo = clock.first_block_at(moment, lo, head)
        boundaries.append(lo)
    r = table_of(Receivable)
    prev = r.alias("prev")
    visible_ids = select(r.c.id).where(r.c.valid_to.is_(None), visible_clause(visibility))
    v = r.alias("v")
    unchanged = (
        select(prev.c.id)
        .where(prev.c.id == v.c.id, prev.c.valid_to == v.c.valid_from, prev.c.status == v.c.status)
        .exists()
    )
    period_of = case(
        *((v.c.valid_from >= b, i) for i, b in reversed(list(enumerate(boundaries)))),
        else_=-1,
    ).label("period")
    rows = conn.execute(
        select(period_of, v.c.status, func.count())
        .where(v.c.valid_from >= boundaries[0], v.c.valid_from <= head, ~unchanged, v.c.id.in_(visible_ids))
        .group_by(period_of, v.c.status)
    ).all()
    counts: list[dict[str, int]] = [{} for _ in starts]
    for index, status, n in rows:
        if index >= 0:
            counts[int(index)][Status(status).name.lower()] = int(n)
    return [
        VolumePeriod(start, block, counts[i]) for i, (start, block) in enumerate(zip(starts, boundaries, strict=True))
    ]


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class StreamEvent:
    block: int
    log_index: int
    name: str
    tx_hash: str
    args: dict[str, Any]

    @property
    def position(self) -> str:
        return f"{self.block}:{self.log_index}"


@dataclass(frozen=True)
class EventReader:
    """Who reads the feed: everything (auditor), the administration events (admin: participants,
    keys, roles, pausing), and the events of the receivables an entity may read (a party)."""

    visibility: Visibility
    administration: bool = False

    def may_see_without_receivable(self, event: StreamEvent) -> bool:
        if self.visibility.everything:
            return True
        # A refused batch line is news for the creditor that submitted it only.
        if event.name == "RegistrationRejected":
            return self.visibility.entity is not None and event.args.get("creditor") == self.visibility.entity
        # Everything else without a receivable is administration: participants, keys, roles, pausing.
        return self.administration


def events_after(
    conn: Connection, reader: EventReader, after: tuple[int, int], *, batch: int = 500
) -> tuple[list[StreamEvent], tuple[int, int]]:
    """Up to ``batch`` indexed events after position ``after`` (block, log index), filtered for
    ``reader``; and the position scanned up to (resume from it even when all were filtered out)."""
    e = table_of(RawEvent)
    cursor_block = conn.execute(select(Cursor.block_number)).scalar()
    if cursor_block is None:
        return [], after
    rows = conn.execute(
        select(e.c.block_number, e.c.log_index, e.c.name, e.c.tx_hash, e.c.args)
        .where(or_(e.c.block_number > after[0], and_(e.c.block_number == after[0], e.c.log_index > after[1])))
        .where(e.c.block_number <= cursor_block)
        .order_by(e.c.block_number, e.c.log_index)
        .limit(batch)
    ).all()
    if not rows:
        return [], after
    events = [StreamEvent(int(b), int(i), str(n), str(tx), json.loads(a)) for b, i, n, tx, a in rows]
    scanned = (events[-1].block, events[-1].log_index)
    about = sorted({int(ev.args["id"]) for ev in events if isinstance(ev.args.get("id"), int)})
    if reader.visibility.everything:
        return events, scanned
    readable: set[int] = set()
    if about and reader.visibility.entity is not None:
        r = table_of(Receivable)
        for chunk_start in range(0, len(about), 1000):
            chunk = about[chunk_start : chunk_start + 1000]
            readable.update(
                int(i)
                for (i,) in conn.execute(
                    select(r.c.id).where(r.c.valid_to.is_(None), r.c.id.in_(chunk), visible_clause(reader.visibility))
                )
            )
    kept = [
        ev
        for ev in events
        if (
            ev.args.get("id") in readable
            if isinstance(ev.args.get("id"), int)
            else reader.may_see_without_receivable(ev)
        )
    ]
    return kept, scanned


def parse_position(text: str) -> tuple[int, int] | None:
    """``BLOCK:LOG_INDEX`` (or ``BLOCK``: after the whole block) as a position; None if malformed."""
    block, sep, index = text.strip().partition(":")
    if not block.isdigit() or (sep and not index.isdigit()) or len(block) > 18 or len(index) > 9:
        return None
    return (int(block), int(index)) if sep else (int(block), 2**31 - 1)


def latest_position(conn: Connection) -> tuple[int, int]:
    """The position of the last indexed event (a live stream without a cursor starts after it)."""
    e = table_of(RawEvent)
    cursor_block = conn.execute(select(Cursor.block_number)).scalar()
    if cursor_block is None:
        return (0, -1)
    row = conn.execute(
        select(e.c.block_number, e.c.log_index)
        .where(e.c.block_number <= cursor_block)
        .order_by(e.c.block_number.desc(), e.c.log_index.desc())
        .limit(1)
    ).first()
    return (int(row[0]), int(row[1])) if row else (0, -1)
