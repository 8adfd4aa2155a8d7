"""Anomaly flags (issue 6) and the anomaly scanner's watermark and clock anchors

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anomaly_flags",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("receivable_id", sa.BigInteger(), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("related_id", sa.BigInteger(), nullable=True),
        sa.Column("evidence_block", sa.BigInteger(), nullable=False),
        sa.Column("raised_block", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("raised_at", sa.Float(), nullable=False),
        sa.Column("cleared_by", sa.String(length=42), nullable=True),
        sa.Column("cleared_entity", sa.Integer(), nullable=True),
        sa.Column("clear_note", sa.Text(), nullable=True),
        sa.Column("cleared_at", sa.Float(), nullable=True),
        sa.Column("retired_block", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomaly_flags")),
        sa.UniqueConstraint("kind", "receivable_id", name="uq_anomaly_flags_kind_receivable"),
    )
    op.create_index("ix_anomaly_flags_receivable_id", "anomaly_flags", ["receivable_id"], unique=False)
    op.create_index("ix_anomaly_flags_state_evidence", "anomaly_flags", ["state", "evidence_block"], unique=False)
    op.create_table(
        "anomaly_scan_blocks",
        sa.Column("block_number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("block_number", name=op.f("pk_anomaly_scan_blocks")),
    )


def downgrade() -> None:
    op.drop_table("anomaly_scan_blocks")
    op.drop_index("ix_anomaly_flags_state_evidence", table_name="anomaly_flags")
    op.drop_index("ix_anomaly_flags_receivable_id", table_name="anomaly_flags")
    op.drop_table("anomaly_flags")
