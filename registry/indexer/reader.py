"""The indexer's read side: one block range read from the node and prepared for the store.

A read fetches the range's logs (adaptive ``eth_getLogs`` spans), the headers that bound and cover it,
decodes the logs, checks that they and the headers come from one fork, and prepares them for the
store: each event's payload hashed for the ledger fold and the ``raw_events`` rows built. All of it is a
pure function of the node's answers, so it runs on the indexer's thread, or, for a backfill's read-ahead,
in a separate process (:class:`ReaderProcess`): there it overlaps the writes for real, instead of taking
turns with them for Python's interpreter lock, and reads on without waiting for the ranges before to be
written. The ledger hash itself, a chain through every event, is folded by the writer
(:meth:`Prepared.fold`, one hash an event). Nothing here touches the database; what is read is checked
against the cursor by the indexer.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from registry.chain.abi import ContractAbi, DecodedEvent
from registry.chain.client import ChainClient
from registry.chain.compiler import artifact
from registry.chain.rpc import NodeUnavailable, RpcError
from registry.errors import RegistryError
from registry.hashing import keccak256_many
from registry.ledger import UNFOLDED_EVENTS, fold_hashed
from registry.memory import HeldCollector

log = logging.getLogger("registry.indexer")


class IndexerError(RegistryError):
    """Raised when the indexer must stop rather than guess."""


class StateUnavailable(IndexerError):
    """The node has a block but not its state (pruned): the ledger check cannot run there."""


class Retry(Exception):
    """The chain moved under a batch (a reorg between two reads): fetch the range again."""


@dataclass(frozen=True)
class LedgerPosition:
    head: bytes
    count: int


# ---------------------------------------------------------------------------------------------- fetching


class LogFetcher:
    """``eth_getLogs`` over adaptive block ranges: grows on success, halves on a too-many-results or
    range-limit error (and on a timed-out request), backs off on rate limits and outages.

    A refused range caps the growth just below it, and the span then grows halfway to the cap (a binary
    search for the node's limit, instead of a refusal every other request); the cap is lifted after
    ``PROBE_EVERY`` answered requests, since how many logs a range holds changes along the chain."""

    PROBE_EVERY = 64
    TARGET_LOGS = 20_000
    """Logs per request (and so per batch) the span aims at: grown while under half of it, shrunk in
    proportion above it (and a read of more than twice as many cut at a block boundary). Enough to spread
    a batch's fixed costs (a transaction and its commit, the ledger check, headers, reloading the rows
    the batch changes), small enough that a backfill is many batches, each read ahead while the one
    before is written (measured on the benchmark chain: 20,000 beat 50,000 and 10,000), and bounded
    because the whole batch is in memory at once (about 5 kB a log: JSON, decoded event, rows)."""

    def __init__(self, chain: ChainClient, address: str, initial: int, maximum: int, target: int | None = None) -> None:
        self.chain = chain
        self.address = address
        self.span = max(1, min(initial, maximum))
        self.maximum = maximum
        self.target = target or self.TARGET_LOGS
        self.ceiling: int | None = None  # the largest span not known to be refused
        self._known: int | None = None  # blocks of the last answered request
        self.max_backoff = 5.0
        self.give_up_after = 10.0  # seconds of back-to-back rate limits or outage before re-raising
        self._answered = 0

    def _shrink(self, refused: int) -> None:
        self.span = max(1, refused // 2)
        self.ceiling = max(1, refused - 1)
        self._answered = 0

    def fetch(self, start: int, end: int) -> tuple[list[dict[str, Any]], int]:
        """Logs of [start, last] for some start <= last <= end; returns (logs, last).

        A span grown past the last answered one is asked for in two requests: the answered size first,
        then, only if that part is sparse (under half the target), the rest. A sparse stretch followed by
        a dense one (a backfill reaching a chain's busy period) then costs one answer of about the target,
        not one of up to twice the span's worth of the dense blocks, which the node takes long to serve
        while nothing else can proceed."""
        backoff = 0.05
        waited = 0.0
        while True:
            last = min(end, start + self.span - 1)
            first, upto = start, last
            if self._known is not None and last - start + 1 > self._known:
                upto = start + self._known - 1
            logs: list[dict[str, Any]] = []
            try:
                while True:
                    logs.extend(self.chain.get_logs(self.address, first, upto))
                    if upto == last or len(logs) >= self.target // 2:
                        break
                    first, upto = upto + 1, last  # sparse so far: the rest of the grown span
            except RpcError as exc:
                if _is_rate_limit(exc) and waited < self.give_up_after:
                    time.sleep(backoff)
                    waited += backoff
                    backoff = min(self.max_backoff, backoff * 2)
                    continue
                if _is_missing_block(exc):
                    raise  # the chain shrank under the read: the caller retries, the span stays
                if _is_too_large(exc) and not _is_rate_limit(exc) and upto > first:
                    self._shrink(upto - first + 1)
                    continue
                raise
            except NodeUnavailable as exc:
                if "timed out" in str(exc).lower() and upto > first:
                    self._shrink(upto - first + 1)  # perhaps more than the node can answer in time: ask less
                if waited >= self.give_up_after:
                    raise
                time.sleep(backoff)
                waited += backoff
                backoff = min(self.max_backoff, backoff * 2)
                continue
            last = upto
            self._known = last - start + 1
            self._answered += 1
            if self.ceiling is not None and self._answered >= self.PROBE_EVERY:
                self.ceiling = None
            if len(logs) > self.target and last > start:
                # A dense stretch: aim the next request at about ``target`` logs (one batch's memory).
                self.span = max(1, (last - start + 1) * self.target // len(logs))
            elif last - start + 1 >= self.span and len(logs) < self.target // 2:
                if self.ceiling is None:
                    self.span = min(self.maximum, self.span * 2)
                else:  # halfway to the smallest refused span: a binary search for the node's limit
                    self.span = min(self.maximum, max(self.span, (self.span + self.ceiling + 1) // 2))
            return logs, last


def _is_rate_limit(exc: RpcError) -> bool:
    text = exc.message.lower()
    return exc.code in (429, -32005, -32029) and ("rate" in text or "limit exceeded" in text or exc.code == 429)


def _is_missing_block(exc: RpcError) -> bool:
    """The block a call was pinned to is unknown (reorganised away, or the chain shrank under the read):
    Anvil says "Resource not found" (-32001) or "BlockOutOfRangeError", geth "header not found", others
    "unknown block"."""
    text = exc.message.lower()
    return exc.code != -32601 and (
        exc.code == -32001 or "not found" in text or "unknown block" in text or "blockoutofrange" in text
    )


def _is_missing_state(exc: RpcError) -> bool:
    """The block is known but its state is not (geth "missing trie node", Besu "world state not available",
    Erigon/Reth "pruned", Anvil "state ... not available")."""
    text = exc.message.lower()
    return "missing trie node" in text or "pruned" in text or ("state" in text and "not available" in text)


def _is_too_large(exc: RpcError) -> bool:
    text = exc.message.lower()
    return any(
        s in text for s in ("too many", "more than", "range", "limit", "response size", "timeout", "exceed")
    ) or exc.code in (-32005, -32602)


# ---------------------------------------------------------------------------------------------- preparing


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


_JSON_KEYS: dict[str, str] = {}  # '"name":' of every argument name seen (the ABI's, so a few dozen)


def args_json(args: dict[str, Any]) -> str:
    """``json.dumps({k: _json_value(v)}, separators=(",", ":"))``, character for character, written
    directly when every value is an int, a bool or bytes (every static event: one per stored log, so
    the hot path); through ``json.dumps`` otherwise (strings, arrays)."""
    parts = []
    for name, value in args.items():
        prefix = _JSON_KEYS.get(name)
        if prefix is None:
            prefix = _JSON_KEYS[name] = json.dumps(name) + ":"
        kind = type(value)
        if kind is int:
            parts.append(prefix + int.__repr__(value))
        elif kind is bytes:
            parts.append(f'{prefix}"0x{value.hex()}"')
        elif kind is bool:
            parts.append(prefix + ("true" if value else "false"))
        else:
            return json.dumps({k: _json_value(v) for k, v in args.items()}, separators=(",", ":"))
    return "{" + ",".join(parts) + "}"


_STATIC_JSON = re.compile(r"^(uint\d*|int\d*|bool|address|bytes([1-9]|[12]\d|3[012]))$")


def json_writers(abi: ContractAbi) -> dict[str, Callable[[dict[str, Any]], str]]:
    """Per event of static elementary fields, a function writing :func:`args_json`'s text with one
    format operation (compiled once per event type: the raw log's JSON is built for every stored event).
    Other events (strings, arrays) go through :func:`args_json`."""
    writers: dict[str, Callable[[dict[str, Any]], str]] = {}
    for item in abi.events.values():
        types = [p["type"] for p in item["inputs"]]
        if not all(_STATIC_JSON.match(t) for t in types):
            continue
        parts, values = [], []
        for p, abi_type in zip(item["inputs"], types, strict=True):
            key = json.dumps(p["name"]).replace("%", "%%") + ":"
            field = f"a[{p['name']!r}]"
            if abi_type == "bool":
                parts.append(key + "%s")
                values.append(f"('true' if {field} else 'false')")
            elif abi_type.startswith(("uint", "int")):
                parts.append(key + "%d")
                # an int, or a TypeError (never a bool's "1"); inline: a call per field cost a tenth
                values.append(f"(v if type(v := {field}) is int else _not_int(v))")
            elif abi_type == "address":
                parts.append(key + '"%s"')
                values.append(f"_str({field})")
            else:
                parts.append(key + '"0x%s"')
                values.append(f"{field}.hex()")
        template = "{" + ",".join(parts) + "}"
        namespace: dict[str, Any] = {"_not_int": _not_int, "_str": _str_only}
        exec(f"def write(a):\n    return {template!r} % ({', '.join(values)},)\n", namespace)
        writers[item["name"]] = namespace["write"]
    return writers


def _not_int(value: Any) -> int:
    raise TypeError(f"an int, not {value!r}")


def _str_only(value: Any) -> str:
    if type(value) is not str or '"' in value or "\\" in value or not value.isascii() or not value.isprintable():
        raise TypeError(f"a plain string, not {value!r}")
    return value


RAW_COLUMNS = ("block_number", "log_index", "block_hash", "tx_hash", "name", "seq", "ledger_head", "args")


@dataclass
class Prepared:
    """A range's events ready for the store: what depends neither on the database's rows nor on the
    ledger position the range starts from."""

    raw: list[tuple[Any, ...]]
    """``raw_events`` rows, :data:`RAW_COLUMNS` in order, in chain order; ``seq`` and ``ledger_head`` are
    None until :meth:`fold`."""
    folded: list[tuple[int, bytes, bytes]]
    """(index in ``raw``, topic0, keccak256 of the ledger payload) of each event the ledger folds, in order."""
    events: list[tuple[str, int, int, Any]]
    """(name, block number, log index, fields) of every event, in chain order, for the projector (for
    an event with a row builder, the row's values in place of the fields)."""

    def __len__(self) -> int:
        return len(self.events)

    def fold(self, start: LedgerPosition) -> LedgerPosition:
        """Folds the events onto ``start`` (the cursor's position), filling the raw rows' ``seq`` and
        ``ledger_head``; returns the position after the last. Again from another start, it refills them."""
        head, count = start.head, start.count
        raw = self.raw
        for i, topic0, payload_hash in self.folded:
            count += 1
            head = fold_hashed(head, count, topic0, payload_hash)
            block, log_index, block_hash, tx_hash, name, _, _, text = raw[i]
            raw[i] = (block, log_index, block_hash, tx_hash, name, count, head, text)
        return LedgerPosition(head, count)


def prepare(
    events: list[DecodedEvent],
    writers: dict[str, Callable[[dict[str, Any]], str]] | None = None,
    rows: dict[str, Callable[[dict[str, Any], int], Any]] | None = None,
) -> Prepared:
    """Builds the ``raw_events`` rows of ``events`` (in chain order; ``writers``: :func:`json_writers` of
    the events' ABI, for speed; the text is :func:`args_json`'s either way) and hashes the payloads the
    ledger folds (:meth:`Prepared.fold` folds them). ``rows``: per event name, a builder of the row it
    creates (the projector's ``READY_ROWS``), whose result then stands in the event's place of the fields."""
    writers = writers or {}
    rows = rows or {}
    raw: list[tuple[Any, ...]] = []
    folded: list[tuple[int, bytes, bytes]] = []
    compact: list[tuple[str, int, int, Any]] = []
    add_raw, add_fold, add_event = raw.append, folded.append, compact.append
    payload_hashes = iter(keccak256_many([e.payload for e in events if e.name not in UNFOLDED_EVENTS]))
    for e in events:
        name, block, args = e.name, e.block_number, e.args
        if name not in UNFOLDED_EVENTS:
            add_fold((len(raw), e.topic0, next(payload_hashes)))
        writer = writers.get(name)
        if writer is not None:
            try:
                text = writer(args)
            except (TypeError, KeyError, AttributeError):  # not the ABI's shapes: the generic text
                text = args_json(args)
        else:
            text = args_json(args)
        add_raw((block, e.log_index, e.block_hash, e.transaction_hash, name, None, None, text))
        build = rows.get(name)
        add_event((name, block, e.log_index, args if build is None else build(args, block)))
    return Prepared(raw, folded, compact)


# ---------------------------------------------------------------------------------------------- reading


_HEADER_FIELDS = ("number", "hash", "parentHash", "timestamp")


@dataclass
class Read:
    """One range as read from the node and prepared, not yet checked against the cursor."""

    start: int
    end: int
    last: int
    headers: dict[int, dict[str, Any]]
    prepared: Prepared
    ledger: tuple[bytes, int] | None
    """The contract's ``ledger()`` at the range's last block, when read ahead."""


@dataclass(frozen=True)
class ReaderConfig:
    address: str
    initial_log_range: int
    max_log_range: int
    target_logs: int
    header_window: int
    max_backoff: float
    verify_ledger: bool
    fetch_ahead: bool = False
    """Fetch the next range from the node while this one is prepared (see :meth:`Reader.read`): on in
    the reader process, whose ranges follow one another; off where reads are one-off."""


@dataclass
class _Fetched:
    """The node's answers for one range (:meth:`Reader._fetch`), checked for consistency, not decoded."""

    start: int
    end: int
    last: int
    logs: list[dict[str, Any]]
    headers: dict[int, dict[str, Any]]
    ledger: tuple[bytes, int] | None


@dataclass
class Rest:
    """Logs of [start, last] that a fetch brought beyond the cut of a range far denser than the target,
    kept for the read of the range after it instead of being fetched again. They come from the fork that
    held block ``pin_number`` with hash ``pin_hash`` (the fetch was checked against it): still the
    chain's while that block is."""

    start: int
    last: int
    logs: list[dict[str, Any]]
    pin_number: int
    pin_hash: str


class Reader:
    """Reads ranges of one deployment's logs from one node (see the module's docstring)."""

    def __init__(self, chain: ChainClient, config: ReaderConfig) -> None:
        self.chain = chain
        self.config = config
        self.abi = ContractAbi(artifact("ReceivableRegistry").abi)
        self.fetcher = LogFetcher(
            chain, config.address, config.initial_log_range, config.max_log_range, config.target_logs
        )
        self.fetcher.max_backoff = config.max_backoff
        self.writers = json_writers(self.abi)
        # (Imported here: the projector imports this module's types.)
        from registry.indexer.projector import READY_ROWS

        self.rows = READY_ROWS
        self._fetching: ThreadPoolExecutor | None = None
        self._next: Future[_Fetched] | None = None
        self._rest: Rest | None = None

    def read(
        self,
        start: int,
        end: int,
        pin: dict[str, Any] | None,
        ahead: bool,
        fetched: Callable[[int, int, int], None] | None = None,
    ) -> Read:
        """Logs of [start, last <= end], their headers, prepared; read ahead, also the contract's ledger
        at ``last`` (by block hash). Checks that the logs, the headers and the pinned
        end block belong together (:class:`Retry` if not), nothing against the cursor: the caller does.

        With ``config.fetch_ahead``, once the node has answered for this range the next one (from
        ``last + 1`` to the same end) is fetched on a thread while this one is decoded and prepared, so that
        the node's time and the decoding overlap; the next read takes it if it asks for that range (and,
        pinned, the pin still matches), else it is dropped. At most one fetch is under way at a time.

        ``fetched(logs, start, end)``, if given, is told how many logs the range holds once the node has
        answered, and what is left of it to read, if anything is, before they are decoded (the indexer
        starts its reader process then, which starts fetching what is left while this range is prepared
        and written)."""
        answer = self._take_fetched(start, end, pin)
        if answer is None:
            answer = self._fetch(start, end, pin, ahead)
        if answer.last < answer.end:
            if self.config.fetch_ahead:
                self._fetch_next(answer.last + 1, answer.end, ahead)
            if fetched is not None:
                fetched(len(answer.logs), answer.last + 1, answer.end)
        decode = self.abi.decode_log
        events = [e for e in (decode(entry) for entry in answer.logs) if e is not None]
        prepared = prepare(events, self.writers, self.rows)
        contract = answer.ledger if events else None
        return Read(start, answer.end, answer.last, answer.headers, prepared, contract)

    def _fetch(self, start: int, end: int, pin: dict[str, Any] | None, ahead: bool) -> _Fetched:
        """The node's half of :meth:`read`: logs, headers, consistency checks, the contract's ledger."""
        pin = pin if pin is not None else self.header(end)
        rest = self._take_rest(start, end, pin)
        if rest is not None:
            logs, last, bound = rest.logs, rest.last, (rest.pin_number, rest.pin_hash)
        else:
            try:
                logs, last = self.fetcher.fetch(start, end)
            except RpcError as exc:
                if _is_missing_block(exc):
                    raise Retry from exc  # the chain shrank while we read it: look again
                raise
            bound = (int(pin["number"], 16), pin["hash"])
        if len(logs) > 2 * self.fetcher.target:
            logs, last = self._cut(logs, start, last, bound)
        headers = self.headers_for(start, last, end, logs)
        if headers[end]["hash"] != pin["hash"]:
            raise Retry  # the chain changed while the logs were read
        for entry in logs:
            if headers[int(entry["blockNumber"], 16)]["hash"] != entry["blockHash"]:
                raise Retry
        contract = self.contract_ledger(headers[last]["hash"]) if ahead and logs and self.config.verify_ledger else None
        return _Fetched(start, end, last, logs, headers, contract)

    def _fetch_next(self, start: int, end: int, ahead: bool) -> None:
        if self._fetching is None:
            self._fetching = ThreadPoolExecutor(1, thread_name_prefix="reader-fetch-ahead")
        self._next = self._fetching.submit(self._fetch, start, end, None, ahead)

    def _take_fetched(self, start: int, end: int, pin: dict[str, Any] | None) -> _Fetched | None:
        """What was fetched ahead, if it is [start, <= end] and agrees with ``pin``; else None (dropped)."""
        pending, self._next = self._next, None
        if pending is None:
            return None
        try:
            fetched = pending.result()
        except Exception as exc:  # read again in the foreground, which raises it if it persists
            log.debug("fetch-ahead of %d- failed (%s); reading it again", start, exc)
            return None
        if fetched.start != start or fetched.end > end:
            return None
        if pin is not None and fetched.end == end and fetched.headers[end]["hash"] != pin["hash"]:
            return None
        return fetched

    def take_rest(self) -> Rest | None:
        """What was fetched beyond the last cut and not read yet (given up: a reader process takes it)."""
        rest, self._rest = self._rest, None
        return rest

    def give_rest(self, rest: Rest | None) -> None:
        """Logs fetched beyond a cut, by this reader or another: a read of ``rest.start`` takes them."""
        self._rest = rest

    def _take_rest(self, start: int, end: int, pin: dict[str, Any]) -> Rest | None:
        """The kept rest if this fetch starts where it does and ends within ``end``, and the block that
        bounded its fetch is still the chain's (``pin``, this fetch's, when it is that block); else None
        (it is dropped either way)."""
        rest, self._rest = self._rest, None
        if rest is None or rest.start != start or rest.last > end:
            return None
        now = pin if int(pin["number"], 16) == rest.pin_number else self.header(rest.pin_number)
        if now["hash"] != rest.pin_hash:
            log.debug("the chain changed since %d-%d was fetched: fetching it again", rest.start, rest.last)
            return None
        return rest

    def close(self) -> None:
        """Drops what is being fetched ahead; the thread ends once a fetch under way returns."""
        self._next = None
        self._rest = None
        if self._fetching is not None:
            self._fetching.shutdown(wait=False, cancel_futures=True)
            self._fetching = None

    def _cut(
        self, logs: list[dict[str, Any]], start: int, last: int, bound: tuple[int, str]
    ) -> tuple[list[dict[str, Any]], int]:
        """A range far denser than the span expected (a sparse stretch, then a dense one): keep the whole
        blocks up to about the target's worth of logs, so the batch stays a batch and the rest is read
        ahead beside its writing, instead of one long batch with nothing beside it. The logs beyond the
        cut are kept (:class:`Rest`, under ``bound``: the block number and hash the fetch was checked
        against) for the read of the range after it."""
        keep_to = int(logs[self.fetcher.target]["blockNumber"], 16)  # through the block of the target-th log
        if keep_to >= last:
            return logs, last
        kept = [entry for entry in logs if int(entry["blockNumber"], 16) <= keep_to]
        log.debug("range %d-%d holds %d logs: keeping %d-%d (%d)", start, last, len(logs), start, keep_to, len(kept))
        self._rest = Rest(keep_to + 1, last, logs[len(kept) :], *bound)
        return kept, keep_to

    def contract_ledger(self, block_hash: str) -> tuple[bytes, int]:
        data = "0x" + self.abi.encode_call("ledger", ()).hex()
        try:
            result = self.chain.rpc.call(
                "eth_call", [{"to": self.config.address, "data": data}, {"blockHash": block_hash}]
            )
        except RpcError as exc:
            if _is_missing_block(exc) or _is_missing_state(exc):
                if self.chain.rpc.call("eth_getBlockByHash", [block_hash, False]) is None:
                    raise Retry from exc  # the block is gone (reorg): retry the range
                raise StateUnavailable(
                    f"the node has the block {block_hash} but cannot run ledger() at it ({exc.message}): it keeps "
                    "no state that old (a pruned node?). Every batch's ledger hash is checked against the "
                    "contract at the batch's last block: index from an archive node, or from one that keeps "
                    "the state of recent blocks and start the mirror within that window."
                ) from exc
            raise
        head, count = self.abi.decode_output("ledger", bytes.fromhex(result[2:]))
        return bytes(head), int(count)

    def header(self, block: int | str) -> dict[str, Any]:
        """One block header; :class:`Retry` if the block is not (or no longer) there."""
        answer = self.chain.rpc.call("eth_getBlockByNumber", [hex(block) if isinstance(block, int) else block, False])
        if answer is None:
            raise Retry
        return {k: answer[k] for k in _HEADER_FIELDS}

    def hashes(self, numbers: list[int]) -> dict[int, str | None]:
        answers = self.chain.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        out: dict[int, str | None] = {}
        for n, answer in zip(numbers, answers, strict=True):
            if isinstance(answer, Exception):
                raise answer
            out[n] = answer["hash"] if answer else None
        return out

    def headers_for(self, start: int, last: int, tip: int, logs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Headers of: the first and last block of the range, blocks with logs, every block of the range
        that lies within the reorg window of the tip (dense there, sparse further back), and the tip."""
        numbers = {start, last, tip} | {int(entry["blockNumber"], 16) for entry in logs}
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
                headers[n] = {k: answer[k] for k in _HEADER_FIELDS}
        # Consecutive headers must chain; a break means the chain changed while we read it.
        for n in ordered:
            if n - 1 in headers and headers[n]["parentHash"] != headers[n - 1]["hash"]:
                raise Retry
        return headers


# ---------------------------------------------------------------------------------------------- the process


class _Failed:
    """A read that raised in the reader process, by description (exceptions need not survive pickling)."""

    def __init__(self, exc: BaseException) -> None:
        self.description = f"{type(exc).__name__}: {exc}"


_LENGTH = struct.Struct(">Q")


def _send(stream: IO[bytes], message: bytes) -> None:
    stream.write(_LENGTH.pack(len(message)))
    stream.write(message)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("the reader process closed its output")
    (size,) = _LENGTH.unpack(header)
    message = stream.read(size)
    if len(message) < size:
        raise EOFError("the reader process closed its output mid-message")
    return message


class _Forked:
    """A forked reader process, through as much of :class:`subprocess.Popen`'s interface as
    :class:`ReaderProcess` (and its tests) use: ``pid``, ``kill()``, ``wait(timeout)``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def kill(self) -> None:
        if self.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"reader process {self.pid}", timeout or 0.0)
            else:
                time.sleep(0.01)
        return self.returncode


_FORKED_PIPES: set[int] = set()
"""The parent's ends of every forked reader's pipes (a reader forked later closes its copies: a reader
holding another's input open would keep it from seeing that input close)."""


class ReaderProcess:
    """A :class:`Reader` in a child process, for read-ahead, speaking length-prefixed pickles over two
    pipes, one read at a time. It reads the node only; it never touches the database.

    Forked where the platform can (Linux): the child starts at once, with every module already imported
    (a fresh interpreter spends about a second importing, while the indexer waits for its first range).
    The fork's child runs only this module's loop on objects it makes itself (its own node client and
    reader); it never returns into the parent's stack, never runs the parent's finalisers (what it
    inherited is frozen out of its garbage collector: a database connection collected there would close
    the parent's session), and ends with ``os._exit``. Elsewhere: ``python -m registry.indexer.reader``,
    a fresh interpreter (not ``multiprocessing``, which would re-import the parent's main module).

    Either way the child ends by itself when its input closes, which a parent killed with -9 does: it
    leaves no reader behind."""

    def __init__(
        self,
        url: str,
        timeout: float,
        config: ReaderConfig,
        read_from: tuple[int, int] | None = None,
        rest: Rest | None = None,
        fork: bool | None = None,
    ) -> None:
        """``read_from``: (start, end) of the range the first request will ask for, which the child starts
        reading at once, before it is asked. ``rest``: logs the parent fetched beyond a cut,
        which a forked child reads instead of fetching them again (a spawned one fetches them)."""
        if fork is None:
            fork = sys.platform == "linux" and hasattr(os, "fork")
        self._child: subprocess.Popen[bytes] | _Forked
        if fork:
            self._child, self._input, self._output = self._fork(url, timeout, config, read_from, rest)
        else:
            root = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
            child = subprocess.Popen(
                [sys.executable, "-m", "registry.indexer.reader"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert child.stdin is not None and child.stdout is not None
            self._child, self._input, self._output = child, child.stdin, child.stdout
            _send(self._input, pickle.dumps((url, timeout, config, read_from)))

    @staticmethod
    def _fork(
        url: str, timeout: float, config: ReaderConfig, read_from: tuple[int, int] | None, rest: Rest | None
    ) -> tuple[_Forked, IO[bytes], IO[bytes]]:
        requests_in, requests_out = os.pipe()
        answers_in, answers_out = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 0
            try:
                for fd in (requests_out, answers_in, *_FORKED_PIPES):
                    with suppress(OSError):
                        os.close(fd)
                # What the parent had is not the child's to collect (nor to finalise); the child collects
                # its own garbage (as _serve says), whatever the parent's collector was doing.
                gc.freeze()
                gc.enable()
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                requests, answers = os.fdopen(requests_in, "rb"), os.fdopen(answers_out, "wb")
                reader = Reader(ChainClient(url, timeout=timeout), replace(config, fetch_ahead=True))
                reader.give_rest(rest)  # (the parent's memory, as forked: nothing to copy)
                with suppress(BrokenPipeError, KeyboardInterrupt):  # the parent went away
                    _serve(requests, answers, reader, read_from)
            except BaseException:
                status = 1
                with suppress(BaseException):
                    log.exception("the reader process failed")
            finally:
                os._exit(status)
        os.close(requests_in)
        os.close(answers_out)
        _FORKED_PIPES.update((requests_out, answers_in))
        return _Forked(pid), os.fdopen(requests_out, "wb"), os.fdopen(answers_in, "rb")

    def submit(self, start: int, end: int) -> Future[Read | _Failed]:
        """Sends the request; the answer is taken off the pipe and unpickled by a thread as soon as it
        comes (so the child never waits on a full pipe, and the unpickling, ~0.03 s a 23,000-event range,
        happens beside the batch the indexer is writing rather than after it); :meth:`result` takes it."""
        future: Future[Read | _Failed] = Future()
        future.set_running_or_notify_cancel()
        _send(self._input, pickle.dumps((start, end)))

        def receive() -> None:
            try:
                future.set_result(_take_answer(self._output))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=receive, name="indexer-reader-pipe", daemon=True).start()
        return future

    @staticmethod
    def result(future: Future[Any]) -> Read | None:
        """The read (from a thread or from the process), or None if it failed: the caller reads the range
        again in the foreground, with the foreground's error handling."""
        try:
            outcome = future.result()
        except Exception as exc:
            log.info("read-ahead failed (%s); reading in the foreground", exc)
            return None
        if isinstance(outcome, _Failed):
            log.info("read-ahead failed (%s); reading in the foreground", outcome.description)
            return None
        return outcome if isinstance(outcome, Read) else None

    def cpu_seconds(self) -> float | None:
        """The child's CPU time so far (user + system; Linux), for benchmarks; None where unknown."""
        try:
            fields = Path(f"/proc/{self._child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        _FORKED_PIPES.difference_update((self._input.fileno(), self._output.fileno()))
        with suppress(OSError):
            self._input.close()
        try:
            self._child.wait(timeout=2)
        except subprocess.TimeoutExpired:  # in the middle of a read: it is discarded anyway
            self._child.kill()
            self._child.wait()
        with suppress(OSError):
            self._output.close()


def _serve(
    requests: IO[bytes], answers: IO[bytes], reader: Reader | None = None, read_from: tuple[int, int] | None = None
) -> None:
    """The reader process: a :class:`Reader` answering requests until its input closes.

    It reads ahead of the requests: first ``read_from`` (start, end), if given, then, having answered a
    read that stopped short of its range's end, the range after it; what it read it holds, pickled. The
    indexer's next request almost always asks for exactly that, and then gets it without the reader
    having idled through the hand-over. Anything else asked is read as asked (what was held is
    dropped); the indexer checks what it gets against its cursor either way.

    The cyclic collector stays paused while it serves (``HeldCollector``, a full collection every 64
    answers): between two reads it holds the one read ahead, which a collection would traverse whole."""
    if reader is None:  # (given: a forked child's, or a test's)
        url, timeout, config, read_from = pickle.loads(_receive(requests))
        reader = Reader(ChainClient(url, timeout=timeout), replace(config, fetch_ahead=True))
    try:
        with HeldCollector() as collector:
            _answer(requests, answers, reader, read_from, collector)
    finally:
        reader.close()


def _answer(
    requests: IO[bytes],
    answers: IO[bytes],
    reader: Reader,
    read_from: tuple[int, int] | None,
    collector: HeldCollector,
) -> None:
    held = _hold(reader, *read_from) if read_from is not None else None  # a read ahead, and its pickle
    while True:
        try:
            start, end = pickle.loads(_receive(requests))
        except EOFError:
            return
        outcome: Read | _Failed
        if held is not None and held[0].start == start and held[0].end <= end:
            outcome, answer = held
        else:
            outcome = _read_or_failure(reader, start, end)
            answer = _pickled(outcome)
        held = None
        _send(answers, answer)
        collector.tick()
        if isinstance(outcome, Read) and outcome.last < outcome.end:
            held = _hold(reader, outcome.last + 1, outcome.end)


def _hold(reader: Reader, start: int, end: int) -> tuple[Read, bytes] | None:
    """[start, <= end] read and pickled, to answer a request for it at once (None: the read failed, and
    the request will read it again)."""
    ahead = _read_or_failure(reader, start, end)
    if isinstance(ahead, Read):
        return ahead, _pickled(ahead)
    return None


def _take_answer(stream: IO[bytes]) -> Read | _Failed:
    """The reader process's next answer on ``stream``, unpickled (EOFError: the process went away; an
    unpickling error: a garbled answer)."""
    outcome = pickle.loads(_receive(stream))
    if not isinstance(outcome, (Read, _Failed)):
        raise TypeError(f"the reader process answered {type(outcome).__name__}, not a read")
    return outcome


def _pickled(outcome: Read | _Failed) -> bytes:
    """``outcome`` pickled without the pickler's memo (its "fast" mode): a read is a tree of tuples, lists
    and dicts with no cycle, and memoising each of its million-odd objects cost three quarters of the
    pickling (0.07 s against 0.017 s for a 23,000-event range), more than the few repeated strings (block
    and transaction hashes) it saves sending twice. Anything the fast mode refuses is pickled as usual."""
    stream = io.BytesIO()
    pickler = pickle.Pickler(stream, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    try:
        pickler.dump(outcome)
    except (ValueError, RecursionError):  # a cycle, in an error's fields say
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    return stream.getvalue()


def _read_or_failure(reader: Reader, start: int, end: int) -> Read | _Failed:
    try:
        return reader.read(start, end, None, ahead=True)
    except Exception as exc:
        return _Failed(exc)


if __name__ == "__main__":
    # Answers go to the original standard output only; anything printed goes to standard error.
    _answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Served by the module under its own name, so that what is pickled names registry.indexer.reader.Read
    # (not __main__.Read, which the parent does not have).
    from registry.indexer import reader as _module

    with suppress(BrokenPipeError, KeyboardInterrupt):  # the parent went away
        _module._serve(sys.stdin.buffer, _answers)
    # At once: not after a fetch-ahead still waiting on the node (the answers are flushed as sent, and
    # there is nothing else to finish: the reader never writes anywhere else).
    os._exit(0)
