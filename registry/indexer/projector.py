"""Turns decoded registry events into SQL rows, one batch (a block range) at a time.

The projector is the off-chain mirror of the contract's state transitions, driven by events only.
It loads the current version of every row the batch touches in one query per table, applies the
events in chain order in memory, and writes with bulk statements: new versions inserted, replaced
versions closed (``valid_to``), append-only facts inserted; the raw events on a thread of their own
while the events are applied (:meth:`Batch.apply`). The caller commits everything, cursor included, in
one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Executable, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from registry.domain import ROLE_NAMES, ClaimStatus, DisputeResolution, EntityStatus, KeyStatus, Status
from registry.indexer.reader import RAW_COLUMNS, LedgerPosition, Prepared
from registry.store.models import (
    APPEND_ONLY_TABLES,
    VERSIONED_TABLES,
    Assignment,
    Cursor,
    Participant,
    ParticipantKey,
    Payment,
    PaymentClaimRow,
    RawEvent,
    Receivable,
    Rejection,
    table_of,
)

Row = dict[str, Any]
_CHUNK = 500


_SQLITE_CACHE_KIB = 65_536


def _cache_kib(cache_size: int, page_size: int) -> int:
    """SQLite's ``cache_size`` pragma in KiB: a negative value is KiB, a positive one pages."""
    return -cache_size if cache_size < 0 else cache_size * page_size // 1024


class _Writer:
    """Bulk writes on the batch's connection, below SQLAlchemy's per-row parameter processing (which
    cost more than the database's own work): inserts of many rows a statement and the driver's
    ``executemany`` for updates on SQLite, binary ``COPY`` and array-driven updates on PostgreSQL (psycopg),
    Core ``executemany`` on anything else. Values are what the Core statements would bind: ints,
    strings, bytes, bools (SQLite stores True as 1, as SQLAlchemy's Boolean would) and None."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        dialect = conn.dialect
        self.kind = (
            "sqlite"
            if dialect.name == "sqlite"
            else "psycopg"
            if dialect.name == "postgresql" and dialect.driver == "psycopg"
            else "core"
        )
        self._quote = dialect.identifier_preparer.quote
        self.dbapi: Any = conn.connection.dbapi_connection
        if self.kind == "sqlite":
            # A bulk insert updates the receivables' hash-keyed indexes at random places: with SQLite's
            # default 2 MiB page cache, every insert reads (and spills) evicted index pages again; 64 MiB
            # roughly halves the cost of a 20,000-row batch. Per connection, only ever raised, memory only.
            size = conn.exec_driver_sql("PRAGMA cache_size").scalar()
            page = conn.exec_driver_sql("PRAGMA page_size").scalar()
            if isinstance(size, int) and isinstance(page, int) and _cache_kib(size, page) < _SQLITE_CACHE_KIB:
                conn.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")

    def insert(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.inserter(table, columns)(rows)

    def inserter(self, table: Table, columns: Sequence[str]) -> Callable[[list[tuple[Any, ...]]], None]:
        """``insert(table, columns, rows)`` as a function of the rows, which touches SQLAlchemy's
        connection no more: on SQLite and psycopg it uses the driver's connection only, so it may run on
        another thread while this one leaves the connection alone (see :meth:`Batch.apply`)."""
        oids = self._column_oids(table, columns) if self.kind == "psycopg" else None

        def insert(rows: list[tuple[Any, ...]]) -> None:
            if rows:
                self._insert(table, columns, rows, oids)

        return insert

    def _insert(
        self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]], oids: list[int] | None
    ) -> None:
        names = ", ".join(self._quote(c) for c in columns)
        target = self._quote(table.name)
        if self.kind == "sqlite":
            dbapi: Any = self.dbapi
            width = len(columns)
            per = max(1, min(_SQLITE_ROWS_PER_STATEMENT, dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
            whole = len(rows) - len(rows) % per
            cursor = dbapi.cursor()
            try:
                if whole:
                    many = _sqlite_insert_sql(target, names, width, per)
                    for i in range(0, whole, per):
                        cursor.execute(many, list(chain.from_iterable(rows[i : i + per])))
                if whole < len(rows):
                    cursor.executemany(_sqlite_insert_sql(target, names, width, 1), rows[whole:])
            finally:
                cursor.close()
        elif self.kind == "psycopg":
            assert oids is not None
            with self.dbapi.cursor() as cursor:
                # By type (set_types), psycopg dumps bytea through its DB-API ``Binary`` dumper, written in
                # Python (two calls a value); the one it uses for ``bytes`` is its C dumper, the same bytes.
                cursor.adapters.register_dumper(None, _bytes_binary_dumper())
                with cursor.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(oids)
                    for row in rows:
                        copy.write_row(row)
        else:
            self.conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])

    def _column_oids(self, table: Table, columns: Sequence[str]) -> list[int]:
        """The PostgreSQL type of each column, as the database has it (asked once per connection and table).

        A binary ``COPY`` needs them: psycopg then writes each value in its type's binary form, which the
        server stores without parsing text (the benchmark's raw events took a third less of the server's
        CPU, its receivables a fifth less; hashes are not spelled out and read back as hex)."""
        known: dict[str, dict[str, int]] = self.conn.connection.info.setdefault("copy_oids", {})
        types = known.get(table.name)
        if types is None:
            types = dict(
                self.conn.exec_driver_sql(
                    "SELECT attname, atttypid::int FROM pg_attribute "
                    "WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped",
                    {"table": self._quote(table.name)},
                ).all()
            )
            known[table.name] = types
        return [types[column] for column in columns]

    def close_versions(self, table: Table, closures: list[tuple[int, int]]) -> None:
        """``valid_to = block`` on each (row_id, block)."""
        if not closures:
            return
        target = self._quote(table.name)
        if self.kind == "sqlite":
            self.conn.exec_driver_sql(
                f"UPDATE {target} SET valid_to = ? WHERE row_id = ?", [(block, row_id) for row_id, block in closures]
            )
        elif self.kind == "psycopg":
            # In row_id order, by the primary key: for thousands of ids PostgreSQL would otherwise hash
            # the whole table to join them (0.39-0.45 s against 0.25-0.28 s for 20,000 closings among
            # 240,000 rows, and the table only grows); the planner setting is put back at once.
            row_ids, blocks = zip(*sorted(closures), strict=True)
            self.conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
            self.conn.exec_driver_sql(
                f"UPDATE {target} SET valid_to = v.valid_to FROM unnest(%s::bigint[], %s::bigint[]) AS "
                f"v(row_id, valid_to) WHERE {target}.row_id = v.row_id",
                (list(row_ids), list(blocks)),
            )
            self.conn.exec_driver_sql("RESET enable_hashjoin")
        else:
            stmt = update(table).where(table.c.row_id == bindparam("b_row_id")).values(valid_to=bindparam("b_valid_to"))
            self.conn.execute(stmt, [{"b_row_id": row_id, "b_valid_to": block} for row_id, block in closures])


@cache
def _bytes_binary_dumper() -> type[Any]:
    """psycopg's binary dumper of ``bytes`` (its C one where psycopg-binary is installed)."""
    import psycopg
    from psycopg.adapt import PyFormat

    return psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)


_SQLITE_ROWS_PER_STATEMENT = 500
"""Rows an insert statement carries on SQLite (fewer where the bound-parameter limit says so)."""


@cache
def _sqlite_insert_sql(target: str, names: str, width: int, rows: int) -> str:
    """``INSERT INTO target (names) VALUES (?, ...), ...``, ``rows`` rows of ``width`` values. A batch's rows
    go in statements of many rows each: ``executemany`` binds, steps and resets the one-row statement
    per row, which took 15-20% longer for the same rows (measured on receivables rows, 100 to 1,600 a
    statement alike); the rest of a batch goes through ``executemany``."""
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {target} ({names}) VALUES " + ", ".join([row] * rows)


def _current_index(table: Table, key: str) -> str | None:
    """The table's partial unique index of current rows on ``key`` (SQLite), if it has one."""
    return next(
        (
            ix.name
            for ix in table.indexes
            if ix.unique
            and [c.name for c in ix.columns] == [key]
            and ix.dialect_options["sqlite"]["where"] is not None
            and ix.name is not None
        ),
        None,
    )


@cache
def _current_rows(table: Table, key: str) -> Executable:
    """``SELECT * FROM table WHERE key IN :keys AND valid_to IS NULL``: the current versions of some rows
    (SQLite and psycopg read them through :func:`_current_rows_sql` and :func:`_current_rows_any_sql`)."""
    return select(table).where(table.c[key].in_(bindparam("keys", expanding=True)), table.c.valid_to.is_(None))


@cache
def _current_rows_sql(table: Table, key: str, count: int) -> str:
    """:func:`_current_rows` for SQLite, as the driver's SQL for ``count`` keys, pinned to the table's
    partial unique index on the key (``INDEXED BY``): without statistics SQLite's planner takes
    ``valid_to IS NULL`` for selective and walks the whole ``valid_to`` index, every current row of the
    table, once per chunk of keys (about 80 ms per 500 keys at 200,000 receivables, against well under
    1 ms through the key's index)."""
    index = _current_index(table, key)
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    hint = f' INDEXED BY "{index}"' if index is not None else ""
    marks = ", ".join("?" * count)
    return f'SELECT {names} FROM "{table.name}"{hint} WHERE "{key}" IN ({marks}) AND valid_to IS NULL'


@cache
def _current_rows_any_sql(table: Table, key: str, key_type: str) -> str:
    """:func:`_current_rows` for PostgreSQL (psycopg), as the driver's SQL taking the keys as one array of
    the key column's own type, ``key_type`` as the dialect writes it (an array of another type, numeric
    say, would compare through a cast and miss the index)."""
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    return f'SELECT {names} FROM "{table.name}" WHERE "{key}" = ANY(CAST(%s AS {key_type}[])) AND valid_to IS NULL'


@cache
def _insert_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.name != "row_id"]


@dataclass
class _Versioned:
    """Current versions of one versioned table's rows touched by the batch, keyed by business key."""

    table: Table
    key: str
    current: dict[Any, Row] = field(default_factory=dict)
    loaded: set[Any] = field(default_factory=set)
    new_rows: list[Row | tuple[Any, ...]] = field(default_factory=list)
    """Rows to insert, in creation order: dicts, or value tuples (:data:`insert_columns` order) of rows
    created ready-made (:meth:`add_values`) and not touched since."""
    closures: list[tuple[int, int]] = field(default_factory=list)  # (row_id, valid_to) of rows already in the DB
    rewrites: dict[int, Row] = field(default_factory=dict)  # rows already in the DB changed in their own block
    pending: dict[Any, int] = field(default_factory=dict)  # key -> position in new_rows of a value tuple

    @property
    def insert_columns(self) -> list[str]:
        return _insert_columns(self.table)

    def load(self, conn: Connection, keys: Iterable[Any]) -> None:
        wanted = [k for k in set(keys) if k not in self.loaded]
        self.loaded.update(wanted)
        if not wanted:
            return
        # On the driver's cursor, rows zipped into dicts: SQLAlchemy's per-row result processing cost more
        # than the lookups (tens of thousands of changed rows per batch in a backfill). Values are the
        # driver's (on SQLite a Boolean as 0/1), which is what the rows are written back with.
        dialect = conn.dialect
        if dialect.name == "sqlite":
            found = self._sqlite_rows(conn, wanted)
        elif dialect.name == "postgresql" and dialect.driver == "psycopg":
            found = self._psycopg_rows(conn, wanted)
        else:
            stmt = _current_rows(self.table, self.key)
            for i in range(0, len(wanted), _CHUNK):
                for row in conn.execute(stmt, {"keys": wanted[i : i + _CHUNK]}).mappings():
                    self.current[row[self.key]] = dict(row)
            return
        names = [c.name for c in self.table.columns]
        position = names.index(self.key)
        for values in found:
            self.current[values[position]] = dict(zip(names, values, strict=True))

    def _sqlite_rows(self, conn: Connection, wanted: list[Any]) -> Iterator[Sequence[Any]]:
        """The current rows of ``wanted``, in chunks of keys (SQLite's parameter limit)."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                yield from cursor.execute(_current_rows_sql(self.table, self.key, len(chunk)), chunk)
        finally:
            cursor.close()

    def _psycopg_rows(self, conn: Connection, wanted: list[Any]) -> Iterator[Sequence[Any]]:
        """The current rows of ``wanted`` in one statement, the keys bound as one array parameter."""
        key_type = self.table.c[self.key].type.compile(dialect=conn.dialect)
        with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(_current_rows_any_sql(self.table, self.key, key_type), (wanted,))
            yield from cursor

    def get(self, key: Any) -> Row:
        row = self.current.get(key)
        return row if row is not None else self._materialize(key)

    def _materialize(self, key: Any) -> Row:
        """The dict of a row added as values, from now on the row itself (KeyError: no such row)."""
        position = self.pending.pop(key)
        values = self.new_rows[position]
        assert isinstance(values, tuple)
        row = dict(zip(self.insert_columns, values, strict=True))
        self.new_rows[position] = row
        self.current[key] = row
        return row

    def add_values(self, key: Any, values: tuple[Any, ...]) -> None:
        """A new row as its values in :attr:`insert_columns` order (built where the events are prepared):
        inserted as it is unless an event of the batch changes it."""
        self.pending[key] = len(self.new_rows)
        self.new_rows.append(values)

    def create(self, key: Any, block: int, values: Row) -> Row:
        row = {**values, self.key: key, "valid_from": block, "valid_to": None}
        self.current[key] = row
        self.new_rows.append(row)
        return row

    def change(self, key: Any, block: int, **changes: Any) -> Row:
        """A new version of ``key`` from ``block`` on (or an in-place change within the same block)."""
        row = self.get(key)
        if row["valid_from"] == block:
            row.update(changes)
            if "row_id" in row:
                self.rewrites[row["row_id"]] = row
            return row
        if "row_id" in row:
            self.closures.append((row["row_id"], block))
            successor = row.copy()
            del successor["row_id"]
        else:
            row["valid_to"] = block
            successor = row.copy()
        successor.update(changes, valid_from=block, valid_to=None)
        self.current[key] = successor
        self.new_rows.append(successor)
        return successor

    def flush(self, conn: Connection, writer: _Writer) -> None:
        writer.close_versions(self.table, self.closures)
        if self.rewrites:
            rows = [{("b_" + k): v for k, v in row.items()} for row in self.rewrites.values()]
            columns = [c for c in self.rewrites[next(iter(self.rewrites))] if c != "row_id"]
            stmt = (
                update(self.table)
                .where(self.table.c.row_id == bindparam("b_row_id"))
                .values({c: bindparam("b_" + c) for c in columns})
            )
            conn.execute(stmt, rows)
        if self.new_rows:
            columns = self.insert_columns
            values = itemgetter(*columns)
            writer.insert(self.table, columns, [r if type(r) is tuple else values(r) for r in self.new_rows])


class Batch:
    """One block range's worth of events, projected onto the store."""

    def __init__(self, conn: Connection, ledger: LedgerPosition) -> None:
        self.conn = conn
        self.ledger = ledger
        self.receivables = _Versioned(table_of(Receivable), "id")
        self.participants = _Versioned(table_of(Participant), "entity_id")
        self.keys = _Versioned(table_of(ParticipantKey), "address")
        self.claims = _Versioned(table_of(PaymentClaimRow), "claim_id")
        self.assignments: list[Row] = []
        self.payments: list[Row] = []
        self.rejections: list[Row] = []
        self._writer = _Writer(conn)
        self._insert_raw = self._writer.inserter(table_of(RawEvent), RAW_COLUMNS)
        self._raw_writing: _Beside | None = None

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """Waits for a raw-event write under way (the connection is the batch's until then); its error
        is raised if nothing else is."""
        self._settle(raise_error=kind is None)

    # ------------------------------------------------------------------ apply

    def apply(self, prepared: Prepared) -> LedgerPosition:
        """Applies a range's prepared events in chain order, folding them onto this batch's ledger position.

        The range's raw events, which no event changes, are written on another thread meanwhile (once
        the rows the events change are loaded: the connection is then that thread's until
        :meth:`flush`). The drivers leave the interpreter lock while the database works: PostgreSQL's
        server stores them while the events are applied here, and SQLite's code runs beside the Python
        of the handlers (with the binary ``COPY``, the benchmark's PostgreSQL backfill 6.37-6.87 s
        against 6.71-7.21 s). The batch is a context manager, whose end waits for that write whatever
        happened."""
        self._settle(raise_error=True)
        self.ledger = prepared.fold(self.ledger)
        self._preload(prepared.events)
        if self._writer.kind == "core":
            self._insert_raw(prepared.raw)
        else:
            self._raw_writing = _Beside(self._insert_raw, prepared.raw)
        handlers = _HANDLERS
        for name, block, log_index, args in prepared.events:
            handler = handlers.get(name)
            if handler is not None:
                handler(self, args, block, log_index)
        return self.ledger

    def _settle(self, *, raise_error: bool) -> None:
        writing, self._raw_writing = self._raw_writing, None
        if writing is not None:
            writing.wait(raise_error=raise_error)

    def _preload(self, events: Sequence[tuple[str, int, int, dict[str, Any]]]) -> None:
        """Loads, in one query per table, the current rows that events of this batch change."""
        touched: dict[str, set[Any]] = {"id": set(), "entityId": set(), "key": set(), "claimId": set()}
        changes = _CHANGES
        for name, _, _, args in events:
            for arg in changes.get(name, ()):
                if args[arg]:
                    touched[arg].add(args[arg])
        self.receivables.load(self.conn, touched["id"])
        self.participants.load(self.conn, touched["entityId"])
        self.keys.load(self.conn, touched["key"])
        self.claims.load(self.conn, touched["claimId"])

    # ------------------------------------------------------------------ flush

    def flush(self) -> None:
        self._settle(raise_error=True)
        writer = self._writer
        for versioned in (self.receivables, self.participants, self.keys, self.claims):
            versioned.flush(self.conn, writer)
        for table, rows in (
            (table_of(Assignment), self.assignments),
            (table_of(Payment), self.payments),
            (table_of(Rejection), self.rejections),
        ):
            if rows:
                columns = [c.name for c in table.columns]
                writer.insert(table, columns, list(map(itemgetter(*columns), rows)))


class _Beside:
    """``work(rows)`` on a thread of its own; :meth:`wait` joins it."""

    def __init__(self, work: Callable[[list[tuple[Any, ...]]], None], rows: list[tuple[Any, ...]]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work, rows), name="indexer-raw-events", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[list[tuple[Any, ...]]], None], rows: list[tuple[Any, ...]]) -> None:
        try:
            work(rows)
        except BaseException as exc:  # handed to the batch's thread
            self._error = exc

    def wait(self, *, raise_error: bool) -> None:
        self._thread.join()
        if self._error is not None and raise_error:
            raise self._error


# ---------------------------------------------------------------------- event handlers


# A registration's row, column by column (its values are built where the events are prepared, by
# :data:`READY_ROWS`, so the indexer's process only passes them on; a later event of the same batch that
# changes the receivable turns them into a dict first).
_REGISTERED_ROW: dict[str, str] = {
    "id": "a['id']",
    "valid_from": "block",
    "valid_to": "None",
    "creditor": "a['creditor']",
    "debtor": "a['debtor']",
    "holder": "a['creditor']",
    "status": str(int(Status.REGISTERED)),
    "recourse": "False",
    "face_value": "a['faceValue']",
    "paid": "0",
    "currency": "a['currency'].decode('ascii', 'replace')",
    "issue_date": "a['issueDate']",
    "due_date": "a['dueDate']",
    "fingerprint": "a['fingerprint']",
    "invoice_key": "a['invoiceKey']",
    "number_hash": "a['invoiceNumberHash']",
    "document_hash": "a['documentHash']",
    "parent_id": "None",
    "supersedes": "a['supersedes'] or None",
    "registered_block": "block",
}


def _values_builder(table: Table, expressions: dict[str, str]) -> Any:
    columns = _insert_columns(table)
    if set(columns) != set(expressions):
        raise RuntimeError(f"{table.name}: the row builder names {sorted(expressions)}, the table {sorted(columns)}")
    namespace: dict[str, Any] = {}
    exec(f"def values(a, block):\n    return ({', '.join(expressions[c] for c in columns)},)\n", namespace)
    return namespace["values"]


READY_ROWS: dict[str, Any] = {"ReceivableRegistered": _values_builder(table_of(Receivable), _REGISTERED_ROW)}
"""Per event name, ``(args, block) -> values`` of the row the event creates, for the events whose handler
takes those values instead of the event's fields (see :func:`registry.indexer.reader.prepare`)."""


def _registered(b: Batch, values: tuple[Any, ...], block: int, log_index: int) -> None:
    b.receivables.add_values(values[_REGISTERED_ID], values)


_REGISTERED_ID = _insert_columns(table_of(Receivable)).index("id")


def _status(status: Status) -> Any:
    def handler(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
        b.receivables.change(a["id"], block, status=int(status))

    return handler


def _dispute_resolved(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    # Upheld is followed by ReceivableCancelled in the same transaction; Withdrawn reopens.
    if a["resolution"] == DisputeResolution.WITHDRAWN:
        b.receivables.change(a["id"], block, status=int(Status.REGISTERED))


def _assigned(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    row = b.receivables.get(a["id"])
    status = Status.ASSIGNED if row["status"] == Status.CONFIRMED else Status(row["status"])
    b.receivables.change(a["id"], block, holder=a["to"], recourse=a["recourse"], status=int(status))
    b.assignments.append(
        {
            "block_number": block,
            "log_index": log_index,
            "receivable_id": a["id"],
            "from_entity": a["from"],
            "to_entity": a["to"],
            "advance": a["advance"],
            "recourse": a["recourse"],
            "terms_hash": a["termsHash"],
        }
    )


def _split(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    parent = b.receivables.get(a["id"])
    part_status = Status.CONFIRMED if parent["holder"] == parent["creditor"] else Status.ASSIGNED
    for part_id, amount in zip(a["partIds"], a["amounts"], strict=True):
        b.receivables.create(
            part_id,
            block,
            {
                **{k: parent[k] for k in ("creditor", "debtor", "holder", "recourse", "currency", "issue_date")},
                "due_date": parent["due_date"],
                "status": int(part_status),
                "face_value": amount,
                "paid": 0,
                "fingerprint": None,
                "invoice_key": None,
                "number_hash": parent["number_hash"],
                "document_hash": parent["document_hash"],
                "parent_id": a["id"],
                "supersedes": None,
                "registered_block": block,
            },
        )
    b.receivables.change(a["id"], block, status=int(Status.SPLIT))


def _payment_reported(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    b.claims.create(
        a["claimId"],
        block,
        {
            "receivable_id": a["id"],
            "payee": a["payee"],
            "amount": a["amount"],
            "status": int(ClaimStatus.PENDING),
            "payment_ref": a["paymentRef"],
        },
    )


def _payment_rejected(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    b.claims.change(a["claimId"], block, status=int(ClaimStatus.REJECTED))


def _payment_recorded(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    b.receivables.change(a["id"], block, paid=a["paidTotal"], status=a["status"])
    if a["claimId"]:
        b.claims.change(a["claimId"], block, status=int(ClaimStatus.ACKNOWLEDGED))
    b.payments.append(
        {
            "block_number": block,
            "log_index": log_index,
            "receivable_id": a["id"],
            "payee": a["payee"],
            "claim_id": a["claimId"],
            "amount": a["amount"],
            "paid_total": a["paidTotal"],
            "payment_ref": a["paymentRef"],
        }
    )


def _bought_back(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    row = b.receivables.get(a["id"])
    status = Status.CONFIRMED if row["paid"] == 0 else Status.PARTIALLY_PAID
    b.receivables.change(a["id"], block, holder=a["creditor"], recourse=False, status=int(status))


def _rejected(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    from registry.chain.reverts import decode_revert

    b.rejections.append(
        {
            "block_number": block,
            "log_index": log_index,
            "creditor": a["creditor"],
            "line": a["line"],
            "reason": str(decode_revert(a["reason"])),
        }
    )


def _admitted(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    b.participants.create(
        a["entityId"],
        block,
        {"registration_hash": a["registrationHash"], "status": int(EntityStatus.ACTIVE), "roles": ""},
    )


def _roles_with(roles: str, role: bytes, present: bool) -> str:
    names = {r for r in roles.split(",") if r}
    name = ROLE_NAMES.get(role, "0x" + role.hex())
    if present:
        names.add(name)
    else:
        names.discard(name)
    return ",".join(sorted(names))


def _role_granted(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    row = b.participants.get(a["entityId"])
    b.participants.change(a["entityId"], block, roles=_roles_with(row["roles"], a["role"], True))


def _role_revoked(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    row = b.participants.get(a["entityId"])
    b.participants.change(a["entityId"], block, roles=_roles_with(row["roles"], a["role"], False))


def _entity_status(status: EntityStatus) -> Any:
    def handler(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
        b.participants.change(a["entityId"], block, status=int(status))

    return handler


def _key_added(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    b.keys.create(a["key"], block, {"entity_id": a["entityId"], "status": int(KeyStatus.ACTIVE)})


def _key_revoked(b: Batch, a: dict[str, Any], block: int, log_index: int) -> None:
    b.keys.change(a["key"], block, status=int(KeyStatus.REVOKED))


# Which argument of an event names an existing row the event changes (to preload it).
_CHANGES: dict[str, tuple[str, ...]] = {
    "ReceivableConfirmed": ("id",),
    "ReceivableDisputed": ("id",),
    "DisputeResolved": ("id",),
    "ReceivableCancelled": ("id",),
    "ReceivableAssigned": ("id",),
    "ReceivableSplit": ("id",),
    "PaymentRecorded": ("id", "claimId"),
    "PaymentRejected": ("claimId",),
    "ReceivableBoughtBack": ("id",),
    "ReceivableDefaulted": ("id",),
    "ReceivableWrittenOff": ("id",),
    "EntityRoleGranted": ("entityId",),
    "EntityRoleRevoked": ("entityId",),
    "ParticipantSuspended": ("entityId",),
    "ParticipantReinstated": ("entityId",),
    "KeyRevoked": ("key",),
}

_HANDLERS: dict[str, Any] = {
    "ReceivableRegistered": _registered,
    "ReceivableConfirmed": _status(Status.CONFIRMED),
    "ReceivableDisputed": _status(Status.DISPUTED),
    "DisputeResolved": _dispute_resolved,
    "ReceivableCancelled": _status(Status.CANCELLED),
    "ReceivableAssigned": _assigned,
    "ReceivableSplit": _split,
    "PaymentReported": _payment_reported,
    "PaymentRejected": _payment_rejected,
    "PaymentRecorded": _payment_recorded,
    "ReceivableBoughtBack": _bought_back,
    "ReceivableDefaulted": _status(Status.DEFAULTED),
    "ReceivableWrittenOff": _status(Status.WRITTEN_OFF),
    "RegistrationRejected": _rejected,
    "ParticipantAdmitted": _admitted,
    "EntityRoleGranted": _role_granted,
    "EntityRoleRevoked": _role_revoked,
    "ParticipantSuspended": _entity_status(EntityStatus.SUSPENDED),
    "ParticipantReinstated": _entity_status(EntityStatus.ACTIVE),
    "KeyAdded": _key_added,
    "KeyRevoked": _key_revoked,
}


# ---------------------------------------------------------------------- rollback and cursor


def rollback_to(conn: Connection, block: int) -> None:
    """Undo everything derived from blocks above ``block`` (a reorg's common ancestor)."""
    for versioned in VERSIONED_TABLES:
        table = table_of(versioned)
        conn.execute(delete(table).where(table.c.valid_from > block))
        conn.execute(update(table).where(table.c.valid_to > block).values(valid_to=None))
    for appended in APPEND_ONLY_TABLES:
        table = table_of(appended)
        column = table.c.number if table.name == "block_headers" else table.c.block_number
        conn.execute(delete(table).where(column > block))


def ledger_as_of(conn: Connection, block: int) -> LedgerPosition:
    """The ledger position after the last folded event at or below ``block``."""
    table = table_of(RawEvent)
    row = conn.execute(
        select(table.c.seq, table.c.ledger_head)
        .where(table.c.block_number <= block, table.c.seq.is_not(None))
        .order_by(table.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return LedgerPosition(bytes(32), 0)
    return LedgerPosition(bytes(row.ledger_head), int(row.seq))


def write_cursor(conn: Connection, values: Row) -> None:
    table = table_of(Cursor)
    values = {**values, "updated_at": time.time()}
    if conn.execute(update(table).where(table.c.id == 1).values(values)).rowcount == 0:
        conn.execute(insert(table).values(id=1, **values))
