"""Sign-in (EIP-4361) and sessions through HTTP: every way a sign-in or a token can be wrong is refused
with 401 and a stable ``auth.*`` code, and a refusal changes nothing it should not.

Message defects are a table of edits applied to the server's own challenge, each re-signed by the
right key, so that the edit is the only thing wrong; signature defects keep the message intact.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

import registry.auth
from api.deps import Services
from registry.auth import NONCE_TTL, SESSION_TTL
from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from registry.siwe import SECP256K1_N, new_nonce
from tests.api.conftest import Login
from tests.api.test_authz_matrix import chain_snapshot, running_api
from tests.conftest import ChainState

# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def api(
    _base_registry: tuple[RegistryClient, Consortium], chain_state: ChainState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One API for the module (the defects need no fresh mirror each); the chain is restored after."""
    with chain_snapshot(chain_state), running_api(_base_registry[0], tmp_path_factory.mktemp("auth")) as (client, _):
        yield client


@pytest.fixture
def chain_registry(_base_registry: tuple[RegistryClient, Consortium]) -> RegistryClient:
    return _base_registry[0]


# ---------------------------------------------------------------------------------------- helpers


def challenge(api: TestClient, account: LocalAccount) -> str:
    answer = api.post("/auth/challenge", json={"address": account.address})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["message"])


def sign(account: LocalAccount, text: str) -> bytes:
    return bytes(account.sign_message(encode_defunct(text=text)).signature)


def session(api: TestClient, message: str, signature: bytes | str) -> Any:
    hex_signature = signature if isinstance(signature, str) else "0x" + signature.hex()
    return api.post("/auth/session", json={"message": message, "signature": hex_signature})


def assert_refused(answer: Any, code: str, status: int = 401) -> None:
    assert (answer.status_code, answer.json().get("code")) == (status, code), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    if status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "token" not in answer.json()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _set_line(text: str, key: str, value: str) -> str:
    replaced, count = re.subn(rf"^{re.escape(key)}: .*$", f"{key}: {value}", text, flags=re.MULTILINE)
    assert count == 1, f"no {key} line in the challenge"
    return replaced


def _swap_lines(text: str, first: str, second: str) -> str:
    lines = text.split("\n")
    i = next(n for n, line in enumerate(lines) if line.startswith(f"{first}: "))
    j = next(n for n, line in enumerate(lines) if line.startswith(f"{second}: "))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _line(text: str, key: str) -> str:
    found = re.search(rf"^{re.escape(key)}: (.*)$", text, flags=re.MULTILINE)
    assert found is not None, f"no {key} line in the challenge"
    return found[1]


def _insert_after(text: str, key: str, line: str) -> str:
    lines = text.split("\n")
    index = next(i for i, existing in enumerate(lines) if existing.startswith(f"{key}: "))
    return "\n".join([*lines[: index + 1], line, *lines[index + 1 :]])


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------- message defects


@dataclass(frozen=True)
class Edit:
    name: str
    apply: Callable[[str, LocalAccount, LocalAccount], str]  # (message, signer, someone else) -> message
    code: str


EDITS: tuple[Edit, ...] = (
    Edit("wrong_domain", lambda m, a, b: m.replace(m.split(" ", 1)[0], "evil.example", 1), "auth.wrong_domain"),
    Edit("wrong_domain_with_port", lambda m, a, b: m.replace(m.split(" ", 1)[0], m.split(" ", 1)[0] + ":8443", 1),
         "auth.wrong_domain"),
    Edit("wrong_uri", lambda m, a, b: _set_line(m, "URI", "https://registry.evil.example"), "auth.wrong_uri"),
    Edit("wrong_uri_path", lambda m, a, b: _set_line(m, "URI", _line(m, "URI") + "/other"),
         "auth.wrong_uri"),
    Edit("wrong_chain_id", lambda m, a, b: _set_line(m, "Chain ID", "1"), "auth.wrong_chain"),
    Edit("another_chain_id", lambda m, a, b: _set_line(m, "Chain ID", str(int(_line(m, "Chain ID")) + 1)),
         "auth.wrong_chain"),
    Edit("expired_message", lambda m, a, b: _set_line(
        _set_line(m, "Issued At", _iso(_now() - timedelta(minutes=10))), "Expiration Time",
        _iso(_now() - timedelta(seconds=1))), "auth.expired"),
    Edit("issued_in_the_future", lambda m, a, b: _set_line(
        _set_line(m, "Issued At", _iso(_now() + timedelta(hours=1))), "Expiration Time",
        _iso(_now() + timedelta(hours=2))), "auth.not_yet_valid"),
    Edit("not_valid_before_later", lambda m, a, b: _insert_after(
        m, "Expiration Time", f"Not Before: {_iso(_now() + timedelta(hours=1))}"), "auth.not_yet_valid"),
    Edit("nonce_never_issued", lambda m, a, b: _set_line(m, "Nonce", new_nonce()), "auth.bad_nonce"),
    Edit("version_2", lambda m, a, b: _set_line(m, "Version", "2"), "auth.malformed"),
    Edit("address_not_checksummed", lambda m, a, b: m.replace(a.address, a.address.lower()), "auth.malformed"),
    Edit("lines_out_of_order", lambda m, a, b: _swap_lines(m, "Chain ID", "Nonce"), "auth.malformed"),
    Edit("not_a_siwe_message", lambda m, a, b: "please let me in", "auth.malformed"),
    Edit("someone_elses_address", lambda m, a, b: m.replace(a.address, b.address), "auth.wrong_signer"),
)  # fmt: skip


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.name)
def test_a_sign_in_message_with_a_defect_is_refused_even_when_properly_signed(
    api: TestClient, consortium: Consortium, edit: Edit
) -> None:
    signer, someone_else = consortium.factors[0].account, consortium.debtors[0].account
    message = edit.apply(challenge(api, signer), signer, someone_else)
    assert_refused(session(api, message, sign(signer, message)), edit.code)


# ---------------------------------------------------------------------------------------- signature defects


def _high_s(signature: bytes) -> bytes:
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


@dataclass(frozen=True)
class Forgery:
    name: str
    # (message, signer, someone else) -> (message sent, signature sent)
    make: Callable[[str, LocalAccount, LocalAccount], tuple[str, bytes | str]]
    status: int
    code: str


FORGERIES: tuple[Forgery, ...] = (
    Forgery("another_key_signs", lambda m, a, b: (m, sign(b, m)), 401, "auth.wrong_signer"),
    Forgery("text_tampered_after_signing",
            lambda m, a, b: (m.replace("Sign in to the receivables registry.", "Sign in as admin."), sign(a, m)),
            401, "auth.wrong_signer"),
    Forgery("nonce_tampered_after_signing", lambda m, a, b: (_set_line(m, "Nonce", new_nonce()), sign(a, m)),
            401, "auth.wrong_signer"),
    Forgery("high_s_signature", lambda m, a, b: (m, _high_s(sign(a, m))), 401, "auth.bad_signature"),
    Forgery("zero_s_signature", lambda m, a, b: (m, sign(a, m)[:32] + bytes(32) + sign(a, m)[64:]),
            401, "auth.bad_signature"),
    Forgery("truncated_signature", lambda m, a, b: (m, sign(a, m)[:64]), 401, "auth.bad_signature"),
    Forgery("signature_with_a_trailing_byte", lambda m, a, b: (m, sign(a, m) + b"\x00"), 401, "auth.bad_signature"),
    Forgery("empty_signature", lambda m, a, b: (m, "0x"), 422, "validation_error"),
    Forgery("invalid_recovery_id", lambda m, a, b: (m, sign(a, m)[:64] + bytes([99])), 401, "auth.bad_signature"),
    Forgery("flipped_recovery_id", lambda m, a, b: (m, sign(a, m)[:64] + bytes([55 - sign(a, m)[64]])),
            401, "auth.wrong_signer"),
    Forgery("signature_not_hex", lambda m, a, b: (m, "0x" + "zz" * 65), 422, "validation_error"),
    Forgery("signature_without_0x", lambda m, a, b: (m, sign(a, m).hex()), 422, "validation_error"),
)  # fmt: skip


@pytest.mark.parametrize("forgery", FORGERIES, ids=lambda f: f.name)
def test_a_sign_in_with_a_bad_signature_is_refused(api: TestClient, consortium: Consortium, forgery: Forgery) -> None:
    signer, someone_else = consortium.factors[0].account, consortium.debtors[0].account
    message, signature = forgery.make(challenge(api, signer), signer, someone_else)
    assert_refused(session(api, message, signature), forgery.code, forgery.status)


def test_a_refused_sign_in_does_not_burn_the_nonce(api: TestClient, consortium: Consortium) -> None:
    """Otherwise anyone who sees a challenge could deny the user its sign-in."""
    signer, someone_else = consortium.factors[0].account, consortium.debtors[0].account
    message = challenge(api, signer)
    assert_refused(session(api, message, sign(someone_else, message)), "auth.wrong_signer")
    assert session(api, message, sign(signer, message)).status_code == 200


# ---------------------------------------------------------------------------------------- nonces


def test_a_signed_sign_in_message_cannot_be_used_twice(api: TestClient, consortium: Consortium) -> None:
    signer = consortium.creditors[0].account
    message = challenge(api, signer)
    signature = sign(signer, message)
    assert session(api, message, signature).status_code == 200
    assert_refused(session(api, message, signature), "auth.bad_nonce")


def test_a_signed_sign_in_message_cannot_be_used_twice_even_concurrently(
    api: TestClient, consortium: Consortium
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    signer = consortium.creditors[0].account
    message = challenge(api, signer)
    signature = sign(signer, message)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: session(api, message, signature), range(16)))
    assert sorted(a.status_code for a in answers) == [200] + [401] * 15
    assert {a.json()["code"] for a in answers if a.status_code == 401} == {"auth.bad_nonce"}


def test_a_sign_in_after_the_nonce_expired_is_refused(
    api: TestClient, consortium: Consortium, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message itself is still valid (its own expiry is checked separately, see EDITS); the nonce
    the server issued for it is past its time to live."""
    signer = consortium.creditors[0].account
    message = challenge(api, signer)
    later = time.time() + NONCE_TTL + 1
    monkeypatch.setattr(registry.auth, "time", types.SimpleNamespace(time=lambda: later))
    assert_refused(session(api, message, sign(signer, message)), "auth.bad_nonce")


def test_a_nonce_is_single_use_across_addresses(api: TestClient, consortium: Consortium) -> None:
    """A challenge's nonce, once consumed by one key, cannot serve another key's sign-in."""
    first, second = consortium.creditors[0].account, consortium.creditors[1].account
    message = challenge(api, first)
    assert session(api, message, sign(first, message)).status_code == 200
    reused = message.replace(first.address, second.address)
    assert_refused(session(api, reused, sign(second, reused)), "auth.bad_nonce")


def test_a_challenge_for_an_address_that_is_not_checksummed_is_refused(api: TestClient, consortium: Consortium) -> None:
    answer = api.post("/auth/challenge", json={"address": consortium.creditors[0].address.lower()})
    assert_refused(answer, "validation_error", 422)


def test_a_key_of_no_participant_cannot_sign_in(api: TestClient) -> None:
    stranger: LocalAccount = Account.create()
    message = challenge(api, stranger)
    assert_refused(session(api, message, sign(stranger, message)), "auth.unknown_key")


# ---------------------------------------------------------------------------------------- sessions


def _services(api: TestClient) -> Services:
    services: Services = api.app.state.services  # type: ignore[attr-defined]
    return services


def _wait_indexed(api: TestClient, block: int) -> None:
    assert _services(api).relayer.wait_indexed(block, 20), f"the mirror did not reach block {block}"


def _mint(secret: bytes, body: dict[str, Any]) -> str:
    """A token in the service's format (base64url JSON payload, '.', base64url HMAC-SHA256)."""
    payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).rstrip(b"=")
    return (payload + b"." + mac).decode()


def _payload(token: str) -> dict[str, Any]:
    payload = token.split(".", 1)[0].encode()
    body: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    return body


def test_a_revoked_keys_existing_session_is_refused_at_once(
    api: TestClient, login: Login, chain_registry: RegistryClient, consortium: Consortium
) -> None:
    registry = chain_registry
    creditor = consortium.creditors[0]
    second: LocalAccount = Account.create()
    _wait_indexed(api, registry.add_key(consortium.admin, creditor.entity, second.address).block_number)
    headers = login(second)
    assert api.get("/auth/me", headers=headers).json()["entity"] == creditor.entity
    _wait_indexed(api, registry.revoke_key(consortium.admin, second.address).block_number)
    for url in ("/auth/me", "/receivables"):
        assert_refused(api.get(url, headers=headers), "auth.key_revoked")
    assert_refused(api.post("/checks", json={"invoice_key": "0x" + "11" * 32}, headers=headers), "auth.key_revoked")
    # The entity's other key is unaffected.
    assert api.get("/auth/me", headers=login(creditor.account)).status_code == 200


def test_an_expired_session_is_refused(
    api: TestClient, login: Login, consortium: Consortium, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = login(consortium.auditors[0].account)
    assert api.get("/auth/me", headers=headers).status_code == 200
    later = time.time() + SESSION_TTL + 1
    monkeypatch.setattr(registry.auth, "time", types.SimpleNamespace(time=lambda: later))
    assert_refused(api.get("/auth/me", headers=headers), "auth.expired_token")


def _forged_tokens(real: str, secret: bytes, victim: str) -> dict[str, str]:
    body = _payload(real)
    now = int(time.time())
    payload, mac = real.split(".", 1)
    swapped = base64.urlsafe_b64encode(json.dumps({**body, "sub": victim}).encode()).rstrip(b"=").decode()
    return {
        "signed_with_another_secret": _mint(b"not-the-secret", {**body, "sub": victim}),
        "payload_swapped_mac_kept": f"{swapped}.{mac}",
        "mac_removed": f"{payload}.",
        "no_mac_at_all": payload,
        "mac_of_another_token": f"{payload}.{_mint(secret, {**body, 'sid': 'x'}).split('.', 1)[1]}",
        "unsigned_jwt": "eyJhbGciOiJub25lIn0." + payload + ".",
        "expired_but_properly_signed": _mint(secret, {**body, "iat": now - 7200, "exp": now - 3600}),
        "garbage": "not a token at all",
        "truncated": real[:-3],
    }


FORGED = (
    "signed_with_another_secret",
    "payload_swapped_mac_kept",
    "mac_removed",
    "no_mac_at_all",
    "mac_of_another_token",
    "unsigned_jwt",
    "expired_but_properly_signed",
    "garbage",
    "truncated",
)


@pytest.mark.parametrize("forgery", FORGED)
@pytest.mark.parametrize("carrier", ["header", "cookie"])
def test_a_forged_or_expired_token_is_refused(
    api: TestClient, login: Login, consortium: Consortium, forgery: str, carrier: str
) -> None:
    real = login(consortium.factors[0].account)["Authorization"].removeprefix("Bearer ")
    token = _forged_tokens(real, _services(api).auth.secret, consortium.auditors[0].address)[forgery]
    if carrier == "header":
        answer = api.get("/receivables", headers={"Authorization": f"Bearer {token}"})
    else:
        api.cookies.set("registry_session", token)
        try:
            answer = api.get("/receivables")
        finally:
            api.cookies.clear()
    expected = "auth.expired_token" if forgery == "expired_but_properly_signed" else "auth.bad_token"
    assert_refused(answer, expected)


@pytest.mark.parametrize("authorization", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"], ids=repr)
def test_a_request_without_a_bearer_token_is_refused(api: TestClient, authorization: str) -> None:
    assert_refused(api.get("/auth/me", headers={"Authorization": authorization}), "auth.missing_token")
