"""Read queries over the mirror that more than one component needs (one place for SQL)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from registry.domain import Status
from registry.store.models import Cursor, Receivable


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
