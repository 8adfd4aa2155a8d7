"""The SQL mirror of the chain (SQLAlchemy 2, typed).

Mutable state is **versioned**: a row is valid from the block that made it (``valid_from``) until the
block that replaced it (``valid_to``, NULL while current). "Receivable X as of block N" is a query,
and rolling back to block B is a delete (``valid_from > B``) plus a reopen (``valid_to > B``). Facts
that never change (events, assignments, payments) are append-only and roll back by deleting rows
above B. Enums are stored as the integers of the Python ``IntEnum`` that mirrors the contract.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


CURRENT = text("valid_to IS NULL")
CLOSED = text("valid_to IS NOT NULL")
"""The predicate of the ``valid_to`` indexes: they serve a rollback's reopening (``valid_to > B``) and
hold closed versions only, so a new current version (every registration) is written to one index fewer,
and no lookup of current rows (``valid_to IS NULL``) can be planned as a walk over one of them."""


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class (typed, for bulk statements)."""
    return cast(Table, model.__table__)


class Cursor(Base):
    """How far the mirror has indexed, and the ledger hash as of that block (one row)."""

    __tablename__ = "cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    registry_address: Mapped[str] = mapped_column(String(42))
    genesis_hash: Mapped[str] = mapped_column(String(66))
    deploy_block: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    ledger_head: Mapped[bytes] = mapped_column(LargeBinary(32))
    ledger_count: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column()


class BlockHeader(Base):
    """Hashes of recently indexed blocks: the window over which reorgs are detected."""

    __tablename__ = "block_headers"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    parent_hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class RawEvent(Base):
    """Every log of the registry, decoded; ``seq`` and ``ledger_head`` for folded events."""

    __tablename__ = "raw_events"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    block_hash: Mapped[str] = mapped_column(String(66))
    tx_hash: Mapped[str] = mapped_column(String(66))
    name: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    ledger_head: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    args: Mapped[str] = mapped_column(Text)  # JSON of the decoded fields (bytes as 0x-hex)


class Receivable(Base):
    """A receivable's state, versioned by block."""

    __tablename__ = "receivables"

    row_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[int] = mapped_column(BigInteger)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_to: Mapped[int | None] = mapped_column(BigInteger)
    creditor: Mapped[int] = mapped_column(Integer)
    debtor: Mapped[int] = mapped_column(Integer)
    holder: Mapped[int] = mapped_column(Integer)
    status: Mapped[int] = mapped_column(Integer)  # registry.domain.Status
    recourse: Mapped[bool] = mapped_column(Boolean)
    face_value: Mapped[int] = mapped_column(BigInteger)
    paid: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    issue_date: Mapped[int] = mapped_column(BigInteger)
    due_date: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary(32))  # NULL for split parts
    invoice_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    number_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    document_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    parent_id: Mapped[int | None] = mapped_column(BigInteger)
    supersedes: Mapped[int | None] = mapped_column(BigInteger)
    registered_block: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_receivables_id_valid_from", "id", "valid_from"),
        Index("ix_receivables_current_id", "id", unique=True, sqlite_where=CURRENT, postgresql_where=CURRENT),
        Index("ix_receivables_current_key", "invoice_key", sqlite_where=CURRENT, postgresql_where=CURRENT),
        Index("ix_receivables_current_fp", "fingerprint", sqlite_where=CURRENT, postgresql_where=CURRENT),
        Index("ix_receivables_current_doc", "document_hash", sqlite_where=CURRENT, postgresql_where=CURRENT),
        Index(
            "ix_receivables_current_debtor_amount",
            "debtor",
            "face_value",
            "due_date",
            sqlite_where=CURRENT,
            postgresql_where=CURRENT,
        ),
        Index("ix_receivables_valid_to", "valid_to", sqlite_where=CLOSED, postgresql_where=CLOSED),
        Index(
            "ix_receivables_current_debtor_number",
            "debtor",
            "number_hash",
            sqlite_where=CURRENT,
            postgresql_where=CURRENT,
        ),
    )


CHECK_INDEXES = (
    "ix_receivables_current_key",
    "ix_receivables_current_fp",
    "ix_receivables_current_doc",
    "ix_receivables_current_debtor_amount",
    "ix_receivables_current_debtor_number",
)
"""The receivables' indexes that only readers use (double-financing and near-duplicate checks, anomaly
scans, certificates), none that the indexer's writes read: five indexes keyed by hashes, so a
registration's insert lands at a random place in each, about 40% of its cost. A backfill into an
(almost) empty mirror leaves them out and builds them once caught up (``IndexerConfig.defer_check_indexes_from``);
one interrupted leaves them out until the indexer next starts, so a migration that alters them must not
assume they exist (``DROP INDEX IF EXISTS``)."""


def check_indexes() -> list[Index]:
    """The :data:`CHECK_INDEXES`, as declared on the receivables table."""
    by_name = {str(ix.name): ix for ix in table_of(Receivable).indexes}
    return [by_name[name] for name in CHECK_INDEXES]


class Participant(Base):
    """A legal entity's registration hash, status and party roles, versioned."""

    __tablename__ = "participants"

    row_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_to: Mapped[int | None] = mapped_column(BigInteger)
    registration_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[int] = mapped_column(Integer)  # registry.domain.EntityStatus
    roles: Mapped[str] = mapped_column(String(64))  # comma-separated role names, sorted

    __table_args__ = (
        Index("ix_participants_current", "entity_id", unique=True, sqlite_where=CURRENT, postgresql_where=CURRENT),
        Index("ix_participants_valid_to", "valid_to", sqlite_where=CLOSED, postgresql_where=CLOSED),
    )


class ParticipantKey(Base):
    """A signing key of an entity, versioned (added, revoked)."""

    __tablename__ = "participant_keys"

    row_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(42))
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_to: Mapped[int | None] = mapped_column(BigInteger)
    entity_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[int] = mapped_column(Integer)  # registry.domain.KeyStatus

    __table_args__ = (
        Index("ix_participant_keys_current", "address", unique=True, sqlite_where=CURRENT, postgresql_where=CURRENT),
        Index("ix_participant_keys_valid_to", "valid_to", sqlite_where=CLOSED, postgresql_where=CLOSED),
    )


class PaymentClaimRow(Base):
    """A payment reported by a debtor, versioned (pending, acknowledged, rejected)."""

    __tablename__ = "payment_claims"

    row_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    claim_id: Mapped[int] = mapped_column(BigInteger)
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_to: Mapped[int | None] = mapped_column(BigInteger)
    receivable_id: Mapped[int] = mapped_column(BigInteger)
    payee: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[int] = mapped_column(Integer)  # registry.domain.ClaimStatus
    payment_ref: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = (
        Index("ix_payment_claims_current", "claim_id", unique=True, sqlite_where=CURRENT, postgresql_where=CURRENT),
        Index("ix_payment_claims_valid_to", "valid_to", sqlite_where=CLOSED, postgresql_where=CLOSED),
    )


class Assignment(Base):
    """An assignment (or re-assignment) of a receivable: append-only."""

    __tablename__ = "assignments"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    receivable_id: Mapped[int] = mapped_column(BigInteger, index=True)
    from_entity: Mapped[int] = mapped_column(Integer)
    to_entity: Mapped[int] = mapped_column(Integer)
    advance: Mapped[int] = mapped_column(BigInteger)
    recourse: Mapped[bool] = mapped_column(Boolean)
    terms_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class Payment(Base):
    """A payment counted against a receivable: append-only."""

    __tablename__ = "payments"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    receivable_id: Mapped[int] = mapped_column(BigInteger, index=True)
    payee: Mapped[int] = mapped_column(Integer)
    claim_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    paid_total: Mapped[int] = mapped_column(BigInteger)
    payment_ref: Mapped[bytes] = mapped_column(LargeBinary(32))


class Rejection(Base):
    """A refused line of a batch registration: append-only."""

    __tablename__ = "registration_rejections"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    creditor: Mapped[int] = mapped_column(Integer)
    line: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)


class AuthNonce(Base):
    """A sign-in challenge: issued by the API, consumed once (API replicas share it through the database)."""

    __tablename__ = "auth_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float)


class RelayedRequest(Base):
    """A signed request the API relayed, by its digest: an identical request is submitted only once."""

    __tablename__ = "relayed_requests"

    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    signer: Mapped[str] = mapped_column(String(42))
    function: Mapped[str] = mapped_column(String(64))
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    status: Mapped[str] = mapped_column(String(16))  # submitted, mined, failed
    created_at: Mapped[float] = mapped_column(Float)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)


VERSIONED_TABLES = (Receivable, Participant, ParticipantKey, PaymentClaimRow)
APPEND_ONLY_TABLES = (RawEvent, Assignment, Payment, Rejection, BlockHeader)


# ---------------------------------------------------------------------------------------- reminders
# The reminder worker's outbox (registry/reminders.py). Not derived from blocks, so a reorg's rollback
# leaves it alone: the worker itself withdraws a notice whose reason vanished before it was delivered.


class Notice(Base):
    """A reminder or escalation for one recipient entity; ``id`` is a hash of what it is about, so a
    rescan finds the notice it already made (states: active, withdrawn)."""

    __tablename__ = "notices"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # registry.reminders.NoticeKind
    step: Mapped[int] = mapped_column(Integer)  # days before / after, by kind (0 for due_today)
    recipient: Mapped[int] = mapped_column(Integer, index=True)
    receivable_id: Mapped[int] = mapped_column(BigInteger, index=True)
    claim_id: Mapped[int | None] = mapped_column(BigInteger)
    due_at: Mapped[int] = mapped_column(BigInteger)  # block time the notice became due (its threshold)
    as_of_block: Mapped[int] = mapped_column(BigInteger)  # mirror block whose time first reached it
    as_of_timestamp: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)  # JSON, the body delivered
    created_at: Mapped[float] = mapped_column(Float)
    withdrawn_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_notices_state_as_of_block", "state", "as_of_block"),)


class NoticeSubscription(Base):
    """Where a participant wants its notices: a webhook URL or an e-mail address, for some kinds."""

    __tablename__ = "notice_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[int] = mapped_column(Integer, index=True)
    channel: Mapped[str] = mapped_column(String(16))  # webhook, email
    target: Mapped[str] = mapped_column(String(2000))
    kinds: Mapped[str] = mapped_column(String(200))  # comma-separated kinds; empty: every kind
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)


class NoticeDelivery(Base):
    """One notice to one subscription (states: pending, sending, delivered, dead, withdrawn)."""

    __tablename__ = "notice_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notice_id: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[float] = mapped_column(Float)  # wall clock; while sending: the lease's end
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("uq_notice_deliveries_notice_subscription", "notice_id", "subscription_id", unique=True),
        Index("ix_notice_deliveries_state_next", "state", "next_attempt_at"),
    )


class NoticeAttempt(Base):
    """One attempt to deliver: append-only, the history behind a dead letter."""

    __tablename__ = "notice_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(Integer, index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)


class AnomalyFlag(Base):
    """An anomaly flag of ``registry.anomalies``: one row per (kind, receivable), so a rescan never
    duplicates it. ``state``: ``open``; ``cleared`` by a person with a note (a rescan leaves a cleared flag
    cleared); ``retired`` when a reorg removed the evidence (a rescan that finds it again reopens it).
    ``evidence_block`` is the newest block whose event the statistic used: a rollback below it retires the
    flag. Not versioned by block like the mirror's rows: the flag's own history is its state and stamps."""

    __tablename__ = "anomaly_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # registry.anomalies.Kind
    receivable_id: Mapped[int] = mapped_column(BigInteger)
    severity: Mapped[str] = mapped_column(String(8))  # registry.anomalies.Severity
    score: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    related_id: Mapped[int | None] = mapped_column(BigInteger)  # e.g. the earlier near-duplicate
    evidence_block: Mapped[int] = mapped_column(BigInteger)
    raised_block: Mapped[int] = mapped_column(BigInteger)  # the scan's as-of block when (re)raised
    state: Mapped[str] = mapped_column(String(8))  # registry.anomalies.FlagState
    raised_at: Mapped[float] = mapped_column(Float)
    cleared_by: Mapped[str | None] = mapped_column(String(42))  # the clearing key's address
    cleared_entity: Mapped[int | None] = mapped_column(Integer)
    clear_note: Mapped[str | None] = mapped_column(Text)
    cleared_at: Mapped[float | None] = mapped_column(Float)
    retired_block: Mapped[int | None] = mapped_column(BigInteger)  # the reorg's common ancestor

    __table_args__ = (
        UniqueConstraint("kind", "receivable_id", name="uq_anomaly_flags_kind_receivable"),
        Index("ix_anomaly_flags_receivable_id", "receivable_id"),
        Index("ix_anomaly_flags_state_evidence", "state", "evidence_block"),
    )


class AnomalyScanBlock(Base):
    """Blocks the anomaly scanner has seen, with hash and time: the highest is its watermark (scans are
    incremental from it; a hash the chain no longer has means a reorg), and all of them are its clock's
    anchors for blocks whose headers the indexer has already pruned."""

    __tablename__ = "anomaly_scan_blocks"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    block_hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


# ---------------------------------------------------------------------------------------- auto-approval
# Factors' policies and the offers they decided (registry/approval.py). Not derived from blocks: a reorg's
# rollback leaves them alone (an offer's transaction hash and block say what was relayed).


class ApprovalPolicy(Base):
    """A factor's auto-approval policy (one row per factor entity; ``rules`` is its JSON form). The row
    is also the lock that serialises the factor's decisions on PostgreSQL (SELECT ... FOR UPDATE)."""

    __tablename__ = "approval_policies"

    factor: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    rules: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(42))
    updated_at: Mapped[float] = mapped_column(Float)


class Offer(Base):
    """A holder's signed ``assign`` request offered to a factor, by its digest (states: queued, accepted,
    assigned, declined, failed, expired). ``amount`` is the unpaid balance at the offer: the exposure
    it adds; ``rule`` the rule that made the latest decision, ``rules`` every rule's result (JSON)."""

    __tablename__ = "offers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    factor: Mapped[int] = mapped_column(Integer)
    holder: Mapped[int] = mapped_column(Integer, index=True)
    signer: Mapped[str] = mapped_column(String(42))
    receivable_id: Mapped[int] = mapped_column(BigInteger)
    debtor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    face_value: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    advance: Mapped[int] = mapped_column(BigInteger)
    recourse: Mapped[bool] = mapped_column(Boolean)
    terms_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    deadline: Mapped[int] = mapped_column(BigInteger)
    request: Mapped[str] = mapped_column(Text)  # the signed request's JSON (registry.relay.request_json)
    state: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(32))
    rules: Mapped[str] = mapped_column(Text)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    decided_at: Mapped[float] = mapped_column(Float)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_offers_factor_state_currency", "factor", "state", "currency"),)


class OfferDecision(Base):
    """Every decision on an offer, append-only: by the policy, a person (their key) or the relayer."""

    __tablename__ = "offer_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    offer_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(42))  # "policy", "relayer" or the deciding key's address
    outcome: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    rules: Mapped[str] = mapped_column(Text)
