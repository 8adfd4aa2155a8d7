"""index current receivables by debtor and invoice number hash (split parts, similar numbers)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("receivables", schema=None) as batch_op:
        batch_op.create_index(
            "ix_receivables_current_debtor_number",
            ["debtor", "number_hash"],
            unique=False,
            sqlite_where=sa.text("valid_to IS NULL"),
            postgresql_where=sa.text("valid_to IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("receivables", schema=None) as batch_op:
        batch_op.drop_index("ix_receivables_current_debtor_number")
