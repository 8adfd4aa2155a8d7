"""Sign-In with Ethereum (EIP-4361): build, parse and verify sign-in messages.

A strict implementation of the message format (the maintained ``siwe`` package pins web3 < 8 and
eth-account < 0.14, so it cannot share an environment with this project). Verification checks the
signature (low-s only: eth-account's recovery accepts high-s), the expected domain, URI, chain id,
version, the time window and the address's EIP-55 spelling; the caller checks and consumes the nonce
(single use) with its own store.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_checksum_address

from registry.errors import RegistryError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_CLOCK_SKEW = timedelta(seconds=60)

_HEADER = re.compile(r"^(?P<domain>[^\s/][^\s]*) wants you to sign in with your Ethereum account:$")
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")


class SignInError(RegistryError):
    """Raised when a sign-in message or its signature is not acceptable; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    statement: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime
    version: str = "1"
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default=())

    def text(self) -> str:
        lines = [
            f"{self.domain} wants you to sign in with your Ethereum account:",
            self.address,
            "",
            self.statement,
            "",
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {_iso(self.issued_at)}",
            f"Expiration Time: {_iso(self.expiration_time)}",
        ]
        if self.not_before is not None:
            lines.append(f"Not Before: {_iso(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines.append("Resources:")
            lines.extend(f"- {r}" for r in self.resources)
        return "\n".join(lines)


def new_nonce() -> str:
    return secrets.token_hex(16)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SignInError("malformed", f"{name} is not an RFC 3339 time: {value!r}") from None
    if moment.tzinfo is None:
        raise SignInError("malformed", f"{name} has no time zone: {value!r}")
    return moment


def parse(text: str) -> SiweMessage:
    """Parses an EIP-4361 message; raises :class:`SignInError` ("malformed") on any deviation."""
    lines = text.split("\n")
    if len(lines) < 11:
        raise SignInError("malformed", "not an EIP-4361 message (too short)")
    header = _HEADER.match(lines[0])
    if header is None:
        raise SignInError("malformed", "first line must be '<domain> wants you to sign in with your Ethereum account:'")
    address = lines[1]
    if not is_checksum_address(address):
        raise SignInError("malformed", "the address must be EIP-55 checksummed")
    if lines[2] != "" or lines[4] != "":
        raise SignInError("malformed", "a statement must stand between two empty lines")
    statement = lines[3]
    fields: dict[str, str] = {}
    resources: list[str] = []
    rest = lines[5:]
    i = 0
    order = ["URI", "Version", "Chain ID", "Nonce", "Issued At", "Expiration Time", "Not Before", "Request ID"]
    position = 0
    while i < len(rest):
        line = rest[i]
        if line == "Resources:":
            resources = [r[2:] for r in rest[i + 1 :] if r.startswith("- ")]
            if len(resources) != len(rest) - i - 1:
                raise SignInError("malformed", "resources must be lines of the form '- URI'")
            break
        key, sep, value = line.partition(": ")
        if not sep or key not in order[position:]:
            raise SignInError("malformed", f"unexpected or out-of-order line {line!r}")
        position = order.index(key) + 1
        fields[key] = value
        i += 1
    for required in ("URI", "Version", "Chain ID", "Nonce", "Issued At", "Expiration Time"):
        if required not in fields:
            raise SignInError("malformed", f"missing {required}")
    if fields["Version"] != "1":
        raise SignInError("malformed", "version must be 1")
    if not fields["Chain ID"].isdigit():
        raise SignInError("malformed", "chain id must be a decimal number")
    if not _NONCE.match(fields["Nonce"]):
        raise SignInError("malformed", "nonce must be at least 8 alphanumeric characters")
    return SiweMessage(
        domain=header["domain"],
        address=address,
        statement=statement,
        uri=fields["URI"],
        version=fields["Version"],
        chain_id=int(fields["Chain ID"]),
        nonce=fields["Nonce"],
        issued_at=_parse_time(fields["Issued At"], "Issued At"),
        expiration_time=_parse_time(fields["Expiration Time"], "Expiration Time"),
        not_before=_parse_time(fields["Not Before"], "Not Before") if "Not Before" in fields else None,
        request_id=fields.get("Request ID"),
        resources=tuple(resources),
    )


def recover_signer(text: str, signature: bytes) -> str:
    """The address that signed ``text`` (EIP-191 personal_sign); low-s signatures only."""
    if len(signature) != 65:
        raise SignInError("bad_signature", "a signature is 65 bytes (r, s, v)")
    s = int.from_bytes(signature[32:64], "big")
    if s == 0 or s > SECP256K1_N // 2:
        raise SignInError("bad_signature", "high-s (malleable) signatures are refused")
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=signature))
    except Exception as exc:  # eth-keys raises several types for garbage
        raise SignInError("bad_signature", f"the signature does not verify: {exc}") from None


def verify(
    text: str,
    signature: bytes,
    *,
    domain: str,
    uri: str,
    chain_id: int,
    now: datetime | None = None,
) -> SiweMessage:
    """Checks everything but the nonce; returns the parsed message. Reasons are stable codes:
    malformed, wrong_domain, wrong_uri, wrong_chain, expired, not_yet_valid, bad_signature, wrong_signer."""
    message = parse(text)
    now = now or datetime.now(UTC)
    if message.domain != domain:
        raise SignInError("wrong_domain", f"message is for {message.domain!r}, this service is {domain!r}")
    if message.uri != uri:
        raise SignInError("wrong_uri", f"message is for URI {message.uri!r}, expected {uri!r}")
    if message.chain_id != chain_id:
        raise SignInError("wrong_chain", f"message is for chain {message.chain_id}, this registry is on {chain_id}")
    if message.expiration_time <= now:
        raise SignInError("expired", "the sign-in message has expired")
    if message.issued_at > now + MAX_CLOCK_SKEW:
        raise SignInError("not_yet_valid", "the sign-in message is issued in the future")
    if message.not_before is not None and message.not_before > now + MAX_CLOCK_SKEW:
        raise SignInError("not_yet_valid", "the sign-in message is not valid yet")
    signer = recover_signer(text, signature)
    if signer != message.address:
        raise SignInError("wrong_signer", f"signed by {signer}, not by {message.address}")
    return message
