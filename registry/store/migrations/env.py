"""Alembic environment: runs on the connection handed in by registry.store.db.migrate()."""

from __future__ import annotations

from alembic import context

from registry.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through registry.store.db.migrate(engine)")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
