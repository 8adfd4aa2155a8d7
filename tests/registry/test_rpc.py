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
