"""Engine, migrations and the single-writer lock.

SQLite (a file under the data directory) by default; PostgreSQL when ``REGISTRY_DATABASE_URL`` names
one. The schema is owned by Alembic migrations; ``migrate(engine)`` brings any database to head.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Index, create_engine, event, inspect, text
from sqlalchemy.engine import Connection

from registry.errors import RegistryError

log = logging.getLogger("registry.store")

MIGRATIONS = Path(__file__).with_name("migrations")
# Any 64-bit number, shared by every indexer of the project: pg_try_advisory_lock key.
WRITER_LOCK_KEY = 0x5245_4749_5354_5259  # "REGISTRY"


class WriterLockHeld(RegistryError):
    """Raised when another indexer already writes to this database."""


def make_engine(url: str) -> Engine:
    """An engine tuned for the mirror (SQLite: WAL, foreign keys off, busy timeout)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


class WalCheckpoints:
    """SQLite's WAL checkpoints for one writer, on a thread of their own.

    By default the connection that commits past 1,000 WAL pages copies the WAL into the database file
    and syncs it, inside its commit: for an indexer's batch of tens of thousands of rows, a tenth of the
    batch's time spent with the indexer waiting. :meth:`deferred` turns that off for one transaction;
    after it, a passive checkpoint runs on the thread, which
    holds no lock the writer or readers need (the interpreter lock is released in SQLite's code). A
    killed process leaves at most a long WAL, which the next connection's checkpoint folds in."""

    PAGES = 1_000  # SQLite's default wal_autocheckpoint, restored when the deferring transaction ends

    def __init__(self, path: str) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints", daemon=True)
        self._thread.start()

    @classmethod
    def for_engine(cls, engine: Engine) -> WalCheckpoints | None:
        """For a file-backed SQLite engine; None otherwise (PostgreSQL checkpoints on its own)."""
        if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
            return None
        return cls(engine.url.database)

    @contextmanager
    def deferred(self, engine: Engine) -> Iterator[Connection]:
        """A transaction (``engine.begin()``) whose commit checkpoints nothing; the connection's
        automatic checkpoints come back once it has ended, then a checkpoint is requested."""
        with engine.connect() as conn:
            dbapi: Any = conn.connection.dbapi_connection
            try:
                with conn.begin():
                    conn.exec_driver_sql("PRAGMA wal_autocheckpoint = 0")
                    yield conn
            finally:
                with suppress(sqlite3.Error):  # (no transaction here: the driver runs a PRAGMA as it comes)
                    dbapi.execute(f"PRAGMA wal_autocheckpoint = {self.PAGES}")
        self.request()

    def request(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        stopping = False
        while not stopping:
            self._wake.wait()
            self._wake.clear()
            stopping = self._stop  # a last checkpoint, then the end
            try:
                if connection is None:
                    connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # busy or gone: the next request (or connection) tries again
                log.debug("WAL checkpoint failed: %s", exc)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=60)


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest migration (idempotent), in one transaction: a crash mid-way
    leaves the schema as it was. (Python's sqlite3 driver commits each DDL statement on its own unless
    a transaction was begun explicitly; a kill -9 mid-migration then left a half-built schema that
    the next start could not migrate.)"""
    with engine.begin() as connection:
        transactional_ddl(connection)
        command.upgrade(alembic_config(connection), "head")


def transactional_ddl(conn: Connection) -> None:
    """Makes the DDL that follows part of ``conn``'s transaction. (Python's sqlite3 driver begins a
    transaction before DML only: DDL that comes first commits on its own.)"""
    if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql("BEGIN")


def drop_indexes(conn: Connection, indexes: Sequence[Index]) -> list[str]:
    """Drops those of ``indexes`` that exist, in ``conn``'s transaction; returns their names."""
    dropped = [ix for ix in indexes if _has_index(conn, ix)]
    if dropped:
        transactional_ddl(conn)
    for ix in dropped:
        ix.drop(conn)
    return [str(ix.name) for ix in dropped]


def create_indexes(conn: Connection, indexes: Sequence[Index]) -> list[str]:
    """Creates those of ``indexes`` that do not exist, in ``conn``'s transaction; returns their names.
    On SQLite the builds' sorts run on worker threads (:func:`_sqlite_parallel_sorts`)."""
    missing = [ix for ix in indexes if not _has_index(conn, ix)]
    if missing:
        transactional_ddl(conn)
        with _sqlite_parallel_sorts(conn):
            for ix in missing:
                ix.create(conn)
    return [str(ix.name) for ix in missing]


SORT_CACHE_KIB = 1_024
"""SQLite's page cache while indexes are built (:func:`_sqlite_parallel_sorts`): the sorter's run size."""


@contextmanager
def _sqlite_parallel_sorts(conn: Connection) -> Iterator[None]:
    """On SQLite, index builds sorted on worker threads: ``PRAGMA threads`` (one per CPU) and a 1 MiB
    page cache, which is also the size of the runs the sorter hands to its threads (with the indexer's
    64 MiB cache a build's keys fit in one run, sorted on the calling thread alone). Measured on this
    project's machine (2 CPUs), the five check indexes: 0.55-0.6 s against 0.77-0.82 s at 240,000
    receivables, 3.0-3.2 s against 5.4-5.5 s at 1,000,000 (more CPU in all, on a core otherwise idle
    at the end of a backfill). Both settings are the connection's, put back afterwards. Elsewhere:
    nothing (PostgreSQL's builds have ``max_parallel_maintenance_workers``)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    threads = int(conn.exec_driver_sql("PRAGMA threads").scalar() or 0)
    cache = int(conn.exec_driver_sql("PRAGMA cache_size").scalar() or 0)
    conn.exec_driver_sql(f"PRAGMA threads = {max(1, os.cpu_count() or 1)}")
    conn.exec_driver_sql(f"PRAGMA cache_size = -{SORT_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {cache}")
        conn.exec_driver_sql(f"PRAGMA threads = {threads}")


def _has_index(conn: Connection, index: Index) -> bool:
    return inspect(conn).has_index(index.table.name, str(index.name))  # type: ignore[union-attr]


def reset_database(engine: Engine) -> None:
    """Drops every table of the mirror (and Alembic's version table); ``migrate`` recreates them."""
    from registry.store.models import Base

    with WriterLock(engine), engine.begin() as connection:
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))


class WriterLock:
    """One indexer writes at a time: a PostgreSQL advisory lock, or a lock file beside SQLite."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self._conn = self.engine.connect()
            got = self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": WRITER_LOCK_KEY}).scalar()
            self._conn.commit()
            if not got:
                self._conn.close()
                self._conn = None
                raise WriterLockHeld("another indexer is writing to this PostgreSQL database (advisory lock held)")
            return
        database = self.engine.url.database
        if not database or database == ":memory:":
            return
        path = f"{database}.writer.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterLockHeld(f"another indexer is writing to {database} (lock file {path} held)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": WRITER_LOCK_KEY})
            self._conn.commit()
            self._conn.close()
            self._conn = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
