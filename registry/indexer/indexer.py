"""The indexer: a reorg-safe, crash-safe SQL mirror of the registry's events.

Guarantees (DESIGN.md "Indexer"):
- the SQL state is a pure function of the canonical chain up to the cursor block;
- raw logs, derived rows, block headers and the cursor commit in one transaction per batch, so a
  crash at any point leaves the previous batch's state, and a restart resumes from the cursor;
- reorgs are detected by comparing stored block hashes with the chain's and rolled back to the
  common ancestor; one deeper than the configured finality stops the indexer with a clear message;
- every batch's ledger hash is checked against the contract's ``ledger()`` at the batch's end block
  (pinned by block hash), so a mirror that missed or misread an event stops instead of serving it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from registry.chain.abi import ContractAbi
from registry.chain.client import ChainClient
from registry.chain.compiler import artifact
from registry.chain.deployment import Deployment
from registry.chain.rpc import NodeUnavailable, RpcError
from registry.errors import RegistryError
from registry.indexer.projector import Batch, LedgerPosition, ledger_as_of, rollback_to, write_cursor
from registry.store.db import WriterLock, migrate
from registry.store.models import BlockHeader, Cursor, table_of

log = logging.getLogger("registry.indexer")


class IndexerError(RegistryError):
    """Raised when the indexer must stop rather than guess."""


class ReorgBeyondFinality(IndexerError):
    """Raised when the chain reorganised deeper than the configured finality depth."""


class ChainReset(IndexerError):
    """Raised when the node's genesis (or chain id, or registry) differs from what the mirror indexed."""


class LedgerMismatch(IndexerError):
    """Raised when the mirror's ledger hash differs from the contract's at the same block."""


class Retry(Exception):
    """The chain moved under a batch (a reorg between two reads): fetch the range again."""


@dataclass
class IndexerConfig:
    finality_depth: int = 64
    header_window: int = 256
    poll_interval: float = 0.1
    initial_log_range: int = 2_000
    max_log_range: int = 50_000
    verify_ledger: bool = True


@dataclass(frozen=True)
class CursorState:
    block_number: int
    block_hash: str
    ledger: LedgerPosition


class LogFetcher:
    """``eth_getLogs`` over adaptive block ranges: grows on success, halves on a too-many-results
    or range-limit error, backs off on rate limits and outages."""

    def __init__(self, chain: ChainClient, address: str, initial: int, maximum: int) -> None:
        self.chain = chain
        self.address = address
        self.span = max(1, min(initial, maximum))
        self.maximum = maximum
        self.max_backoff = 5.0

    def fetch(self, start: int, end: int) -> tuple[list[dict[str, Any]], int]:
        """Logs of [start, last] for some start <= last <= end; returns (logs, last)."""
        backoff = 0.05
        while True:
            last = min(end, start + self.span - 1)
            try:
                logs = self.chain.get_logs(self.address, start, last)
            except RpcError as exc:
                if _is_rate_limit(exc):
                    time.sleep(backoff)
                    backoff = min(self.max_backoff, backoff * 2)
                    continue
                if _is_too_large(exc) and last > start:
                    self.span = max(1, (last - start + 1) // 2)
                    continue
                raise
            except NodeUnavailable:
                time.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                if backoff >= self.max_backoff:
                    raise
                continue
            if last - start + 1 >= self.span and len(logs) < 10_000:
                self.span = min(self.maximum, self.span * 2)
            return logs, last


def _is_rate_limit(exc: RpcError) -> bool:
    text = exc.message.lower()
    return exc.code in (429, -32005, -32029) and ("rate" in text or "limit exceeded" in text or exc.code == 429)


def _is_too_large(exc: RpcError) -> bool:
    text = exc.message.lower()
    return any(
        s in text for s in ("too many", "more than", "range", "limit", "response size", "timeout", "exceed")
    ) or exc.code in (-32005, -32602)


class Indexer:
    """Mirrors one deployment of the registry into one database."""

    def __init__(
        self,
        chain: ChainClient,
        deployment: Deployment,
        engine: Engine,
        config: IndexerConfig | None = None,
        *,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.chain = chain
        self.deployment = deployment
        self.engine = engine
        self.config = config or IndexerConfig()
        self.abi = ContractAbi(artifact("ReceivableRegistry").abi)
        self.fetcher = LogFetcher(chain, deployment.registry, self.config.initial_log_range, self.config.max_log_range)
        self.lock = WriterLock(engine)
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Migrate, take the writer lock, check the chain is the one indexed so far."""
        migrate(self.engine)
        self.lock.acquire()
        try:
            self._check_identity()
        except BaseException:
            self.lock.release()
            raise
        self._started = True

    def close(self) -> None:
        self.lock.release()
        self._started = False

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> Indexer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, until_block: int | None = None) -> None:
        """Backfill, then follow the chain until :meth:`stop` (or until ``until_block`` is indexed)."""
        if not self._started:
            self.start()
        while not self._stop.is_set():
            advanced = self.step()
            if until_block is not None and self.cursor().block_number >= until_block:
                return
            if advanced == 0:
                self._stop.wait(self.config.poll_interval)

    def sync(self) -> int:
        """Index up to the chain's current head; returns the cursor block."""
        if not self._started:
            self.start()
        while self.step() > 0:
            pass
        return self.cursor().block_number

    # ------------------------------------------------------------------ cursor

    def cursor(self) -> CursorState:
        with self.engine.connect() as conn:
            row = conn.execute(select(table_of(Cursor))).mappings().first()
        if row is None:
            start = self.deployment.deploy_block - 1
            return CursorState(start, "", LedgerPosition(bytes(32), 0))
        return CursorState(
            row["block_number"], row["block_hash"], LedgerPosition(row["ledger_head"], row["ledger_count"])
        )

    def _check_identity(self) -> None:
        with self.engine.connect() as conn:
            row = conn.execute(select(table_of(Cursor))).mappings().first()
        if row is None:
            return
        genesis = self.chain.get_block(0)["hash"]
        if row["genesis_hash"] != genesis or row["chain_id"] != self.chain.chain_id:
            raise ChainReset(
                f"the database mirrors chain {row['chain_id']} with genesis {row['genesis_hash']}, but the node "
                f"is chain {self.chain.chain_id} with genesis {genesis}: the chain was reset. Re-index into an "
                "empty database (`registry index --reset`)."
            )
        if row["registry_address"].lower() != self.deployment.registry.lower():
            raise ChainReset(
                f"the database mirrors registry {row['registry_address']}, the deployment names "
                f"{self.deployment.registry}: re-index into an empty database (`registry index --reset`)."
            )

    # ------------------------------------------------------------------ one step

    def step(self) -> int:
        """Index one range of blocks; returns how many blocks the cursor advanced (0: caught up)."""
        try:
            return self._step()
        except Retry:
            return 0

    def _step(self) -> int:
        cursor = self.cursor()
        tip = self.chain.block_number()
        if cursor.block_hash and cursor.block_number <= tip:
            chain_hash = self._hashes([cursor.block_number])[cursor.block_number]
            if chain_hash != cursor.block_hash:
                self._handle_reorg(cursor)
                return 0
        elif cursor.block_hash and cursor.block_number > tip:
            # The chain is shorter than the mirror: a rollback on the node.
            self._handle_reorg(cursor)
            return 0
        if cursor.block_number >= tip:
            return 0
        start = cursor.block_number + 1
        logs, last = self.fetcher.fetch(start, tip)
        headers = self._headers_for(start, last, tip, logs)
        if cursor.block_hash and headers[start]["parentHash"] != cursor.block_hash:
            raise Retry  # reorg between the cursor check and now; detected on the next step
        for entry in logs:
            if headers[int(entry["blockNumber"], 16)]["hash"] != entry["blockHash"]:
                raise Retry
        events = [e for e in (self.abi.decode_log(entry) for entry in logs) if e is not None]
        end_header = headers[last]
        with self.engine.begin() as conn:
            batch = Batch(conn, cursor.ledger)
            ledger = batch.apply(events)
            if self.config.verify_ledger and events:
                self._verify_ledger(ledger, end_header["hash"])
            batch.flush()
            self._store_headers(conn, headers, last)
            write_cursor(
                conn,
                {
                    "chain_id": self.chain.chain_id,
                    "registry_address": self.deployment.registry,
                    "genesis_hash": self.deployment.genesis_hash,
                    "deploy_block": self.deployment.deploy_block,
                    "block_number": last,
                    "block_hash": end_header["hash"],
                    "block_timestamp": int(end_header["timestamp"], 16),
                    "ledger_head": ledger.head,
                    "ledger_count": ledger.count,
                },
            )
        if self.on_batch is not None:
            self.on_batch(last, len(events))
        return last - cursor.block_number

    def _hashes(self, numbers: list[int]) -> dict[int, str | None]:
        answers = self.chain.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        out: dict[int, str | None] = {}
        for n, answer in zip(numbers, answers, strict=True):
            if isinstance(answer, Exception):
                raise answer
            out[n] = answer["hash"] if answer else None
        return out

    def _headers_for(self, start: int, last: int, tip: int, logs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Headers of: the first and last block of the range, blocks with logs, and every block of the
        range that lies within the reorg window of the tip (dense there, sparse further back)."""
        numbers = {start, last} | {int(entry["blockNumber"], 16) for entry in logs}
        dense_from = max(start, tip - self.config.header_window + 1)
        numbers.update(range(dense_from, last + 1))
        ordered = sorted(numbers)
        headers: dict[int, dict[str, Any]] = {}
        for i in range(0, len(ordered), 500):
            chunk = ordered[i : i + 500]
            answers = self.chain.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            for n, answer in zip(chunk, answers, strict=True):
                if isinstance(answer, Exception):
                    raise answer
                if answer is None:
                    raise Retry  # the block vanished (rollback under us)
                headers[n] = answer
        # Consecutive headers must chain; a break means the chain changed while we read it.
        for n in ordered:
            if n - 1 in headers and headers[n]["parentHash"] != headers[n - 1]["hash"]:
                raise Retry
        return headers

    def _store_headers(self, conn: Any, headers: dict[int, dict[str, Any]], last: int) -> None:
        table = table_of(BlockHeader)
        conn.execute(
            insert(table),
            [
                {
                    "number": n,
                    "hash": h["hash"],
                    "parent_hash": h["parentHash"],
                    "timestamp": int(h["timestamp"], 16),
                }
                for n, h in headers.items()
            ],
        )
        keep_from = last - self.config.header_window
        conn.execute(delete(table).where(table.c.number < keep_from))

    def _verify_ledger(self, ledger: LedgerPosition, block_hash: str) -> None:
        data = self.abi.encode_call("ledger", ())
        try:
            result = self.chain.rpc.call(
                "eth_call", [{"to": self.deployment.registry, "data": "0x" + data.hex()}, {"blockHash": block_hash}]
            )
        except RpcError as exc:
            raise Retry from exc  # the block is gone (reorg): retry the range
        head, count = self.abi.decode_output("ledger", bytes.fromhex(result[2:]))
        if head != ledger.head or count != ledger.count:
            raise LedgerMismatch(
                f"mirror ledger ({ledger.count} events, head 0x{ledger.head.hex()}) differs from the contract's "
                f"({count} events, head 0x{head.hex()}) at block {block_hash}: refusing to serve a divergent mirror"
            )

    # ------------------------------------------------------------------ reorgs

    def _handle_reorg(self, cursor: CursorState) -> None:
        with self.engine.connect() as conn:
            stored = conn.execute(
                select(BlockHeader.number, BlockHeader.hash)
                .where(BlockHeader.number <= cursor.block_number)
                .order_by(BlockHeader.number.desc())
            ).all()
        chain = self._hashes([n for n, _ in stored]) if stored else {}
        ancestor: int | None = None
        for number, stored_hash in stored:
            if chain.get(number) == stored_hash:
                ancestor = number
                break
        if ancestor is None:
            if self.deployment.deploy_block - 1 >= 0 and cursor.block_number - self.deployment.deploy_block + 1 <= (
                self.config.finality_depth
            ):
                ancestor = self.deployment.deploy_block - 1
            else:
                raise ReorgBeyondFinality(
                    f"the chain no longer contains any block the mirror stored (cursor {cursor.block_number}); "
                    "this reorg is deeper than the header window: stop and re-index (`registry index --reset`)."
                )
        depth = cursor.block_number - ancestor
        if depth > self.config.finality_depth:
            raise ReorgBeyondFinality(
                f"reorg of depth {depth} (common ancestor block {ancestor}, mirror at {cursor.block_number}) exceeds "
                f"the finality depth {self.config.finality_depth}: stopping instead of guessing. Investigate the "
                "node, then re-index (`registry index --reset`)."
            )
        log.warning("reorg: rolling back %d blocks to common ancestor %d", depth, ancestor)
        with self.engine.begin() as conn:
            rollback_to(conn, ancestor)
            ledger = ledger_as_of(conn, ancestor)
            if ancestor < self.deployment.deploy_block:
                conn.execute(delete(table_of(Cursor)))
                return
            header = conn.execute(select(BlockHeader).where(BlockHeader.number == ancestor)).scalar_one()
            write_cursor(
                conn,
                {
                    "block_number": ancestor,
                    "block_hash": header.hash,
                    "block_timestamp": header.timestamp,
                    "ledger_head": ledger.head,
                    "ledger_count": ledger.count,
                },
            )
