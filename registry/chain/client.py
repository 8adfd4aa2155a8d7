"""The one chain client: signs locally, manages nonces, sends, waits, decodes.

Keys never leave the process that holds them: a caller passes its own ``LocalAccount`` and the
client signs here. Many transactions can be in flight at once (local nonce counters, JSON-RPC
batches of raw transactions), because blocks must be full to be fast (DESIGN.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address

from registry.chain.abi import ContractAbi, DecodedEvent
from registry.chain.reverts import ContractRevert, decode_revert
from registry.chain.rpc import Rpc, RpcError
from registry.errors import ChainError, TransactionFailed

if TYPE_CHECKING:  # (only annotations here: eth-account costs 0.6 s to import, e.g. in the reader process)
    from eth_account.signers.local import LocalAccount

BlockId = int | str

# Anvil refuses JSON-RPC requests over 2 MB by default: raw sends go out in HTTP batches of at most
# this many bytes (a 100-line registerBatch is about 45 kB of hex), each sent as soon as it is signed,
# so the node starts filling the next block while the rest is still being signed, and up to this many
# batches are in flight at once.
MAX_SEND_BATCH_BYTES = 1_000_000
MAX_SENDS_IN_FLIGHT = 8
# Receipts are found by following new blocks (one eth_getBlockReceipts per block); when nothing has
# been found for this long, every awaited hash is asked for directly (catches reorgs and rollbacks).
RECEIPT_SWEEP_AFTER = 2.0
# At most this many blocks are fetched in one catch-up; further behind, ask per hash instead.
MAX_FOLLOW_BLOCKS = 64


@dataclass(frozen=True)
class TxResult:
    """A mined transaction: hash, block, gas used and the events it emitted (decoded)."""

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    events: list[DecodedEvent] = field(default_factory=list)

    def event(self, name: str) -> DecodedEvent:
        """The first event called ``name``; raises if the transaction emitted none."""
        for e in self.events:
            if e.name == name:
                return e
        raise ChainError(f"transaction {self.tx_hash} emitted no {name} event")

    def events_named(self, name: str) -> list[DecodedEvent]:
        return [e for e in self.events if e.name == name]


@dataclass(frozen=True)
class PendingTx:
    """A transaction sent but not yet waited for."""

    tx_hash: str
    sender: str
    to: str
    data: bytes
    gas: int
    sent_after_block: int | None = None
    """The chain head seen just before sending: the transaction cannot be in this block or earlier."""


class NonceManager:
    """Hands out consecutive nonces per sender so that many transactions can be in flight."""

    def __init__(self, rpc: Rpc) -> None:
        self._rpc = rpc
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, address: str, count: int = 1) -> int:
        with self._lock:
            if address not in self._next:
                self._next[address] = int(self._rpc.call("eth_getTransactionCount", [address, "pending"]), 16)
            first = self._next[address]
            self._next[address] = first + count
            return first

    def resync(self, address: str) -> None:
        """Forget the local counter (after a failed send); the next reserve asks the node."""
        with self._lock:
            self._next.pop(address, None)


class ChainClient:
    """JSON-RPC access to one chain: reads, gas estimation, signed sends, receipts, logs."""

    def __init__(self, url: str, *, timeout: float = 60.0, retries: int = 2, poll_interval: float = 0.01) -> None:
        self.url = url
        self.rpc = Rpc(url, timeout=timeout, retries=retries)
        self.nonces = NonceManager(self.rpc)
        self.poll_interval = poll_interval
        self._chain_id: int | None = None
        self._fee: tuple[float, int] | None = None
        self._block_receipts: bool | None = None  # whether the node answers eth_getBlockReceipts
        self._decoders: list[ContractAbi] = []
        self._addresses: set[str] = set()

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> ChainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ decoding registry

    def register_abi(self, abi: ContractAbi, address: str) -> None:
        """Decode this contract's events in receipts (one decoder per contract)."""
        if abi not in self._decoders:
            self._decoders.append(abi)
        self._addresses.add(address.lower())

    def decode_logs(self, logs: Iterable[dict[str, Any]]) -> list[DecodedEvent]:
        out = []
        for log in logs:
            if log["address"].lower() not in self._addresses:
                continue
            for abi in self._decoders:
                event = abi.decode_log(log)
                if event is not None:
                    out.append(event)
                    break
        return out

    # ------------------------------------------------------------------ reads

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.rpc.call("eth_chainId"), 16)
        return self._chain_id

    def block_number(self) -> int:
        return int(self.rpc.call("eth_blockNumber"), 16)

    def get_block(self, block: BlockId = "latest") -> dict[str, Any]:
        tag = hex(block) if isinstance(block, int) else block
        result = self.rpc.call("eth_getBlockByNumber", [tag, False])
        if result is None:
            raise ChainError(f"no block {block}")
        return dict(result)

    def get_code(self, address: str, block: BlockId = "latest") -> bytes:
        tag = hex(block) if isinstance(block, int) else block
        return bytes.fromhex(self.rpc.call("eth_getCode", [address, tag])[2:])

    def call(self, to: str, data: bytes, block: BlockId = "latest", sender: str | None = None) -> bytes:
        """eth_call; a revert is raised as its typed :class:`ContractRevert`."""
        tag = hex(block) if isinstance(block, int) else block
        tx: dict[str, Any] = {"to": to, "data": "0x" + data.hex()}
        if sender:
            tx["from"] = sender
        try:
            return bytes.fromhex(self.rpc.call("eth_call", [tx, tag])[2:])
        except RpcError as exc:
            raise _revert_or(exc) from None

    def estimate_gas(self, sender: str, to: str | None, data: bytes) -> int:
        tx: dict[str, Any] = {"from": sender, "data": "0x" + data.hex()}
        if to:
            tx["to"] = to
        try:
            return int(self.rpc.call("eth_estimateGas", [tx]), 16)
        except RpcError as exc:
            raise _revert_or(exc) from None

    # ------------------------------------------------------------------ sends

    def fees(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas): zero on a gas-free permissioned chain."""
        now = time.monotonic()
        if self._fee is None or now - self._fee[0] > 5:
            base = int(self.get_block("latest").get("baseFeePerGas", "0x0"), 16)
            self._fee = (now, base)
        base = self._fee[1]
        priority = 0 if base == 0 else 1_000_000_000
        return (2 * base + priority, priority)

    def sign(self, sender: LocalAccount, to: str | None, data: bytes, gas: int, nonce: int) -> bytes:
        max_fee, priority = self.fees()
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority,
            "value": 0,
            "data": data,
        }
        if to:
            tx["to"] = to_checksum_address(to)
        return bytes(sender.sign_transaction(tx).raw_transaction)

    def send(self, sender: LocalAccount, to: str | None, data: bytes, gas: int | None = None) -> PendingTx:
        """Sign and send one transaction (simulating first when no gas is given, so a would-be
        revert raises its typed error before anything is sent)."""
        if gas is None:
            gas = _with_margin(self.estimate_gas(sender.address, to, data))
        nonce = self.nonces.reserve(sender.address)
        raw = self.sign(sender, to, data, gas, nonce)
        try:
            tx_hash = self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
        except Exception:
            self.nonces.resync(sender.address)
            raise
        return PendingTx(str(tx_hash), sender.address, to or "", data, gas)

    def send_many(self, sender: LocalAccount, to: str, calls: Sequence[tuple[bytes, int]]) -> list[PendingTx]:
        """Sign consecutive-nonce transactions and send them in JSON-RPC batches.

        Batches are bounded in bytes (``MAX_SEND_BATCH_BYTES``, under Anvil's request limit); each is
        posted as soon as it is signed, on its own connection, without waiting for the previous one to
        be answered (a busy node, e.g. Anvil while it seals a block over a large state, then takes them
        all in one go rather than one per block). If the node refuses any send, :class:`ChainError` is
        raised once all batches are answered."""
        if not calls:
            return []
        first = self.nonces.reserve(sender.address, len(calls))
        head = self.block_number()
        chunks: list[list[tuple[str, bytes, int]]] = [[]]
        size = 0
        futures: list[Future[list[Any]]] = []
        with ThreadPoolExecutor(max_workers=MAX_SENDS_IN_FLIGHT) as pool:
            for i, (data, gas) in enumerate(calls):
                raw = "0x" + self.sign(sender, to, data, gas, first + i).hex()
                if chunks[-1] and size + len(raw) > MAX_SEND_BATCH_BYTES:
                    futures.append(pool.submit(self._send_raw, [r for r, _, _ in chunks[-1]]))
                    chunks.append([])
                    size = 0
                chunks[-1].append((raw, data, gas))
                size += len(raw) + 80
            futures.append(pool.submit(self._send_raw, [r for r, _, _ in chunks[-1]]))
            answers: list[Any] = []
            for future, chunk in zip(futures, chunks, strict=True):
                try:
                    answers.extend(future.result())
                except ChainError as exc:  # the whole batch unanswered (node unavailable)
                    answers.extend([exc] * len(chunk))
        failed = [a for a in answers if isinstance(a, Exception)]
        if failed:
            self.nonces.resync(sender.address)
            raise ChainError(f"{len(failed)} of {len(calls)} sends refused; first: {failed[0]}")
        sent = [item for chunk in chunks for item in chunk]
        return [PendingTx(str(h), sender.address, to, d, g, head) for h, (_, d, g) in zip(answers, sent, strict=True)]

    def _send_raw(self, raws: list[str]) -> list[Any]:
        return self.rpc.batch([("eth_sendRawTransaction", [raw]) for raw in raws])

    def wait(self, pending: PendingTx, timeout: float = 120.0) -> TxResult:
        return self.wait_many([pending], timeout)[0]

    def wait_many(self, pending: Sequence[PendingTx], timeout: float = 300.0) -> list[TxResult]:
        """Wait for every receipt; a reverted one raises its typed error."""
        receipts = self.wait_receipts(pending, timeout)
        results = []
        for p, receipt in zip(pending, receipts, strict=True):
            self.check_receipt(p, receipt)
            results.append(
                TxResult(
                    tx_hash=p.tx_hash,
                    block_number=int(receipt["blockNumber"], 16),
                    block_hash=receipt["blockHash"],
                    gas_used=int(receipt["gasUsed"], 16),
                    events=self.decode_logs(receipt["logs"]),
                )
            )
        return results

    def check_receipt(self, pending: PendingTx, receipt: dict[str, Any]) -> None:
        """Raises the typed error of a reverted transaction; returns if it succeeded."""
        if int(receipt["status"], 16) != 1:
            raise self._failure(pending, receipt)

    def wait_receipts(self, pending: Sequence[PendingTx], timeout: float = 300.0) -> list[dict[str, Any]]:
        """The raw JSON-RPC receipts of ``pending``, in order, once all are mined (status unchecked).

        New blocks are followed with one ``eth_getBlockReceipts`` each (a full block of receipts per
        round trip, not one lookup per transaction per poll); the awaited hashes are asked for one by
        one only at the start (when the send block is unknown), when the chain shrank or a block
        vanished, when nothing turned up for ``RECEIPT_SWEEP_AFTER`` seconds, or on nodes without
        ``eth_getBlockReceipts``."""
        if not pending:
            return []
        deadline = time.monotonic() + timeout
        waiting = {p.tx_hash.lower() for p in pending}
        found: dict[str, dict[str, Any]] = {}
        follow = self._block_receipts is not False
        starts = [p.sent_after_block for p in pending]
        next_block: int | None = None if None in starts else min(s for s in starts if s is not None) + 1
        last_progress = time.monotonic()
        while waiting:
            head = self.block_number()
            before = len(waiting)
            if (
                not follow
                or next_block is None
                or head + 1 < next_block
                or head - next_block >= MAX_FOLLOW_BLOCKS
                or time.monotonic() - last_progress > RECEIPT_SWEEP_AFTER
            ):
                self._sweep_receipts(waiting, found)
                next_block = head + 1
                last_progress = time.monotonic()
            elif head >= next_block:
                blocks = self.rpc.batch([("eth_getBlockReceipts", [hex(b)]) for b in range(next_block, head + 1)])
                next_block = head + 1
                for answer in blocks:
                    if isinstance(answer, RpcError):
                        self._block_receipts = follow = False
                        break
                    if answer is None:  # the block vanished (reorg): ask per hash next round
                        next_block = None
                        continue
                    self._block_receipts = True
                    for receipt in answer:
                        h = receipt["transactionHash"].lower()
                        if h in waiting:
                            waiting.discard(h)
                            found[h] = receipt
            if len(waiting) < before:
                last_progress = time.monotonic()
            if waiting:
                if time.monotonic() > deadline:
                    raise ChainError(f"{len(waiting)} transactions not mined within {timeout}s")
                time.sleep(self.poll_interval)
        return [found[p.tx_hash.lower()] for p in pending]

    def _sweep_receipts(self, waiting: set[str], found: dict[str, dict[str, Any]]) -> None:
        hashes = list(waiting)
        for i in range(0, len(hashes), 2_000):
            chunk = hashes[i : i + 2_000]
            answers = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in chunk])
            for h, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, dict):
                    waiting.discard(h)
                    found[h] = answer

    def transact(self, sender: LocalAccount, to: str | None, data: bytes, gas: int | None = None) -> TxResult:
        return self.wait(self.send(sender, to, data, gas))

    def _failure(self, p: PendingTx, receipt: dict[str, Any]) -> ChainError:
        """The typed error of a mined, reverted transaction, from a trace or a replay."""
        try:
            trace = self.rpc.call("debug_traceTransaction", [p.tx_hash, {"tracer": "callTracer"}])
            output = trace.get("output") if isinstance(trace, dict) else None
            if output and output != "0x":
                return decode_revert(bytes.fromhex(output[2:]))
        except (RpcError, ChainError):
            pass
        try:
            block = int(receipt["blockNumber"], 16)
            self.rpc.call("eth_call", [{"from": p.sender, "to": p.to, "data": "0x" + p.data.hex()}, hex(block)])
        except RpcError as exc:
            return _revert_or(exc)
        gas_used = int(receipt["gasUsed"], 16)
        if gas_used >= p.gas:
            return TransactionFailed(f"transaction {p.tx_hash} ran out of gas ({gas_used} of {p.gas})")
        return TransactionFailed(f"transaction {p.tx_hash} reverted in block {int(receipt['blockNumber'], 16)}")

    # ------------------------------------------------------------------ logs

    def get_logs(self, address: str | list[str], from_block: int, to_block: int) -> list[dict[str, Any]]:
        result = self.rpc.call(
            "eth_getLogs", [{"address": address, "fromBlock": hex(from_block), "toBlock": hex(to_block)}]
        )
        return list(result)


def _with_margin(gas: int) -> int:
    return gas + gas // 4 + 10_000


def revert_data(exc: RpcError) -> bytes | None:
    """The revert data carried by a JSON-RPC error, as nodes put it (a hex string, or nested)."""
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data") or data.get("result")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


def _revert_or(exc: RpcError) -> ChainError:
    data = revert_data(exc)
    if data is not None:
        return decode_revert(data)
    if "revert" in exc.message.lower():
        return ContractRevert({"message": exc.message})
    return exc
