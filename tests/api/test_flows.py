"""The API end to end: sign in, read what one is party to, check for double financing, relay writes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from registry.relay import request_json
from tests.api.conftest import Login
from tests.conftest import InvoiceFactory


def _wait_indexed(api: TestClient, headers: dict[str, str], block: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while api.get("/health").json()["indexed_block"] < block:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_debtor_signs_in_and_confirms_through_a_relayed_signed_request(
    api: TestClient, login: Login, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    invoice = make_invoice(debtor_id=debtor.entity)
    rid = registry.register(creditor.account, invoice)
    headers = login(debtor.account)
    me = api.get("/auth/me", headers=headers).json()
    assert me["entity"] == debtor.entity and me["roles"] == ["debtor"]

    request = registry.sign_request(debtor.account, "confirm", rid, invoice.fingerprint)
    body = request_json(request)
    answer = api.post("/actions/confirm", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["receivables"][0]["status"] == "confirmed"
    again = api.post("/actions/confirm", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["tx_hash"] == answer.json()["tx_hash"]


def test_reads_are_scoped_to_the_callers_receivables(
    api: TestClient, login: Login, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    creditor, debtor, other_debtor = consortium.creditors[0], consortium.debtors[0], consortium.debtors[1]
    mine = registry.register(creditor.account, make_invoice(debtor_id=debtor.entity))
    theirs = registry.register(creditor.account, make_invoice(debtor_id=other_debtor.entity))
    block = registry.chain.block_number()
    headers = login(debtor.account)
    _wait_indexed(api, headers, block)
    ids = {r["id"] for r in api.get("/receivables", headers=headers).json()["items"]}
    assert mine in ids and theirs not in ids
    assert api.get(f"/receivables/{theirs}", headers=headers).status_code == 404
    assert api.get(f"/receivables/{mine}", headers=headers).status_code == 200
    auditor = login(consortium.auditors[0].account)
    ids = {r["id"] for r in api.get("/receivables", headers=auditor).json()["items"]}
    assert {mine, theirs} <= ids


def test_factor_checks_an_invoice_and_learns_only_yes_no_and_status(
    api: TestClient, login: Login, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    creditor, debtor, factor = consortium.creditors[0], consortium.debtors[0], consortium.factors[0]
    invoice = make_invoice(debtor_id=debtor.entity, number="INV-7788", amount="1,850,600.00")
    registry.register(creditor.account, invoice)
    _wait_indexed(api, {}, registry.chain.block_number())
    headers = login(factor.account)
    body = {
        "invoice": {
            "debtor": debtor.entity,
            "invoice_number": "inv 7788",
            "face_value": "1850600",
            "currency": "CNY",
            "issue_date": "2026-01-01",
            "due_date": "2026-12-31",
        }
    }
    answer = api.post("/checks", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["registered"] is True and result["status"] == "registered"
    assert result["parties"] is None
    assert result["as_of"]["block"] >= 1


def test_bad_input_gets_a_problem_document_never_a_server_error(
    api: TestClient, login: Login, consortium: Consortium
) -> None:
    headers = login(consortium.factors[0].account)
    answer = api.post("/checks", json={"invoice": {"debtor": "7"}}, headers=headers)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "validation_error"
    assert api.get("/receivables", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert api.get("/receivables/999999", headers=headers).status_code == 404


def test_the_due_date_window_takes_days_or_unix_seconds_both_inclusive(
    api: TestClient, login: Login, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    import datetime

    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    due = {days: make_invoice(debtor_id=debtor.entity, due_in_days=days) for days in (30, 61, 92)}
    ids = {days: registry.register(creditor.account, inv) for days, inv in due.items()}
    _wait_indexed(api, {}, registry.chain.block_number())
    headers = login(debtor.account)

    def day(days: int) -> str:
        return datetime.datetime.fromtimestamp(due[days].due_date, datetime.UTC).date().isoformat()

    def listed(**params: object) -> set[int]:
        seen: set[int] = set()
        cursor = None
        while True:
            query = {**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
            answer = api.get("/receivables", params=query, headers=headers)
            assert answer.status_code == 200, answer.text
            seen |= {r["id"] for r in answer.json()["items"]}
            if (cursor := answer.json()["next_cursor"]) is None:
                return seen & set(ids.values())

    # A day as either bound includes receivables due that day; seconds work as before.
    assert listed(due_from=day(61), due_to=day(61)) == {ids[61]}
    assert listed(due_from=day(30).replace("-", "/"), due_to=day(61)) == {ids[30], ids[61]}
    assert listed(due_from=str(due[61].due_date)) == {ids[61], ids[92]}
    assert listed(due_to=str(due[30].due_date)) == {ids[30]}
    assert listed(due_from="0", due_to=str(2**32 - 1)) == set(ids.values())
    # Each unreadable bound, and an empty range, is a 422 naming the bound.
    for params, field in (
        ({"due_from": "2027-02-30"}, "query.due_from"),
        ({"due_to": "next week"}, "query.due_to"),
        ({"due_to": str(2**32)}, "query.due_to"),
        ({"due_from": day(92), "due_to": day(30)}, "query.due_from"),
    ):
        answer = api.get("/receivables", params=params, headers=headers)
        assert answer.status_code == 422, (params, answer.text)
        problem = answer.json()
        assert problem["code"] == "validation_error" and problem["errors"][0]["field"] == field, problem
