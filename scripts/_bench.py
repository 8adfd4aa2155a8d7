"""Shared plumbing of scripts/gas_report.py and scripts/bench_register.py (not a public module).

A fresh Anvil with the registry deployed and the demo consortium admitted, invoices made in bulk,
and a fast way to fill the registry with receivables before measuring.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from eth_account.signers.local import LocalAccount  # noqa: E402

from registry.chain.client import ChainClient  # noqa: E402
from registry.chain.contract import (  # noqa: E402
    BATCH_GAS_BASE,
    BATCH_GAS_PER_LINE,
    RegistryClient,
)
from registry.chain.deployment import deploy  # noqa: E402
from registry.chain.node import LocalNode  # noqa: E402
from registry.chain.rpc import Rpc  # noqa: E402
from registry.demo import DAY, Consortium, admit_consortium  # noqa: E402
from registry.invoice import Invoice  # noqa: E402
from registry.keys import anvil_account  # noqa: E402
from registry.types import EntityId  # noqa: E402

# Filling (set-up, not measured): the contract's largest batches (MAX_BATCH_SIZE) in blocks mined on
# demand under a raised gas limit, so that few blocks carry the per-block cost (Anvil rehashes state).
FILL_BATCH = 500
FILL_BLOCK_GAS = 2_000_000_000


@dataclass
class Stack:
    node: LocalNode
    chain: ChainClient
    registry: RegistryClient
    consortium: Consortium

    @property
    def now(self) -> int:
        return int(self.chain.get_block("latest")["timestamp"], 16)

    def rpc(self, method: str, *params: Any) -> Any:
        return self.chain.rpc.call(method, list(params))


@contextmanager
def stack(*, gas_limit: int, block_time: float = 0.0, extra_args: list[str] | None = None) -> Iterator[Stack]:
    """Anvil on a free port (automine for set-up), registry deployed, consortium admitted; then
    switched to interval mining if ``block_time`` is given."""
    with (
        LocalNode(kind="anvil", port=0, block_time=0, gas_limit=gas_limit, extra_args=extra_args or []) as node,
        ChainClient(node.url) as chain,
    ):
        registry = RegistryClient(chain, deploy(chain, anvil_account(0)))
        consortium = admit_consortium(registry)
        s = Stack(node, chain, registry, consortium)
        if block_time:
            set_interval_mining(s, block_time)
        yield s


def set_interval_mining(s: Stack, block_time: float) -> None:
    s.rpc("evm_setAutomine", False)
    s.rpc("evm_setIntervalMining", int(block_time) if float(block_time).is_integer() else block_time)


def set_automine(s: Stack) -> None:
    s.rpc("evm_setIntervalMining", 0)
    s.rpc("evm_setAutomine", True)


def make_invoices(debtor: EntityId, prefix: str, count: int, now: int, *, start: int = 0) -> list[Invoice]:
    """``count`` distinct valid invoices to ``debtor`` (numbers ``prefix-000001`` ...), due in 90 days."""
    out = []
    for i in range(start, start + count):
        number = f"{prefix}-{i:07d}"
        out.append(
            Invoice.parse(
                debtor=debtor,
                invoice_number=number,
                face_value=100_000 + i % 997 * 100,  # minor units
                currency="CNY",
                issue_date=now - 10 * DAY,
                due_date=now + 90 * DAY,
            )
        )
    return out


def fill(s: Stack, creditor: LocalAccount, debtor: EntityId, count: int, prefix: str = "FILL") -> float:
    """Registers ``count`` receivables as fast as Anvil takes them (set-up, not a measurement): all
    batches sent at once, blocks mined on demand back to back (``evm_mine`` whenever the pool holds
    transactions) under a raised gas limit. Leaves the node mining on demand with its gas limit
    restored (checked on a block); the caller sets the mining mode it measures with. Returns the
    seconds it took."""
    if count <= 0:
        return 0.0
    t0 = time.perf_counter()
    invoices = make_invoices(debtor, prefix, count, s.now)
    t1 = time.perf_counter()
    gas_limit = int(s.chain.get_block("latest")["gasLimit"], 16)
    s.rpc("evm_setIntervalMining", 0)
    s.rpc("evm_setAutomine", False)
    s.rpc("evm_setBlockGasLimit", hex(FILL_BLOCK_GAS))
    stop = threading.Event()
    miner = threading.Thread(target=_mine_while_pending, args=(s.node.url, stop), daemon=True)
    miner.start()
    try:
        # The set-up needs no per-line outcomes: it waits for the creditor's nonce, then checks the count.
        before = s.registry.receivable_count()
        calls = [
            (
                s.registry.encode_register_batch([i.as_contract_input() for i in invoices[k : k + FILL_BATCH]]),
                BATCH_GAS_BASE + BATCH_GAS_PER_LINE * len(invoices[k : k + FILL_BATCH]),
            )
            for k in range(0, count, FILL_BATCH)
        ]
        s.chain.send_many(creditor, s.registry.address, calls)
        final_nonce = s.chain.nonces.reserve(creditor.address, 0)
        while int(s.rpc("eth_getTransactionCount", creditor.address, "latest"), 16) < final_nonce:
            time.sleep(0.05)
    finally:
        stop.set()
        miner.join()
        s.rpc("evm_setBlockGasLimit", hex(gas_limit))
        s.rpc("evm_mine")
    restored = int(s.chain.get_block("latest")["gasLimit"], 16)
    if restored != gas_limit:
        raise RuntimeError(f"fill: block gas limit is {restored}, not {gas_limit} again")
    registered = s.registry.receivable_count() - before
    if registered != count:
        raise RuntimeError(f"fill: {registered} of {count} invoices registered")
    log(f"  fill: {count} invoices made in {t1 - t0:.1f}s, registered in {time.perf_counter() - t1:.1f}s")
    return time.perf_counter() - t0


def _mine_while_pending(url: str, stop: threading.Event) -> None:
    rpc = Rpc(url, timeout=120)
    try:
        while not stop.is_set():
            if int(rpc.call("txpool_status")["pending"], 16) > 0:
                rpc.call("evm_mine")
            else:
                time.sleep(0.005)
    finally:
        rpc.close()


def restart_interval_mining(s: Stack, block_time: float, settle: float = 0.5) -> None:
    """Interval mining from a clean start: Anvil queues the transaction set of every tick and seals
    them one after the other, so when sealing takes longer than the block time (a large state on a
    busy machine) blocks decided long ago are still waiting. Stop ticking, let the queue drain (no
    new block for ``settle`` seconds), then tick again."""
    s.rpc("evm_setIntervalMining", 0)
    s.rpc("evm_setAutomine", False)
    head, since = s.chain.block_number(), time.monotonic()
    while time.monotonic() - since < settle:
        time.sleep(0.02)
        now = s.chain.block_number()
        if now != head:
            head, since = now, time.monotonic()
    set_interval_mining(s, block_time)


def wait_for_new_block(s: Stack, timeout: float = 10.0) -> int:
    """Returns right after the next block appears (so a timed burst starts at a block boundary)."""
    head = s.chain.block_number()
    deadline = time.monotonic() + timeout
    while True:
        now = s.chain.block_number()
        if now != head:
            return now
        if time.monotonic() > deadline:
            raise RuntimeError("no new block: is interval mining on?")
        time.sleep(0.001)


def blocks(s: Stack, first: int, last: int) -> list[dict[str, Any]]:
    """(number, gas used, transactions, timestamp) of blocks first..last."""
    answers = s.chain.rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in range(first, last + 1)])
    return [
        {
            "number": int(b["number"], 16),
            "gas_used": int(b["gasUsed"], 16),
            "gas_limit": int(b["gasLimit"], 16),
            "transactions": len(b["transactions"]),
            "timestamp": int(b["timestamp"], 16),
        }
        for b in answers
    ]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
