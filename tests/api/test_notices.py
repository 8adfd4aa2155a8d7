"""Notices over HTTP, end to end on the session's node: a receivable falls due on the chain's clock, the
indexer mirrors it, the reminder worker makes the notices; each party reads its own, subscribes, sees
its dead letters and retries them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from registry.chain.contract import RegistryClient
from registry.demo import DAY, Consortium
from registry.reminders import ReminderWorker
from registry.settings import Settings
from registry.store.db import make_engine
from tests.api.conftest import Login
from tests.conftest import ChainState, InvoiceFactory


def _wait_indexed(api: TestClient, block: int) -> None:
    deadline = time.monotonic() + 10
    while (api.get("/health").json()["indexed_block"] or 0) < block:
        assert time.monotonic() < deadline, "the indexer did not catch up"
        time.sleep(0.05)


@pytest.fixture
def worker_engine(api_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(api_settings.database)
    yield engine
    engine.dispose()


@pytest.fixture
def overdue(
    api: TestClient,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
) -> int:
    """A confirmed receivable of creditor 0 on debtor 0, due in 2 days; then 3 days pass on the chain."""
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    invoice = make_invoice(debtor_id=debtor.entity, due_in_days=2)
    rid = registry.register(creditor.account, invoice)
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    chain_state.advance(3 * DAY)
    _wait_indexed(api, registry.chain.block_number())
    return int(rid)


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_each_party_reads_its_own_notices_and_the_auditor_reads_all(
    api: TestClient, login: Login, consortium: Consortium, overdue: int, api_settings: Settings, worker_engine: Engine
) -> None:
    report = ReminderWorker(worker_engine, api_settings).run_once()  # block times from the node itself
    assert report.created == 2
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]

    mine = api.get("/notices", headers=login(debtor.account)).json()["items"]
    assert [(n["kind"], n["step"], n["recipient"], n["receivable_id"]) for n in mine] == [
        ("overdue", 1, debtor.entity, overdue)
    ]
    assert "1 day overdue" in mine[0]["message"] and mine[0]["state"] == "active"
    theirs = api.get("/notices", headers=login(creditor.account)).json()["items"]
    assert [n["recipient"] for n in theirs] == [creditor.entity]
    assert api.get("/notices", headers=login(consortium.debtors[1].account)).json()["items"] == []
    assert api.get("/notices", headers=login(consortium.factors[0].account)).json()["items"] == []
    everything = api.get("/notices", headers=login(consortium.auditors[0].account)).json()["items"]
    assert {n["recipient"] for n in everything} == {debtor.entity, creditor.entity}
    assert api.get("/notices?kind=due_soon", headers=login(debtor.account)).json()["items"] == []
    assert api.get("/notices?kind=late", headers=login(debtor.account)).status_code == 422


def test_subscriptions_are_per_participant_and_checked(api: TestClient, login: Login, consortium: Consortium) -> None:
    debtor, other = login(consortium.debtors[0].account), login(consortium.debtors[1].account)
    created = api.post(
        "/notices/subscriptions",
        json={"channel": "webhook", "target": "https://erp.debtor.example/hooks", "kinds": ["overdue"]},
        headers=debtor,
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["entity_id"] == consortium.debtors[0].entity and sub["kinds"] == ["overdue"]
    path = f"/notices/subscriptions/{sub['id']}"

    bad = api.post("/notices/subscriptions", json={"channel": "email", "target": "nobody"}, headers=debtor)
    assert bad.status_code == 422 and bad.json()["errors"] == [{"field": "target"}]
    assert (
        api.post("/notices/subscriptions", json={"channel": "fax", "target": "x@y.z"}, headers=debtor).status_code
        == 422
    )

    assert api.get(path, headers=other).status_code == 404  # another participant's: not found, not forbidden
    assert api.delete(path, headers=other).status_code == 404
    updated = api.put(path, json={"channel": "email", "target": "ap@debtor.example", "kinds": []}, headers=debtor)
    assert updated.status_code == 200 and updated.json()["channel"] == "email" and updated.json()["kinds"] == []
    assert [s["id"] for s in api.get("/notices/subscriptions", headers=debtor).json()] == [sub["id"]]
    assert api.get("/notices/subscriptions", headers=other).json() == []
    assert api.delete(path, headers=debtor).status_code == 204
    assert api.get(path, headers=debtor).status_code == 404
    assert api.get("/notices/subscriptions", headers=debtor).json() == []

    admin = login(consortium.admin)
    assert api.get("/notices/subscriptions", headers=admin).status_code == 403
    assert api.get("/notices/subscriptions").status_code == 401


def test_dead_letters_are_listed_to_their_owner_and_can_be_retried(
    api: TestClient, login: Login, consortium: Consortium, overdue: int, api_settings: Settings, worker_engine: Engine
) -> None:
    debtor, other = login(consortium.debtors[0].account), login(consortium.debtors[1].account)
    target = f"http://127.0.0.1:{_dead_port()}/down"
    sub = api.post("/notices/subscriptions", json={"channel": "webhook", "target": target}, headers=debtor).json()
    settings = api_settings.model_copy(update={"notify_max_attempts": 1, "webhook_secret": "s", "webhook_timeout": 2})
    report = ReminderWorker(worker_engine, settings).run_once()
    assert report.created == 2 and report.dead == 1

    letters = api.get("/notices/dead-letters", headers=debtor).json()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["subscription_id"] == sub["id"] and letter["receivable_id"] == overdue and letter["attempts"] == 1
    assert letter["last_error"]
    assert api.get("/notices/dead-letters", headers=other).json() == []
    assert len(api.get("/notices/dead-letters", headers=login(consortium.auditors[0].account)).json()) == 1

    retry = f"/notices/dead-letters/{letter['id']}/retry"
    assert api.post(retry, headers=other).status_code == 404
    answer = api.post(retry, headers=debtor)
    assert answer.status_code == 200 and answer.json()["state"] == "pending"
    assert api.get("/notices/dead-letters", headers=debtor).json() == []
    assert api.post(retry, headers=debtor).status_code == 404  # no longer a dead letter
    notice = api.get("/notices", headers=debtor).json()["items"][0]
    assert notice["deliveries"] == {"pending": 1}
