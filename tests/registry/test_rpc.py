"""The JSON-RPC transport's parsing of answers: msgspec, with the standard library behind it."""

from __future__ import annotations

import json

import httpx
import pytest

from registry.chain.rpc import Rpc, RpcError


def rpc_answering(body: bytes) -> Rpc:
    rpc = Rpc("http://node.invalid")
    rpc._http = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)))
    return rpc


def test_an_answer_parses_as_the_standard_library_parses_it() -> None:
    logs = [{"blockNumber": "0x1a", "topics": ["0x" + "ab" * 32], "removed": False, "big": 2**200, "x": 1.5}]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": logs}).encode()
    assert rpc_answering(body).call("eth_getLogs") == json.loads(body)["result"]


def test_json_msgspec_refuses_is_parsed_by_the_standard_library() -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "result": {"gasPrice": NaN, "n": 1}}'
    result = rpc_answering(body).call("eth_whatever")
    assert result["n"] == 1 and result["gasPrice"] != result["gasPrice"]  # NaN


def test_an_error_answer_is_an_rpc_error_and_malformed_json_raises_as_it_always_did() -> None:
    error = b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "too many results"}}'
    with pytest.raises(RpcError) as raised:
        rpc_answering(error).call("eth_getLogs")
    assert raised.value.code == -32005
    with pytest.raises(json.JSONDecodeError):
        rpc_answering(b'{"jsonrpc": "2.0", "result": [').call("eth_getLogs")


def test_answers_are_read_a_mebibyte_at_a_time_so_a_busy_thread_does_not_stall_the_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 3 MiB answer from a real HTTP server: every read of the connection asks for at least
    ``READ_BYTES`` (httpcore's default, 64 KiB, made a big answer hundreds of reads, each waiting for
    the interpreter lock behind any thread running Python)."""
    import http.server
    import threading

    import httpcore._backends.sync as backend

    from registry.chain.rpc import READ_BYTES

    result = ["0x" + "ab" * 1_000] * 1_500  # about 3 MiB of JSON
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    asked: list[int] = []
    original = backend.SyncStream.read

    def read(self: backend.SyncStream, max_bytes: int, timeout: float | None = None) -> bytes:
        asked.append(max_bytes)
        return original(self, max_bytes, timeout)

    monkeypatch.setattr(backend.SyncStream, "read", read)
    rpc = Rpc(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        assert rpc.call("eth_getLogs") == result
    finally:
        rpc.close()
        server.shutdown()
        server.server_close()
    assert asked and min(asked) >= READ_BYTES >= 1 << 20
