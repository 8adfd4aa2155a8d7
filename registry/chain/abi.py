"""ABI codec over the compiler's artifacts: calls, outputs, events and custom errors.

Strict by design: eth-abi refuses a string where an integer is expected and a wrong-length bytes
value, so a caller's type confusion fails before anything is signed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic, function_abi_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from registry.errors import RegistryError


class AbiError(RegistryError):
    """Raised when a call's arguments do not fit the function's ABI, or a name is unknown."""


def _types(params: list[dict[str, Any]]) -> list[str]:
    return [collapse_if_tuple(p) for p in params]


def _python(value: Any) -> Any:
    """eth-abi returns tuples for structs and arrays; keep them, but make bytes plain."""
    if isinstance(value, tuple):
        return tuple(_python(v) for v in value)
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value


@dataclass(frozen=True)
class DecodedEvent:
    """A log decoded with the ABI: name, fields by name, and where it sits on the chain."""

    name: str
    args: dict[str, Any]
    topic0: bytes
    address: str
    block_number: int
    block_hash: str
    transaction_hash: str
    log_index: int
    payload: bytes = field(default=b"", repr=False)
    """``abi.encode`` of every field in declaration order: what the contract folds into the ledger."""

    def ledger_payload(self) -> bytes:
        return self.payload


_STATIC_WORD = re.compile(r"^(uint\d*|int\d*|bool|address|bytes([1-9]|[12]\d|3[012]))$")


def _word_decoder(abi_type: str) -> Any:
    """A decoder of one 32-byte ABI word for a static elementary type."""
    if abi_type.startswith("uint"):
        return lambda w: int.from_bytes(w, "big")
    if abi_type.startswith("int"):
        return lambda w: int.from_bytes(w, "big", signed=True)
    if abi_type == "bool":
        return lambda w: w[31] != 0
    if abi_type == "address":
        return lambda w: to_checksum_address(w[12:])
    size = int(abi_type[5:])
    return lambda w: w[:size]


@dataclass(frozen=True)
class _EventLayout:
    name: str
    names: tuple[str, ...]
    types: tuple[str, ...]
    indexed: tuple[bool, ...]
    plain_types: tuple[str, ...]
    word_decoders: tuple[Any, ...] | None  # set when every field is a static elementary type


def _layout(item: dict[str, Any]) -> _EventLayout:
    inputs = item["inputs"]
    types = tuple(collapse_if_tuple(p) for p in inputs)
    static = all(_STATIC_WORD.match(t) for t in types)
    return _EventLayout(
        name=item["name"],
        names=tuple(p["name"] for p in inputs),
        types=types,
        indexed=tuple(bool(p["indexed"]) for p in inputs),
        plain_types=tuple(t for t, p in zip(types, inputs, strict=True) if not p["indexed"]),
        word_decoders=tuple(_word_decoder(t) for t in types) if static else None,
    )


class ContractAbi:
    """Encoder/decoder for one contract's ABI."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self.abi = abi
        self.functions: dict[str, dict[str, Any]] = {}
        self.events: dict[bytes, dict[str, Any]] = {}
        self.event_topics: dict[str, bytes] = {}
        self.errors: dict[bytes, dict[str, Any]] = {}
        self._layouts: dict[bytes, _EventLayout] = {}
        for item in abi:
            if item["type"] == "function":
                if item["name"] in self.functions:
                    raise AbiError(f"overloaded function {item['name']} is not supported")
                self.functions[item["name"]] = item
            elif item["type"] == "event":
                topic = event_abi_to_log_topic(item)  # type: ignore[arg-type]
                self.events[topic] = item
                self._layouts[topic] = _layout(item)
                self.event_topics[item["name"]] = topic
            elif item["type"] == "error":
                signature = f"{item['name']}({','.join(_types(item['inputs']))})"
                self.errors[keccak(text=signature)[:4]] = item

    def function(self, name: str) -> dict[str, Any]:
        try:
            return self.functions[name]
        except KeyError:
            raise AbiError(f"the contract has no function {name!r}") from None

    def selector(self, name: str) -> bytes:
        return bytes(function_abi_to_4byte_selector(self.function(name)))  # type: ignore[arg-type]

    def encode_call(self, name: str, args: tuple[Any, ...] | list[Any]) -> bytes:
        fn = self.function(name)
        types = _types(fn["inputs"])
        if len(args) != len(types):
            raise AbiError(f"{name} takes {len(types)} arguments ({', '.join(types)}), got {len(args)}")
        try:
            return self.selector(name) + encode(types, list(args))
        except Exception as exc:  # eth-abi raises several unrelated types
            raise AbiError(f"{name}: arguments do not fit ({', '.join(types)}): {exc}") from exc

    def decode_output(self, name: str, data: bytes) -> tuple[Any, ...]:
        return tuple(_python(v) for v in decode(_types(self.function(name)["outputs"]), data))

    def decode_log(self, log: dict[str, Any]) -> DecodedEvent | None:
        """Decode a JSON-RPC log object; None if its topic is not one of this ABI's events.

        Events whose fields are all static words are decoded by slicing (the hot path of the
        indexer); the others through eth-abi."""
        raw_topics = log["topics"]
        if not raw_topics:
            return None
        topic0 = bytes.fromhex(raw_topics[0][2:])
        layout = self._layouts.get(topic0)
        if layout is None:
            return None
        data = bytes.fromhex(log["data"][2:])
        if layout.word_decoders is not None:
            topic_words = iter(bytes.fromhex(t[2:]) for t in raw_topics[1:])
            words: list[bytes] = []
            offset = 0
            for is_indexed in layout.indexed:
                if is_indexed:
                    words.append(next(topic_words))
                else:
                    words.append(data[offset : offset + 32])
                    offset += 32
            args = {n: dec(w) for n, dec, w in zip(layout.names, layout.word_decoders, words, strict=True)}
            payload = b"".join(words)
        else:
            plain_values = iter(decode(list(layout.plain_types), data))
            topic_iter = iter(raw_topics[1:])
            values = []
            for t, is_indexed in zip(layout.types, layout.indexed, strict=True):
                if is_indexed:
                    values.append(_python(decode([t], bytes.fromhex(next(topic_iter)[2:]))[0]))
                else:
                    values.append(_python(next(plain_values)))
            args = dict(zip(layout.names, values, strict=True))
            payload = encode(list(layout.types), values)
        return DecodedEvent(
            name=layout.name,
            args=args,
            topic0=topic0,
            address=log["address"],
            block_number=int(log["blockNumber"], 16),
            block_hash=log["blockHash"],
            transaction_hash=log["transactionHash"],
            log_index=int(log["logIndex"], 16),
            payload=payload,
        )
