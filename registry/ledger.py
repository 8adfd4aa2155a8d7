"""The ledger hash, recomputed off-chain exactly as the contract folds it (LedgerHash.sol).

``head_n = keccak256(abi.encode(head_{n-1}, n, topic0, keccak256(abi.encode(<event fields>))))``
over every state-changing event of the registry, in chain order. An auditor holding only the logs
and the ABI recomputes it and compares with ``ledger()`` on-chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from registry.chain.abi import DecodedEvent
from registry.hashing import keccak256

GENESIS_HEAD = bytes(32)

# Events that change no state and so are not folded.
UNFOLDED_EVENTS = frozenset({"RegistrationRejected"})

_UINT64_LIMIT = 1 << 64


def fold(head: bytes, seq: int, topic0: bytes, payload: bytes) -> bytes:
    """One step of the hash chain: ``keccak256(abi.encode(bytes32 head, uint64 seq, bytes32 topic0,
    bytes32 keccak256(payload)))``, the four static words packed by hand."""
    return fold_hashed(head, seq, topic0, keccak256(payload))


def fold_hashed(head: bytes, seq: int, topic0: bytes, payload_hash: bytes) -> bytes:
    """:func:`fold` given ``keccak256(payload)`` (which a caller folding many events hashes in one
    ``keccak256_many`` call)."""
    if len(head) != 32 or len(topic0) != 32 or not 0 <= seq < _UINT64_LIMIT:
        if len(head) > 32 or len(topic0) > 32 or not 0 <= seq < _UINT64_LIMIT:
            raise ValueError(f"fold: head and topic0 must be bytes32 and seq a uint64, not {head!r}, {seq}, {topic0!r}")
        head, topic0 = head.ljust(32, b"\0"), topic0.ljust(32, b"\0")  # as abi.encode pads a short bytes32
    return keccak256(b"".join((head, seq.to_bytes(32, "big"), topic0, payload_hash)))


@dataclass(frozen=True)
class LedgerState:
    head: bytes
    count: int


def replay(events: Iterable[DecodedEvent], start: LedgerState = LedgerState(GENESIS_HEAD, 0)) -> LedgerState:
    """Folds decoded registry events (in chain order) onto ``start``."""
    head, count = start.head, start.count
    for event in events:
        if event.name in UNFOLDED_EVENTS:
            continue
        count += 1
        head = fold(head, count, event.topic0, event.ledger_payload())
    return LedgerState(head, count)
