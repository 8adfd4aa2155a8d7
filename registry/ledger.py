"""The ledger hash, recomputed off-chain exactly as the contract folds it (LedgerHash.sol).

``head_n = keccak256(abi.encode(head_{n-1}, n, topic0, keccak256(abi.encode(<event fields>))))``
over every state-changing event of the registry, in chain order. An auditor holding only the logs
and the ABI recomputes it and compares with ``ledger()`` on-chain.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eth_utils.crypto import keccak

from registry.chain.abi import DecodedEvent

GENESIS_HEAD = bytes(32)

# Events that change no state and so are not folded.
UNFOLDED_EVENTS = frozenset({"RegistrationRejected"})

_UINT64_LIMIT = 1 << 64


def _fast_keccak256() -> Callable[[bytes], bytes]:
    """keccak256 on a per-thread pycryptodome state, reset between calls.

    The indexer folds every event it stores: two hashes per event, the hot path of a backfill.
    pycryptodome (eth-hash's backend here) builds and frees a hash object per call, and eth-utils adds
    its argument dispatch on top: about three quarters of the cost of hashing 128 bytes. Falls back to
    eth-utils' keccak if the library's low-level interface is not there or disagrees with it.
    (registry/checks.py hashes the same way, for the same reason.)
    """
    try:
        raw = importlib.import_module("Crypto.Util._raw_api")
        lib: Any = importlib.import_module("Crypto.Hash.keccak")._raw_keccak_lib
    except (ImportError, AttributeError):
        return keccak
    local = threading.local()
    digest_size = raw.c_size_t(32)
    padding = raw.c_ubyte(0x01)  # keccak's padding, not SHA-3's
    reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
    c_uint8_ptr, c_size_t, get_raw_buffer = raw.c_uint8_ptr, raw.c_size_t, raw.get_raw_buffer

    def state() -> tuple[Any, Any]:
        held: tuple[Any, Any] | None = getattr(local, "state", None)
        if held is None:
            pointer = raw.VoidPointer()
            if lib.keccak_init(pointer.address_of(), raw.c_size_t(64), raw.c_ubyte(24)):
                raise RuntimeError("keccak_init failed")
            held = (raw.SmartPointer(pointer.get(), lib.keccak_destroy), raw.create_string_buffer(32))
            local.state = held
        return held

    def keccak256(data: bytes) -> bytes:
        pointer, buffer = state()
        handle = pointer.get()
        if (
            reset(handle)
            or absorb(handle, c_uint8_ptr(data), c_size_t(len(data)))
            or digest(handle, buffer, digest_size, padding)
        ):
            raise RuntimeError("keccak failed")
        return bytes(get_raw_buffer(buffer))

    try:
        for sample in (b"", b"\x01" * 128, b"x" * 300):
            if keccak256(sample) != keccak(sample):
                return keccak
    except Exception:
        return keccak
    return keccak256


keccak256 = _fast_keccak256()


def fold(head: bytes, seq: int, topic0: bytes, payload: bytes) -> bytes:
    """One step of the hash chain: ``keccak256(abi.encode(bytes32 head, uint64 seq, bytes32 topic0,
    bytes32 keccak256(payload)))``, the four static words packed by hand."""
    if len(head) != 32 or len(topic0) != 32 or not 0 <= seq < _UINT64_LIMIT:
        if len(head) > 32 or len(topic0) > 32 or not 0 <= seq < _UINT64_LIMIT:
            raise ValueError(f"fold: head and topic0 must be bytes32 and seq a uint64, not {head!r}, {seq}, {topic0!r}")
        head, topic0 = head.ljust(32, b"\0"), topic0.ljust(32, b"\0")  # as abi.encode pads a short bytes32
    return keccak256(b"".join((head, seq.to_bytes(32, "big"), topic0, keccak256(payload))))


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
