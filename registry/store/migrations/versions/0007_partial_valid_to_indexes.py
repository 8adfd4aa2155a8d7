"""the valid_to indexes hold closed versions only (valid_to IS NOT NULL)

A rollback reopens the versions closed above its block (``valid_to > B``), which implies the
predicate; current versions (NULL) were most of each index, written on every new version and never
looked up through it. Five to eight percent of a registration's insert, measured.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("receivables", "participants", "participant_keys", "payment_claims")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_valid_to")
            batch_op.create_index(
                f"ix_{table}_valid_to",
                ["valid_to"],
                unique=False,
                sqlite_where=sa.text("valid_to IS NOT NULL"),
                postgresql_where=sa.text("valid_to IS NOT NULL"),
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_valid_to")
            batch_op.create_index(f"ix_{table}_valid_to", ["valid_to"], unique=False)
