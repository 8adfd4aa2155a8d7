"""Auto-approval (issue 6): factors' policies, offers and every decision on them

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_policies",
        sa.Column("factor", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("updated_by", sa.String(length=42), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("factor", name=op.f("pk_approval_policies")),
    )
    op.create_table(
        "offers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("factor", sa.Integer(), nullable=False),
        sa.Column("holder", sa.Integer(), nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("receivable_id", sa.BigInteger(), nullable=False),
        sa.Column("debtor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("face_value", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("advance", sa.BigInteger(), nullable=False),
        sa.Column("recourse", sa.Boolean(), nullable=False),
        sa.Column("terms_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("deadline", sa.BigInteger(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("decided_at", sa.Float(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offers")),
        sa.UniqueConstraint("digest", name=op.f("uq_offers_digest")),
    )
    op.create_index(op.f("ix_offers_holder"), "offers", ["holder"], unique=False)
    op.create_index("ix_offers_factor_state_currency", "offers", ["factor", "state", "currency"], unique=False)
    op.create_table(
        "offer_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("offer_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=42), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offer_decisions")),
    )
    op.create_index(op.f("ix_offer_decisions_offer_id"), "offer_decisions", ["offer_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_offer_decisions_offer_id"), table_name="offer_decisions")
    op.drop_table("offer_decisions")
    op.drop_index("ix_offers_factor_state_currency", table_name="offers")
    op.drop_index(op.f("ix_offers_holder"), table_name="offers")
    op.drop_table("offers")
    op.drop_table("approval_policies")
