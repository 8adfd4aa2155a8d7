"""Read queries over the mirrored participant registry: entities, their roles, status and keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Connection

from registry.domain import EntityStatus, KeyStatus
from registry.store.models import Cursor, Participant, ParticipantKey, table_of


@dataclass(frozen=True)
class KeyRow:
    address: str
    status: str  # KeyStatus name, lower case
    since_block: int


@dataclass(frozen=True)
class ParticipantRow:
    entity: int
    registration_hash: str
    status: str  # EntityStatus name, lower case
    roles: list[str]
    since_block: int
    keys: list[KeyRow] = field(default_factory=list)


def list_participants(conn: Connection) -> list[ParticipantRow]:
    """Every admitted entity as the mirror knows it now, in entity order, with all its keys
    (active and revoked)."""
    parts, keys = table_of(Participant), table_of(ParticipantKey)
    key_rows: dict[int, list[KeyRow]] = {}
    for k in conn.execute(
        select(keys.c.entity_id, keys.c.address, keys.c.status, keys.c.valid_from)
        .where(keys.c.valid_to.is_(None))
        .order_by(keys.c.entity_id, keys.c.valid_from, keys.c.address)
    ):
        key_rows.setdefault(int(k.entity_id), []).append(
            KeyRow(address=k.address, status=KeyStatus(k.status).name.lower(), since_block=int(k.valid_from))
        )
    out: list[ParticipantRow] = []
    for p in conn.execute(
        select(parts.c.entity_id, parts.c.registration_hash, parts.c.status, parts.c.roles, parts.c.valid_from)
        .where(parts.c.valid_to.is_(None))
        .order_by(parts.c.entity_id)
    ):
        entity = int(p.entity_id)
        out.append(
            ParticipantRow(
                entity=entity,
                registration_hash="0x" + bytes(p.registration_hash).hex(),
                status=EntityStatus(p.status).name.lower(),
                roles=[r for r in p.roles.split(",") if r],
                since_block=int(p.valid_from),
                keys=key_rows.get(entity, []),
            )
        )
    return out


@dataclass(frozen=True)
class MirrorLedger:
    block: int
    head: str
    count: int


def mirror_ledger(conn: Connection) -> MirrorLedger | None:
    """The ledger hash the mirror folded up to its cursor block (None before the first batch)."""
    row = conn.execute(select(Cursor.block_number, Cursor.ledger_head, Cursor.ledger_count)).first()
    if row is None:
        return None
    return MirrorLedger(int(row.block_number), "0x" + bytes(row.ledger_head).hex(), int(row.ledger_count))
