"""Sign-in with Ethereum: a valid message verifies; every tampering is refused with a stable reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from registry.siwe import SECP256K1_N, SignInError, SiweMessage, new_nonce, parse, verify

KEY = Account.create()
OTHER = Account.create()
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EXPECTED = {"domain": "registry.example", "uri": "https://registry.example/login", "chain_id": 31337}


def _message(**changes: object) -> SiweMessage:
    base = SiweMessage(
        domain="registry.example",
        address=KEY.address,
        statement="Sign in to the receivables registry.",
        uri="https://registry.example/login",
        chain_id=31337,
        nonce=new_nonce(),
        issued_at=NOW - timedelta(seconds=5),
        expiration_time=NOW + timedelta(minutes=5),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _sign(text: str, account: object = KEY) -> bytes:
    return bytes(account.sign_message(encode_defunct(text=text)).signature)  # type: ignore[attr-defined]


def test_valid_message_round_trips_and_verifies() -> None:
    message = _message(resources=("https://registry.example/terms",), request_id="abc")
    text = message.text()
    assert parse(text) == message
    assert verify(text, _sign(text), now=NOW, **EXPECTED) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"domain": "evil.example"}, "wrong_domain"),
        ({"uri": "https://evil.example/login"}, "wrong_uri"),
        ({"chain_id": 1}, "wrong_chain"),
        ({"expiration_time": NOW - timedelta(seconds=1)}, "expired"),
        ({"issued_at": NOW + timedelta(hours=1)}, "not_yet_valid"),
        ({"not_before": NOW + timedelta(hours=1)}, "not_yet_valid"),
    ],
)
def test_message_for_another_context_is_refused(changes: dict[str, object], reason: str) -> None:
    text = _message(**changes).text()
    with pytest.raises(SignInError) as excinfo:
        verify(text, _sign(text), now=NOW, **EXPECTED)  # type: ignore[arg-type]
    assert excinfo.value.reason == reason


def test_signature_by_another_key_is_refused() -> None:
    text = _message().text()
    with pytest.raises(SignInError) as excinfo:
        verify(text, _sign(text, OTHER), now=NOW, **EXPECTED)  # type: ignore[arg-type]
    assert excinfo.value.reason == "wrong_signer"


def test_tampered_text_is_refused() -> None:
    text = _message().text()
    signature = _sign(text)
    tampered = text.replace("Sign in to", "Sign away")
    with pytest.raises(SignInError) as excinfo:
        verify(tampered, signature, now=NOW, **EXPECTED)  # type: ignore[arg-type]
    assert excinfo.value.reason == "wrong_signer"


def test_high_s_signature_is_refused() -> None:
    text = _message().text()
    sig = _sign(text)
    s = int.from_bytes(sig[32:64], "big")
    v = sig[64]
    flipped = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v if v in (27, 28) else v ^ 1])
    with pytest.raises(SignInError) as excinfo:
        verify(text, flipped, now=NOW, **EXPECTED)  # type: ignore[arg-type]
    assert excinfo.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(" wants you to sign in", " wants to"),
        lambda t: t.replace(KEY.address, KEY.address.lower()),
        lambda t: t.replace("Version: 1", "Version: 2"),
        lambda t: t.replace("Chain ID: 31337", "Chain ID: x"),
        lambda t: "\n".join(line for line in t.split("\n") if not line.startswith("Nonce")),
        lambda t: "\n".join(line for line in t.split("\n") if not line.startswith("Expiration")),
        lambda t: t.replace("URI:", "Uri:"),
        lambda t: "",
    ],
)
def test_malformed_messages_are_refused(mangle: object) -> None:
    text = mangle(_message().text())  # type: ignore[operator]
    with pytest.raises(SignInError) as excinfo:
        verify(text, _sign(text), now=NOW, **EXPECTED)  # type: ignore[arg-type]
    assert excinfo.value.reason == "malformed"
