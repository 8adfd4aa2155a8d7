"""The local chain survives restarts: a clean stop, and a hard kill after the periodic state dump.

Anvil with a state directory (``LocalNode(state_dir=...)``) dumps its state on SIGTERM and every
2 s (``--state-interval 2``), and keeps historical states (``--preserve-historical-states``) so
that calls pinned to blocks before the restart still answer. These tests run on their own Anvil
nodes, whatever ``REGISTRY_NODE`` says: Hardhat's node keeps no state on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from registry.chain.client import ChainClient
from registry.chain.contract import ReceivableState, RegistryClient
from registry.chain.deployment import Deployment, ensure_deployment
from registry.chain.node import LocalNode
from registry.demo import admit_consortium, demo_invoice
from registry.domain import Status
from registry.keys import anvil_account
from registry.types import ReceivableId

STATE_INTERVAL = 2.0  # seconds; what LocalNode passes to --state-interval


@contextmanager
def anvil(state_dir: Path) -> Iterator[LocalNode]:
    node = LocalNode(kind="anvil", port=0, block_time=0, state_dir=state_dir).start()
    try:
        yield node
    finally:
        node.stop()


@dataclass(frozen=True)
class Registered:
    deployment: Deployment
    id: ReceivableId
    block: int
    state: ReceivableState
    ledger: tuple[bytes, int]


def deploy_and_register(node: LocalNode, deployment_file: Path) -> Registered:
    with ChainClient(node.url) as chain:
        deployment, created = ensure_deployment(chain, anvil_account(0), deployment_file)
        assert created
        registry = RegistryClient(chain, deployment)
        consortium = admit_consortium(registry)
        now = int(chain.get_block("latest")["timestamp"], 16)
        invoice = demo_invoice(consortium.debtors[0].entity, "PERSIST-0001", "12,345.67", now)
        rid = registry.register(consortium.creditors[0].account, invoice)
        block = chain.block_number()
        return Registered(deployment, rid, block, registry.get_receivable(rid), registry.ledger())


def assert_survived(node: LocalNode, deployment_file: Path, before: Registered) -> None:
    with ChainClient(node.url) as chain:
        deployment, created = ensure_deployment(chain, anvil_account(0), deployment_file)
        assert not created, "the deployment was not reused after the restart"
        assert deployment == before.deployment
        assert chain.block_number() == before.block
        registry = RegistryClient(chain, deployment)
        assert registry.get_receivable(before.id) == before.state
        assert registry.ledger() == before.ledger
        # Historical state from before the restart: the block before the registration knew nothing of it.
        assert registry.get_receivable(before.id, block=before.block - 1).status is Status.NONE
        assert registry.get_receivable(before.id, block=before.block) == before.state


def test_chain_survives_a_clean_stop_with_its_history(tmp_path: Path) -> None:
    state_dir, deployment_file = tmp_path / "node", tmp_path / "deployment.json"
    with anvil(state_dir) as node:
        before = deploy_and_register(node, deployment_file)
        assert before.state.status is Status.REGISTERED
    assert node.process is not None and node.process.returncode == 0  # SIGTERM: a clean exit, state dumped
    assert (state_dir / "anvil-state.json").stat().st_size > 0

    with anvil(state_dir) as restarted:
        assert_survived(restarted, deployment_file, before)


def test_state_dumped_before_a_hard_kill_survives_it(tmp_path: Path) -> None:
    state_dir, deployment_file = tmp_path / "node", tmp_path / "deployment.json"
    node = LocalNode(kind="anvil", port=0, block_time=0, state_dir=state_dir).start()
    try:
        before = deploy_and_register(node, deployment_file)
        time.sleep(STATE_INTERVAL + 0.75)  # let one periodic dump happen after the registration
    finally:
        node.kill()
    assert node.process is not None and node.process.returncode == -9

    with anvil(state_dir) as restarted:
        assert_survived(restarted, deployment_file, before)
