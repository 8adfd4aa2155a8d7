"""Signed writes the way the portal and the CLI make them: prepare -> sign EIP-712 locally -> relay."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from registry.actions import ACTIONS, ActionError, build_call
from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from tests.api.conftest import Login
from tests.conftest import ChainState


def _fields(debtor: int, number: str, chain_state: ChainState, amount: str = "250,000.00") -> dict[str, Any]:
    today = datetime.datetime.fromtimestamp(chain_state.now(), datetime.UTC).date()
    return {
        "debtor": debtor,
        "invoice_number": number,
        "face_value": amount,
        "currency": "CNY",
        "issue_date": (today - datetime.timedelta(days=5)).isoformat(),
        "due_date": (today + datetime.timedelta(days=90)).isoformat(),
    }


def _sign(account: LocalAccount, prepared: dict[str, Any]) -> dict[str, Any]:
    document = prepared["typed_data"]
    signature = account.sign_message(encode_typed_data(full_message=document)).signature
    return {**document["message"], "signature": "0x" + bytes(signature).hex()}


def _do(api: TestClient, headers: dict[str, str], account: LocalAccount, action: str, args: dict[str, Any]) -> Any:
    prepared = api.post(f"/actions/{action}/prepare", json={"args": args}, headers=headers)
    assert prepared.status_code == 200, prepared.text
    answer = api.post(f"/actions/{action}", json=_sign(account, prepared.json()), headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_meta_names_the_contracts_the_domain_and_every_action(api: TestClient, registry: RegistryClient) -> None:
    meta = api.get("/meta").json()
    assert meta["registry"] == registry.address and meta["chain_id"] == registry.chain.chain_id
    assert meta["eip712"]["domain"] == registry.forwarder_domain()
    assert meta["actions"] == ACTIONS
    assert {f["name"] for f in meta["registry_abi"] if f["type"] == "function"} >= set(ACTIONS.values())


def test_lifecycle_through_prepare_and_locally_signed_typed_data(
    api: TestClient, login: Login, consortium: Consortium, chain_state: ChainState
) -> None:
    creditor, debtor, factor = consortium.creditors[0], consortium.debtors[0], consortium.factors[0]
    fields = _fields(debtor.entity, "PREP-0001", chain_state)
    as_creditor = login(creditor.account)
    registered = _do(api, as_creditor, creditor.account, "register", {"invoice": fields})
    rid = registered["receivables"][0]["id"]
    assert registered["receivables"][0]["status"] == "registered"

    # The debtor confirms from its own records: the same fields, typed differently, give the same fingerprint.
    own = {**fields, "invoice_number": "ｐｒｅｐ－０００１", "face_value": "250000"}
    as_debtor = login(debtor.account)
    confirmed = _do(api, as_debtor, debtor.account, "confirm", {"id": rid, "invoice": own})
    assert confirmed["receivables"][0]["status"] == "confirmed"

    assigned = _do(
        api, as_creditor, creditor.account, "assign", {"id": rid, "factor": factor.entity, "advance": 20_000_000}
    )
    assert assigned["receivables"][0]["status"] == "assigned"
    paid = _do(
        api,
        login(factor.account),
        factor.account,
        "record-payment",
        {"id": rid, "amount": 25_000_000, "payment_ref": "wire 7781"},
    )
    assert paid["receivables"][0]["status"] == "settled"


def test_prepare_refuses_what_would_revert_before_anything_is_signed(
    api: TestClient, login: Login, consortium: Consortium, chain_state: ChainState
) -> None:
    creditor, debtor = consortium.creditors[0], consortium.debtors[0]
    fields = _fields(debtor.entity, "PREP-0002", chain_state)
    as_creditor = login(creditor.account)
    _do(api, as_creditor, creditor.account, "register", {"invoice": fields})
    again = api.post(
        "/actions/register/prepare", json={"args": {"invoice": fields}}, headers=login(consortium.creditors[1].account)
    )
    assert again.status_code == 409 and again.json()["code"] == "contract.InvoiceKeyTaken"
    # A creditor cannot confirm: the contract says who may.
    wrong_role = api.post(
        "/actions/confirm/prepare", json={"args": {"id": 1, "fingerprint": "0x" + "11" * 32}}, headers=as_creditor
    )
    assert wrong_role.status_code in (403, 409, 422) and wrong_role.json()["code"].startswith("contract.")


@pytest.mark.parametrize(
    ("action", "args", "field"),
    [
        ("confirm", {}, "id"),
        ("confirm", {"id": 0, "fingerprint": "0x" + "11" * 32}, "id"),
        ("confirm", {"id": 1, "fingerprint": "0x12"}, "fingerprint"),
        ("confirm", {"id": 1, "fingerprint": "0x" + "11" * 32, "extra": 1}, "extra"),
        ("dispute", {"id": 1, "reason": "BORED"}, "reason"),
        ("assign", {"id": 1, "factor": 2**24, "advance": 1}, "factor"),
        ("assign", {"id": 1, "factor": 3, "advance": 1, "recourse": "yes"}, "recourse"),
        ("split", {"id": 1, "amounts": [5]}, "amounts"),
        ("split", {"id": 1, "amounts": [5, -1]}, "amounts.1"),
        ("register", {"invoice": {"debtor": 1}}, "invoice.currency"),
        ("register", {"invoice": "INV-1"}, "invoice"),
        ("register-batch", {"invoices": []}, "invoices"),
        (
            "admit-participant",
            {"registration_number": "X", "roles": ["admin"], "first_key": "0x" + "00" * 20},
            "roles.0",
        ),
        ("add-key", {"entity": 1, "key": "not an address"}, "key"),
    ],
)
def test_bad_arguments_name_the_field(action: str, args: dict[str, Any], field: str) -> None:
    with pytest.raises(ActionError) as raised:
        build_call(action, args)
    assert raised.value.field == field


def test_a_batch_names_every_malformed_line_and_field_at_once() -> None:
    good = {
        "debtor": 4,
        "invoice_number": "B-1",
        "face_value": "10.00",
        "currency": "CNY",
        "issue_date": "2027-01-01",
        "due_date": "2027-03-01",
    }
    lines = [good, {**good, "face_value": "1.001"}, good, {**good, "currency": "", "due_date": "2026-12-01"}]
    with pytest.raises(ActionError) as raised:
        build_call("register-batch", {"invoices": lines})
    fields = [field for field, _ in raised.value.problems]
    assert fields == ["invoices.1.face_value", "invoices.3.currency"]
    lines[3] = {**good, "due_date": "2026-12-01", "invoice_number": "::"}
    with pytest.raises(ActionError) as raised:
        build_call("register-batch", {"invoices": lines})
    fields = [field for field, _ in raised.value.problems]
    assert fields == ["invoices.1.face_value", "invoices.3.invoice_number", "invoices.3.due_date"]


def test_bad_arguments_over_http_are_422_naming_the_field(
    api: TestClient, login: Login, consortium: Consortium, chain_state: ChainState
) -> None:
    headers = login(consortium.creditors[0].account)
    bad = {**_fields(consortium.debtors[0].entity, "PREP-0003", chain_state), "due_date": [2027, 1, 1]}
    answer = api.post("/actions/register/prepare", json={"args": {"invoice": bad}}, headers=headers)
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_argument"
    assert answer.json()["errors"][0]["field"].startswith("invoice")
    # Every bad field at once: the pre-checks' and the invoice's own.
    worse = {**bad, "due_date": "2027-02-30", "face_value": "1.001", "currency": 840, "extra": 1}
    answer = api.post("/actions/register/prepare", json={"args": {"invoice": worse}}, headers=headers)
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_argument"
    assert [e["field"] for e in answer.json()["errors"]] == ["invoice.extra", "invoice.currency"]
    worse = {**bad, "due_date": "2027-02-30", "face_value": "1.001", "debtor": 0}
    answer = api.post("/actions/register/prepare", json={"args": {"invoice": worse}}, headers=headers)
    assert answer.status_code == 422, answer.text
    fields = [e["field"] for e in answer.json()["errors"]]
    assert fields == ["invoice.debtor", "invoice.face_value", "invoice.due_date"], answer.text
    assert api.post("/actions/teleport/prepare", json={"args": {}}, headers=headers).status_code == 422
    assert api.post("/actions/cancel/prepare", json={"args": {"id": 1}}).status_code == 401


def test_every_action_has_a_builder_that_encodes_against_the_abi(registry: RegistryClient) -> None:
    samples: dict[str, dict[str, Any]] = {
        "register": {
            "invoice": {
                "debtor": 4,
                "invoice_number": "A-1",
                "face_value": "1.00",
                "currency": "USD",
                "issue_date": "2026-01-01",
                "due_date": "2026-03-01",
            }
        },
        "register-batch": {
            "invoices": [
                {
                    "debtor": 4,
                    "invoice_number": "A-2",
                    "face_value": 100,
                    "currency": "USD",
                    "issue_date": "2026-01-01",
                    "due_date": "2026-03-01",
                }
            ]
        },
        "confirm": {"id": 1, "fingerprint": "0x" + "ab" * 32},
        "dispute": {"id": 1, "reason": "quality-defect"},
        "resolve-dispute": {"id": 1, "resolution": "WITHDRAWN"},
        "assign": {"id": 1, "factor": 6, "advance": 10, "recourse": True, "terms_hash": "terms v1"},
        "split": {"id": 1, "amounts": [1, 2]},
        "report-payment": {"id": 1, "paid_to": 6, "amount": 5},
        "acknowledge-payment": {"claim_id": 1},
        "reject-payment": {"claim_id": 1},
        "record-payment": {"id": 1, "amount": 5},
        "admit-participant": {
            "registration_number": "91440300MA5XXXXX01",
            "roles": ["creditor", "factor"],
            "first_key": "0x" + "11" * 20,
        },
        "grant-entity-role": {"entity": 1, "role": "factor"},
        "revoke-entity-role": {"entity": 1, "role": "factor"},
        "suspend-participant": {"entity": 1},
        "reinstate-participant": {"entity": 1},
        "add-key": {"entity": 1, "key": "0x" + "22" * 20},
        "revoke-key": {"key": "0x" + "22" * 20},
    }
    for action, function in ACTIONS.items():
        call = build_call(
            action,
            samples.get(action, {"id": 1} if action in ("cancel", "buy-back", "declare-default", "write-off") else {}),
        )
        assert call.function == function
        assert call.encode(registry)[:4] == registry.abi.encode_call(function, call.args)[:4]
