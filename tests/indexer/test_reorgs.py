"""Reorgs on Anvil, depths 1 to 10: the mirror after a reorg equals a fresh re-index of the new chain.

Three ways the chain changes under the mirror, each at every depth: ``anvil_reorg`` (transactions
dropped, moved to other blocks, and a rival registration of the same invoice by another creditor, so
that afterwards a different receivable holds the invoice key), ``anvil_rollback`` (the chain gets
shorter, then grows differently), and ``evm_snapshot``/``evm_revert`` divergence. Then: a reorg deeper
than the finality depth stops the indexer and leaves the database untouched; a reorg between reading
the logs and reading the headers of one range is not missed; a chain reset is refused at start.

These tests reorganise the chain below earlier tests' blocks (which invalidates Anvil's snapshots), so
they run on a node of their own rather than the session's snapshot-reverted one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from registry.chain.client import ChainClient, PendingTx
from registry.chain.deployment import deploy
from registry.chain.node import LocalNode
from registry.demo import Member, demo_invoice
from registry.indexer.indexer import ChainReset, Indexer, IndexerConfig, ReorgBeyondFinality
from registry.indexer.reader import Read
from registry.invoice import Invoice
from registry.keys import anvil_account
from registry.store.db import make_engine
from registry.store.models import Receivable
from tests.indexer.oracle import Stack, check_mirror, local_stack, table_rows

GAS = 700_000
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with local_stack() as running:
        yield running


def _cases(depths: range, pg_depths: tuple[int, ...]) -> list[object]:
    sqlite = [pytest.param(d, "sqlite", id=f"depth{d}-sqlite") for d in depths]
    pg = [pytest.param(d, "postgresql", id=f"depth{d}-postgresql", marks=pytest.mark.postgres) for d in pg_depths]
    return [*sqlite, *pg]


# Every depth on SQLite; the ends on PostgreSQL too (skipped without REGISTRY_TEST_POSTGRES_DSN).
REORG_DEPTHS = _cases(range(1, 11), (1, 10))
OTHER_DEPTHS = _cases(range(1, 11), (10,))


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    kind = request.node.callspec.params.get("db", "sqlite")
    url = str(request.getfixturevalue("postgres_url" if kind == "postgresql" else "sqlite_url"))
    engine = make_engine(url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------------------------------- helpers


def send(stack: Stack, sender: LocalAccount, fn: str, *args: object) -> PendingTx:
    """A transaction sent without simulation (its dependencies may still be pending)."""
    return stack.registry.send(sender, fn, *args, gas=GAS)


@contextmanager
def manual_mining(stack: Stack) -> Iterator[None]:
    stack.chain.rpc.call("evm_setAutomine", [False])
    try:
        yield
    finally:
        stack.chain.rpc.call("evm_setAutomine", [True])


def mine(stack: Stack, pending: list[PendingTx]) -> int:
    """Mines the pool into one block; every transaction must have succeeded in it."""
    stack.chain.rpc.call("evm_mine")
    results = stack.chain.wait_many(pending, timeout=30)
    block = stack.chain.block_number()
    assert all(r.block_number == block for r in results)
    return block


def raw(stack: Stack, tx_hash: str) -> str:
    return str(stack.chain.rpc.call("eth_getRawTransactionByHash", [tx_hash]))


def receipt_block(stack: Stack, tx_hash: str) -> int | None:
    receipt = stack.chain.rpc.call("eth_getTransactionReceipt", [tx_hash])
    if receipt is None:
        return None
    assert int(receipt["status"], 16) == 1, f"{tx_hash} reverted"
    return int(receipt["blockNumber"], 16)


def signed_registration(stack: Stack, creditor: Member, invoice: Invoice) -> str:
    """``register(invoice)`` by ``creditor``, signed with its next nonce on chain, not sent."""
    nonce = int(stack.chain.rpc.call("eth_getTransactionCount", [creditor.address, "latest"]), 16)
    data = stack.registry.abi.encode_call("register", (invoice.as_contract_input(),))
    return "0x" + stack.chain.sign(creditor.account, stack.registry.address, data, GAS, nonce).hex()


def key_holders(engine: Engine, key: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(current, all versions) of the receivables with invoice key ``key``, as (id, creditor)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Receivable.id, Receivable.creditor, Receivable.valid_to).where(Receivable.invoice_key == key)
        ).all()
    return [(r.id, r.creditor) for r in rows if r.valid_to is None], [(r.id, r.creditor) for r in rows]


def invoice(stack: Stack, tag: str, amount: str = "10,000.00") -> Invoice:
    return demo_invoice(stack.consortium.debtors[0].entity, tag, amount, stack.now())


def activity(stack: Stack, blocks: int, tag: str) -> list[int]:
    """``blocks`` blocks of registrations by the third creditor, one each: each sent once the one before
    it is mined (sent together, a busy node's automine put two of them in one block now and then, and the
    chain came out a block shorter than the test counts)."""
    creditor = stack.consortium.creditors[2]
    mined = []
    for i in range(blocks):
        pending = send(stack, creditor.account, "register", invoice(stack, f"{tag}-{i}").as_contract_input())
        mined.append(stack.chain.wait(pending, timeout=60).block_number)
    assert len(set(mined)) == blocks, f"two registrations in one block: {mined}"
    return mined


# ---------------------------------------------------------------------------------------- anvil_reorg


@dataclass
class ReorgRange:
    """``depth`` blocks about to be reorganised, and what each holds."""

    key_invoice: Invoice
    key_registration: str  # by the first creditor, in the range's first block: dropped by the reorg
    confirms: list[str] = field(default_factory=list)  # by the debtor, one per block: moved to the last block
    assigns: list[str] = field(default_factory=list)  # by the third creditor, blocks 2..: half moved, half dropped
    blocks: list[int] = field(default_factory=list)


def build_range(stack: Stack, depth: int, tag: str) -> ReorgRange:
    c = stack.consortium
    holder, original, debtor, factor = c.creditors[2], c.creditors[0], c.debtors[0], c.factors[0]
    # Before the range: receivables the range confirms (Q) and assigns (R, confirmed already).
    q_inv = [invoice(stack, f"{tag}-Q{i}") for i in range(depth)]
    r_inv = [invoice(stack, f"{tag}-R{i}") for i in range(depth - 1)]
    q_ids = [o.id for o in stack.registry.register_batch(holder.account, q_inv)]
    r_ids = [o.id for o in stack.registry.register_batch(holder.account, r_inv)] if r_inv else []
    confirms = [
        send(stack, debtor.account, "confirm", rid, inv.fingerprint) for rid, inv in zip(r_ids, r_inv, strict=True)
    ]
    if confirms:
        stack.chain.wait_many(confirms, timeout=60)
    key_invoice = invoice(stack, f"{tag}-KEY", "77,000.00")
    plan = ReorgRange(key_invoice, "")
    with manual_mining(stack):
        for j in range(depth):
            pending = []
            if j == 0:
                pending.append(send(stack, original.account, "register", key_invoice.as_contract_input()))
                plan.key_registration = pending[-1].tx_hash
            pending.append(send(stack, debtor.account, "confirm", q_ids[j], q_inv[j].fingerprint))
            plan.confirms.append(pending[-1].tx_hash)
            if j >= 1:
                amount = r_inv[j - 1].face_value * 9 // 10
                pending.append(
                    send(stack, holder.account, "assign", r_ids[j - 1], factor.entity, amount, False, bytes(32))
                )
                plan.assigns.append(pending[-1].tx_hash)
            plan.blocks.append(mine(stack, pending))
    assert plan.blocks == list(range(plan.blocks[0], plan.blocks[0] + depth))
    assert plan.blocks[-1] == stack.chain.block_number()
    return plan


@pytest.mark.parametrize(("depth", "db"), REORG_DEPTHS)
def test_reorg_with_dropped_moved_and_rival_transactions(stack: Stack, engine: Engine, depth: int, db: str) -> None:
    c = stack.consortium
    original, rival = c.creditors[0], c.creditors[1]
    plan = build_range(stack, depth, f"RG{next(_tags)}-{depth}-{db}")
    with Indexer(stack.chain, stack.deployment, engine) as indexer:
        indexer.sync()
        current, _ = key_holders(engine, plan.key_invoice.key)
        assert [creditor for _, creditor in current] == [original.entity]

        # The replacement: the rival's registration of the same invoice in the first block; the debtor's
        # confirmations all moved to the last block; the first half of the assignments moved one block
        # earlier, the rest dropped (a suffix of the sender's nonces); the original registration dropped.
        kept = plan.assigns[: (len(plan.assigns) + 1) // 2]
        dropped = [plan.key_registration, *plan.assigns[len(kept) :]]
        rival_tx = signed_registration(stack, rival, plan.key_invoice)
        txs = [[rival_tx, 0]]
        txs += [[raw(stack, h), depth - 1] for h in plan.confirms]
        txs += [[raw(stack, h), k] for k, h in enumerate(kept)]
        stack.chain.rpc.call("anvil_reorg", [depth, txs])
        stack.forget_nonces()
        ancestor = plan.blocks[0] - 1
        assert stack.chain.block_number() == plan.blocks[-1]
        assert [receipt_block(stack, h) for h in dropped] == [None] * len(dropped)
        assert {receipt_block(stack, h) for h in plan.confirms} == {ancestor + depth}
        assert [receipt_block(stack, h) for h in kept] == [ancestor + 1 + k for k in range(len(kept))]

        indexer.sync()
    check_mirror(engine, stack.chain, stack.deployment)
    rid = stack.registry.receivable_id_by_invoice_key(plan.key_invoice.key)
    assert stack.registry.get_receivable(rid).creditor == rival.entity
    current, every = key_holders(engine, plan.key_invoice.key)
    assert current == [(rid, rival.entity)], "a different receivable (the rival's) holds the key"
    assert every == [(rid, rival.entity)], "the dropped registration left no version behind"


# ---------------------------------------------------------------------------------------- anvil_rollback


@pytest.mark.parametrize(("depth", "db"), OTHER_DEPTHS)
def test_rollback_then_different_blocks(stack: Stack, engine: Engine, depth: int, db: str) -> None:
    tag = f"RB{next(_tags)}-{depth}-{db}"
    key_invoice = invoice(stack, f"{tag}-KEY")
    activity(stack, 2, f"{tag}-pre")
    original = stack.consortium.creditors[0]
    first = stack.chain.wait(send(stack, original.account, "register", key_invoice.as_contract_input())).block_number
    activity(stack, depth - 1, tag)
    with Indexer(stack.chain, stack.deployment, engine) as indexer:
        head = indexer.sync()
        stack.chain.rpc.call("anvil_rollback", [depth])
        stack.forget_nonces()
        assert stack.chain.block_number() == head - depth == first - 1
        indexer.sync()  # the chain is shorter than the mirror
        check_mirror(engine, stack.chain, stack.deployment)
        assert key_holders(engine, key_invoice.key) == ([], [])

        rival = stack.consortium.creditors[1]
        stack.registry.register(rival.account, key_invoice)
        activity(stack, depth, f"{tag}-new")
        indexer.sync()
    check_mirror(engine, stack.chain, stack.deployment)
    assert [creditor for _, creditor in key_holders(engine, key_invoice.key)[1]] == [rival.entity]


# ---------------------------------------------------------------------------------------- snapshot / revert


@pytest.mark.parametrize(("depth", "db"), OTHER_DEPTHS)
def test_snapshot_revert_divergence(stack: Stack, engine: Engine, depth: int, db: str) -> None:
    tag = f"SR{next(_tags)}-{depth}-{db}"
    key_invoice = invoice(stack, f"{tag}-KEY")
    activity(stack, 1, f"{tag}-pre")
    snapshot = stack.chain.rpc.call("evm_snapshot")
    stack.registry.register(stack.consortium.creditors[0].account, key_invoice)
    activity(stack, depth - 1, tag)
    with Indexer(stack.chain, stack.deployment, engine) as indexer:
        head = indexer.sync()
        assert stack.chain.rpc.call("evm_revert", [snapshot])
        stack.forget_nonces()
        assert stack.chain.block_number() == head - depth
        # Different transactions at the same heights, and beyond: the cursor's block hash changed.
        rival = stack.consortium.creditors[1]
        stack.registry.register(rival.account, key_invoice)
        activity(stack, depth, f"{tag}-new")
        assert stack.chain.block_number() == head + 1
        indexer.sync()
    check_mirror(engine, stack.chain, stack.deployment)
    assert [creditor for _, creditor in key_holders(engine, key_invoice.key)[1]] == [rival.entity]


# ---------------------------------------------------------------------------------------- finality


def test_reorg_beyond_finality_stops_and_leaves_the_database_unchanged(stack: Stack, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    config = IndexerConfig(finality_depth=2)
    tag = f"FIN{next(_tags)}"
    key_invoice = invoice(stack, f"{tag}-KEY")
    stack.registry.register(stack.consortium.creditors[0].account, key_invoice)
    activity(stack, 5, tag)
    with Indexer(stack.chain, stack.deployment, engine, config) as indexer:
        head = indexer.sync()
    before = table_rows(engine, volatile=True)

    rival_tx = signed_registration(stack, stack.consortium.creditors[1], key_invoice)
    stack.chain.rpc.call("anvil_reorg", [5, [[rival_tx, 0]]])
    stack.forget_nonces()
    assert stack.chain.block_number() == head
    with Indexer(stack.chain, stack.deployment, engine, config) as indexer:
        with pytest.raises(ReorgBeyondFinality, match=r"depth 5 .* exceeds the finality depth 2"):
            indexer.sync()
        assert table_rows(engine, volatile=True) == before
        with pytest.raises(ReorgBeyondFinality):  # and it stays stopped
            indexer.step()
    assert table_rows(engine, volatile=True) == before
    engine.dispose()


# ---------------------------------------------------------------------------------------- races


def test_reorg_between_the_log_read_and_the_header_read_is_not_missed(stack: Stack, sqlite_url: str) -> None:
    """The blocks a reorg replaces held no registry logs, their replacements do: only the block hash
    pinned before the log read reveals that the logs came from the old fork."""
    engine = make_engine(sqlite_url)
    tag = f"RACE{next(_tags)}"
    key_invoice = invoice(stack, f"{tag}-KEY")
    rival = stack.consortium.creditors[1]
    with Indexer(stack.chain, stack.deployment, engine) as indexer:
        indexer.sync()
        for _ in range(3):
            stack.chain.rpc.call("evm_mine")  # empty blocks
        reads: list[tuple[int, int, int]] = []
        fetch = indexer.fetcher.fetch

        def fetch_then_reorg(start: int, end: int) -> tuple[list[dict[str, object]], int]:
            logs, last = fetch(start, end)
            reads.append((start, last, len(logs)))
            if len(reads) == 1:
                stack.chain.rpc.call("anvil_reorg", [3, [[signed_registration(stack, rival, key_invoice), 1]]])
            return logs, last

        indexer.fetcher.fetch = fetch_then_reorg  # type: ignore[method-assign]
        indexer.sync()
    stack.forget_nonces()
    assert reads[0][2] == 0 and len(reads) >= 2 and reads[-1][2] > 0, reads
    check_mirror(engine, stack.chain, stack.deployment)
    assert [creditor for _, creditor in key_holders(engine, key_invoice.key)[0]] == [rival.entity]
    engine.dispose()


READ_AHEAD = pytest.mark.parametrize("reader", ["thread", "process"])
"""Read ahead on a thread, or in the reader process (forced from the first batch on)."""


def _process_from(reader: str) -> int | None:
    return 0 if reader == "process" else None


@READ_AHEAD
def test_read_ahead_of_a_range_the_chain_then_replaces_is_rolled_back(
    stack: Stack, sqlite_url: str, reader: str
) -> None:
    """The next range is read (on a second thread, or in the reader process) while a batch is written.
    Here it is read completely, then the chain replaces exactly those blocks (the original
    registration of an invoice dropped, a rival's in its place): what was read ahead is consistent with
    the old fork, so it may be committed, and the next step must find the cursor off the chain and roll
    it back."""
    engine = make_engine(sqlite_url)
    tag = f"AHEAD{next(_tags)}"
    key_invoice = invoice(stack, f"{tag}-KEY")
    original, rival = stack.consortium.creditors[0], stack.consortium.creditors[1]
    config = IndexerConfig(initial_log_range=2, max_log_range=2, read_process_from=_process_from(reader))
    with Indexer(stack.chain, stack.deployment, engine, config) as indexer:
        indexer.sync()
        activity(stack, 2, f"{tag}-pre")
        stack.chain.wait_many([send(stack, original.account, "register", key_invoice.as_contract_input())], 60)
        activity(stack, 3, f"{tag}-post")
        taken: list[bool] = []
        take = indexer._take_read_ahead

        def spy(start: int, end: int) -> Read | None:
            read = take(start, end)
            taken.append(read is not None)
            return read

        indexer._take_read_ahead = spy  # type: ignore[method-assign]
        reorged: list[int] = []

        def on_batch(last: int, events: int) -> None:
            ahead = indexer._ahead
            if reorged or ahead is None:
                return
            ahead.result()  # read completely, from the chain as it is now
            depth = stack.chain.block_number() - last  # every block after the cursor
            stack.chain.rpc.call("anvil_reorg", [depth, [[signed_registration(stack, rival, key_invoice), 0]]])
            reorged.append(depth)

        indexer.on_batch = on_batch
        indexer.sync()
    stack.forget_nonces()
    assert reorged and reorged[0] >= 3, reorged
    assert any(taken), "the read-ahead was never used"
    check_mirror(engine, stack.chain, stack.deployment)
    assert [creditor for _, creditor in key_holders(engine, key_invoice.key)[0]] == [rival.entity]
    engine.dispose()


@READ_AHEAD
def test_read_ahead_gives_the_mirror_a_foreground_read_gives(stack: Stack, sqlite_url: str, reader: str) -> None:
    activity(stack, 12, f"AHEADEQ{next(_tags)}")
    ahead, plain = make_engine(sqlite_url), make_engine(sqlite_url.replace(".db", "-plain.db"))
    small: dict[str, Any] = {"initial_log_range": 3, "max_log_range": 3}
    config = IndexerConfig(read_process_from=_process_from(reader), **small)
    with Indexer(stack.chain, stack.deployment, ahead, config) as indexer:
        indexer.sync()
        if reader == "process":
            assert indexer._process is not None, "the reader process was never started"
            assert (indexer.reader_cpu_seconds() or 0) > 0
    with Indexer(stack.chain, stack.deployment, plain, IndexerConfig(prefetch=False, **small)) as indexer:
        indexer.sync()
    assert table_rows(ahead) == table_rows(plain)
    check_mirror(ahead, stack.chain, stack.deployment)
    ahead.dispose()
    plain.dispose()


@READ_AHEAD
def test_a_backfill_looks_at_the_head_once_at_its_start_and_once_at_its_end(
    stack: Stack, sqlite_url: str, reader: str
) -> None:
    """A range read ahead chains onto the cursor (its first block's parent) and ends within the head the
    step that asked for it saw: the step that writes it asks the node for no head of its own (two header
    requests a batch, which waited behind the reader's log requests). The head is looked at again when the
    backfill reaches that end, which is where a reorg since would be found (the test above)."""
    activity(stack, 10, f"AHEADHEAD{next(_tags)}")
    engine = make_engine(sqlite_url)
    config = IndexerConfig(initial_log_range=2, max_log_range=2, read_process_from=_process_from(reader))
    heads: list[int | str] = []
    batches: list[int] = []
    with Indexer(stack.chain, stack.deployment, engine, config) as indexer:
        look, writer = indexer.reader.header, threading.get_ident()

        def spy(block: int | str) -> dict[str, Any]:
            if threading.get_ident() == writer:  # (not the read-ahead thread's pins)
                heads.append(block)
            return look(block)

        indexer.reader.header = spy  # type: ignore[method-assign]
        indexer.on_batch = lambda last, events: batches.append(last)
        indexer.sync()
    assert len(batches) >= 5
    assert heads == ["latest", "latest"], heads
    check_mirror(engine, stack.chain, stack.deployment)
    engine.dispose()


def test_a_reader_process_killed_mid_backfill_costs_only_a_foreground_read(stack: Stack, sqlite_url: str) -> None:
    """The reader process is killed (-9) while it reads ahead: that range is read again on the indexer's
    thread, read-ahead goes on on a thread, and the mirror is what a plain index gives."""
    activity(stack, 10, f"AHEADKILL{next(_tags)}")
    engine = make_engine(sqlite_url)
    config = IndexerConfig(initial_log_range=3, max_log_range=3, read_process_from=0)
    killed: list[int] = []
    with Indexer(stack.chain, stack.deployment, engine, config) as indexer:

        def on_batch(last: int, events: int) -> None:
            process = indexer._process
            if not killed and process is not None:
                process._child.kill()
                killed.append(process._child.wait())

        indexer.on_batch = on_batch
        indexer.sync()
        assert killed == [-9]
        assert indexer._process is None and indexer._reader is not None  # on a thread from then on
    check_mirror(engine, stack.chain, stack.deployment)
    engine.dispose()


# ---------------------------------------------------------------------------------------- chain reset


def test_chain_reset_is_refused_at_start(stack: Stack, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with Indexer(stack.chain, stack.deployment, engine) as indexer:
        indexer.sync()
    before = table_rows(engine, volatile=True)
    # A new node (another genesis, same chain id) with the registry redeployed: same addresses, too.
    genesis_time = str(int(time.time()) + 86_400)
    with (
        LocalNode(kind="anvil", port=0, extra_args=["--timestamp", genesis_time]) as node,
        ChainClient(node.url) as chain,
    ):
        redeployed = deploy(chain, anvil_account(0))
        assert redeployed.registry == stack.deployment.registry
        assert redeployed.genesis_hash != stack.deployment.genesis_hash
        with pytest.raises(ChainReset, match="the chain was reset"):
            Indexer(chain, redeployed, engine).start()
    # The same chain, but the deployment names another registry (redeployed without a reset).
    other = deploy(stack.chain, stack.consortium.admin)
    stack.forget_nonces()
    with pytest.raises(ChainReset, match="mirrors registry"):
        Indexer(stack.chain, other, engine).start()
    assert table_rows(engine, volatile=True) == before
    # Refused starts release the writer lock.
    with Indexer(stack.chain, stack.deployment, engine) as indexer:
        indexer.sync()
    engine.dispose()
