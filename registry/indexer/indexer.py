"""The indexer: a reorg-safe, crash-safe SQL mirror of the registry's events.

Guarantees (DESIGN.md "Indexer"):
- the SQL state is a pure function of the canonical chain up to the cursor block;
- raw logs, derived rows, block headers and the cursor commit in one transaction per batch, so a
  crash at any point leaves the previous batch's state, and a restart resumes from the cursor;
- reorgs are detected by comparing stored block hashes with the chain's and rolled back to the
  common ancestor; one deeper than the configured finality stops the indexer with a clear message;
- every batch's ledger hash is checked against the contract's ``ledger()`` at the batch's end block
  (pinned by block hash), so a mirror that missed or misread an event stops instead of serving it;
- a batch's logs are only committed if the block that bounded the read (the head, or the target) still
  has the hash it had before the logs were fetched: logs and headers then come from one fork;
- an unreachable or rate-limiting node is waited out with exponential backoff (``outage_timeout``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select

from registry.chain.client import ChainClient
from registry.chain.deployment import Deployment
from registry.chain.rpc import NodeUnavailable, RpcError
from registry.errors import ChainError
from registry.indexer.projector import Batch, ledger_as_of, rollback_to, write_cursor
from registry.indexer.reader import (
    IndexerError,
    LedgerPosition,
    LogFetcher,
    Read,
    Reader,
    ReaderConfig,
    ReaderProcess,
    Retry,
    StateUnavailable,
    _is_rate_limit,
)
from registry.memory import HeldCollector
from registry.store.db import WalCheckpoints, WriterLock, create_indexes, drop_indexes, migrate
from registry.store.models import BlockHeader, Cursor, Receivable, check_indexes, table_of

__all__ = [
    "ChainReset",
    "CursorState",
    "Indexer",
    "IndexerConfig",
    "IndexerError",
    "LedgerMismatch",
    "LogFetcher",
    "ReorgBeyondFinality",
    "Retry",
    "StateUnavailable",
]

log = logging.getLogger("registry.indexer")


class ReorgBeyondFinality(IndexerError):
    """Raised when the chain reorganised deeper than the configured finality depth."""


class ChainReset(IndexerError):
    """Raised when the node's genesis (or chain id, or registry) differs from what the mirror indexed."""


class LedgerMismatch(IndexerError):
    """Raised when the mirror's ledger hash differs from the contract's at the same block."""


@dataclass
class IndexerConfig:
    finality_depth: int = 64
    header_window: int = 256
    poll_interval: float = 0.1
    initial_log_range: int = 1
    """First ``eth_getLogs`` span, in blocks; the fetcher then doubles it while ranges are sparse and
    shrinks it towards ``target_logs`` logs a request where they are dense (a blind first guess can
    only be too small, which costs a few short requests, or too large, which makes one huge batch)."""
    max_log_range: int = 50_000
    target_logs: int = LogFetcher.TARGET_LOGS
    """Logs per request, and so per batch, the fetcher aims at."""
    verify_ledger: bool = True
    max_backoff: float = 5.0
    """Longest wait between two attempts while the node is unreachable or rate-limiting."""
    outage_timeout: float | None = 300.0
    """Give up (re-raise) after the node has failed for this many seconds in a row; None: never."""
    max_retries: int = 100
    """Give up after this many consecutive ranges the chain changed under (a reorg storm)."""
    prefetch: bool = True
    """While a batch is written, read the next range (logs, headers, the contract's ledger) on a second
    thread: the node's work and the database's overlap. What was read ahead is checked exactly as a
    foreground read is (pinned end block, header chain onto the cursor), and discarded if the cursor moved."""
    read_process_from: int | None = 5_000
    """Read ahead in a separate process (:class:`~registry.indexer.reader.ReaderProcess`) from the first
    batch of at least this many events on (a backfill): decoding and folding then run beside the writes
    instead of taking turns with them for the interpreter lock. None: always on a thread. Live batches
    are small and stay on the thread, where the hand-over costs nothing."""
    defer_check_indexes_from: int | None = 5_000
    """A backfill batch of at least this many events, into a receivables table holding fewer rows than
    the batch (a first index or a re-index), drops the indexes only readers use
    (:data:`~registry.store.models.CHECK_INDEXES`) in its own transaction, and the batch that catches up
    with the chain builds them again in its: one sort per index instead of a random B-tree insert per
    row and index (a registration's write about 40% cheaper). Meanwhile checks are right but slow (the
    mirror is behind, so not ready either); on PostgreSQL a reader waits for the dropping batch's commit.
    An indexer stopped meanwhile builds them as it closes, one killed as it next starts. None: never."""


@dataclass(frozen=True)
class CursorState:
    block_number: int
    block_hash: str
    ledger: LedgerPosition


# Delays before re-reading a ledger() that disagrees with the mirror (see Indexer._verify_ledger).
_LEDGER_REREADS = (0.02, 0.1, 0.3, 1.0)

_TRANSIENT = ("header not found", "block not found", "unknown block", "timeout", "timed out", "busy", "try again")


def _is_transient(exc: ChainError) -> bool:
    """An outage or a refusal worth waiting out: unreachable node, rate limit, block not there yet."""
    if isinstance(exc, NodeUnavailable):
        return True
    if isinstance(exc, RpcError):
        return exc.code != -32601 and (_is_rate_limit(exc) or any(s in exc.message.lower() for s in _TRANSIENT))
    return False


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
        self._reader_config = ReaderConfig(
            address=deployment.registry,
            initial_log_range=self.config.initial_log_range,
            max_log_range=self.config.max_log_range,
            target_logs=self.config.target_logs,
            header_window=self.config.header_window,
            max_backoff=self.config.max_backoff,
            verify_ledger=self.config.verify_ledger,
        )
        self.reader = Reader(chain, self._reader_config)
        self.fetcher = self.reader.fetcher
        self.lock = WriterLock(engine)
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._collector = HeldCollector()
        self._started = False
        self._target: int | None = None  # index no further than this block (None: the chain's head)
        self._caught_up = False  # whether the last step found the cursor at the head (or target)
        self._ahead: Future[Any] | None = None  # the next range, being read while a batch is written
        self._reader: ThreadPoolExecutor | None = None
        self._process: ReaderProcess | None = None
        self._process_lock = threading.Lock()
        self._process_usable = True
        self._checkpoints: WalCheckpoints | None = None  # SQLite: WAL checkpoints beside the writes
        self._indexes_deferred = False  # the check indexes are left out until caught up (see IndexerConfig)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Take the writer lock, migrate, check the chain is the one indexed so far. The lock comes first:
        a second indexer fails fast without touching the schema."""
        self.lock.acquire()
        try:
            migrate(self.engine)
            self._check_identity()
            self._build_check_indexes("left out by a backfill that was killed")
        except BaseException:
            self.lock.release()
            raise
        self._checkpoints = WalCheckpoints.for_engine(self.engine)
        self._started = True

    def close(self) -> None:
        self._collector.release()
        self._drop_read_ahead()
        if self._indexes_deferred:
            try:
                self._build_check_indexes("left out by the backfill, stopped before it caught up")
            except Exception:  # (closing on an error: the next start builds them)
                log.exception("could not build the check indexes; the next start will")
        if self._reader is not None:
            self._reader.shutdown(wait=True)
            self._reader = None
        if self._process is not None:
            self._process.close()
            self._process = None
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
        self.lock.release()
        self._started = False

    def reader_cpu_seconds(self) -> float | None:
        """CPU time of the reader process so far (None: none running, or unknown here)."""
        return self._process.cpu_seconds() if self._process is not None else None

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
        self._target = until_block
        try:
            while not self._stop.is_set():
                advanced = self.step()
                if until_block is not None and self.cursor().block_number >= until_block:
                    return
                if advanced == 0 and self._caught_up:
                    self._stop.wait(self.config.poll_interval)
        finally:
            self._target = None

    def sync(self, until_block: int | None = None) -> int:
        """Index up to the chain's current head (or ``until_block``, if lower), rolling back any reorg
        found on the way; returns the cursor block."""
        if not self._started:
            self.start()
        self._target = until_block
        try:
            while not self._stop.is_set():
                self.step()
                if self._caught_up:
                    break
        finally:
            self._target = None
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
        """Index one range of blocks; returns how many blocks the cursor advanced (0: caught up, or
        stopped). A reorg is rolled back first and the blocks after the common ancestor indexed in the
        same step; a range the chain changed under is read again; an unreachable or rate-limiting node
        is waited out with exponential backoff, up to ``outage_timeout``.

        The cyclic collector is paused for the step, and stays paused from one step to the next while
        the mirror is catching up (``HeldCollector``: a full collection every 64 batches); it resumes once
        a step finds the mirror caught up, stops, or fails."""
        self._collector.hold()
        try:
            advanced = self._attempts()
        except BaseException:
            self._collector.release()
            raise
        if advanced == 0 or self._caught_up or self._stop.is_set():
            self._collector.release()
        else:
            self._collector.tick()
        return advanced

    def _attempts(self) -> int:
        """:meth:`step`'s attempts at :meth:`_step`, retried as it says."""
        backoff = 0.05
        failing_since: float | None = None
        retries = 0
        while not self._stop.is_set():
            try:
                return self._step()
            except Retry:
                retries += 1
                if retries > self.config.max_retries:
                    raise IndexerError(
                        f"the chain changed under {retries} consecutive reads: stopping; is the node reorganising "
                        "continuously?"
                    ) from None
                log.info("the chain changed while a range was read; reading it again")
                self._stop.wait(min(1.0, 0.01 * retries))
            except ChainError as exc:
                if not _is_transient(exc):
                    raise
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                timeout = self.config.outage_timeout
                if timeout is not None and now - failing_since > timeout:
                    raise
                log.warning("node unavailable (%s); retrying in %.2fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(self.config.max_backoff, backoff * 2)
        return 0

    def _step(self) -> int:
        self._caught_up = False
        cursor = self.cursor()
        read = self._continuing_read(cursor)
        if read is not None:
            return self._write(cursor, read, read.end, head_seen=False)
        head = self.reader.header("latest")
        tip = int(head["number"], 16)
        if cursor.block_hash:
            if cursor.block_number > tip:
                # The chain is shorter than the mirror: a rollback on the node.
                self._handle_reorg(cursor)
                cursor = self.cursor()
            else:
                at_cursor = head if cursor.block_number == tip else self.reader.header(cursor.block_number)
                if at_cursor["hash"] != cursor.block_hash:
                    self._handle_reorg(cursor)
                    cursor = self.cursor()
        end = tip if self._target is None else min(tip, self._target)
        if cursor.block_number >= end:
            if self._indexes_deferred:
                self._build_check_indexes("left out by the backfill")
            self._caught_up = True
            return 0
        start = cursor.block_number + 1
        read = self._take_read_ahead(start, end)
        if read is None:
            # The block that bounds this read, pinned by hash before the logs are fetched: if it still has
            # this hash afterwards, the logs and the headers below come from the same fork. (Without the
            # pin, a reorg between the two reads that only replaced blocks without registry logs would go
            # unnoticed, and the new blocks' logs would be skipped for good.)
            read = self._read(start, end, head if end == tip else None)
        return self._write(cursor, read, end, head_seen=True)

    def _continuing_read(self, cursor: CursorState) -> Read | None:
        """The range read ahead while the last batch was written, if it continues the mirror: it starts
        at the block after the cursor's, its first block's parent is the cursor's block, and it ends
        within the target. Its end is then the head the step that asked for it saw, and this step needs
        no look at the chain's head of its own (two header requests a batch, which wait behind the
        reader's log requests on the node: 0.33 s of the writer's time over the benchmark's 17
        batches). A reorg below the cursor since that look is found by the first read that does not
        chain onto the cursor, or by the head check once the backfill reaches that end: as if it had
        come just after this batch."""
        if self._ahead is None or not cursor.block_hash:
            return None
        start = cursor.block_number + 1
        read = self._take_read_ahead(start, self._target if self._target is not None else 2**63)
        if read is None:
            return None
        if read.headers[start]["parentHash"] != cursor.block_hash:
            return None  # (dropped) the chain changed: the head check finds where
        return read

    def _write(self, cursor: CursorState, read: Read, end: int, head_seen: bool) -> int:
        """Writes ``read`` (which starts at the block after the cursor's) as one batch; ``end``: the block
        the mirror is catching up to. Caught up only if this step saw the chain's head (``head_seen``):
        else the next step looks, and finds any reorg since the read."""
        start = cursor.block_number + 1
        last, headers, prepared = read.last, read.headers, read.prepared
        if cursor.block_hash and headers[start]["parentHash"] != cursor.block_hash:
            raise Retry  # reorg between the cursor check and now; detected on the next attempt
        if last < end and self.config.prefetch and not self._stop.is_set():
            self._read_ahead(last + 1, end, len(prepared))
        end_header = headers[last]
        transaction = self.engine.begin() if self._checkpoints is None else self._checkpoints.deferred(self.engine)
        deferring = restoring = False
        with transaction as conn:
            if not self._indexes_deferred and last < end and self._is_bulk_load(conn, len(prepared)):
                deferring = bool(drop_indexes(conn, check_indexes()))
            with Batch(conn, cursor.ledger) as batch:
                ledger = batch.apply(prepared)
                if self.config.verify_ledger and prepared.events:
                    self._verify_ledger(ledger, end_header["hash"], read.ledger)
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
            if (self._indexes_deferred or deferring) and last >= end:
                restoring = bool(create_indexes(conn, check_indexes()))
        if deferring:
            log.info("bulk load: the check indexes are left out until the mirror catches up")
        if restoring:
            log.info("caught up: the check indexes are built")
        self._indexes_deferred = (self._indexes_deferred or deferring) and not restoring
        self._caught_up = head_seen and last >= end
        if self.on_batch is not None:
            self.on_batch(last, len(prepared))
        return last - cursor.block_number

    def _is_bulk_load(self, conn: Any, events: int) -> bool:
        """Whether a batch of ``events`` events, with more to come, is a bulk load: big, into a receivables
        table holding fewer rows (building the check indexes again then costs less than it saves)."""
        threshold = self.config.defer_check_indexes_from
        if threshold is None or events < threshold:
            return False
        rows = conn.execute(select(func.max(table_of(Receivable).c.row_id))).scalar()
        return (rows or 0) < events

    def _build_check_indexes(self, why: str) -> None:
        """Builds whichever check indexes are missing, in a transaction of their own."""
        with self.engine.begin() as conn:
            built = create_indexes(conn, check_indexes())
        if built:
            log.warning("built the check indexes %s (%s)", ", ".join(built), why)
        self._indexes_deferred = False

    def _read(self, start: int, end: int, pin: dict[str, Any] | None) -> Read:
        """The range read on this thread (see :meth:`Reader.read`)."""
        return self.reader.read(start, end, pin, ahead=False, fetched=self._start_reader_process)

    def _start_reader_process(self, logs: int, start: int, end: int) -> None:
        """Starts the reader process for a backfill, once a range of at least ``read_process_from`` logs
        has been fetched with [start, end] left after it (on this thread or the read-ahead thread; before
        the range is decoded): the process reads [start, end] at once, while this range is prepared and
        written, and holds it for the request that follows."""
        threshold = self.config.read_process_from
        if threshold is None or logs < threshold or not self.config.prefetch:
            return
        with self._process_lock:
            if self._process is not None or not self._process_usable:
                return
            try:
                rest = self.reader.take_rest()  # (what this range's fetch brought beyond its cut)
                self._process = ReaderProcess(
                    self.chain.rpc.url, self.chain.rpc.timeout, self._reader_config, read_from=(start, end), rest=rest
                )
            except OSError as exc:
                log.warning("the reader process is unavailable (%s); reading ahead on a thread", exc)
                self._process_usable = False

    def _read_ahead(self, start: int, end: int, events: int) -> None:
        """Starts reading [start, end] while the current batch is written: in the reader
        process once ranges are big enough to pay for the hand-over (a backfill), else on a thread."""
        self._start_reader_process(events, start, end)  # (if no read before has)
        try:
            if self._process is not None:
                self._ahead = self._process.submit(start, end)
                return
        except OSError as exc:  # no process, or it is gone: read ahead on a thread from now on
            log.warning("the reader process is unavailable (%s); reading ahead on a thread", exc)
            if self._process is not None:
                self._process.close()
            self._process = None
            self._process_usable = False
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="indexer-read-ahead")
        self._ahead = self._reader.submit(self.reader.read, start, end, None, True, self._start_reader_process)

    def _take_read_ahead(self, start: int, end: int) -> Read | None:
        """What was read ahead, if it starts at ``start`` and ends within ``end``; else
        None (a failed read-ahead is read again in the foreground, with the foreground's error handling)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        read = ReaderProcess.result(ahead)
        if read is None:
            return None
        return read if read.start == start and read.end <= end else None

    def _drop_read_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.cancel():
            with suppress(Exception):  # discarded anyway
                ahead.result()

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
                if n <= last  # headers beyond the range (the pinned tip) are stored by a later batch
            ],
        )
        keep_from = last - self.config.header_window
        conn.execute(delete(table).where(table.c.number < keep_from))

    def _verify_ledger(self, ledger: LedgerPosition, block_hash: str, known: tuple[bytes, int] | None = None) -> None:
        """The contract's ``ledger()`` at ``block_hash`` must equal the mirror's (``known``: as read
        ahead). A disagreement is read again a few times before it counts: Anvil answers calls pinned to
        the block it has just mined from an unsettled state for a few milliseconds while it mines the next
        one (measured: about one call in ten under a steady write load), which is no divergence of the
        mirror."""
        if known == (ledger.head, ledger.count):
            return
        head, count = b"", -1
        for delay in (*_LEDGER_REREADS, None):
            head, count = self.reader.contract_ledger(block_hash)
            if head == ledger.head and count == ledger.count:
                return
            if delay is not None:
                log.info(
                    "ledger() at %s disagrees (%d vs %d events); reading it again", block_hash, count, ledger.count
                )
                time.sleep(delay)
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
        chain = self.reader.hashes([n for n, _ in stored]) if stored else {}
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
            # Core rows, not ORM objects: ``select(BlockHeader)`` on a Connection yields the first column.
            header = conn.execute(
                select(BlockHeader.hash, BlockHeader.timestamp).where(BlockHeader.number == ancestor)
            ).one()
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
