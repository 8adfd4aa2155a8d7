"""Shared fixtures: one local node per test session, the registry deployed once with the demo
consortium admitted, and a snapshot revert before every test so that tests never see each other.

The node is chosen by the one setting ``REGISTRY_NODE`` (anvil, the default, or hardhat).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from registry.chain.client import ChainClient
from registry.chain.contract import RegistryClient
from registry.chain.deployment import Deployment, deploy
from registry.chain.node import LocalNode
from registry.demo import DAY, STRANGER_INDEX, Consortium, Member, admit_consortium
from registry.invoice import Invoice
from registry.keys import anvil_account
from registry.settings import Settings
from registry.types import EntityId


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def node(settings: Settings) -> Iterator[LocalNode]:
    with LocalNode(kind=settings.node, port=0, block_time=0) as running:
        yield running


@pytest.fixture(scope="session")
def chain(node: LocalNode) -> Iterator[ChainClient]:
    with ChainClient(node.url) as client:
        yield client


@pytest.fixture(scope="session")
def deployment(chain: ChainClient) -> Deployment:
    return deploy(chain, anvil_account(0))


@pytest.fixture(scope="session")
def _base_registry(chain: ChainClient, deployment: Deployment) -> tuple[RegistryClient, Consortium]:
    client = RegistryClient(chain, deployment)
    return client, admit_consortium(client)


class ChainState:
    """Snapshot/revert and time travel on the local node (Anvil and Hardhat both speak these)."""

    def __init__(self, chain: ChainClient) -> None:
        self.chain = chain

    def snapshot(self) -> str:
        return str(self.chain.rpc.call("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.chain.rpc.call("evm_revert", [snapshot_id]):
            raise RuntimeError(f"evm_revert({snapshot_id}) failed")
        self.chain.nonces._next.clear()

    def now(self) -> int:
        return int(self.chain.get_block("latest")["timestamp"], 16)

    def advance(self, seconds: int) -> None:
        """Moves the chain's clock forward and mines a block."""
        self.chain.rpc.call("evm_increaseTime", [seconds])
        self.chain.rpc.call("evm_mine")


@pytest.fixture(scope="session")
def chain_state(chain: ChainClient) -> ChainState:
    return ChainState(chain)


@pytest.fixture
def registry(_base_registry: tuple[RegistryClient, Consortium], chain_state: ChainState) -> Iterator[RegistryClient]:
    """The registry with the demo consortium admitted; every change is undone after the test."""
    snapshot = chain_state.snapshot()
    try:
        yield _base_registry[0]
    finally:
        chain_state.revert(snapshot)


@pytest.fixture
def consortium(_base_registry: tuple[RegistryClient, Consortium]) -> Consortium:
    return _base_registry[1]


@pytest.fixture
def creditor(consortium: Consortium) -> Member:
    return consortium.creditors[0]


@pytest.fixture
def other_creditor(consortium: Consortium) -> Member:
    return consortium.creditors[1]


@pytest.fixture
def debtor(consortium: Consortium) -> Member:
    return consortium.debtors[0]


@pytest.fixture
def other_debtor(consortium: Consortium) -> Member:
    return consortium.debtors[1]


@pytest.fixture
def factor(consortium: Consortium) -> Member:
    return consortium.factors[0]


@pytest.fixture
def other_factor(consortium: Consortium) -> Member:
    return consortium.factors[1]


@pytest.fixture
def auditor(consortium: Consortium) -> Member:
    return consortium.auditors[0]


@pytest.fixture
def admin(consortium: Consortium) -> LocalAccount:
    return consortium.admin


@pytest.fixture
def stranger() -> LocalAccount:
    """A key that belongs to no participant."""
    return anvil_account(STRANGER_INDEX)


_serial = count(1)


InvoiceFactory = Callable[..., Invoice]


@pytest.fixture
def make_invoice(chain_state: ChainState, debtor: Member) -> InvoiceFactory:
    """Builds a valid invoice (due in 60 days by the chain's clock); override any field."""

    def build(
        debtor_id: EntityId | None = None,
        number: str | None = None,
        amount: str = "100,000.00",
        currency: str = "CNY",
        issue_in_days: int = -10,
        due_in_days: int = 60,
    ) -> Invoice:
        now = chain_state.now()
        return Invoice.parse(
            debtor=debtor_id if debtor_id is not None else debtor.entity,
            invoice_number=number or f"T-{next(_serial):06d}-{time.monotonic_ns() % 10**6}",
            face_value=amount,
            currency=currency,
            issue_date=now + issue_in_days * DAY,
            due_date=now + due_in_days * DAY,
        )

    return build


# ---------------------------------------------------------------------------------------- databases

POSTGRES_DSN_ENV = "REGISTRY_TEST_POSTGRES_DSN"


def postgres_dsn() -> str | None:
    """The PostgreSQL server tests may use (a fresh database is created per test), or None."""
    import os

    return os.environ.get(POSTGRES_DSN_ENV) or None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mirror.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards); skipped without a server."""
    import uuid

    from sqlalchemy import create_engine, text

    base = postgres_dsn()
    if base is None:
        pytest.skip(f"no PostgreSQL: set {POSTGRES_DSN_ENV}")
    name = f"registry_test_{uuid.uuid4().hex[:12]}"
    admin_url = base.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on SQLite and on PostgreSQL (when available)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))
