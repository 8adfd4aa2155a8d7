"""The auditor's verification runs, the participant list, and the portal's static files over HTTP."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.portal import CSP
from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from registry.settings import Settings
from tests.api.conftest import Login
from tests.conftest import InvoiceFactory


def _wait_indexed(api: TestClient, block: int) -> None:
    deadline = time.monotonic() + 10
    while (api.get("/health").json()["indexed_block"] or 0) < block:
        assert time.monotonic() < deadline, "the mirror did not catch up"
        time.sleep(0.05)


def _finished(api: TestClient, headers: dict[str, str], run: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while run["status"] == "running":
        assert time.monotonic() < deadline, "the verification did not finish"
        time.sleep(0.1)
        answer = api.get("/audit/runs/latest", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == run["id"], "another verification started meanwhile"
        run = answer.json()
    return run


def test_only_auditors_run_verifications_and_a_clean_mirror_agrees(
    api: TestClient, login: Login, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    registry.register(consortium.creditors[0].account, make_invoice())
    _wait_indexed(api, registry.chain.block_number())
    for outsider in (consortium.creditors[0].account, consortium.admin):
        refused = api.post("/audit/runs", headers=login(outsider))
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden", refused.text
    auditor = login(consortium.auditors[0].account)
    assert api.get("/audit/runs/latest", headers=auditor).status_code == 404

    started = api.post("/audit/runs", headers=auditor)
    assert started.status_code in (200, 202), started.text
    run = _finished(api, auditor, started.json())
    assert run["status"] == "done" and run["agrees"] is True, run
    assert run["result"]["mirror"]["checked"] > 0 and run["result"]["mirror"]["divergent"] == []
    assert api.get("/audit/runs/latest", headers=auditor).json()["id"] == run["id"]

    status = api.get("/audit/status", headers=auditor).json()
    assert status["last_run"]["id"] == run["id"]
    assert status["mirror_ledger"]["head"] == status["chain_ledger"]["head"]
    assert status["mirror_ledger"]["count"] == status["chain_ledger"]["count"] > 0


def test_a_row_edited_behind_the_indexers_back_makes_the_verification_name_it(
    api: TestClient,
    api_settings: Settings,
    login: Login,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
) -> None:
    rid = registry.register(consortium.creditors[0].account, make_invoice())
    _wait_indexed(api, registry.chain.block_number())
    engine = create_engine(api_settings.database)
    with engine.begin() as conn:
        edited = conn.execute(
            text("UPDATE receivables SET face_value = face_value + 1 WHERE id = :id AND valid_to IS NULL"), {"id": rid}
        ).rowcount
    engine.dispose()
    assert edited == 1
    auditor = login(consortium.auditors[0].account)
    run = _finished(api, auditor, api.post("/audit/runs", headers=auditor).json())
    assert run["status"] == "done" and run["agrees"] is False
    divergent = run["result"]["mirror"]["divergent"]
    assert any(d["table"] == "receivables" and d["field"] == "face_value" for d in divergent), divergent


def test_participants_are_listed_for_the_operator_and_auditors_only(
    api: TestClient, login: Login, registry: RegistryClient, consortium: Consortium
) -> None:
    suspended = consortium.creditors[1]
    registry.suspend_participant(consortium.admin, suspended.entity)
    _wait_indexed(api, registry.chain.block_number())
    assert api.get("/participants", headers=login(consortium.creditors[0].account)).status_code == 403
    for reader in (consortium.admin, consortium.auditors[0].account):
        answer = api.get("/participants", headers=login(reader))
        assert answer.status_code == 200, answer.text
        rows = {p["entity"]: p for p in answer.json()["participants"]}
        assert set(rows) == {m.entity for m in consortium.members}
        assert rows[suspended.entity]["status"] == "suspended"
        assert rows[consortium.debtors[0].entity]["roles"] == ["debtor"]
        assert rows[consortium.debtors[0].entity]["keys"][0]["address"] == consortium.debtors[0].address


def test_the_portal_is_served_at_the_root_with_its_pinned_vendor_files(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert '<script type="module" src="/portal/app.js">' in page.text
    module = api.get("/portal/app.js")
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    ethers = api.get("/portal/vendor/ethers.min.js")
    assert ethers.status_code == 200 and "javascript" in ethers.headers["content-type"], ethers.text[:200]
    assert api.get("/portal/vendor/chart.umd.min.js").status_code == 200
    assert api.get("/portal/vendor/lodash.js").status_code == 404
    assert api.get("/portal/vendor/..%2F..%2Fpackage.json").status_code == 404
    assert api.get("/portal/../pyproject.toml").status_code == 404
    assert api.get("/docs").status_code == 200
