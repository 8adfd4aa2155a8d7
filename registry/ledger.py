"""The ledger hash, recomputed off-chain exactly as the contract folds it (LedgerHash.sol).

``head_n = keccak256(abi.encode(head_{n-1}, n, topic0, keccak256(abi.encode(<event fields>))))``
over every state-changing event of the registry, in chain order. An auditor holding only the logs
and the ABI recomputes it and compares with ``ledger()`` on-chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from registry.chain.abi import DecodedEvent

GENESIS_HEAD = bytes(32)

# Events that change no state and so are not folded.
UNFOLDED_EVENTS = frozenset({"RegistrationRejected"})


def fold(head: bytes, seq: int, topic0: bytes, payload: bytes) -> bytes:
    """One step of the hash chain."""
    return keccak(encode(["bytes32", "uint64", "bytes32", "bytes32"], [head, seq, topic0, keccak(payload)]))


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
