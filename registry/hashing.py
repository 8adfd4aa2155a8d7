"""keccak256, fast: one per-thread pycryptodome state reset between calls (the one place for it)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from eth_utils.crypto import keccak


def _fast_keccak256() -> Callable[[bytes], bytes]:
    """keccak256 on a per-thread pycryptodome state, reset between calls.

    The indexer folds every event it stores (two hashes per event, the hot path of a backfill) and the
    double-financing checks hash keys and number variants.
    pycryptodome (eth-hash's backend here) builds and frees a hash object per call, and eth-utils adds
    its argument dispatch on top: about three quarters of the cost of hashing 128 bytes. Falls back to
    eth-utils' keccak if the library's low-level interface is not there or disagrees with it.
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
