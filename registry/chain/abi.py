"""ABI codec over the compiler's artifacts: calls, outputs, events and custom errors.

Strict by design: eth-abi refuses a string where an integer is expected and a wrong-length bytes
value, so a caller's type confusion fails before anything is signed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


@dataclass(slots=True)
class DecodedEvent:
    """A log decoded with the ABI: name, fields by name, and where it sits on the chain. (Not frozen: a
    frozen dataclass sets each field through ``object.__setattr__``, six times the cost of building one,
    and the indexer builds one per log; nothing changes one after decoding.)"""

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
    static_args: Callable[[bytes], dict[str, Any]] | None = None
    """Builds the args dict of a static event from its payload (every word in declaration order)."""
    topic_count: int = -1
    data_hex_len: int = -1
    """A log with this many topics and this long a data string, of an event whose indexed fields all come
    first, has the topics after topic0 then the data as its payload (else: -1, decoded word by word)."""
    payload_len: int = -1
    """32 bytes a field."""


def _static_args(names: tuple[str, ...], types: tuple[str, ...]) -> Callable[[bytes], dict[str, Any]]:
    """A function ``payload -> args`` for an event of static elementary fields, compiled once per event
    type: one dict display of word slices, decoded as :func:`_word_decoder` does (the hot path of the
    indexer, so no per-field call through a table of decoders)."""
    items = []
    for i, (name, abi_type) in enumerate(zip(names, types, strict=True)):
        lo, hi = 32 * i, 32 * (i + 1)
        if abi_type.startswith("uint"):
            expr = f"_int(p[{lo}:{hi}], 'big')"
        elif abi_type.startswith("int"):
            expr = f"_int(p[{lo}:{hi}], 'big', signed=True)"
        elif abi_type == "bool":
            expr = f"p[{hi - 1}] != 0"
        elif abi_type == "address":
            expr = f"_checksum(p[{lo + 12}:{hi}])"
        else:
            expr = f"p[{lo}:{lo + int(abi_type[5:])}]"
        items.append(f"{name!r}: {expr}")
    namespace: dict[str, Any] = {"_int": int.from_bytes, "_checksum": to_checksum_address}
    exec(f"def static_args(p):\n    return {{{', '.join(items)}}}\n", namespace)
    decoder: Callable[[bytes], dict[str, Any]] = namespace["static_args"]
    return decoder


def _layout(item: dict[str, Any]) -> _EventLayout:
    inputs = item["inputs"]
    types = tuple(collapse_if_tuple(p) for p in inputs)
    names = tuple(p["name"] for p in inputs)
    indexed = tuple(bool(p["indexed"]) for p in inputs)
    static = all(_STATIC_WORD.match(t) for t in types)
    indexed_first = list(indexed) == sorted(indexed, reverse=True)
    return _EventLayout(
        name=item["name"],
        names=names,
        types=types,
        indexed=indexed,
        plain_types=tuple(t for t, p in zip(types, inputs, strict=True) if not p["indexed"]),
        word_decoders=tuple(_word_decoder(t) for t in types) if static else None,
        static_args=_static_args(names, types) if static else None,
        topic_count=1 + sum(indexed) if indexed_first else -1,
        data_hex_len=2 + 64 * (len(types) - sum(indexed)) if indexed_first else -1,
        payload_len=32 * len(types),
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
        self._topic_hex: dict[str, tuple[bytes, _EventLayout]] = {}  # topic0 as nodes spell it
        for item in abi:
            if item["type"] == "function":
                if item["name"] in self.functions:
                    raise AbiError(f"overloaded function {item['name']} is not supported")
                self.functions[item["name"]] = item
            elif item["type"] == "event":
                topic = event_abi_to_log_topic(item)  # type: ignore[arg-type]
                self.events[topic] = item
                self._layouts[topic] = _layout(item)
                self._topic_hex["0x" + topic.hex()] = (topic, self._layouts[topic])
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
        known = self._topic_hex.get(raw_topics[0])
        if known is not None:
            topic0, layout = known
        else:
            topic0 = bytes.fromhex(raw_topics[0][2:])
            found = self._layouts.get(topic0)
            if found is None:
                return None
            layout = found
        static_args = layout.static_args
        data_hex = log["data"]
        payload = b""
        if static_args is not None and len(raw_topics) == layout.topic_count and len(data_hex) == layout.data_hex_len:
            # The common case: the payload is the topics after topic0, then the data, word for word.
            topics = [t[2:] for t in raw_topics[1:]]
            if all(len(t) == 64 for t in topics):  # else (a malformed topic): word by word, as ever
                payload = bytes.fromhex("".join(topics) + data_hex[2:])
        if static_args is not None and len(payload) == layout.payload_len:
            args = static_args(payload)
        else:
            args, payload = self._decode_fields(layout, raw_topics, bytes.fromhex(data_hex[2:]))
        return DecodedEvent(
            layout.name,
            args,
            topic0,
            log["address"],
            int(log["blockNumber"], 16),
            log["blockHash"],
            log["transactionHash"],
            int(log["logIndex"], 16),
            payload,
        )

    @staticmethod
    def _decode_fields(layout: _EventLayout, raw_topics: list[str], data: bytes) -> tuple[dict[str, Any], bytes]:
        """(args, payload) of any event, word by word (static) or through eth-abi (dynamic fields)."""
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
            return args, b"".join(words)
        plain_values = iter(decode(list(layout.plain_types), data))
        topic_iter = iter(raw_topics[1:])
        values = []
        for t, is_indexed in zip(layout.types, layout.indexed, strict=True):
            if is_indexed:
                values.append(_python(decode([t], bytes.fromhex(next(topic_iter)[2:]))[0]))
            else:
                values.append(_python(next(plain_values)))
        return dict(zip(layout.names, values, strict=True)), encode(list(layout.types), values)
