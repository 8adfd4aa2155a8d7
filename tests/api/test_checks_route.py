"""POST /checks on its DirectRoute (api/deps.py): the same contract as a FastAPI-solved route (the
documented body, problem documents naming the field, the principal's refusals and rate limit), and
answers byte for byte those of the CheckPublic model."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.deps import DirectRoute, PrincipalDep, RateLimiter, Services, ServicesDep
from api.routes.core import check_json, check_public
from api.schemas import CheckCreate, CheckPublic
from registry.checks import CheckResult, MatchKind, NearDuplicate, NearDuplicateReason, Parties
from registry.demo import Consortium
from registry.domain import Status
from tests.api.conftest import Login

INVOICE = {
    "debtor": 4,
    "invoice_number": "INV-2026-0001",
    "face_value": "48,000.00",
    "currency": "CNY",
    "issue_date": "2026-11-25",
    "due_date": "2027-02-25",
}
JSON = {"content-type": "application/json"}


def _services(api: TestClient) -> Services:
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    return services


# (case, the request, (status, code, the field named first) or None for "not JSON": 422 naming the body)
BAD_BODIES: list[tuple[str, dict[str, Any], tuple[int, str, str] | None]] = [
    ("malformed_json", {"content": b'{"invoice": ', "headers": JSON}, (422, "validation_error", "body")),
    ("not_utf8", {"content": b'{"invoice_key": "\xff"}', "headers": JSON}, (422, "validation_error", "body")),
    ("empty", {"content": b"", "headers": JSON}, (422, "validation_error", "body")),
    ("not_an_object", {"json": [1]}, (422, "validation_error", "body")),
    ("not_json", {"content": b"invoice_key=0x11", "headers": {"content-type": "text/plain"}}, None),
    ("no_content_type", {"content": b'{"invoice_key": "0x11"}'}, None),
    ("debtor_as_text", {"json": {"invoice": {**INVOICE, "debtor": "7"}}}, (422, "validation_error", "invoice.debtor")),
    (
        "debtor_too_large",
        {"json": {"invoice": {**INVOICE, "debtor": 2**70}}},
        (422, "validation_error", "invoice.debtor"),
    ),
    ("field_missing", {"json": {"invoice": {"debtor": 4}}}, (422, "validation_error", "invoice.invoice_number")),
    ("unknown_field", {"json": {"invoice_key": "0x" + "11" * 32, "x": 1}}, (422, "validation_error", "x")),
    ("bad_key", {"json": {"invoice_key": "0x12"}}, (422, "validation_error", "invoice_key")),
    (
        "amount_too_fine",
        {"json": {"invoice": {**INVOICE, "face_value": "1.001"}}},
        (422, "invalid_invoice", "face_value"),
    ),
    (
        "bad_number",
        {"json": {"invoice": {**INVOICE, "invoice_number": "a:b"}}},
        (422, "invalid_invoice", "invoice_number"),
    ),
    ("bad_date", {"json": {"invoice": {**INVOICE, "due_date": "2027-02-30"}}}, (422, "invalid_invoice", "due_date")),
    ("two_ways", {"json": {"invoice": INVOICE, "invoice_key": "0x" + "11" * 32}}, (422, "validation_error", "")),
    ("no_way", {"json": {}}, (422, "validation_error", "")),
]


def test_bad_bodies_get_a_problem_document_naming_the_field_never_a_server_error(
    api: TestClient, login: Login, consortium: Consortium
) -> None:
    headers = {**login(consortium.factors[0].account), "X-Request-Id": "bad-1"}
    for name, request, expected in BAD_BODIES:
        request = dict(request)
        answer = api.post("/checks", headers={**headers, **request.pop("headers", {})}, **request)
        problem = answer.json()
        assert answer.headers["content-type"].startswith("application/problem+json"), (name, answer.text)
        assert (problem["status"], problem["request_id"]) == (answer.status_code, "bad-1"), name
        status, code, field = expected or (422, "validation_error", "body")
        assert (answer.status_code, problem["code"]) == (status, code), (name, problem)
        if field:
            assert problem["errors"][0]["field"] == field, (name, problem)
            assert problem["detail"].startswith(f"{field}: "), (name, problem)
        if expected is None:  # not JSON at all
            assert problem["errors"][0]["message"] == "must be JSON (Content-Type: application/json)", name


def test_a_json_media_type_with_parameters_or_a_json_suffix_is_taken(
    api: TestClient, login: Login, consortium: Consortium
) -> None:
    headers = login(consortium.factors[0].account)
    body = b'{"invoice_key": "0x' + b"11" * 32 + b'"}'
    for media in ("application/json; charset=utf-8", "Application/JSON", "application/problem+json"):
        answer = api.post("/checks", content=body, headers={**headers, "content-type": media})
        assert answer.status_code == 200, (media, answer.text)


def test_the_caller_is_signed_in_before_the_body_is_read_and_rate_limited(
    api: TestClient, login: Login, consortium: Consortium
) -> None:
    answer = api.post("/checks", content=b'{"invoice": ', headers=JSON)
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.missing_token")
    assert answer.headers["www-authenticate"] == "Bearer"
    answer = api.post("/checks", json={"invoice_key": "0x" + "11" * 32}, headers={"Authorization": "Bearer x.y"})
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.bad_token")
    headers = login(consortium.factors[0].account)
    _services(api).limiter = RateLimiter(1)
    assert api.post("/checks", json={"invoice_key": "0x" + "11" * 32}, headers=headers).status_code == 200
    answer = api.post("/checks", json={"invoice_key": "0x" + "11" * 32}, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (429, "rate_limited")
    assert int(answer.headers["retry-after"]) >= 1


def test_the_check_operation_documents_its_body_answer_and_problems(api: TestClient) -> None:
    operation = api.get("/openapi.json").json()["paths"]["/checks"]["post"]
    assert operation["requestBody"] == {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CheckCreate"}}},
        "required": True,
    }
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CheckPublic"
    }
    assert {"401", "413", "422", "429", "503"} <= set(operation["responses"])
    assert operation["operationId"] == "check_checks_post"


def test_a_direct_route_serves_only_the_body_services_principal_signature() -> None:
    async def fine(body: CheckCreate, services: ServicesDep, principal: PrincipalDep) -> Response:
        return Response()

    def sync(body: CheckCreate, services: ServicesDep, principal: PrincipalDep) -> Response:
        return Response()

    async def swapped(body: CheckCreate, principal: PrincipalDep, services: ServicesDep) -> Response:
        return Response()

    async def extra(body: CheckCreate, services: ServicesDep, principal: PrincipalDep, limit: int = 1) -> Response:
        return Response()

    async def no_model(body: dict[str, Any], services: ServicesDep, principal: PrincipalDep) -> Response:
        return Response()

    app = FastAPI()
    app.router.add_api_route("/fine", fine, methods=["POST"], route_class_override=DirectRoute)
    for endpoint in (sync, swapped, extra, no_model):
        with pytest.raises(TypeError, match="DirectRoute serves"):
            app.router.add_api_route("/x", endpoint, methods=["POST"], route_class_override=DirectRoute)


NEAR = st.builds(
    lambda reason, rid, line: NearDuplicate(reason, reason.risk, receivable_id=rid, batch_line=line),
    st.sampled_from(NearDuplicateReason),
    st.none() | st.integers(1, 2**63 - 1),
    st.none() | st.integers(0, 10_000),
)
PARTIES = st.builds(
    Parties,
    creditor=st.integers(1, 2**24 - 1),
    debtor=st.integers(1, 2**24 - 1),
    holder=st.integers(1, 2**24 - 1),
    currency=st.sampled_from(["CNY", "JPY", "KWD"]),
    face_value=st.integers(1, 2**63 - 1),
    paid=st.integers(0, 2**63 - 1),
    due_date=st.integers(1, 2**32 - 1),
)
RESULTS = st.builds(
    CheckResult,
    registered=st.booleans(),
    status=st.sampled_from(Status),
    financed=st.booleans(),
    receivable_id=st.none() | st.integers(1, 2**63 - 1),
    match=st.none() | st.sampled_from(MatchKind),
    parties=st.none() | PARTIES,
    near_duplicates=st.lists(NEAR, max_size=4).map(tuple),
    duplicate_of_line=st.none() | st.integers(0, 10_000),
    as_of_block=st.integers(0, 2**63 - 1),
    as_of_block_hash=st.text(alphabet="0123456789abcdefx", max_size=66),
    as_of_timestamp=st.integers(0, 2**32 - 1),
    staleness_seconds=st.floats(min_value=0, max_value=1e9) | st.sampled_from([0.0, 1e-7, 0.0005, 123456.7895]),
)


@given(RESULTS)
def test_a_check_answer_is_the_json_of_its_check_public_model(result: CheckResult) -> None:
    answer = check_json(result)
    assert answer == check_public(result).model_dump_json().encode()
    assert CheckPublic.model_validate_json(answer) == check_public(result)
