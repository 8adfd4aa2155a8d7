"""RPC outages and misbehaving nodes: the indexer rides them out and the oracle still holds.

- A loopback JSON-RPC proxy between the indexer and Anvil drops connections, answers HTTP 429 and
  JSON-RPC rate-limit errors at random, refuses ``eth_getLogs`` over more than a few blocks ("query
  returned more than 10000 results"), and goes down altogether for a while in the middle of a batch
  (right after serving a range's logs, before the headers and the ledger check).
- Anvil itself is frozen (SIGSTOP) mid-backfill and thawed (SIGCONT) seconds later.
- Replaying the same range twice changes nothing: a second indexer over an up-to-date database
  leaves every row, the cursor's timestamp included, as it was.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from registry.chain.client import ChainClient
from registry.demo import seed_ledger
from registry.indexer.indexer import Indexer, IndexerConfig, LogFetcher
from registry.store.db import make_engine
from tests.indexer.oracle import Stack, check_mirror, local_stack, table_rows

MAX_LOG_BLOCKS = 5


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with local_stack() as running:
        seed_ledger(running.registry, running.consortium, per_state=2)
        yield running


class FaultyProxy:
    """A JSON-RPC proxy in front of ``upstream`` that misbehaves at random (seeded)."""

    def __init__(
        self,
        upstream: str,
        seed: int,
        *,
        drop: float = 0.05,
        http_429: float = 0.05,
        rate_error: float = 0.05,
        max_log_blocks: int = MAX_LOG_BLOCKS,
        outage_after_logs: int | None = None,
        outage_seconds: float = 1.5,
    ) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.drop, self.http_429, self.rate_error = drop, http_429, rate_error
        self.max_log_blocks = max_log_blocks
        self.outage_after_logs = outage_after_logs
        self.outage_seconds = outage_seconds
        self.down_until = 0.0
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.handle(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="faulty-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    def _fault(self, payload: Any) -> str | None:
        with self.lock:
            if time.monotonic() < self.down_until:
                return "outage"
            calls = payload if isinstance(payload, list) else [payload]
            for call in calls:
                if call.get("method") == "eth_getLogs":
                    f = call["params"][0]
                    if int(f["toBlock"], 16) - int(f["fromBlock"], 16) + 1 > self.max_log_blocks:
                        return "range"
            roll = self.rng.random()
            if roll < self.drop:
                return "drop"
            if roll < self.drop + self.http_429:
                return "http_429"
            if roll < self.drop + self.http_429 + self.rate_error:
                return "rate_error"
            return None

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        payload = json.loads(body)
        fault = self._fault(payload)
        self.counts[fault or "forwarded"] += 1
        if fault in ("drop", "outage"):
            request.close_connection = True  # no answer at all: the client sees the connection close
            return
        if fault == "http_429":
            self._answer(
                request, 429, {"jsonrpc": "2.0", "id": None, "error": {"code": 429, "message": "Too Many Requests"}}
            )
            return
        if fault in ("rate_error", "range"):
            code, message = (
                (-32005, "rate limit exceeded")
                if fault == "rate_error"
                else (-32005, "query returned more than 10000 results")
            )
            calls = payload if isinstance(payload, list) else [payload]
            errors = [{"jsonrpc": "2.0", "id": c.get("id"), "error": {"code": code, "message": message}} for c in calls]
            self._answer(request, 200, errors if isinstance(payload, list) else errors[0])
            return
        response = self.http.post(self.upstream, content=body, headers={"Content-Type": "application/json"})
        if isinstance(payload, dict) and payload.get("method") == "eth_getLogs":
            with self.lock:
                self.counts["logs_served"] += 1
                if self.outage_after_logs is not None and self.counts["logs_served"] == self.outage_after_logs:
                    self.down_until = time.monotonic() + self.outage_seconds
                    self.counts["outages"] += 1
        request.send_response(response.status_code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(response.content)))
        request.end_headers()
        request.wfile.write(response.content)

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


FAST_BACKOFF = IndexerConfig(max_backoff=0.5, outage_timeout=60, initial_log_range=64)


def test_drops_rate_limits_range_limits_and_an_outage_mid_batch(stack: Stack, database_url: str) -> None:
    engine = make_engine(database_url)
    with (
        FaultyProxy(stack.node.url, seed=7, outage_after_logs=4) as proxy,
        ChainClient(proxy.url, timeout=5, retries=0) as flaky,
        Indexer(flaky, stack.deployment, engine, FAST_BACKOFF) as indexer,
    ):
        indexer.sync()
    for fault in ("drop", "http_429", "rate_error", "range", "outage", "outages"):
        assert proxy.counts[fault] > 0, f"no {fault} happened: {dict(proxy.counts)}"
    # The range shrank to what the node answers and stayed there, bar a probe now and then.
    probes = proxy.counts["logs_served"] // LogFetcher.PROBE_EVERY
    assert proxy.counts["range"] <= 6 + 3 * probes, dict(proxy.counts)
    check_mirror(engine, stack.chain, stack.deployment)
    engine.dispose()


def test_node_frozen_mid_backfill(stack: Stack, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """SIGSTOP Anvil after the first batch, SIGCONT it 2.5 s later: requests time out meanwhile."""
    engine = make_engine(sqlite_url)
    pid = stack.node.pid
    assert pid is not None
    thaw = threading.Timer(2.5, os.kill, (pid, signal.SIGCONT))
    frozen: list[int] = []

    def freeze_once(last: int, events: int) -> None:
        if not frozen:
            frozen.append(last)
            os.kill(pid, signal.SIGSTOP)
            thaw.start()

    config = IndexerConfig(max_backoff=0.5, outage_timeout=60, max_log_range=4)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="registry.indexer"),
            ChainClient(stack.node.url, timeout=0.5, retries=0) as impatient,
            Indexer(impatient, stack.deployment, engine, config, on_batch=freeze_once) as indexer,
        ):
            head = stack.chain.block_number()
            assert indexer.sync() == head
    finally:
        thaw.cancel()
        os.kill(pid, signal.SIGCONT)
    assert frozen and frozen[0] < head, "the node was frozen before the backfill ended"
    assert any("node unavailable" in r.getMessage() for r in caplog.records), "the outage was never noticed"
    check_mirror(engine, stack.chain, stack.deployment)
    engine.dispose()


def test_replaying_the_same_range_changes_nothing(stack: Stack, database_url: str) -> None:
    engine = make_engine(database_url)
    with Indexer(stack.chain, stack.deployment, engine) as first:
        head = first.sync()
    before = table_rows(engine, volatile=True)
    for _ in range(2):  # a second indexer over the same database, twice
        with Indexer(stack.chain, stack.deployment, engine) as again:
            assert again.sync() == head
            assert again.step() == 0
        assert table_rows(engine, volatile=True) == before
    check_mirror(engine, stack.chain, stack.deployment)
    engine.dispose()


@pytest.mark.parametrize(
    "message",
    ["missing trie node 5f1c... (path )", "world state not available for block", "header not found"],
)
def test_a_node_without_the_state_of_a_block_stops_with_a_clear_message(
    stack: Stack, sqlite_url: str, message: str
) -> None:
    """A pruned node has the block but cannot run ledger() at it: the indexer must say so and stop, not
    take it for a reorg and read the range again for ever. Nothing is committed."""
    from registry.chain.rpc import RpcError
    from registry.indexer.indexer import StateUnavailable

    engine = make_engine(sqlite_url)
    chain = ChainClient(stack.chain.url)
    call = chain.rpc.call

    def pruned(method: str, params: Any = None) -> Any:
        if method == "eth_call" and isinstance(params, list) and len(params) > 1 and "blockHash" in params[1]:
            raise RpcError(method, -32000, message)
        return call(method, params) if params is not None else call(method)

    chain.rpc.call = pruned  # type: ignore[method-assign]
    # One range over the whole chain, so the first batch has events to check (nothing is committed).
    with Indexer(chain, stack.deployment, engine, IndexerConfig(initial_log_range=10_000)) as indexer:
        with pytest.raises(StateUnavailable, match="keeps no state that old"):
            indexer.sync()
        assert indexer.cursor().block_number == stack.deployment.deploy_block - 1
    engine.dispose()
    chain.close()
