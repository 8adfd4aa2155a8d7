"""How a batch writes: the raw events beside the handlers, in PostgreSQL's binary COPY.

A batch's raw events are written on a thread of their own while its events are applied (the drivers
leave the interpreter lock while the database works); whatever happens, the batch waits for that write
before its transaction ends, and an error of the write is the batch's. On PostgreSQL every bulk insert
is a binary ``COPY`` (each value in its column's binary form, nothing spelled out as text for the
server to parse), and the values read back are the values written.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select

from registry.indexer.projector import READY_ROWS, Batch, _Writer
from registry.indexer.reader import RAW_COLUMNS, LedgerPosition, Prepared, prepare
from registry.ledger import GENESIS_HEAD
from registry.store.db import make_engine, migrate
from registry.store.models import Assignment, RawEvent, Receivable, table_of
from tests.indexer.test_reader import WRITERS, _event, _registered


def _range(first_id: int, count: int, block: int) -> Prepared:
    """``count`` registrations, then a confirmation of the first, in ``block``."""
    events = [_registered(first_id + i, block, i) for i in range(count)]
    events.append(_event("ReceivableConfirmed", {"id": first_id, "fingerprint": bytes(32)}, block=block, index=count))
    return prepare(events, WRITERS, READY_ROWS)


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        raw = conn.execute(select(func.count()).select_from(table_of(RawEvent))).scalar_one()
        receivables = conn.execute(select(func.count()).select_from(table_of(Receivable))).scalar_one()
    return raw, receivables


@pytest.fixture
def engine(database_url: str) -> Any:
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_the_raw_events_are_written_on_their_own_thread_while_the_events_are_applied(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing = threading.Event()
    applied: list[str] = []
    inserted_by: dict[str, str] = {}
    original = _Writer._insert

    def insert(self: _Writer, table: Any, columns: Any, rows: Any, oids: Any) -> None:
        inserted_by[table.name] = threading.current_thread().name
        if table.name == "raw_events":
            writing.set()
            assert applied == [], "started before the handlers ran"
        original(self, table, columns, rows, oids)

    monkeypatch.setattr(_Writer, "_insert", insert)
    prepared = _range(1, 5, block=10)
    with engine.begin() as conn, Batch(conn, LedgerPosition(GENESIS_HEAD, 0)) as batch:
        batch.apply(prepared)
        assert writing.wait(5), "the raw events' write started during apply"
        applied.append("done")
        batch.flush()
    assert inserted_by["raw_events"] == "indexer-raw-events"
    assert inserted_by["receivables"] == threading.current_thread().name
    assert _counts(engine) == (6, 5)  # 6 events; 5 registrations, the first confirmed in its own block: in place
    with engine.connect() as conn:
        stored = conn.execute(
            select(*(table_of(RawEvent).c[c] for c in RAW_COLUMNS)).order_by(table_of(RawEvent).c.log_index)
        ).all()
    assert [tuple(r) for r in stored] == [tuple(r) for r in prepared.raw]


def test_a_failed_raw_write_fails_the_batch_and_leaves_nothing(engine: Engine) -> None:
    with engine.begin() as conn, Batch(conn, LedgerPosition(GENESIS_HEAD, 0)) as batch:
        batch.apply(_range(1, 3, block=10))
        batch.flush()
    before = _counts(engine)
    clash = _range(100, 3, block=10)  # the same (block, log index) keys as the raw events stored
    refused = (sqlite3.IntegrityError, psycopg.IntegrityError)  # (the driver's: the write is below SQLAlchemy)
    with pytest.raises(refused), engine.begin() as conn, Batch(conn, LedgerPosition(GENESIS_HEAD, 0)) as batch:
        batch.apply(clash)
        batch.flush()
    assert _counts(engine) == before


def test_a_batch_given_up_during_apply_waits_for_its_raw_write_before_the_rollback(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in the batch's own thread (a handler, the ledger check) while the raw events are still
    being written: the batch's end waits for the write, then the transaction rolls back as usual (a
    rollback under a running statement would fail, or leave the write half done)."""
    release = threading.Event()
    finished: list[bool] = []
    original = _Writer._insert

    def slow_insert(self: _Writer, table: Any, columns: Any, rows: Any, oids: Any) -> None:
        if table.name == "raw_events":
            release.wait(5)
            original(self, table, columns, rows, oids)
            finished.append(True)
            return
        original(self, table, columns, rows, oids)

    monkeypatch.setattr(_Writer, "_insert", slow_insert)

    class LedgerDisagrees(Exception):
        pass

    with pytest.raises(LedgerDisagrees), engine.begin() as conn, Batch(conn, LedgerPosition(GENESIS_HEAD, 0)) as batch:
        batch.apply(_range(1, 4, block=10))
        threading.Timer(0.2, release.set).start()
        raise LedgerDisagrees
    assert finished == [True], "the write ended before the batch did"
    assert _counts(engine) == (0, 0)


def test_postgresql_bulk_inserts_are_binary_copies_that_read_back_exactly(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(postgres_url)
    migrate(engine)
    statements: list[str] = []
    original = psycopg.Cursor.copy

    def copy(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(statement))
        return original(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", copy)
    # bytea values go through the driver's own dumper of bytes, not its DB-API ``Binary`` one (Python code
    # called twice a value, which was a third of the writer's COPY time in the benchmark's backfill)
    by_dbapi: list[Any] = []
    monkeypatch.setattr(
        psycopg.dbapi20.BinaryBinaryDumper, "dump", lambda self, obj: by_dbapi.append(obj) or bytes(obj)
    )
    table = table_of(Assignment)
    columns = [c.name for c in table.columns]
    rows = [(7 + i // 10, i % 10, 2**40 + i, 1, 2, 5_000 + i, i % 2 == 0, bytes([i]) * 32) for i in range(25)]
    raw = [(9, i, "0x" + "ab" * 32, "0x" + "cd" * 32, "X", None if i % 2 else i, None, '{"a":"é"}') for i in range(3)]
    with engine.begin() as conn:
        writer = _Writer(conn)
        writer.insert(table, columns, rows)
        writer.insert(table_of(RawEvent), list(RAW_COLUMNS), raw)
    assert len(statements) == 2 and all(s.endswith("FROM STDIN (FORMAT BINARY)") for s in statements), statements
    assert by_dbapi == []
    with engine.connect() as conn:
        stored = conn.execute(select(table).order_by(table.c.block_number, table.c.log_index)).all()
        raw_stored = conn.execute(
            select(*(table_of(RawEvent).c[c] for c in RAW_COLUMNS)).order_by(table_of(RawEvent).c.log_index)
        ).all()
    engine.dispose()
    assert [tuple(r) for r in stored] == rows
    assert [tuple(r) for r in raw_stored] == raw


def test_postgresql_closes_versions_by_the_primary_key_in_row_order_and_puts_the_planner_back(
    postgres_url: str,
) -> None:
    """The closings' join goes by the primary key (no hash of the whole table), the ids in order; the
    planner setting is the session's again afterwards, and the closed versions are the right ones."""
    from sqlalchemy import event

    engine = make_engine(postgres_url)
    migrate(engine)
    with engine.begin() as conn, Batch(conn, LedgerPosition(GENESIS_HEAD, 0)) as batch:
        batch.apply(_range(1, 40, block=10))
        batch.flush()
    confirmations = [
        _event("ReceivableConfirmed", {"id": rid, "fingerprint": bytes(32)}, block=11, index=i)
        for i, rid in enumerate([30, 5, 17, 2])
    ]
    plans: list[str] = []
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append(statement)
        if statement.startswith("UPDATE"):
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.extend(row[0] for row in cursor.fetchall())

    event.listen(engine, "before_cursor_execute", seen)
    with engine.begin() as conn, Batch(conn, LedgerPosition(GENESIS_HEAD, 0)) as batch:
        batch.apply(prepare(confirmations, WRITERS, READY_ROWS))
        batch.flush()
        hash_join = conn.exec_driver_sql("SHOW enable_hashjoin").scalar()
    event.remove(engine, "before_cursor_execute", seen)
    update = next(i for i, s in enumerate(statements) if s.startswith("UPDATE"))
    assert statements[update - 1 : update + 2 : 2] == ["SET LOCAL enable_hashjoin = off", "RESET enable_hashjoin"]
    assert hash_join == "on"
    assert any("Nested Loop" in line for line in plans) and not any("Hash" in line for line in plans), plans
    table = table_of(Receivable)
    with engine.connect() as conn:
        closed = conn.execute(select(table.c.id, table.c.valid_to).where(table.c.valid_to.is_not(None))).all()
    engine.dispose()
    assert sorted(closed) == [(2, 11), (5, 11), (17, 11), (30, 11)]
