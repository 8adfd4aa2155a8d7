"""The one JSON-RPC transport: plain HTTP with keep-alive, single calls and batches.

web3's ``batch_requests()`` refuses raw sends and its middleware costs milliseconds per call, so
the hot paths (batched ``eth_sendRawTransaction``, receipts, ``eth_getLogs``) go through here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import httpcore
import httpx
import msgspec

from registry.errors import ChainError

READ_BYTES = 1 << 20
"""The most an HTTP/1.1 answer is read at a time (one ``recv`` call). httpcore's default, 64 KiB, makes an
``eth_getLogs`` answer of 20,000 logs (about 25 MB) some 400 reads, and each read gives up the interpreter
lock and then waits to take it back: while another thread of the process runs Python (the indexer's
reader decoding the range before, the API's event loop), each wait lasts up to the switch interval
(5 ms), the socket fills meanwhile and the node stalls. Measured on the benchmark chain, a 23,000-log
answer beside a thread running Python: 0.6-1.4 s at 64 KiB, 0.2-0.4 s at 1 MiB, about as fast as with no
other thread (0.16-0.36 s); alone, 5-10% faster than at 64 KiB; a small call unchanged (about 0.67 ms either
way). The size is httpcore's class attribute (its HTTP/1.1 connections are made inside its pool, with no
way to pass it): raised here for the process, never lowered; left alone if a later httpcore has no
such attribute (``tests/registry/test_rpc.py`` then fails, rather than every import of this module)."""
_httpcore_read = getattr(httpcore.HTTP11Connection, "READ_NUM_BYTES", None)
if isinstance(_httpcore_read, int) and _httpcore_read < READ_BYTES:
    httpcore.HTTP11Connection.READ_NUM_BYTES = READ_BYTES


class RpcError(ChainError):
    """Raised when the node answers a call with a JSON-RPC error object."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class NodeUnavailable(ChainError):
    """Raised when the node cannot be reached (connection refused, reset or timed out)."""


class Rpc:
    """A JSON-RPC endpoint. Thread-safe for concurrent calls (httpx's pool)."""

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 0, retry_delay: float = 0.25) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self._ids = itertools.count(1)
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=32))

    def close(self) -> None:
        self._http.close()

    def _post(self, payload: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.post(self.url, json=payload)
                response.raise_for_status()
                return _json(response)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if attempt >= self.retries:
                    raise NodeUnavailable(f"node at {self.url} unavailable: {exc}") from exc
                attempt += 1
                time.sleep(self.retry_delay * attempt)

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One request; raises :class:`RpcError` on an error answer."""
        answer = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)})
        return _result(method, answer)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Many requests in one HTTP round trip. Each item is the result or an :class:`RpcError`
        instance (returned, not raised, so that one failure does not hide the others)."""
        if not calls:
            return []
        first = next(self._ids)
        payload = [
            {"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)} for i, (m, p) in enumerate(calls)
        ]
        for _ in range(len(calls) - 1):
            next(self._ids)
        answers = self._post(payload)
        if isinstance(answers, dict):  # some nodes answer a whole-batch failure with one error object
            err = answers.get("error", {})
            raise RpcError("batch", err.get("code", 0), err.get("message", str(answers)), err.get("data"))
        by_id = {a.get("id"): a for a in answers}
        out: list[Any] = []
        for i, (method, _params) in enumerate(calls):
            answer = by_id.get(first + i)
            if answer is None:
                out.append(RpcError(method, -32603, "no answer in batch"))
                continue
            try:
                out.append(_result(method, answer))
            except RpcError as exc:
                out.append(exc)
        return out


def _json(response: httpx.Response) -> Any:
    """The answer's JSON: msgspec's parser (an ``eth_getLogs`` answer of 20,000 logs in half the time of
    the standard library's, measured), the standard library's for anything msgspec refuses (which then
    raises what it always raised)."""
    try:
        return _decode(response.content)
    except msgspec.DecodeError:
        return response.json()


_decode = msgspec.json.Decoder().decode


def _result(method: str, answer: dict[str, Any]) -> Any:
    if "error" in answer:
        err = answer["error"]
        raise RpcError(method, int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
    return answer.get("result")
