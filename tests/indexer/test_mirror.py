"""The mirror equals the chain after indexing the demo ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.chain.contract import RegistryClient
from registry.demo import Consortium, seed_ledger
from registry.domain import Status
from registry.indexer.indexer import Indexer
from registry.store.db import make_engine
from registry.store.models import Receivable


def test_mirror_of_the_demo_ledger_equals_the_contract_state(
    registry: RegistryClient, consortium: Consortium, database_url: str
) -> None:
    seed_ledger(registry, consortium, per_state=2)
    engine = make_engine(database_url)
    with Indexer(registry.chain, registry.deployment, engine) as indexer:
        indexer.sync()
        assert indexer.cursor().ledger.count == registry.ledger()[1]
    with engine.connect() as conn:
        rows = Session(conn).execute(select(Receivable).where(Receivable.valid_to.is_(None))).all()
        assert conn.execute(select(func.count()).select_from(Receivable)).scalar_one() > len(rows)
    assert len(rows) == registry.receivable_count()
    for (row,) in rows:
        chain = registry.get_receivable(row.id)
        assert (row.creditor, row.debtor, row.holder) == (chain.creditor, chain.debtor, chain.holder)
        assert Status(row.status) is chain.status
        assert (row.face_value, row.paid, row.recourse, row.due_date) == (
            chain.face_value,
            chain.paid,
            chain.recourse,
            chain.due_date,
        )
    engine.dispose()
