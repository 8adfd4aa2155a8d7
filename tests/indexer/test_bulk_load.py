"""Bulk load: a backfill into an (almost) empty mirror leaves the check indexes out and builds them again.

The indexes only readers use (``CHECK_INDEXES``) are dropped in the transaction of the first big
batch and built in the transaction of the batch that catches up; the mirror then equals a re-index
that never left them out, with the indexes exactly as the migrations define them. A table already
holding more rows than the batch keeps them. An indexer stopped before catching up builds them as it
closes; one killed builds them at its next start, before indexing anything. The cyclic collector stays
paused from one batch of a backfill to the next and resumes once the mirror is caught up, or on an error.
"""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select

from registry.chain.client import ChainClient
from registry.chain.deployment import Deployment
from registry.demo import seed_ledger
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.indexer.projector import _Writer
from registry.store.db import SORT_CACHE_KIB, create_indexes, drop_indexes, make_engine, migrate
from registry.store.models import CHECK_INDEXES, Assignment, check_indexes, table_of
from tests.indexer.oracle import Stack, check_mirror, local_stack, run_child


@pytest.fixture(scope="module")
def seeded() -> Iterator[Stack]:
    with local_stack() as stack:
        seed_ledger(stack.registry, stack.consortium, per_state=2)
        yield stack


def bulk(threshold: int | None = 2) -> IndexerConfig:
    """Batches of a few blocks (several events each) and a bulk-load threshold those batches reach."""
    return IndexerConfig(
        initial_log_range=4, max_log_range=4, read_process_from=None, defer_check_indexes_from=threshold
    )


def present(engine: Engine) -> set[str]:
    """The check indexes the database has now."""
    with engine.connect() as conn:
        return {str(ix["name"]) for ix in inspect(conn).get_indexes("receivables")} & set(CHECK_INDEXES)


def definitions(engine: Engine) -> dict[str, tuple[object, ...]]:
    """Each check index's columns, uniqueness and partial-index condition, as the database reports them."""
    with engine.connect() as conn:
        indexes = inspect(conn).get_indexes("receivables")
    return {
        str(ix["name"]): (
            tuple(ix["column_names"]),
            bool(ix["unique"]),
            str(ix.get("dialect_options", {}).get(f"{engine.dialect.name}_where", "")),
        )
        for ix in indexes
        if ix["name"] in CHECK_INDEXES
    }


def migrated(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


def watch(indexer: Indexer, engine: Engine) -> list[set[str]]:
    """The check indexes present after each committed batch."""
    seen: list[set[str]] = []
    indexer.on_batch = lambda last, events: seen.append(present(engine))
    return seen


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_bulk_load_leaves_the_check_indexes_out_and_the_mirror_ends_as_a_reindex(
    seeded: Stack, request: pytest.FixtureRequest, db: str
) -> None:
    url = str(request.getfixturevalue("postgres_url" if db == "postgresql" else "sqlite_url"))
    engine = make_engine(url)
    with Indexer(seeded.chain, seeded.deployment, engine, bulk()) as indexer:
        expected = definitions(engine)  # as the migrations made them
        assert set(expected) == set(CHECK_INDEXES)
        seen = watch(indexer, engine)
        indexer.sync()
    assert len(seen) > 3
    assert seen[0] == set(), "the first big batch into an empty table should have dropped them"
    assert seen[-1] == set(CHECK_INDEXES), "the batch that caught up should have built them"
    assert all(s in (set(), set(CHECK_INDEXES)) for s in seen), "dropped and built all together"
    assert definitions(engine) == expected
    check_mirror(engine, seeded.chain, seeded.deployment)  # against a re-index that keeps them throughout
    engine.dispose()


def test_the_collector_stays_paused_across_a_backfills_batches_and_resumes_once_caught_up_or_on_an_error(
    seeded: Stack, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(sqlite_url)
    assert gc.isenabled()
    between: list[bool] = []
    with Indexer(seeded.chain, seeded.deployment, engine, bulk()) as indexer:
        while indexer.step():
            between.append(gc.isenabled())
        assert gc.isenabled(), "resumed by the step that found the mirror caught up"
    assert len(between) > 3 and not any(between), between
    engine.dispose()

    engine = make_engine(sqlite_url.replace(".db", "-again.db"))
    calls: list[int] = []
    original = Indexer._write

    def write_then_fail(self: Indexer, *args: Any, **kwargs: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the disk is full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Indexer, "_write", write_then_fail)
    with Indexer(seeded.chain, seeded.deployment, engine, bulk()) as indexer:
        assert indexer.step() and indexer.step() and not gc.isenabled()
        with pytest.raises(RuntimeError, match="disk is full"):
            indexer.step()
        assert gc.isenabled(), "resumed when a step fails"
    engine.dispose()


def test_a_table_holding_more_rows_than_the_batch_keeps_its_indexes(seeded: Stack, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    head = seeded.chain.block_number()
    with Indexer(seeded.chain, seeded.deployment, engine, bulk(None)) as indexer:
        indexer.sync(until_block=head - 12)  # most of the ledger, indexes kept (no bulk load)
        seen = watch(indexer, engine)
        indexer.config.defer_check_indexes_from = 2
        indexer.sync()
    assert seen and all(s == set(CHECK_INDEXES) for s in seen), seen
    check_mirror(engine, seeded.chain, seeded.deployment)
    engine.dispose()


def test_an_indexer_stopped_before_catching_up_builds_them_as_it_closes(seeded: Stack, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    indexer = Indexer(seeded.chain, seeded.deployment, engine, bulk())
    seen: list[set[str]] = []

    def look_then_stop(last: int, events: int) -> None:
        seen.append(present(engine))
        indexer.stop()

    indexer.on_batch = look_then_stop
    try:
        indexer.sync()
        assert seen == [set()] and present(engine) == set()
        assert indexer.cursor().block_number < seeded.chain.block_number()
    finally:
        indexer.close()
    assert present(engine) == set(CHECK_INDEXES)
    with Indexer(seeded.chain, seeded.deployment, engine, bulk()) as again:
        again.sync()
    check_mirror(engine, seeded.chain, seeded.deployment)
    engine.dispose()


def index_and_die_once_they_are_out(url: str, rpc_url: str, deployment_path: str) -> None:
    """(In a forked child.) Bulk-loads and kills itself with SIGKILL after the first batch without them."""
    engine = make_engine(url)
    with ChainClient(rpc_url) as chain:
        indexer = Indexer(chain, Deployment.load(Path(deployment_path)), engine, bulk())

        def die_once_out(last: int, events: int) -> None:
            if not present(engine):
                os.kill(os.getpid(), signal.SIGKILL)

        indexer.on_batch = die_once_out
        indexer.sync()


def test_a_killed_bulk_load_builds_them_at_the_next_start_before_indexing(
    seeded: Stack, sqlite_url: str, tmp_path: Path
) -> None:
    deployment = tmp_path / "deployment.json"
    seeded.deployment.save(deployment)
    status = run_child(index_and_die_once_they_are_out, sqlite_url, seeded.node.url, str(deployment))
    assert status == -signal.SIGKILL
    engine = make_engine(sqlite_url)
    assert present(engine) == set(), "the kill came after a batch committed without them"
    behind = Indexer(seeded.chain, seeded.deployment, engine, bulk(None))
    behind.start()
    try:
        assert present(engine) == set(CHECK_INDEXES), "start() should build them before any batch"
        assert behind.cursor().block_number < seeded.chain.block_number()
        behind.sync()
    finally:
        behind.close()
    check_mirror(engine, seeded.chain, seeded.deployment)
    assert definitions(engine) == definitions(migrated(f"sqlite:///{tmp_path / 'reference.db'}"))
    engine.dispose()


def test_the_reader_process_is_started_once_a_big_range_is_fetched_before_it_is_prepared(
    seeded: Stack, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It then fetches what is left while that range is prepared and written."""
    from registry.indexer import indexer as indexer_module
    from registry.indexer import reader as reader_module

    events: list[str] = []
    started = reader_module.ReaderProcess

    class Recorded(started):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            events.append("process started")
            super().__init__(*args, **kwargs)

    real_prepare = reader_module.prepare

    def recorded_prepare(*args: object, **kwargs: object) -> object:
        events.append("prepared")
        return real_prepare(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(indexer_module, "ReaderProcess", Recorded)
    monkeypatch.setattr(reader_module, "prepare", recorded_prepare)
    engine = make_engine(sqlite_url)
    config = IndexerConfig(initial_log_range=4, max_log_range=4, read_process_from=3)
    with Indexer(seeded.chain, seeded.deployment, engine, config) as indexer:
        indexer.sync()
        assert indexer.reader_cpu_seconds() is not None, "the reader process served the backfill"
    first = events.index("process started")
    assert events[: first + 2] == ["prepared"] * first + ["process started", "prepared"], events[:8]
    check_mirror(engine, seeded.chain, seeded.deployment)
    engine.dispose()


def test_the_reader_process_is_handed_what_the_range_that_started_it_fetched_beyond_its_cut(
    seeded: Stack, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first fetch far denser than the target is cut; the logs beyond the cut go to the reader process
    (forked: they are in its memory), which is told to fetch from there on at once, and reads them
    instead of asking the node again. The mirror is what a plain index gives."""
    from registry.indexer import indexer as indexer_module
    from registry.indexer import reader as reader_module

    handed: list[tuple[object, object]] = []
    started = reader_module.ReaderProcess

    class Recorded(started):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, read_from: tuple[int, int], rest: reader_module.Rest | None) -> None:
            handed.append((read_from, rest))
            super().__init__(*args, read_from=read_from, rest=rest)

    monkeypatch.setattr(indexer_module, "ReaderProcess", Recorded)
    engine = make_engine(sqlite_url)
    config = IndexerConfig(initial_log_range=10_000, max_log_range=10_000, target_logs=4, read_process_from=3)
    with Indexer(seeded.chain, seeded.deployment, engine, config) as indexer:
        indexer.sync()
        assert indexer.reader_cpu_seconds() is not None, "the reader process served the backfill"
    assert len(handed) == 1
    read_from, rest = handed[0]
    assert isinstance(rest, reader_module.Rest) and len(rest.logs) > 4
    assert read_from == (rest.start, seeded.chain.block_number()), "told to read from where the rest starts"
    assert all(int(entry["blockNumber"], 16) >= rest.start for entry in rest.logs)
    check_mirror(engine, seeded.chain, seeded.deployment)
    engine.dispose()


def test_a_batch_of_rows_goes_in_statements_of_many_rows_within_the_parameter_limit(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate(engine)
    table = table_of(Assignment)
    columns = [c.name for c in table.columns]
    rows = [(7 + i // 10, i % 10, 100 + i, 1, 2, 5_000 + i, i % 2 == 0, bytes([i]) * 32) for i in range(25)]
    statements: list[str] = []
    with engine.begin() as conn:
        dbapi: Any = conn.connection.dbapi_connection
        dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, len(columns) * 7 + 3)  # room for 7 rows a statement
        dbapi.set_trace_callback(statements.append)
        _Writer(conn).insert(table, columns, rows)
        dbapi.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT INTO")]
    assert [s.count("), (") + 1 for s in inserts] == [7, 7, 7, 1, 1, 1, 1]  # three of 7 rows, the rest one by one
    with engine.connect() as conn:
        stored = conn.execute(select(table).order_by(table.c.block_number, table.c.log_index)).all()
    assert [tuple(r) for r in stored] == rows
    engine.dispose()


def test_sqlite_sorts_the_check_indexes_on_worker_threads_and_puts_the_connection_back(sqlite_url: str) -> None:
    """The builds run with ``PRAGMA threads`` (one per CPU) and a small page cache (the sorter's run
    size: with the indexer's 64 MiB cache a build's keys fit in one run, sorted on one thread); both
    settings are the connection's own again afterwards, and the indexes are the migrations' ones."""
    engine = make_engine(sqlite_url)
    migrate(engine)
    expected = definitions(engine)
    with engine.begin() as conn:
        assert set(drop_indexes(conn, check_indexes())) == set(CHECK_INDEXES)
    statements: list[str] = []
    with engine.begin() as conn:
        dbapi: Any = conn.connection.dbapi_connection
        conn.exec_driver_sql("PRAGMA cache_size = -65536")
        conn.exec_driver_sql("PRAGMA threads = 0")
        dbapi.set_trace_callback(statements.append)
        built = create_indexes(conn, check_indexes())
        dbapi.set_trace_callback(None)
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -65536
        assert conn.exec_driver_sql("PRAGMA threads").scalar() == 0
    assert set(built) == set(CHECK_INDEXES)
    creates = [i for i, s in enumerate(statements) if s.startswith("CREATE INDEX")]
    assert len(creates) == len(CHECK_INDEXES)
    threads = statements.index(f"PRAGMA threads = {os.cpu_count() or 1}")
    cache = statements.index(f"PRAGMA cache_size = -{SORT_CACHE_KIB}")
    assert max(threads, cache) < creates[0], "set before the first build"
    assert statements.index("PRAGMA cache_size = -65536") > creates[-1], "put back after the last"
    assert statements.index("PRAGMA threads = 0") > creates[-1]
    assert definitions(engine) == expected
    engine.dispose()
