"""registry.hashing: the fast keccak256 and its batch form agree with eth-utils' keccak."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from registry.hashing import keccak256, keccak256_many


@given(st.lists(st.binary(max_size=700), max_size=40))
def test_a_batch_hashes_each_item_as_keccak_does(items: list[bytes]) -> None:
    assert keccak256_many(items) == [keccak(data) for data in items]
    assert [keccak256(data) for data in items] == [keccak(data) for data in items]


def test_a_batch_takes_any_bytes_like_item_and_any_iterable() -> None:
    items = [b"abc", bytearray(b"abc"), memoryview(b"abc")]
    assert keccak256_many(items) == [keccak(b"abc")] * 3
    assert keccak256_many(iter([b"", b"x" * 319, b"x" * 320, b"x" * 5000])) == [
        keccak(data) for data in (b"", b"x" * 319, b"x" * 320, b"x" * 5000)
    ]
    assert keccak256_many([]) == []


def test_batches_on_many_threads_do_not_mix_their_states() -> None:
    batches = [[bytes([i % 256, j % 256]) * (j % 50) for j in range(60)] for i in range(200)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(keccak256_many, batches)) == [[keccak(d) for d in batch] for batch in batches]


def test_the_fast_implementation_is_the_one_in_use() -> None:
    """(safe-pysha3 is a dependency: falling back to eth-utils would triple the cost of a check's hashes.)"""
    assert keccak256 is not keccak and keccak256.__module__ == "registry.hashing"
