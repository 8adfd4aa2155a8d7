"""GET /flags and POST /flags/{id}/clear over a live mirror: who sees a flag, who may clear it."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from registry.anomalies import Kind, Scanner
from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from registry.store.db import make_engine
from tests.api.conftest import Login
from tests.conftest import InvoiceFactory


def _indexed(api: TestClient, block: int) -> None:
    deadline = time.monotonic() + 10
    while (api.get("/health").json()["indexed_block"] or 0) < block:
        assert time.monotonic() < deadline, f"the mirror did not reach block {block}"
        time.sleep(0.03)


@pytest.fixture
def late_flag(
    api: TestClient,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
    api_settings: object,
) -> tuple[int, int]:
    """(receivable id, flag id): an invoice registered 12 hours before its due date, assigned to factor 0."""
    creditor, debtor, factor = consortium.creditors[0], consortium.debtors[0], consortium.factors[0]
    invoice = make_invoice(debtor_id=debtor.entity, number="LATE-1", issue_in_days=-60, due_in_days=1)
    rid = registry.register(creditor.account, invoice)
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    registry.assign(creditor.account, rid, factor.entity, 100_000)
    _indexed(api, registry.chain.block_number())
    engine = make_engine(api.app.state.services.settings.database)
    report = Scanner(kinds=[Kind.LATE_REGISTRATION]).run_once(engine)
    engine.dispose()
    assert report.raised == 1
    return rid, rid


def _flags(api: TestClient, headers: dict[str, str], **query: object) -> list[dict[str, object]]:
    answer = api.get("/flags", params=query, headers=headers)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, object]] = answer.json()["items"]
    return items


def test_parties_see_the_flag_and_a_factor_not_party_does_not(
    api: TestClient, login: Login, consortium: Consortium, late_flag: tuple[int, int]
) -> None:
    rid, _ = late_flag
    for member in (consortium.creditors[0], consortium.debtors[0], consortium.factors[0], consortium.auditors[0]):
        (flag,) = _flags(api, login(member.account))
        assert flag["receivable_id"] == rid and flag["kind"] == "late_registration" and flag["state"] == "open"
        assert flag["severity"] == "high" and "before its due date" in str(flag["reason"])
    outsider = login(consortium.factors[1].account)
    assert _flags(api, outsider) == []
    assert _flags(api, outsider, receivable=rid) == []
    assert _flags(api, login(consortium.admin)) == []
    auditor = login(consortium.auditors[0].account)
    assert _flags(api, auditor, kind="burst") == [] and len(_flags(api, auditor, kind="late_registration")) == 1
    assert _flags(api, auditor, state="cleared") == []
    bad = api.get("/flags", params={"kind": "nonsense"}, headers=auditor)
    assert bad.status_code == 422


def test_clearing_needs_a_note_and_the_holder_or_an_auditor(
    api: TestClient, login: Login, consortium: Consortium, late_flag: tuple[int, int]
) -> None:
    rid, _ = late_flag
    holder = login(consortium.factors[0].account)
    (flag,) = _flags(api, holder)
    url = f"/flags/{flag['id']}/clear"
    assert api.post(url, json={}, headers=holder).status_code == 422
    assert api.post(url, json={"note": ""}, headers=holder).status_code == 422
    assert api.post(url, json={"note": "   "}, headers=holder).status_code == 422
    outsider = api.post(url, json={"note": "mine"}, headers=login(consortium.factors[1].account))
    assert outsider.status_code == 404  # not told the flag exists
    for party in (consortium.debtors[0], consortium.creditors[0]):  # may read it, may not clear it
        answer = api.post(url, json={"note": "fine"}, headers=login(party.account))
        assert answer.status_code == 403, answer.text
    assert api.post(url, json={"note": "fine"}, headers=login(consortium.admin)).status_code == 404
    cleared = api.post(url, json={"note": "buyer confirmed the late invoice by phone"}, headers=holder)
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert body["state"] == "cleared" and body["clear_note"] == "buyer confirmed the late invoice by phone"
    assert body["cleared_by"] == consortium.factors[0].account.address
    again = api.post(url, json={"note": "again"}, headers=login(consortium.auditors[0].account))
    assert again.status_code == 409
    assert _flags(api, holder, state="open") == []
    assert [f["id"] for f in _flags(api, holder, state="cleared", receivable=rid)] == [flag["id"]]
    assert api.post("/flags/999999/clear", json={"note": "x"}, headers=holder).status_code == 404
