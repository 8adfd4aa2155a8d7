"""Relayed requests (ERC-2771, EIP-712) through HTTP: the API relays what the user signed, once, and
refuses replays, requests for another chain, forwarder or contract, expired, tampered and malleable
signatures, value transfers, and requests signed by anyone but the signed-in principal.

Every refusal is a table row: how the debtor's valid ``confirm`` request is spoiled, and the answer.
After each refusal nothing was submitted: the same block, the same forwarder nonces, no relay record.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.deps import Services
from registry.chain.contract import RegistryClient, SignedRequest
from registry.demo import STRANGER_INDEX, Consortium, Member
from registry.domain import DisputeReason
from registry.invoice import Invoice
from registry.keys import anvil_account
from registry.store.models import RelayedRequest, table_of
from registry.types import ReceivableId
from tests.api.test_authz_matrix import chain_snapshot, request_body, running_api
from tests.conftest import ChainState
from tests.contracts.test_signed_requests import resigned, with_high_s

# ---------------------------------------------------------------------------------------- the module's API


@dataclass
class Relay:
    api: TestClient
    services: Services
    registry: RegistryClient
    consortium: Consortium
    chain_state: ChainState
    headers: dict[str, dict[str, str]]

    @property
    def creditor(self) -> Member:
        return self.consortium.creditors[0]

    @property
    def debtor(self) -> Member:
        return self.consortium.debtors[0]

    def deadline(self, seconds: int = 600) -> int:
        return max(int(time.time()), self.chain_state.now()) + seconds

    def receivable(self) -> tuple[ReceivableId, Invoice]:
        """A fresh registration awaiting the debtor's confirmation."""
        now = self.chain_state.now()
        invoice = Invoice.parse(
            debtor=self.debtor.entity,
            invoice_number=f"SIG-{time.monotonic_ns()}",
            face_value="88,000.00",
            currency="CNY",
            issue_date=now - 86_400,
            due_date=now + 60 * 86_400,
        )
        return self.registry.register(self.creditor.account, invoice), invoice

    def confirmation(self, **sign_options: Any) -> SignedRequest:
        """The debtor's valid request to confirm a fresh registration."""
        rid, invoice = self.receivable()
        options = {"deadline": self.deadline(), **sign_options}
        return self.registry.sign_request(self.debtor.account, "confirm", rid, invoice.fingerprint, **options)

    def post(self, action: str, body: dict[str, Any], as_: str = "debtor") -> Any:
        return self.api.post(f"/actions/{action}", json=body, headers=self.headers[as_])

    def relayed(self) -> int:
        with self.services.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table_of(RelayedRequest))).scalar_one())

    def tally(self) -> tuple[int, int, int, int]:
        return (
            self.registry.chain.block_number(),
            self.registry.forwarder_nonce(self.debtor.address),
            self.registry.forwarder_nonce(self.creditor.address),
            self.relayed(),
        )


@pytest.fixture(scope="module")
def relay(
    _base_registry: tuple[RegistryClient, Consortium], chain_state: ChainState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relay]:
    registry, consortium = _base_registry
    with (
        chain_snapshot(chain_state),
        running_api(registry, tmp_path_factory.mktemp("relay")) as (client, services),
    ):
        from eth_account.messages import encode_defunct

        headers: dict[str, dict[str, str]] = {}
        for kind, member in (("debtor", consortium.debtors[0]), ("creditor", consortium.creditors[0])):
            message = client.post("/auth/challenge", json={"address": member.address}).json()["message"]
            signature = bytes(member.account.sign_message(encode_defunct(text=message)).signature)
            answer = client.post("/auth/session", json={"message": message, "signature": "0x" + signature.hex()})
            headers[kind] = {"Authorization": f"Bearer {answer.json()['token']}"}
        yield Relay(client, services, registry, consortium, chain_state, headers)


def assert_refused(answer: Any, status: int, code: str) -> None:
    assert (answer.status_code, answer.json().get("code")) == (status, code), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


# ---------------------------------------------------------------------------------------- the refusals


@dataclass(frozen=True)
class Spoil:
    name: str
    make: Callable[[Relay, SignedRequest], dict[str, Any]]  # (relay, valid request) -> the body posted
    status: int
    code: str
    action: str = "confirm"
    as_: str = "debtor"


def _resign(r: Relay, request: SignedRequest, signer: LocalAccount | None = None, **domain: Any) -> SignedRequest:
    return resigned(r.registry, signer or r.debtor.account, request, **domain)


def _changed(request: SignedRequest, **fields: Any) -> dict[str, Any]:
    """``request`` with fields changed after signing (the signature kept)."""
    return request_body(dataclasses.replace(request, **fields))


def _changed_and_resigned(r: Relay, request: SignedRequest, **fields: Any) -> dict[str, Any]:
    """``request`` with fields changed and then properly signed by the debtor."""
    return request_body(_resign(r, dataclasses.replace(request, **fields)))


def _other_confirmation_data(r: Relay, request: SignedRequest) -> bytes:
    """confirm(id, fingerprint) with another fingerprint (the last static word of the calldata)."""
    return request.data[:-32] + keccak(text="another fingerprint")


def _chain_id(r: Relay) -> int:
    return r.registry.chain.chain_id


def _raw(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**body, **fields}


def _without_0x_sig(request: SignedRequest) -> dict[str, Any]:
    return _raw(request_body(request), signature=request.signature.hex())


A_CONTRACT_ELSEWHERE = to_checksum_address("0x" + "ab" * 20)

SPOILS: tuple[Spoil, ...] = (
    # ------------------------------------------------------------ signed for somewhere else
    Spoil("signed_for_chain_id_1", lambda r, q: request_body(_resign(r, q, chainId=1)), 422, "relay.bad_signature"),
    Spoil("signed_for_the_next_chain_id", lambda r, q: request_body(_resign(r, q, chainId=_chain_id(r) + 1)),
          422, "relay.bad_signature"),
    Spoil("signed_for_another_forwarder",
          lambda r, q: request_body(_resign(r, q, verifyingContract=A_CONTRACT_ELSEWHERE)),
          422, "relay.bad_signature"),
    Spoil("signed_under_another_domain_name", lambda r, q: request_body(_resign(r, q, name="SomeOtherForwarder")),
          422, "relay.bad_signature"),
    Spoil("signed_for_another_domain_version", lambda r, q: request_body(_resign(r, q, version="2")),
          422, "relay.bad_signature"),
    Spoil("signed_for_another_target_contract",
          lambda r, q: _changed_and_resigned(r, q, to=A_CONTRACT_ELSEWHERE), 422, "relay.wrong_target"),
    Spoil("signed_for_the_forwarder_itself",
          lambda r, q: _changed_and_resigned(r, q, to=r.registry.forwarder_address), 422, "relay.wrong_target"),
    Spoil("signed_with_value", lambda r, q: _changed_and_resigned(r, q, value=1), 422, "relay.value_not_allowed"),
    # ------------------------------------------------------------ time
    Spoil("deadline_passed", lambda r, q: _changed_and_resigned(r, q, deadline=int(time.time()) - 1),
          422, "relay.expired"),
    Spoil("deadline_zero", lambda r, q: _changed_and_resigned(r, q, deadline=0), 422, "relay.expired"),
    # ------------------------------------------------------------ changed after signing
    Spoil("data_changed", lambda r, q: _changed(q, data=_other_confirmation_data(r, q)), 422, "relay.bad_signature"),
    Spoil("data_extended", lambda r, q: _changed(q, data=q.data + bytes(32)), 422, "relay.bad_signature"),
    Spoil("gas_raised", lambda r, q: _changed(q, gas=q.gas + 1), 422, "relay.bad_signature"),
    Spoil("gas_lowered", lambda r, q: _changed(q, gas=q.gas // 2), 422, "relay.bad_signature"),
    Spoil("deadline_extended", lambda r, q: _changed(q, deadline=q.deadline + 3600), 422, "relay.bad_signature"),
    Spoil("target_changed", lambda r, q: _changed(q, to=A_CONTRACT_ELSEWHERE), 422, "relay.wrong_target"),
    Spoil("value_added", lambda r, q: _changed(q, value=10**18), 422, "relay.value_not_allowed"),
    Spoil("nonce_changed", lambda r, q: _changed(q, nonce=q.nonce + 1), 409, "relay.bad_nonce"),
    Spoil("signer_swapped_for_the_caller",
          lambda r, q: _changed(q, sender=r.creditor.address, nonce=r.registry.forwarder_nonce(r.creditor.address)),
          422, "relay.bad_signature", as_="creditor"),
    # ------------------------------------------------------------ the signature itself
    Spoil("high_s_signature", lambda r, q: _changed(q, signature=with_high_s(q.signature)), 422, "relay.bad_signature"),
    Spoil("recovery_id_flipped", lambda r, q: _changed(q, signature=q.signature[:64] + bytes([55 - q.signature[64]])),
          422, "relay.bad_signature"),
    Spoil("recovery_id_not_27_or_28", lambda r, q: _changed(q, signature=q.signature[:64] + bytes([99])),
          422, "relay.bad_signature"),
    Spoil("zero_signature", lambda r, q: _changed(q, signature=bytes(65)), 422, "relay.bad_signature"),
    Spoil("signature_by_another_key", lambda r, q: request_body(_resign(r, q, signer=r.creditor.account)),
          422, "relay.bad_signature"),
    Spoil("signature_of_another_request", lambda r, q: _changed(q, signature=r.confirmation().signature),
          422, "relay.bad_signature"),
    # ------------------------------------------------------------ what is relayed where, by whom
    Spoil("posted_to_another_actions_endpoint", lambda r, q: request_body(q), 422, "relay.wrong_function",
          action="cancel"),
    Spoil("calls_no_function_of_the_registry",
          lambda r, q: _changed_and_resigned(r, q, data=bytes.fromhex("deadbeef") + bytes(32)), 422,
          "relay.unknown_function"),
    Spoil("calls_nothing", lambda r, q: _changed_and_resigned(r, q, data=b""), 422, "relay.unknown_function"),
    Spoil("valid_but_posted_by_another_principal", lambda r, q: request_body(q), 403, "forbidden", as_="creditor"),
    Spoil("signer_swapped_for_someone_else", lambda r, q: _changed(q, sender=r.creditor.address), 403, "forbidden"),
    # ------------------------------------------------------------ not even well-formed
    Spoil("signature_too_short", lambda r, q: _raw(request_body(q), signature="0x" + q.signature[:64].hex()),
          422, "validation_error"),
    Spoil("signature_without_0x", lambda r, q: _without_0x_sig(q), 422, "validation_error"),
    Spoil("from_not_an_address", lambda r, q: _raw(request_body(q), **{"from": "0x1234"}), 422, "validation_error"),
    Spoil("gas_zero", lambda r, q: _raw(request_body(q), gas=0), 422, "validation_error"),
    Spoil("nonce_negative", lambda r, q: _raw(request_body(q), nonce=-1), 422, "validation_error"),
    Spoil("nonce_as_text", lambda r, q: _raw(request_body(q), nonce=str(q.nonce)), 422, "validation_error"),
    Spoil("an_extra_field", lambda r, q: _raw(request_body(q), relayer_fee=1), 422, "validation_error"),
    Spoil("a_field_missing", lambda r, q: {k: v for k, v in request_body(q).items() if k != "deadline"},
          422, "validation_error"),
)  # fmt: skip


@pytest.mark.parametrize("spoil", SPOILS, ids=lambda s: s.name)
def test_a_spoiled_request_is_refused_and_nothing_is_submitted(relay: Relay, spoil: Spoil) -> None:
    request = relay.confirmation()
    body = spoil.make(relay, request)
    before = relay.tally()
    assert_refused(relay.post(spoil.action, body, as_=spoil.as_), spoil.status, spoil.code)
    assert relay.tally() == before, "a refused request was submitted"
    # The valid request itself still goes through: the refusal consumed nothing.
    answer = relay.post("confirm", request_body(request))
    assert answer.status_code == 200, answer.text


def test_the_valid_request_of_the_table_goes_through(relay: Relay) -> None:
    """Guards the table: unspoiled, the request is relayed."""
    request = relay.confirmation()
    before = relay.tally()
    answer = relay.post("confirm", request_body(request))
    assert answer.status_code == 200, answer.text
    assert answer.json()["duplicate"] is False and answer.json()["receivables"][0]["status"] == "confirmed"
    assert relay.registry.forwarder_nonce(relay.debtor.address) == before[1] + 1


# ---------------------------------------------------------------------------------------- replays


def test_an_identical_request_replayed_is_answered_as_a_duplicate_and_not_submitted_again(relay: Relay) -> None:
    request = relay.confirmation()
    first = relay.post("confirm", request_body(request))
    assert first.status_code == 200, first.text
    before = relay.tally()
    for _ in range(3):
        again = relay.post("confirm", request_body(request))
        assert again.status_code == 200, again.text
        assert again.json()["duplicate"] is True
        assert (again.json()["tx_hash"], again.json()["digest"]) == (first.json()["tx_hash"], first.json()["digest"])
    assert relay.tally() == before


def test_identical_requests_posted_at_once_are_submitted_once(relay: Relay) -> None:
    request = relay.confirmation()
    nonce = relay.registry.forwarder_nonce(relay.debtor.address)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: relay.post("confirm", request_body(request)), range(12)))
    outcomes = sorted((a.status_code, a.json().get("code"), a.json().get("duplicate")) for a in answers)
    assert all(
        a.status_code == 200 or (a.status_code, a.json()["code"]) == (409, "relay.in_flight") for a in answers
    ), outcomes
    winners = [a for a in answers if a.status_code == 200 and a.json()["duplicate"] is False]
    assert len(winners) == 1, [a.text for a in answers]
    assert {a.json()["tx_hash"] for a in answers if a.status_code == 200} == {winners[0].json()["tx_hash"]}
    assert relay.registry.forwarder_nonce(relay.debtor.address) == nonce + 1


def test_a_request_resigned_with_a_consumed_nonce_is_refused(relay: Relay) -> None:
    request = relay.confirmation()
    assert relay.post("confirm", request_body(request)).status_code == 200
    rid, _ = relay.receivable()
    stale = relay.registry.sign_request(
        relay.debtor.account,
        "dispute",
        rid,
        int(DisputeReason.QUALITY_DEFECT),
        nonce=request.nonce,
        deadline=relay.deadline(),
    )
    before = relay.tally()
    assert_refused(relay.post("dispute", request_body(stale)), 409, "relay.bad_nonce")
    assert relay.tally() == before


def test_a_request_from_the_future_nonce_is_refused(relay: Relay) -> None:
    ahead = relay.confirmation(nonce=relay.registry.forwarder_nonce(relay.debtor.address) + 1)
    before = relay.tally()
    assert_refused(relay.post("confirm", request_body(ahead)), 409, "relay.bad_nonce")
    assert relay.tally() == before


def test_a_malleated_copy_of_a_relayed_request_is_refused_not_answered_as_a_duplicate(relay: Relay) -> None:
    request = relay.confirmation()
    assert relay.post("confirm", request_body(request)).status_code == 200
    before = relay.tally()
    copy = dataclasses.replace(request, signature=with_high_s(request.signature))
    assert_refused(relay.post("confirm", request_body(copy)), 422, "relay.bad_signature")
    assert relay.tally() == before


def test_a_request_relayed_by_someone_else_cannot_be_relayed_again_through_the_api(relay: Relay) -> None:
    request = relay.confirmation()
    elsewhere = anvil_account(STRANGER_INDEX)  # any account may call the forwarder; not the API's relayer
    relay.registry.relay(elsewhere, request)
    assert relay.services.relayer.wait_indexed(relay.registry.chain.block_number(), 20)
    before = relay.tally()
    assert_refused(relay.post("confirm", request_body(request)), 409, "relay.bad_nonce")
    assert relay.tally() == before
