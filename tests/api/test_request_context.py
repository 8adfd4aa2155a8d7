"""What every request gets from the API's own ASGI middleware (api.app.RequestContext) and the
principal dependency: a request id (echoed or made), the body limit, a problem document instead of a
bare 500, one log line naming the principal; and the /checks answers in their documented shape."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.deps import Services
from api.schemas import BulkCheckPublic, CheckPublic
from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from tests.api.conftest import Login
from tests.conftest import InvoiceFactory


def _services(api: TestClient) -> Services:
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    return services


def test_a_request_id_is_echoed_when_sane_and_made_otherwise(api: TestClient) -> None:
    assert api.get("/health", headers={"X-Request-Id": "abc-123.x_Y"}).headers["x-request-id"] == "abc-123.x_Y"
    for given in (None, "has space", "x" * 129, "tab\there"):
        headers = {} if given is None else {"X-Request-Id": given}
        made = api.get("/health", headers=headers).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), (given, made)
    # Problem documents carry it too.
    answer = api.get("/receivables", headers={"X-Request-Id": "trace-1"})
    assert (answer.status_code, answer.json()["request_id"], answer.headers["x-request-id"]) == (
        401,
        "trace-1",
        "trace-1",
    )


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    api: TestClient, login: Login, consortium: Consortium
) -> None:
    headers = login(consortium.factors[0].account)
    limit = _services(api).settings.max_body_bytes
    answer = api.post(
        "/checks",
        content=b"{" + b" " * limit + b"}",
        headers={**headers, "content-type": "application/json", "X-Request-Id": "big-1"},
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert (answer.json()["code"], answer.json()["request_id"]) == ("body_too_large", "big-1")
    assert answer.headers["x-request-id"] == "big-1"


def test_an_unexpected_error_is_a_problem_document_with_the_request_id(
    api: TestClient, login: Login, consortium: Consortium, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    headers = login(consortium.factors[0].account)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(_services(api).checker, "check_key", broken)
    with caplog.at_level(logging.ERROR, logger="registry.api"):
        answer = api.post(
            "/checks", json={"invoice_key": "0x" + "11" * 32}, headers={**headers, "X-Request-Id": "bug-1"}
        )
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert (answer.json()["code"], answer.json()["request_id"]) == ("internal_error", "bug-1")
    assert "a bug" not in answer.text  # the trace is in the log, not in the answer
    assert any("bug-1" in r.getMessage() and r.exc_info for r in caplog.records)


def test_each_request_is_logged_once_with_its_principal(
    api: TestClient, login: Login, consortium: Consortium, caplog: Any
) -> None:
    factor = consortium.factors[0]
    headers = login(factor.account)
    with caplog.at_level(logging.INFO, logger="registry.api"):
        api.post("/checks", json={"invoice_key": "0x" + "22" * 32}, headers={**headers, "X-Request-Id": "log-1"})
        api.get("/receivables", headers={"X-Request-Id": "log-2"})
    lines = [r.getMessage() for r in caplog.records if r.name == "registry.api"]
    assert [line for line in lines if "log-1" in line] == [
        f"POST /checks -> 200 (request log-1, principal {factor.address})"
    ]
    assert [line for line in lines if "log-2" in line] == ["GET /receivables -> 401 (request log-2, principal -)"]


def _mint(secret: bytes, body: object) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).rstrip(b"=")
    return (payload + b"." + mac).decode()


@pytest.mark.parametrize(
    "body",
    [{"exp": 2**40}, {"sub": 7, "exp": 2**40}, {"sub": "0xabc", "exp": "tomorrow"}, {"sub": "0xabc", "exp": True}, [1]],
    ids=["no_sub", "sub_not_text", "exp_not_a_number", "exp_boolean", "not_an_object"],
)
def test_a_properly_signed_token_with_a_malformed_body_is_refused_not_a_server_error(
    api: TestClient, body: object
) -> None:
    token = _mint(_services(api).auth.secret, body)
    for _ in range(2):  # the second time from the cache of verified tokens, if it were ever cached
        answer = api.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert (answer.status_code, answer.json()["code"]) == (401, "auth.bad_token"), answer.text


def test_check_answers_have_the_documented_shape(
    api: TestClient, login: Login, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    invoice = make_invoice(debtor_id=debtor.entity, number="SHAPE-0001", amount="12,345.67")
    registry.register(creditor.account, invoice)
    block = registry.chain.block_number()
    services = _services(api)
    assert services.relayer.wait_indexed(block, 20)
    fields = {
        "debtor": debtor.entity,
        "invoice_number": "SHAPE-0001",
        "face_value": "12,345.67",
        "currency": "CNY",
        "issue_date": "2026-01-01",
        "due_date": "2026-12-31",
    }
    for who, parties in ((creditor, True), (consortium.factors[0], False)):
        headers = login(who.account)
        answer = api.post("/checks", json={"invoice": {**fields, "invoice_number": "shape 0001"}}, headers=headers)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text
        single = CheckPublic.model_validate(answer.json())
        assert set(answer.json()) == set(CheckPublic.model_fields)
        assert (single.registered, single.match, single.as_of.block >= block) == (True, "invoice_key", True)
        assert (single.parties is not None) == parties
        similar = {**fields, "invoice_number": "SHAPE-OO01", "face_value": "1.00"}
        too_fine = {**fields, "face_value": "1.001", "due_date": "2027-02-30"}
        bulk = api.post("/checks/bulk", json={"invoices": [fields, similar, too_fine]}, headers=headers)
        assert bulk.status_code == 200, bulk.text
        parsed = BulkCheckPublic.model_validate(bulk.json())
        assert [r.registered for r in parsed.results] == [True, False, False]
        assert [f.reason for f in parsed.results[1].near_duplicates if f.batch_line is None] == [
            "SIMILAR_INVOICE_NUMBER"
        ]
        assert parsed.results[2].error is not None and parsed.results[2].error["field"] == "face_value"
        assert [e["field"] for e in parsed.results[2].error["errors"]] == ["face_value", "due_date"]
        assert parsed.as_of is not None and parsed.as_of.block >= block


@pytest.mark.parametrize(
    ("url", "inline"), [("sqlite://", True), ("postgresql+psycopg://nobody@127.0.0.1:1/none", False)]
)
def test_mirror_reads_run_inline_on_sqlite_and_in_the_thread_pool_otherwise(url: str, inline: bool) -> None:
    import asyncio
    import threading

    from sqlalchemy import create_engine

    engine = create_engine(url)  # (never connects)
    none: Any = None
    services = Services(
        settings=none, engine=engine, registry=none, auth=none, checker=none, relayer=none, limiter=none
    )
    assert services.inline_reads is inline

    async def where() -> tuple[int, int]:
        return threading.get_ident(), await services.read(threading.get_ident)

    loop_thread, read_thread = asyncio.run(where())
    assert (loop_thread == read_thread) is inline
    engine.dispose()
