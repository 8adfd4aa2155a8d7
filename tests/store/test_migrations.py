"""The Alembic migrations create exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from registry.store.db import make_engine, migrate
from registry.store.models import VERSIONED_TABLES, Base, table_of


def test_migrations_build_the_schema_of_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_migrating_twice_changes_nothing(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate(engine)
    before = sorted(inspect(engine).get_table_names())
    migrate(engine)
    assert sorted(inspect(engine).get_table_names()) == before
    assert "receivables" in before
    engine.dispose()


def _index_sql(conn: Connection, name: str) -> str:
    if conn.dialect.name == "postgresql":
        return str(conn.exec_driver_sql(f"SELECT indexdef FROM pg_indexes WHERE indexname = '{name}'").scalar_one())
    return str(conn.exec_driver_sql(f"SELECT sql FROM sqlite_master WHERE name = '{name}'").scalar_one())


def test_the_valid_to_indexes_hold_closed_versions_only(database_url: str) -> None:
    # (Alembic's comparison does not look at an index's predicate: checked here.)
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        for table in (table_of(model).name for model in VERSIONED_TABLES):
            assert "valid_to IS NOT NULL" in _index_sql(conn, f"ix_{table}_valid_to").replace("(", "").replace(")", "")
    engine.dispose()


def test_a_rollback_reopens_through_the_valid_to_index_and_a_current_lookup_cannot_walk_it(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate(engine)
    with engine.connect() as conn:
        reopen = " ".join(
            str(row[-1])
            for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN UPDATE receivables SET valid_to = NULL WHERE valid_to > 5"
            )
        )
        assert "ix_receivables_valid_to" in reopen
        current = " ".join(
            str(row[-1])
            for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM receivables WHERE valid_to IS NULL AND debtor = 3"
            )
        )
        assert "ix_receivables_valid_to" not in current
    engine.dispose()
