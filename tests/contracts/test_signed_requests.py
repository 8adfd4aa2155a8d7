"""Signed requests relayed by the API (ERC-2771 forwarder, EIP-712): the registry sees the signer,
and a relayer can neither replay, redirect, alter nor forge a request."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from registry.chain import reverts
from registry.chain.contract import RegistryClient, SignedRequest
from registry.chain.reverts import ContractRevert, decode_revert
from registry.demo import Consortium, Member
from tests.conftest import ChainState, InvoiceFactory

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

FORWARD_REQUEST_TYPES = {
    "ForwardRequest": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "gas", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint48"},
        {"name": "data", "type": "bytes"},
    ]
}


def signable(request: SignedRequest, domain: dict[str, Any]) -> Any:
    """The EIP-712 message of ``request`` under ``domain`` (independent of the client's signer)."""
    message = {
        "from": request.sender,
        "to": request.to,
        "value": request.value,
        "gas": request.gas,
        "nonce": request.nonce,
        "deadline": request.deadline,
        "data": request.data,
    }
    return encode_typed_data(domain_data=domain, message_types=FORWARD_REQUEST_TYPES, message_data=message)


def resigned(
    registry: RegistryClient, signer: LocalAccount, request: SignedRequest, **domain_override: Any
) -> SignedRequest:
    """``request`` signed again by ``signer`` under the forwarder's domain with some fields replaced."""
    domain = {**registry.forwarder_domain(), **domain_override}
    signature = bytes(signer.sign_message(signable(request, domain)).signature)
    return dataclasses.replace(request, signature=signature)


def with_high_s(signature: bytes) -> bytes:
    """The same signature in its other, malleable form: s' = n - s, v flipped."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # 27 <-> 28


def inner_revert(registry: RegistryClient, relayer: LocalAccount, request: SignedRequest) -> ContractRevert:
    """The registry's own revert inside a relayed call (the forwarder reports only FailedCall)."""
    data = registry.forwarder_abi.encode_call("execute", (request.as_execute_arg(),))
    trace = registry.chain.rpc.call(
        "debug_traceCall",
        [
            {"from": relayer.address, "to": registry.forwarder_address, "data": "0x" + data.hex()},
            "latest",
            {"tracer": "callTracer"},
        ],
    )
    # The forwarder first asks the registry (STATICCALL) whether it trusts it, then CALLs it.
    (call,) = [c for c in trace.get("calls", []) if c["to"].lower() == registry.address.lower() and c["type"] == "CALL"]
    return decode_revert(bytes.fromhex(call["output"][2:]))


@pytest.fixture
def relayer(consortium: Consortium) -> LocalAccount:
    return consortium.relayer


@pytest.fixture
def signed_registration(registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory) -> SignedRequest:
    return registry.sign_request(creditor.account, "register", make_invoice().as_contract_input())


# ------------------------------------------------------------------ the valid path


def test_relayed_registration_is_recorded_for_the_signers_entity(
    registry: RegistryClient, creditor: Member, relayer: LocalAccount, signed_registration: SignedRequest
) -> None:
    assert registry.verify_request(signed_registration)
    result = registry.relay(relayer, signed_registration)

    registered = result.event("ReceivableRegistered").args
    assert registered["creditor"] == creditor.entity
    assert registry.get_receivable(registered["id"]).creditor == creditor.entity
    executed = result.event("ExecutedForwardRequest").args
    assert (executed["signer"].lower(), executed["success"]) == (creditor.address.lower(), True)
    assert registry.forwarder_nonce(creditor.address) == signed_registration.nonce + 1


def test_relayed_confirmation_by_the_debtor_of_record_is_accepted(
    registry: RegistryClient, creditor: Member, debtor: Member, relayer: LocalAccount, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    request = registry.sign_request(debtor.account, "confirm", rid, invoice.fingerprint)
    result = registry.relay(relayer, request)
    assert result.event("ReceivableConfirmed").args == {"id": rid, "debtor": debtor.entity}


# ------------------------------------------------------------------ what a relayer cannot do


def test_a_relayed_request_cannot_be_replayed(
    registry: RegistryClient, relayer: LocalAccount, signed_registration: SignedRequest
) -> None:
    registry.relay(relayer, signed_registration)
    assert not registry.verify_request(signed_registration)
    with pytest.raises(reverts.ERC2771ForwarderInvalidSigner):
        registry.relay(relayer, signed_registration)


def test_a_request_signed_for_another_chain_is_refused(
    registry: RegistryClient, creditor: Member, relayer: LocalAccount, signed_registration: SignedRequest
) -> None:
    other_chain = resigned(registry, creditor.account, signed_registration, chainId=registry.chain.chain_id + 1)
    assert not registry.verify_request(other_chain)
    with pytest.raises(reverts.ERC2771ForwarderInvalidSigner) as raised:
        registry.relay(relayer, other_chain)
    assert raised.value.signer.lower() != creditor.address.lower()


def test_a_request_signed_for_another_forwarder_is_refused(
    registry: RegistryClient, creditor: Member, relayer: LocalAccount, signed_registration: SignedRequest
) -> None:
    elsewhere = resigned(
        registry, creditor.account, signed_registration, verifyingContract=to_checksum_address("0x" + "ab" * 20)
    )
    with pytest.raises(reverts.ERC2771ForwarderInvalidSigner):
        registry.relay(relayer, elsewhere)


def test_a_request_signed_under_another_domain_name_is_refused(
    registry: RegistryClient, creditor: Member, relayer: LocalAccount, signed_registration: SignedRequest
) -> None:
    renamed = resigned(registry, creditor.account, signed_registration, name="SomeOtherForwarder")
    with pytest.raises(reverts.ERC2771ForwarderInvalidSigner):
        registry.relay(relayer, renamed)


def test_the_resigning_helper_reproduces_the_clients_signature(
    registry: RegistryClient, creditor: Member, signed_registration: SignedRequest
) -> None:
    """Guards the tests above: without an override, the helper signs exactly what the client signs."""
    assert resigned(registry, creditor.account, signed_registration) == signed_registration


def test_an_expired_request_is_refused(
    registry: RegistryClient,
    creditor: Member,
    relayer: LocalAccount,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
) -> None:
    deadline = chain_state.now() + 60
    request = registry.sign_request(creditor.account, "register", make_invoice().as_contract_input(), deadline=deadline)
    chain_state.advance(120)
    with pytest.raises(reverts.ERC2771ForwarderExpiredRequest) as raised:
        registry.relay(relayer, request)
    assert raised.value.deadline == deadline


@pytest.mark.parametrize("field", ["data", "gas", "sender", "deadline"])
def test_a_request_changed_after_signing_is_refused(
    registry: RegistryClient,
    creditor: Member,
    other_creditor: Member,
    relayer: LocalAccount,
    make_invoice: InvoiceFactory,
    signed_registration: SignedRequest,
    field: str,
) -> None:
    changes: dict[str, Any] = {
        "data": registry.abi.encode_call("register", (make_invoice(amount="1.00").as_contract_input(),)),
        "gas": signed_registration.gas + 1,
        "sender": other_creditor.address,
        "deadline": signed_registration.deadline + 1,
    }
    tampered = dataclasses.replace(signed_registration, **{field: changes[field]})
    assert not registry.verify_request(tampered)
    with pytest.raises(reverts.ERC2771ForwarderInvalidSigner):
        registry.relay(relayer, tampered)
    assert registry.forwarder_nonce(creditor.address) == 0 == registry.forwarder_nonce(other_creditor.address)


def test_a_high_s_signature_is_refused_although_eth_account_accepts_it(
    registry: RegistryClient, creditor: Member, relayer: LocalAccount, signed_registration: SignedRequest
) -> None:
    malleable = with_high_s(signed_registration.signature)
    message = signable(signed_registration, registry.forwarder_domain())
    assert Account.recover_message(message, signature=malleable) == creditor.address  # off-chain: accepted

    request = dataclasses.replace(signed_registration, signature=malleable)
    assert not registry.verify_request(request)
    with pytest.raises(reverts.ERC2771ForwarderInvalidSigner) as raised:
        registry.relay(relayer, request)
    assert int(raised.value.signer, 16) == 0  # ECDSA.tryRecover refuses to recover anyone
    registry.relay(relayer, signed_registration)  # the canonical signature still works


def test_a_relayer_acting_directly_is_just_an_unknown_key(
    registry: RegistryClient, relayer: LocalAccount, make_invoice: InvoiceFactory
) -> None:
    with pytest.raises(reverts.UnknownKey) as raised:
        registry.register(relayer, make_invoice())
    assert raised.value.key.lower() == relayer.address.lower()


def test_a_relayer_cannot_spoof_a_sender_by_appending_its_address_to_a_direct_call(
    registry: RegistryClient, creditor: Member, relayer: LocalAccount, make_invoice: InvoiceFactory
) -> None:
    """ERC-2771 reads the appended sender only from the trusted forwarder; anyone else is msg.sender."""
    data = registry.abi.encode_call("register", (make_invoice().as_contract_input(),))
    spoofed = data + bytes.fromhex(creditor.address[2:])
    with pytest.raises(reverts.UnknownKey) as raised:
        registry.chain.transact(relayer, registry.address, spoofed)
    assert raised.value.key.lower() == relayer.address.lower()


def test_the_registry_trusts_only_its_own_forwarder(registry: RegistryClient, relayer: LocalAccount) -> None:
    assert registry.trusted_forwarder() == registry.forwarder_address
    assert registry.is_trusted_forwarder(registry.forwarder_address)
    assert not registry.is_trusted_forwarder(relayer.address)


# ------------------------------------------------------------------ the registry sees the signer


def test_a_strangers_signed_request_is_refused_as_an_unknown_key(
    registry: RegistryClient, stranger: LocalAccount, relayer: LocalAccount, make_invoice: InvoiceFactory
) -> None:
    line = make_invoice().as_contract_input()
    # The client simulates before signing, as the signer: the registry already names the stranger.
    with pytest.raises(reverts.UnknownKey) as raised:
        registry.sign_request(stranger, "register", line)
    assert raised.value.key.lower() == stranger.address.lower()

    # Signed without simulation and relayed: valid as a request, refused by the registry, which
    # sees the signer and not the relayer. The forwarder reports the inner failure as FailedCall.
    request = registry.sign_request(stranger, "register", line, gas=300_000)
    assert registry.verify_request(request)
    inner = inner_revert(registry, relayer, request)
    assert isinstance(inner, reverts.UnknownKey)
    assert inner.key.lower() == stranger.address.lower()
    with pytest.raises(reverts.FailedCall):
        registry.relay(relayer, request)
    assert registry.forwarder_nonce(stranger.address) == 0


def test_a_relayed_request_from_a_suspended_entity_is_refused_for_that_entity(
    registry: RegistryClient,
    admin: LocalAccount,
    creditor: Member,
    relayer: LocalAccount,
    signed_registration: SignedRequest,
) -> None:
    registry.suspend_participant(admin, creditor.entity)
    inner = inner_revert(registry, relayer, signed_registration)
    assert isinstance(inner, reverts.EntityIsSuspended)
    assert inner.entityId == creditor.entity
    with pytest.raises(reverts.FailedCall):
        registry.relay(relayer, signed_registration)
