"""Search certificates, dashboard statistics, the live event stream and the `serve` / `up` API server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.routes import reports
from registry import stats
from registry.certificates import CertificateInvalid, canonical_json, verify_certificate
from registry.chain.contract import RegistryClient
from registry.cli import _ApiServer
from registry.cli import app as cli
from registry.demo import DAY, Consortium
from registry.keys import anvil_account
from registry.settings import Settings
from registry.store.queries import Visibility
from tests.api.conftest import Login
from tests.conftest import ChainState, InvoiceFactory

OPERATOR = anvil_account(0).address


def _indexed(api: TestClient, block: int) -> None:
    deadline = time.monotonic() + 10
    while (api.get("/health").json()["indexed_block"] or 0) < block:
        assert time.monotonic() < deadline, f"the mirror did not reach block {block}"
        time.sleep(0.03)


def _cert(api: TestClient, headers: dict[str, str], **query: str) -> dict[str, Any]:
    answer = api.post("/certificates", json=query, headers=headers)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = json.loads(answer.content)
    assert answer.content == canonical_json(document), "the body is the canonical form"
    return document


# ---------------------------------------------------------------------------------------- certificates


@pytest.fixture
def superseded_then_financed(
    api: TestClient, registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> tuple[bytes, int, int]:
    """An invoice registered, cancelled, registered again corrected, confirmed and financed."""
    creditor, debtor, factor = consortium.creditors[0], consortium.debtors[0], consortium.factors[0]
    wrong = make_invoice(debtor_id=debtor.entity, number="CERT-1", amount="1,000.00")
    first = registry.register(creditor.account, wrong)
    registry.cancel(creditor.account, first)
    right = make_invoice(debtor_id=debtor.entity, number="CERT-1", amount="1,200.00")
    second = registry.register(creditor.account, right)
    registry.confirm(debtor.account, second, right.fingerprint)
    registry.assign(creditor.account, second, factor.entity, 100_000)
    _indexed(api, registry.chain.block_number())
    assert wrong.key == right.key
    return right.key, first, second


def test_certificate_names_every_registration_and_verifies_offline(
    api: TestClient,
    login: Login,
    registry: RegistryClient,
    consortium: Consortium,
    superseded_then_financed: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    key, first, second = superseded_then_financed
    document = _cert(api, login(consortium.creditors[0].account), invoice_key="0x" + key.hex())
    body = document["certificate"]
    assert [r["id"] for r in body["registrations"]] == [first, second]
    cancelled, live = body["registrations"]
    assert cancelled["status"] == "cancelled" and not cancelled["live"] and not cancelled["financed"]
    assert live["status"] == "assigned" and live["financed"] and live["assignments"] == 1
    assert live["supersedes"] == first
    assert live["parties"] == {
        "creditor": consortium.creditors[0].entity,
        "debtor": consortium.debtors[0].entity,
        "holder": consortium.factors[0].entity,
    }
    assert body["registered"] and body["financed"] and body["issuer"] == OPERATOR
    head, count = registry.ledger(body["as_of"]["block"])
    assert body["as_of"]["ledger_head"] == "0x" + head.hex() and body["as_of"]["ledger_count"] == count

    verified = verify_certificate(document, issuer=OPERATOR)
    assert verified.block == body["as_of"]["block"] and verified.registrations == 2

    path = tmp_path / "certificate.json"
    path.write_text(json.dumps(document, indent=2))  # whitespace is not part of what is signed
    runner = CliRunner()
    offline = runner.invoke(cli, ["audit", "certificate", "verify", str(path), "--issuer", OPERATOR])
    assert offline.exit_code == 0, offline.output
    assert OPERATOR in offline.output and f"as of block {verified.block}" in offline.output
    online = runner.invoke(
        cli, ["audit", "certificate", "verify", str(path), "--rpc-url", registry.chain.url, "--json"]
    )
    assert online.exit_code == 0, online.output
    assert json.loads(online.output)["valid"] is True


def test_a_tampered_or_foreign_certificate_fails_verification(
    api: TestClient,
    login: Login,
    consortium: Consortium,
    superseded_then_financed: tuple[bytes, int, int],
    tmp_path: Path,
) -> None:
    key, _, _ = superseded_then_financed
    document = _cert(api, login(consortium.auditors[0].account), invoice_key="0x" + key.hex())
    runner = CliRunner()

    tampered = json.loads(json.dumps(document))
    tampered["certificate"]["registrations"][1]["financed"] = False
    tampered["certificate"]["financed"] = False
    with pytest.raises(CertificateInvalid) as caught:
        verify_certificate(tampered)
    assert caught.value.reason == "digest_mismatch"
    del tampered["digest"]  # a forger would drop the digest too: the signature still gives it away
    with pytest.raises(CertificateInvalid) as caught:
        verify_certificate(tampered)
    assert caught.value.reason == "wrong_signer"
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    result = runner.invoke(cli, ["audit", "certificate", "verify", str(path)])
    assert result.exit_code == 1 and "invalid" in result.output

    other = anvil_account(5).address
    with pytest.raises(CertificateInvalid) as caught:
        verify_certificate(document, issuer=other)
    assert caught.value.reason == "wrong_issuer"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(document))
    assert runner.invoke(cli, ["audit", "certificate", "verify", str(good), "--issuer", other]).exit_code == 1

    moved = json.loads(json.dumps(document))
    moved["certificate"]["as_of"]["block"] -= 1  # re-signed by nobody: the block is part of the signed text
    moved.pop("digest")
    with pytest.raises(CertificateInvalid):
        verify_certificate(moved, issuer=OPERATOR)

    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    assert runner.invoke(cli, ["audit", "certificate", "verify", str(garbage)]).exit_code == 2


def test_certificate_shows_parties_only_to_parties_and_auditors(
    api: TestClient,
    login: Login,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
) -> None:
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    invoice = make_invoice(debtor_id=debtor.entity)
    rid = registry.register(creditor.account, invoice)
    _indexed(api, registry.chain.block_number())
    fingerprint = "0x" + invoice.fingerprint.hex()

    stranger = _cert(api, login(consortium.factors[1].account), fingerprint=fingerprint)["certificate"]
    assert [(r["id"], r["status"], r["parties"]) for r in stranger["registrations"]] == [(rid, "registered", None)]
    assert stranger["issued_to"]["entity"] == consortium.factors[1].entity
    auditor = _cert(api, login(consortium.auditors[0].account), fingerprint=fingerprint)["certificate"]
    assert auditor["registrations"][0]["parties"]["debtor"] == debtor.entity
    mine = _cert(api, login(debtor.account), fingerprint=fingerprint)["certificate"]
    assert mine["registrations"][0]["parties"]["creditor"] == creditor.entity

    nothing = _cert(api, login(debtor.account), invoice_key="0x" + "ab" * 32)["certificate"]
    assert nothing["registrations"] == [] and nothing["registered"] is False
    assert "nothing is registered" in nothing["statement"]

    headers = login(debtor.account)
    both = api.post("/certificates", json={"invoice_key": fingerprint, "fingerprint": fingerprint}, headers=headers)
    assert both.status_code == 422 and both.json()["code"] == "validation_error"
    assert api.post("/certificates", json={}, headers=headers).status_code == 422
    assert api.post("/certificates", json={"fingerprint": "0x12"}, headers=headers).status_code == 422
    assert api.post("/certificates", json={"fingerprint": fingerprint}).status_code == 401


# ---------------------------------------------------------------------------------------- statistics


@pytest.fixture
def book(
    api: TestClient,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
) -> dict[str, int]:
    """Three confirmed receivables, one of them financed; then 45 days pass on the chain."""
    creditor, debtor, other_debtor, factor = (
        consortium.creditors[0],
        consortium.debtors[0],
        consortium.debtors[1],
        consortium.factors[0],
    )
    soon = make_invoice(debtor_id=debtor.entity, amount="1,000.00", due_in_days=10)
    later = make_invoice(debtor_id=debtor.entity, amount="2,000.00", due_in_days=60)
    theirs = make_invoice(debtor_id=other_debtor.entity, amount="4,000.00", due_in_days=60, currency="USD")
    ids = {}
    for name, invoice, payer in (("soon", soon, debtor), ("later", later, debtor), ("theirs", theirs, other_debtor)):
        ids[name] = registry.register(creditor.account, invoice)
        registry.confirm(payer.account, ids[name], invoice.fingerprint)
    registry.assign(creditor.account, ids["soon"], factor.entity, 90_000)
    chain_state.advance(45 * DAY)
    _indexed(api, registry.chain.block_number())
    return ids


def _buckets(answer: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(b["currency"], b["bucket"]): (b["count"], b["unpaid"]) for b in answer["buckets"]}


def test_ageing_buckets_open_receivables_by_days_overdue_within_the_callers_scope(
    api: TestClient, login: Login, consortium: Consortium, book: dict[str, int]
) -> None:
    auditor = api.get("/stats/ageing", headers=login(consortium.auditors[0].account)).json()
    assert auditor["as_of"]["block"] >= 1 and auditor["at"] == auditor["as_of"]["block_timestamp"]
    buckets = _buckets(auditor)
    assert buckets[("CNY", "31-60")] == (1, 100_000)  # due in 10 days, 45 days ago
    assert buckets[("CNY", "current")] == (1, 200_000)
    assert buckets[("USD", "current")] == (1, 400_000)
    assert buckets[("CNY", ">90")] == (0, 0)
    assert [b["bucket"] for b in auditor["buckets"] if b["currency"] == "CNY"] == [
        "current",
        "1-30",
        "31-60",
        "61-90",
        ">90",
    ]

    debtor = _buckets(api.get("/stats/ageing", headers=login(consortium.debtors[0].account)).json())
    assert {c for c, _ in debtor} == {"CNY"}, "another debtor's receivable is not counted"
    factor = _buckets(api.get("/stats/ageing", headers=login(consortium.factors[0].account)).json())
    assert sum(n for n, _ in factor.values()) == 1 and factor[("CNY", "31-60")] == (1, 100_000)
    other = api.get("/stats/ageing", headers=login(consortium.factors[1].account)).json()
    assert other["buckets"] == []


def test_exposure_by_debtor_and_by_factor_is_scoped(
    api: TestClient, login: Login, consortium: Consortium, book: dict[str, int]
) -> None:
    debtor, other_debtor, factor = consortium.debtors[0], consortium.debtors[1], consortium.factors[0]
    auditor = api.get("/stats/exposure", headers=login(consortium.auditors[0].account)).json()
    by_debtor = {(r["entity"], r["currency"]): (r["count"], r["unpaid"]) for r in auditor["by_debtor"]}
    assert by_debtor == {(debtor.entity, "CNY"): (2, 300_000), (other_debtor.entity, "USD"): (1, 400_000)}
    assert [(r["entity"], r["unpaid"]) for r in auditor["by_factor"]] == [(factor.entity, 100_000)]

    seen_by_factor = api.get("/stats/exposure", headers=login(factor.account)).json()
    assert [(r["entity"], r["unpaid"]) for r in seen_by_factor["by_debtor"]] == [(debtor.entity, 100_000)]
    seen_by_other = api.get("/stats/exposure", headers=login(consortium.factors[1].account)).json()
    assert seen_by_other["by_debtor"] == [] and seen_by_other["by_factor"] == []
    seen_by_debtor = api.get("/stats/exposure", headers=login(other_debtor.account)).json()
    assert [(r["entity"], r["unpaid"]) for r in seen_by_debtor["by_debtor"]] == [(other_debtor.entity, 400_000)]
    assert seen_by_debtor["by_factor"] == []


def test_volumes_count_status_transitions_per_period(
    api: TestClient, login: Login, consortium: Consortium, book: dict[str, int]
) -> None:
    answer = api.get("/stats/volumes?period=day&periods=60", headers=login(consortium.auditors[0].account))
    assert answer.status_code == 200, answer.text
    days = answer.json()["periods"]
    assert len(days) == 60 and days[-1]["start_timestamp"] <= answer.json()["as_of"]["block_timestamp"]
    totals: dict[str, int] = {}
    for day in days:
        for status, n in day["counts"].items():
            totals[status] = totals.get(status, 0) + n
    assert totals == {"registered": 3, "confirmed": 3, "assigned": 1}
    busy = [d for d in days if d["total"]]
    assert len(busy) in (1, 2) and days[-1]["total"] == 0  # all before the 45 days passed

    weeks = api.get("/stats/volumes?period=week&periods=10", headers=login(consortium.debtors[0].account)).json()
    assert sum(w["counts"].get("registered", 0) for w in weeks["periods"]) == 2
    assert all(w["start"] == time.strftime("%Y-%m-%d", time.gmtime(w["start_timestamp"])) for w in weeks["periods"])
    bad = api.get("/stats/volumes?period=month", headers=login(consortium.debtors[0].account))
    assert bad.status_code == 422


# ---------------------------------------------------------------------------------------- events


def _read_stream(api: TestClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with api.stream("GET", url, headers=headers) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        for line in answer.iter_lines():
            if line.startswith("id: "):
                event["id"] = line[4:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and event:
                events.append(event)
                event = {}
    return events


def test_event_stream_shows_a_party_only_its_receivables_and_resumes(
    api: TestClient,
    login: Login,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
) -> None:
    creditor, debtor, other_debtor = consortium.creditors[0], consortium.debtors[0], consortium.debtors[1]
    invoice = make_invoice(debtor_id=debtor.entity)
    mine = registry.register(creditor.account, invoice)
    registry.register(creditor.account, make_invoice(debtor_id=other_debtor.entity))
    registry.confirm(debtor.account, mine, invoice.fingerprint)
    _indexed(api, registry.chain.block_number())
    headers = login(debtor.account)

    events = _read_stream(api, "/events/stream?after=0&limit=2", headers)
    assert [(e["data"]["name"], e["data"]["args"]["id"]) for e in events] == [
        ("ReceivableRegistered", mine),
        ("ReceivableConfirmed", mine),
    ]
    first = events[0]
    assert first["id"] == f"{first['data']['block']}:{first['data']['log_index']}"

    resumed = _read_stream(api, "/events/stream?limit=1", {**headers, "Last-Event-ID": first["id"]})
    assert [e["data"]["name"] for e in resumed] == ["ReceivableConfirmed"]
    resumed = _read_stream(api, f"/events/stream?after={first['id']}&limit=1", headers)
    assert resumed[0]["id"] == events[1]["id"]

    auditor = _read_stream(api, "/events/stream?after=0&limit=3", login(consortium.auditors[0].account))
    assert any(e["data"]["name"] in ("ParticipantAdmitted", "RoleGranted", "KeyAdded") for e in auditor)

    services = api.app.state.services  # type: ignore[attr-defined]
    with services.engine.connect() as conn:
        administration, _ = stats.events_after(conn, stats.EventReader(Visibility(), administration=True), (0, -1))
    names = {e.name for e in administration}
    assert "ParticipantAdmitted" in names and not any(n.startswith(("Receivable", "Payment")) for n in names)

    assert api.get("/events/stream?after=yesterday", headers=headers).status_code == 422
    assert api.get("/events/stream?limit=1").status_code == 401


def test_event_stream_is_live_and_sends_heartbeats(
    api: TestClient,
    login: Login,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    headers = login(debtor.account)
    with api.stream("GET", "/events/stream?limit=1", headers=headers) as answer:
        rid = registry.register(creditor.account, make_invoice(debtor_id=debtor.entity))  # after connecting
        data = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]
    assert [(d["name"], d["args"]["id"]) for d in data] == [("ReceivableRegistered", rid)]

    monkeypatch.setattr(reports, "HEARTBEAT_SECONDS", 0.1)
    with api.stream("GET", "/events/stream", headers=headers) as answer:
        lines = answer.iter_lines()
        assert next(line for line in lines if line.startswith(":")) == ": heartbeat"
    # leaving the block disconnects: the server's generator is cancelled, the test does not hang


# ---------------------------------------------------------------------------------------- serving


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_up_runs_the_api_on_a_background_thread_and_stops_it(api_settings: Settings, api: TestClient) -> None:
    server = _ApiServer.start(api_settings.model_copy(update={"api_port": 0}), str(api_settings.rpc_url))
    assert server.url is not None, server.error
    try:
        assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    finally:
        server.stop()
    assert server.thread is not None and not server.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)


@pytest.fixture
def served(api_settings: Settings, api: TestClient) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "REGISTRY_DATA_DIR": str(api_settings.data_dir),
        "REGISTRY_RPC_URL": str(api_settings.rpc_url),
        "REGISTRY_DEPLOYMENT_FILE": str(api_settings.deployment_path),
        "REGISTRY_DATABASE_URL": api_settings.database,
        "REGISTRY_SESSION_SECRET": "test-secret",
        "REGISTRY_API_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "`registry serve` did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def test_serve_runs_the_api_on_the_configured_port(served: str) -> None:
    answer = httpx.get(f"{served}/health", timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert httpx.post(f"{served}/certificates", json={}, timeout=10).status_code == 401
