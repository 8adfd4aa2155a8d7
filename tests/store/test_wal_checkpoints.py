"""SQLite WAL checkpoints taken off the indexer's commits (registry.store.db.WalCheckpoints)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from registry.store.db import WalCheckpoints, make_engine

ROWS = 20_000  # about 5 MB of pages: well past SQLite's 1,000-page automatic checkpoint


def _fill(conn: object, start: int) -> None:
    conn.exec_driver_sql(  # type: ignore[attr-defined]
        "INSERT INTO t (id, body) VALUES (?, ?)", [(i, os.urandom(200)) for i in range(start, start + ROWS)]
    )


def table_t(path: Path) -> Engine:
    """A SQLite file holding one empty table ``t`` (id, body), and its engine."""
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    return engine


def test_a_deferred_commit_checkpoints_nothing_and_the_thread_folds_the_wal_in(tmp_path: Path) -> None:
    path = tmp_path / "mirror.db"
    engine = table_t(path)
    checkpoints = WalCheckpoints(str(path))
    checkpoints.request = lambda: None  # type: ignore[method-assign]  # hold the thread's checkpoint back
    before = path.stat().st_size
    with checkpoints.deferred(engine) as conn:
        _fill(conn, 0)
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    # Committed, but still all in the WAL: the database file has not grown.
    assert path.stat().st_size == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == ROWS
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == WalCheckpoints.PAGES  # restored
    del checkpoints.request  # the class's again
    checkpoints.request()
    checkpoints.close()  # the thread's last checkpoint runs before it ends
    assert path.stat().st_size > before + ROWS * 200
    raw = sqlite3.connect(path)
    busy, frames, done = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and frames == done
    assert raw.execute("SELECT count(*) FROM t").fetchone() == (ROWS,)
    raw.close()
    engine.dispose()


def test_a_failed_transaction_rolls_back_and_restores_the_automatic_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "mirror.db"
    engine = table_t(path)
    checkpoints = WalCheckpoints(str(path))
    with pytest.raises(RuntimeError, match="mid-batch"), checkpoints.deferred(engine) as conn:
        _fill(conn, 0)
        raise RuntimeError("mid-batch")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == WalCheckpoints.PAGES
    checkpoints.close()
    engine.dispose()


def test_only_file_backed_sqlite_gets_a_checkpoint_thread(tmp_path: Path) -> None:
    assert WalCheckpoints.for_engine(make_engine("sqlite://")) is None
    assert WalCheckpoints.for_engine(make_engine("postgresql://postgres@127.0.0.1:1/none")) is None
    checkpoints = WalCheckpoints.for_engine(make_engine(f"sqlite:///{tmp_path / 'x.db'}"))
    assert checkpoints is not None
    checkpoints.close()
