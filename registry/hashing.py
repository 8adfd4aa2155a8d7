"""keccak256, fast: one per-thread pycryptodome state reset between calls (the one place for it)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from eth_utils.crypto import keccak

__all__ = ["keccak256", "keccak256_many"]


def _eth_utils_many(items: Iterable[bytes]) -> list[bytes]:
    return [keccak(data) for data in items]


def _fast_keccak256() -> tuple[Callable[[bytes], bytes], Callable[[Iterable[bytes]], list[bytes]]]:
    """keccak256 (one input, and many in one call) on a per-thread pycryptodome state, reset between
    hashes.

    The indexer folds every event it stores (two hashes per event, the hot path of a backfill) and the
    double-financing checks hash keys and number variants (about 60 per check: ``keccak256_many``).
    pycryptodome (eth-hash's backend here) builds and frees a hash object per call, and eth-utils adds
    its argument dispatch on top: about three quarters of the cost of hashing 128 bytes. What is left
    is three calls into the library per hash (reset, absorb, digest); ``keccak256_many`` makes them with
    the state, buffer and length arguments looked up once per batch rather than once per hash. Falls
    back to eth-utils' keccak if the library's low-level interface is not there or disagrees with it.
    """
    try:
        raw = importlib.import_module("Crypto.Util._raw_api")
        lib: Any = importlib.import_module("Crypto.Hash.keccak")._raw_keccak_lib
    except (ImportError, AttributeError):
        return keccak, _eth_utils_many
    local = threading.local()
    digest_size = raw.c_size_t(32)
    padding = raw.c_ubyte(0x01)  # keccak's padding, not SHA-3's
    reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
    c_uint8_ptr, c_size_t = raw.c_uint8_ptr, raw.c_size_t
    # The length argument of the short inputs that checks hash by the dozen (numbers: at most 64
    # characters of up to 4 UTF-8 bytes; keys and fingerprints: 96 and 224 bytes), built once.
    lengths = [c_size_t(n) for n in range(320)]

    def state() -> tuple[Any, Any]:
        """(the keccak state's handle, a 32-byte output buffer) of this thread."""
        held: tuple[Any, Any, Any] | None = getattr(local, "state", None)
        if held is None:
            pointer = raw.VoidPointer()
            if lib.keccak_init(pointer.address_of(), raw.c_size_t(64), raw.c_ubyte(24)):
                raise RuntimeError("keccak_init failed")
            # (The SmartPointer frees the state when the thread's local storage goes.)
            owner = raw.SmartPointer(pointer.get(), lib.keccak_destroy)
            held = (owner.get(), raw.create_string_buffer(32), owner)
            local.state = held
        return held[0], held[1]

    def keccak256(data: bytes) -> bytes:
        handle, buffer = state()
        size = len(data)
        if (
            reset(handle)
            # (bytes go to the library as they are; pycryptodome's c_uint8_ptr costs as much as the hash)
            or absorb(
                handle,
                data if type(data) is bytes else c_uint8_ptr(data),
                lengths[size] if size < 320 else c_size_t(size),
            )
            or digest(handle, buffer, digest_size, padding)
        ):
            raise RuntimeError("keccak failed")
        return buffer.raw  # type: ignore[no-any-return]

    def keccak256_many(items: Iterable[bytes]) -> list[bytes]:
        handle, buffer = state()
        out: list[bytes] = []
        append = out.append
        for data in items:
            if type(data) is not bytes:  # (bytearray, memoryview: as keccak256 takes them)
                data = bytes(data)
            size = len(data)
            if (
                reset(handle)
                or absorb(handle, data, lengths[size] if size < 320 else c_size_t(size))
                or digest(handle, buffer, digest_size, padding)
            ):
                raise RuntimeError("keccak failed")
            append(buffer.raw)
        return out

    try:
        samples = [b"", b"\x01" * 128, b"x" * 300, b"y" * 400]
        expected = [keccak(sample) for sample in samples]
        if [keccak256(sample) for sample in samples] != expected or keccak256_many(samples) != expected:
            return keccak, _eth_utils_many
    except Exception:
        return keccak, _eth_utils_many
    return keccak256, keccak256_many


keccak256, keccak256_many = _fast_keccak256()
"""``keccak256(data)``; ``keccak256_many(items)``: the hash of each item, in order (one batch: cheaper per
hash than a call each)."""
