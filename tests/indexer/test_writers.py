"""One writer at a time: a second indexer on the same database fails fast with WriterLockHeld
(a lock file beside SQLite, an advisory lock on PostgreSQL), touches nothing, and can take over once
the first has stopped. The same holds for a second ``registry index`` process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from registry.chain.contract import RegistryClient
from registry.indexer.indexer import Indexer
from registry.store.db import WriterLockHeld, make_engine
from tests.indexer.oracle import IndexerProcess, check_mirror, indexer_env, table_rows


def test_a_second_indexer_fails_fast(registry: RegistryClient, database_url: str) -> None:
    engine = make_engine(database_url)
    first = Indexer(registry.chain, registry.deployment, engine)
    first.start()
    try:
        first.sync()
        before = table_rows(engine, volatile=True)
        second = Indexer(registry.chain, registry.deployment, make_engine(database_url))
        started = time.monotonic()
        with pytest.raises(WriterLockHeld, match="another indexer"):
            second.start()
        assert time.monotonic() - started < 2.0, "the second indexer must not wait for the lock"
        with pytest.raises(WriterLockHeld):  # still held, however often it is asked
            second.start()
        first.sync()
        assert table_rows(engine, volatile=True) == before
    finally:
        first.close()
    # The first one gone, the second takes over and writes.
    with second:
        assert second.sync() == registry.chain.block_number()
    check_mirror(engine, registry.chain, registry.deployment)
    second.engine.dispose()
    engine.dispose()


def test_a_second_indexer_process_fails_fast(registry: RegistryClient, database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    env = indexer_env(registry.chain.url, registry.deployment, database_url, tmp_path)
    with Indexer(registry.chain, registry.deployment, engine) as first:
        first.sync()
        proc = IndexerProcess(env, tmp_path / "second.log", once=True, spawn="fork")  # `registry index --once`
        assert proc.wait(120) == 1
        assert "WriterLockHeld" in proc.log_tail(), proc.log_tail()
    engine.dispose()
