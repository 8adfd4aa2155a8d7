"""Read queries over the mirror that more than one component needs (one place for SQL)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, false, func, or_, select, true
from sqlalchemy.engine import Connection

from registry.domain import Status
from registry.errors import InvalidInvoice
from registry.invoice import parse_day_bound
from registry.store.models import Assignment, Cursor, Payment, Receivable, table_of


@dataclass(frozen=True)
class Freshness:
    """Which block an answer is as of, and how stale the mirror is."""

    block_number: int
    block_hash: str
    block_timestamp: int
    indexed_at: float

    @property
    def staleness_seconds(self) -> float:
        return max(0.0, time.time() - self.block_timestamp)


def freshness(conn: Connection) -> Freshness | None:
    """The mirror's cursor, or None before the first batch."""
    row = conn.execute(
        select(Cursor.block_number, Cursor.block_hash, Cursor.block_timestamp, Cursor.updated_at)
    ).first()
    if row is None:
        return None
    return Freshness(row.block_number, row.block_hash, row.block_timestamp, row.updated_at)


def status_counts(conn: Connection) -> dict[Status, int]:
    """Current receivables by status."""
    rows = conn.execute(
        select(Receivable.status, func.count()).where(Receivable.valid_to.is_(None)).group_by(Receivable.status)
    ).all()
    return {Status(status): int(n) for status, n in sorted(rows)}


# ---------------------------------------------------------------------------------------- receivables

OPEN_STATUSES = (Status.CONFIRMED, Status.ASSIGNED, Status.PARTIALLY_PAID, Status.DEFAULTED)


@dataclass(frozen=True)
class ReceivableFilter:
    status: Status | None = None
    debtor: int | None = None
    creditor: int | None = None
    holder: int | None = None
    currency: str | None = None
    due_from: int | None = None
    due_to: int | None = None
    overdue_at: int | None = None  # unix time: open receivables due before it


def due_window(due_from: str | None, due_to: str | None) -> tuple[int | None, int | None]:
    """A filter's due-date range from its text bounds, each a day (``2027-01-31``, ``2027/1/31``,
    ``2027年1月31日``: all of it) or Unix seconds, both inclusive; refuses an unreadable bound or an empty range
    with :class:`~registry.errors.InvalidInvoice` naming the bound (``due_from`` or ``due_to``)."""
    low = None if due_from is None else parse_day_bound(due_from, "due_from")
    high = None if due_to is None else parse_day_bound(due_to, "due_to", upper=True)
    if low is not None and high is not None and low > high:
        raise InvalidInvoice("due_from", f"{due_from!r} is after due_to {due_to!r}: the range is empty")
    return low, high


@dataclass(frozen=True)
class Visibility:
    """Which receivables a caller may read: all of them, or those where its entity is a party."""

    everything: bool = False
    entity: int | None = None


def _receivable_columns() -> list[Any]:
    return [c for c in table_of(Receivable).c if c.name not in ("row_id",)]


def visible_clause(visibility: Visibility) -> Any:
    t = table_of(Receivable)
    if visibility.everything:
        return true()
    if visibility.entity is None:
        return false()
    e = visibility.entity
    held_before = (
        select(table_of(Assignment).c.receivable_id)
        .where(table_of(Assignment).c.to_entity == e)
        .where(table_of(Assignment).c.receivable_id == t.c.id)
        .exists()
    )
    return or_(t.c.debtor == e, t.c.creditor == e, t.c.holder == e, held_before)


def list_receivables(
    conn: Connection, flt: ReceivableFilter, visibility: Visibility, *, after_id: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    """Current receivables matching ``flt`` that ``visibility`` allows, by id (stable cursor pagination)."""
    t = table_of(Receivable)
    stmt = select(*_receivable_columns()).where(t.c.valid_to.is_(None), t.c.id > after_id, visible_clause(visibility))
    if flt.status is not None:
        stmt = stmt.where(t.c.status == int(flt.status))
    for column, value in (("debtor", flt.debtor), ("creditor", flt.creditor), ("holder", flt.holder)):
        if value is not None:
            stmt = stmt.where(t.c[column] == value)
    if flt.currency is not None:
        stmt = stmt.where(t.c.currency == flt.currency)
    if flt.due_from is not None:
        stmt = stmt.where(t.c.due_date >= flt.due_from)
    if flt.due_to is not None:
        stmt = stmt.where(t.c.due_date <= flt.due_to)
    if flt.overdue_at is not None:
        stmt = stmt.where(t.c.due_date < flt.overdue_at, t.c.status.in_([int(s) for s in OPEN_STATUSES]))
    rows = conn.execute(stmt.order_by(t.c.id).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def receivables_page(
    conn: Connection, flt: ReceivableFilter, visibility: Visibility, *, after_id: int = 0, limit: int = 50
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of :func:`list_receivables` and the cursor of the next one (None when this is the last)."""
    rows = list_receivables(conn, flt, visibility, after_id=after_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, str(rows[-1]["id"]) if more and rows else None


def _valid_at(t: Any, block: int | None) -> Any:
    """The versions of ``t`` valid at ``block``: the current ones when None."""
    if block is None:
        return t.c.valid_to.is_(None)
    return and_(t.c.valid_from <= block, or_(t.c.valid_to.is_(None), t.c.valid_to > block))


def _seen_at(row: Any, block: int | None) -> dict[str, Any]:
    """A version as it stood at ``block``: one closed after it was still open then (no later block leaks)."""
    version = dict(row)
    if block is not None and version["valid_to"] is not None and version["valid_to"] > block:
        version["valid_to"] = None
    return version


def receivable_as_of(conn: Connection, receivable_id: int, block: int | None = None) -> dict[str, Any] | None:
    """The receivable's row valid at ``block`` (current when None), as it stood then."""
    t = table_of(Receivable)
    stmt = select(*_receivable_columns()).where(t.c.id == receivable_id, _valid_at(t, block))
    row = conn.execute(stmt).mappings().first()
    return _seen_at(row, block) if row else None


def receivable_versions(conn: Connection, receivable_id: int, block: int | None = None) -> list[dict[str, Any]]:
    """Every version of the receivable, oldest first; with ``block``, those begun by then, as they stood."""
    t = table_of(Receivable)
    stmt = select(*_receivable_columns()).where(t.c.id == receivable_id)
    if block is not None:
        stmt = stmt.where(t.c.valid_from <= block)
    rows = conn.execute(stmt.order_by(t.c.valid_from))
    return [_seen_at(r, block) for r in rows.mappings()]


def _history_of(t: Any, receivable_id: int, block: int | None) -> Any:
    stmt = select(t).where(t.c.receivable_id == receivable_id)
    if block is not None:
        stmt = stmt.where(t.c.block_number <= block)
    return stmt.order_by(t.c.block_number, t.c.log_index)


def assignments_of(conn: Connection, receivable_id: int, block: int | None = None) -> list[dict[str, Any]]:
    """The receivable's assignments in ledger order (those made by ``block`` when given)."""
    return [dict(r) for r in conn.execute(_history_of(table_of(Assignment), receivable_id, block)).mappings()]


def payments_of(conn: Connection, receivable_id: int, block: int | None = None) -> list[dict[str, Any]]:
    """The receivable's payments in ledger order (those made by ``block`` when given)."""
    return [dict(r) for r in conn.execute(_history_of(table_of(Payment), receivable_id, block)).mappings()]


def receivable_history(conn: Connection, receivable_id: int, block: int | None = None) -> dict[str, Any]:
    """What a receivable's detail shows beside its row, up to ``block`` (all of it when None): its
    ``versions``, ``assignments``, ``payments`` and split ``parts``."""
    return {
        "versions": receivable_versions(conn, receivable_id, block),
        "assignments": assignments_of(conn, receivable_id, block),
        "payments": payments_of(conn, receivable_id, block),
        "parts": children_of(conn, receivable_id, block),
    }


def children_of(conn: Connection, receivable_id: int, block: int | None = None) -> list[int]:
    """The split parts of ``receivable_id`` that exist at ``block`` (now when None), by id."""
    t = table_of(Receivable)
    stmt = select(t.c.id).where(t.c.parent_id == receivable_id, _valid_at(t, block))
    return [int(r[0]) for r in conn.execute(stmt.order_by(t.c.id))]


def registrations_of_key(conn: Connection, invoice_key: bytes) -> list[dict[str, Any]]:
    """Every registration (live or cancelled, current version) that ever held ``invoice_key``, oldest first."""
    t = table_of(Receivable)
    rows = conn.execute(
        select(*_receivable_columns())
        .where(t.c.invoice_key == invoice_key, t.c.valid_to.is_(None))
        .order_by(t.c.registered_block, t.c.id)
    ).mappings()
    return [dict(r) for r in rows]
