"""Offers and auto-approval policies over HTTP: the holder prepares and signs an assign request and offers
it; the factor's policy accepts (relayed, assigned on-chain) or queues it with reasons; the factor accepts
or declines by hand. Who may see and decide what, as a principal x offer matrix."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from tests.api.conftest import Login
from tests.conftest import ChainState

POLICY = {
    "enabled": True,
    "currencies": ["CNY"],
    "max_amount": {"CNY": "500,000.00"},
    "max_tenor_days": 120,
    "min_advance_rate": "0.5",
    "max_advance_rate": "0.9",
    "debtor_limit": {"CNY": "1,000,000.00"},
}


def _fields(debtor: int, number: str, chain_state: ChainState, amount: str = "200,000.00") -> dict[str, Any]:
    today = datetime.datetime.fromtimestamp(chain_state.now(), datetime.UTC).date()
    return {
        "debtor": debtor,
        "invoice_number": number,
        "face_value": amount,
        "currency": "CNY",
        "issue_date": (today - datetime.timedelta(days=5)).isoformat(),
        "due_date": (today + datetime.timedelta(days=90)).isoformat(),
    }


def _signed(api: TestClient, headers: dict[str, str], account: LocalAccount, action: str, args: Any) -> dict[str, Any]:
    prepared = api.post(f"/actions/{action}/prepare", json={"args": args}, headers=headers)
    assert prepared.status_code == 200, prepared.text
    document = prepared.json()["typed_data"]
    signature = account.sign_message(encode_typed_data(full_message=document)).signature
    return {**document["message"], "signature": "0x" + bytes(signature).hex()}


def _do(api: TestClient, headers: dict[str, str], account: LocalAccount, action: str, args: Any) -> dict[str, Any]:
    answer = api.post(f"/actions/{action}", json=_signed(api, headers, account, action, args), headers=headers)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.fixture
def parties(api: TestClient, login: Login, consortium: Consortium) -> dict[str, dict[str, str]]:
    c = consortium
    accounts = {
        "creditor": c.creditors[0].account,
        "other_creditor": c.creditors[1].account,
        "debtor": c.debtors[0].account,
        "factor": c.factors[0].account,
        "other_factor": c.factors[1].account,
        "auditor": c.auditors[0].account,
        "admin": c.admin,
    }
    return {kind: login(account) for kind, account in accounts.items()}


def _confirmed(
    api: TestClient, parties: dict[str, dict[str, str]], consortium: Consortium, chain_state: ChainState, number: str
) -> int:
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    fields = _fields(debtor.entity, number, chain_state)
    rid = int(_do(api, parties["creditor"], creditor.account, "register", {"invoice": fields})["receivables"][0]["id"])
    _do(api, parties["debtor"], debtor.account, "confirm", {"id": rid, "invoice": fields})
    return rid


def _offer(api: TestClient, parties: dict[str, dict[str, str]], consortium: Consortium, rid: int, advance: int) -> Any:
    creditor, factor = consortium.creditors[0], consortium.factors[0]
    request = _signed(
        api, parties["creditor"], creditor.account, "assign", {"id": rid, "factor": factor.entity, "advance": advance}
    )
    return api.post("/offers", json={"request": request}, headers=parties["creditor"])


def test_a_factor_sets_its_policy_and_a_bad_field_changes_nothing(
    api: TestClient, parties: dict[str, dict[str, str]]
) -> None:
    empty = api.get("/policies/me", headers=parties["factor"])
    assert empty.status_code == 200 and empty.json()["version"] == 0 and empty.json()["policy"]["enabled"] is False
    put = api.put("/policies/me", json=POLICY, headers=parties["factor"])
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1 and put.json()["policy"]["max_amount"] == {"CNY": 50_000_000}
    bad = api.put("/policies/me", json={**POLICY, "max_tenor_days": -1}, headers=parties["factor"])
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_policy"
    assert bad.json()["errors"][0]["field"] == "max_tenor_days"
    assert api.get("/policies/me", headers=parties["factor"]).json() == put.json()
    for kind in ("creditor", "debtor", "auditor", "admin"):
        assert api.get("/policies/me", headers=parties[kind]).status_code == 403, kind
        assert api.put("/policies/me", json=POLICY, headers=parties[kind]).status_code == 403, kind
    assert api.get("/policies/me").status_code == 401


def test_an_eligible_offer_is_assigned_and_the_decision_is_shown_to_the_factor(
    api: TestClient,
    parties: dict[str, dict[str, str]],
    consortium: Consortium,
    chain_state: ChainState,
    registry: RegistryClient,
) -> None:
    assert api.put("/policies/me", json=POLICY, headers=parties["factor"]).status_code == 200
    rid = _confirmed(api, parties, consortium, chain_state, "OFFER-0001")
    answer = _offer(api, parties, consortium, rid, 16_000_000)
    assert answer.status_code == 200, answer.text
    offer = answer.json()
    assert offer["state"] == "assigned" and offer["rule"] == "all_rules_met" and offer["reasons"] == []
    assert offer["tx_hash"] and offer["block"]
    assert registry.get_receivable(rid).holder == consortium.factors[0].entity
    seen = api.get(f"/offers/{offer['id']}", headers=parties["factor"]).json()
    assert [d["outcome"] for d in seen["decisions"]] == ["accepted", "assigned"]
    assert seen["decisions"][0]["actor"] == "policy" and len(seen["decisions"][0]["rules"]) == 10
    listed = api.get("/offers", headers=parties["factor"]).json()["items"]
    assert [o["id"] for o in listed] == [offer["id"]]


def test_a_queued_offer_shows_its_reasons_and_only_its_factor_decides_it(
    api: TestClient,
    parties: dict[str, dict[str, str]],
    consortium: Consortium,
    chain_state: ChainState,
    registry: RegistryClient,
) -> None:
    assert api.put("/policies/me", json=POLICY, headers=parties["factor"]).status_code == 200
    rid = _confirmed(api, parties, consortium, chain_state, "OFFER-0002")
    offer = _offer(api, parties, consortium, rid, 19_000_000).json()  # 95%: above the 90% ceiling
    assert offer["state"] == "queued" and offer["rule"] == "advance_rate"
    assert offer["reasons"] and offer["reasons"][0].startswith("advance_rate: advance 190000.00 CNY is 95.00%")
    url = f"/offers/{offer['id']}"

    # Reading: the factor, the holder and the auditor; to everyone else the offer does not exist.
    for kind, status in {
        "factor": 200,
        "creditor": 200,
        "auditor": 200,
        "other_factor": 404,
        "other_creditor": 404,
        "debtor": 404,
        "admin": 404,
    }.items():
        answer = api.get(url, headers=parties[kind])
        assert answer.status_code == status, (kind, answer.text)
        listed = {o["id"] for o in api.get("/offers", headers=parties[kind]).json()["items"]}
        assert (offer["id"] in listed) == (status == 200), kind
    assert api.get(url).status_code == 401
    assert api.get("/offers/999999", headers=parties["factor"]).json()["code"] == "not_found"

    # Deciding: only the factor; the holder sees the offer but may not decide it (403), others get 404.
    for kind, status in {"creditor": 403, "auditor": 403, "other_factor": 404, "debtor": 404, "admin": 404}.items():
        for verb in ("accept", "decline"):
            answer = api.post(f"{url}/{verb}", headers=parties[kind])
            assert answer.status_code == status, (kind, verb, answer.text)
    assert registry.get_receivable(rid).holder == consortium.creditors[0].entity

    accepted = api.post(f"{url}/accept", headers=parties["factor"])
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["state"] == "assigned" and body["rule"] == "manual"
    assert body["decisions"][1]["actor"] == consortium.factors[0].address
    assert "advance_rate" in body["decisions"][1]["detail"]
    assert registry.get_receivable(rid).holder == consortium.factors[0].entity
    again = api.post(f"{url}/decline", headers=parties["factor"])
    assert again.status_code == 409 and again.json()["code"] == "offer.not_queued"


def test_declining_a_queued_offer_relays_nothing(
    api: TestClient,
    parties: dict[str, dict[str, str]],
    consortium: Consortium,
    chain_state: ChainState,
    registry: RegistryClient,
) -> None:
    rid = _confirmed(api, parties, consortium, chain_state, "OFFER-0003")  # no policy: queued
    offer = _offer(api, parties, consortium, rid, 1).json()
    assert offer["state"] == "queued" and offer["rule"] == "policy_enabled"
    declined = api.post(f"/offers/{offer['id']}/decline", json={"note": "no limit yet"}, headers=parties["factor"])
    assert declined.status_code == 200 and declined.json()["state"] == "declined"
    assert declined.json()["decisions"][-1]["detail"] == "no limit yet"
    assert registry.get_receivable(rid).holder == consortium.creditors[0].entity
    assert api.get("/offers?state=declined", headers=parties["creditor"]).json()["items"][0]["id"] == offer["id"]
    assert api.get("/offers?state=bogus", headers=parties["creditor"]).status_code == 422


def test_offers_that_cannot_be_relayed_or_are_not_assignments_are_refused(
    api: TestClient,
    parties: dict[str, dict[str, str]],
    consortium: Consortium,
    chain_state: ChainState,
) -> None:
    creditor, factor = consortium.creditors[0], consortium.factors[0]
    rid = _confirmed(api, parties, consortium, chain_state, "OFFER-0004")
    request = _signed(
        api, parties["creditor"], creditor.account, "assign", {"id": rid, "factor": factor.entity, "advance": 1}
    )
    # Signed by the creditor, offered by someone else.
    assert api.post("/offers", json={"request": request}, headers=parties["factor"]).status_code == 403
    # Tampered: the signature no longer matches.
    tampered = {**request, "data": request["data"][:-2] + ("00" if request["data"][-2:] != "00" else "01")}
    answer = api.post("/offers", json={"request": tampered}, headers=parties["creditor"])
    assert answer.status_code in (409, 422) and answer.json()["code"].startswith("relay.")
    # A signed request that is not an assignment.
    fields = _fields(consortium.debtors[0].entity, "OFFER-0005", chain_state)
    register = _signed(api, parties["creditor"], creditor.account, "register", {"invoice": fields})
    answer = api.post("/offers", json={"request": register}, headers=parties["creditor"])
    assert answer.status_code == 422 and answer.json()["code"] == "offer.not_assign"
    # Invoice fields that are not the offered receivable's.
    other = _fields(consortium.debtors[0].entity, "OFFER-9999", chain_state)
    answer = api.post("/offers", json={"request": request, "invoice": other}, headers=parties["creditor"])
    assert answer.status_code == 422 and answer.json()["code"] == "offer.invoice_mismatch"
    assert api.get("/offers", headers=parties["creditor"]).json()["items"] == []


def test_an_offer_accepted_before_the_api_stopped_is_relayed_when_it_starts_again(
    api: TestClient,
    parties: dict[str, dict[str, str]],
    consortium: Consortium,
    chain_state: ChainState,
    api_settings: Any,
) -> None:
    import time

    from sqlalchemy import update

    from api.app import build_services, create_app
    from registry.store.models import Offer, table_of

    assert api.put("/policies/me", json=POLICY, headers=parties["factor"]).status_code == 200
    rid = _confirmed(api, parties, consortium, chain_state, "RESUME-1")
    creditor, factor = consortium.creditors[0], consortium.factors[0]
    request = _signed(
        api,
        parties["creditor"],
        creditor.account,
        "assign",
        {"id": rid, "factor": factor.entity, "advance": 10_000_000},
    )
    from api.routes.offers import desk
    from registry.relay import parse_request

    services = api.app.state.services  # type: ignore[attr-defined]
    view = desk(services).submit(parse_request(request), relay=False)  # accepted; then the API "died"
    assert view.state == "accepted"
    offers = table_of(Offer)
    with services.engine.begin() as conn:  # decided two minutes ago
        conn.execute(update(offers).where(offers.c.id == view.id).values(decided_at=time.time() - 120))

    restarted = build_services(api_settings)
    with TestClient(create_app(api_settings, restarted)) as again:
        deadline = time.monotonic() + 20
        while (state := again.get(f"/offers/{view.id}", headers=parties["factor"]).json()["state"]) != "assigned":
            assert state == "accepted" and time.monotonic() < deadline, state
            time.sleep(0.1)
    restarted.engine.dispose()
