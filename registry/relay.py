"""Relaying users' signed requests (ERC-2771) to the registry, exactly once.

The relayer holds no user key and cannot alter a signed field: the forwarder checks the EIP-712
signature, the signer's nonce and the deadline on-chain. Before paying for a transaction the relayer
checks the same things off-chain (``verify``), simulates the call as the signer (a would-be revert
surfaces as the contract's typed error), and records the request's digest so that an identical
request is submitted only once, across retries and API replicas.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from registry.chain.client import TxResult
from registry.chain.contract import RegistryClient, SignedRequest
from registry.chain.reverts import ContractRevert
from registry.errors import RegistryError
from registry.siwe import SECP256K1_N
from registry.store.models import Cursor, RelayedRequest, table_of


class RelayError(RegistryError):
    """Raised when a signed request cannot be relayed; ``reason`` is a stable machine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RelayOutcome:
    digest: bytes
    function: str
    tx_hash: str
    block_number: int | None
    duplicate: bool
    result: TxResult | None


def request_digest(request: SignedRequest) -> bytes:
    """What makes two requests identical: every signed field (the signature is not part of it)."""
    return keccak(
        encode(
            ["address", "address", "uint256", "uint256", "uint256", "uint48", "bytes32"],
            [
                request.sender,
                request.to,
                request.value,
                request.gas,
                request.nonce,
                request.deadline,
                keccak(request.data),
            ],
        )
    )


def check_signature_form(request: SignedRequest) -> None:
    """65 bytes, low s (the forwarder's ECDSA refuses high-s, malleable signatures too)."""
    if len(request.signature) != 65:
        raise RelayError("bad_signature", "a signature is 65 bytes (r, s, v)")
    if int.from_bytes(request.signature[32:64], "big") > SECP256K1_N // 2:
        raise RelayError("bad_signature", "high-s (malleable) signatures are refused")


class Relayer:
    """Checks, simulates and submits signed requests with the relayer's key (which pays the gas)."""

    def __init__(self, client: RegistryClient, engine: Engine, relayer: LocalAccount) -> None:
        self.client = client
        self.engine = engine
        self.relayer = relayer
        self._signer_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def function_of(self, request: SignedRequest) -> str:
        selector = request.data[:4]
        for name in self.client.abi.functions:
            if self.client.abi.selector(name) == selector:
                return name
        raise RelayError("unknown_function", "the request calls no function of the registry")

    def check(self, request: SignedRequest, expected_function: str | None = None) -> str:
        """Everything the forwarder and the registry would refuse, found before paying for a transaction.
        Returns the called function's name; raises :class:`RelayError` or the contract's typed error."""
        if request.to.lower() != self.client.address.lower():
            raise RelayError(
                "wrong_target", f"the request targets {request.to}, not the registry {self.client.address}"
            )
        if request.value != 0:
            raise RelayError("value_not_allowed", "requests to the registry carry no value")
        function = self.function_of(request)
        if expected_function is not None and function != expected_function:
            raise RelayError(
                "wrong_function", f"this endpoint relays {expected_function}, the request calls {function}"
            )
        check_signature_form(request)
        if request.deadline < time.time():
            raise RelayError("expired", "the request's deadline has passed: sign it again")
        if request.nonce != self.client.forwarder_nonce(request.sender):
            raise RelayError("bad_nonce", "the request's nonce is not the signer's next one (replayed or out of order)")
        if not self.client.verify_request(request):
            if request.nonce != self.client.forwarder_nonce(request.sender):  # spent since the check above
                raise RelayError("bad_nonce", "the request's nonce has just been used by another request")
            raise RelayError("bad_signature", "the signature does not match the request and its signer")
        # Simulate as the signer: the registry's own check, with its typed error.
        self.client.chain.call(self.client.address, request.data, sender=request.sender)
        return function

    def submit(
        self, request: SignedRequest, expected_function: str | None = None, *, wait_indexed: float = 10.0
    ) -> RelayOutcome:
        """Relays ``request`` once. An identical request submitted again returns the first outcome."""
        digest = request_digest(request)
        # The digest leaves the signature out: a malleated copy of a relayed request is refused here
        # rather than answered as the duplicate of the original.
        check_signature_form(request)
        existing = self._existing(digest)
        if existing is not None:
            return existing
        # One signer's requests are checked and submitted one at a time (in this process): the forwarder
        # consumes its nonces in order anyway, and requests racing for one nonce would otherwise all pass
        # the check, and all but one revert on-chain at the relayer's expense.
        with self._signer_lock(request.sender):
            outcome = self._check_and_relay(request, digest, expected_function)
        if outcome.result is not None and outcome.block_number is not None:
            self.wait_indexed(outcome.block_number, wait_indexed)
        return outcome

    def _signer_lock(self, signer: str) -> threading.Lock:
        with self._locks_guard:
            return self._signer_locks.setdefault(signer.lower(), threading.Lock())

    def _check_and_relay(self, request: SignedRequest, digest: bytes, expected_function: str | None) -> RelayOutcome:
        existing = self._existing(digest)  # relayed while this one waited for its turn
        if existing is not None:
            return existing
        try:
            function = self.check(request, expected_function)
        except (RelayError, ContractRevert) as exc:
            if isinstance(exc, RelayError) and exc.reason != "bad_nonce":
                raise
            # An identical request relayed meanwhile (by another replica) consumed the nonce or changed
            # the state this one was checked against: this one is its duplicate, not a refusal.
            found = self._existing(digest, wait=5.0)
            if found is None:
                raise
            return found
        table = table_of(RelayedRequest)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(table).values(
                        digest=digest,
                        signer=request.sender,
                        function=function,
                        status="submitted",
                        created_at=time.time(),
                    )
                )
        except IntegrityError:
            found = self._existing(digest, wait=5.0)
            if found is None:
                raise RelayError("in_flight", "an identical request is being relayed right now") from None
            return found
        try:
            result = self.client.relay(self.relayer, request)
        except Exception as exc:
            with self.engine.begin() as conn:
                conn.execute(update(table).where(table.c.digest == digest).values(status="failed", error=str(exc)))
            raise
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.digest == digest)
                .values(status="mined", tx_hash=result.tx_hash, block_number=result.block_number)
            )
        return RelayOutcome(digest, function, result.tx_hash, result.block_number, False, result)

    def _existing(self, digest: bytes, wait: float = 0.0) -> RelayOutcome | None:
        table = table_of(RelayedRequest)
        deadline = time.monotonic() + wait
        while True:
            with self.engine.connect() as conn:
                row = conn.execute(select(table).where(table.c.digest == digest)).mappings().first()
            if row is None:
                return None
            if row["status"] == "failed":
                # A failed attempt (e.g. a dropped connection) may be retried with the same signature.
                with self.engine.begin() as conn:
                    conn.execute(table.delete().where(table.c.digest == digest, table.c.status == "failed"))
                return None
            if row["tx_hash"] or time.monotonic() > deadline:
                if not row["tx_hash"]:
                    return None
                return RelayOutcome(digest, row["function"], row["tx_hash"], row["block_number"], True, None)
            time.sleep(0.05)

    def wait_indexed(self, block: int, timeout: float) -> bool:
        """Waits until the mirror has indexed ``block`` (so a read after a write sees it)."""
        deadline = time.monotonic() + timeout
        cursor = table_of(Cursor)
        while True:
            with self.engine.connect() as conn:
                indexed = conn.execute(select(cursor.c.block_number)).scalar()
            if indexed is not None and indexed >= block:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def request_json(request: SignedRequest) -> dict[str, Any]:
    """The JSON form of a signed request (the inverse of :func:`parse_request`)."""
    return {
        "from": request.sender,
        "to": request.to,
        "value": request.value,
        "gas": request.gas,
        "nonce": request.nonce,
        "deadline": request.deadline,
        "data": "0x" + request.data.hex(),
        "signature": "0x" + request.signature.hex(),
    }


def parse_request(body: dict[str, Any]) -> SignedRequest:
    """A :class:`SignedRequest` from JSON (hex strings for bytes), with every field type-checked."""

    def hexbytes(name: str) -> bytes:
        value = body.get(name)
        if not isinstance(value, str) or not value.startswith("0x"):
            raise RelayError("malformed", f"{name} must be a 0x-prefixed hex string")
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            raise RelayError("malformed", f"{name} is not valid hex") from None

    def integer(name: str, bits: int) -> int:
        value = body.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise RelayError("malformed", f"{name} must be an integer in [0, 2**{bits})")
        return value

    def address(name: str) -> str:
        value = hexbytes(name)
        if len(value) != 20:
            raise RelayError("malformed", f"{name} must be a 20-byte address")
        return str(body[name])

    from eth_utils.address import to_checksum_address

    return SignedRequest(
        sender=to_checksum_address(address("from")),
        to=to_checksum_address(address("to")),
        value=integer("value", 256),
        gas=integer("gas", 256),
        nonce=integer("nonce", 256),
        deadline=integer("deadline", 48),
        data=hexbytes("data"),
        signature=hexbytes("signature"),
    )
