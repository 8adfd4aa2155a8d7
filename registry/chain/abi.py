"""ABI codec over the compiler's artifacts: calls, outputs, events and custom errors.

Strict by design: eth-abi refuses a string where an integer is expected and a wrong-length bytes
value, so a caller's type confusion fails before anything is signed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic, function_abi_to_4byte_selector
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
    field_types: tuple[str, ...] = field(default=(), repr=False)
    field_values: tuple[Any, ...] = field(default=(), repr=False)

    def ledger_payload(self) -> bytes:
        """``abi.encode`` of every field in declaration order, as the contract folds it."""
        return encode(list(self.field_types), list(self.field_values))


class ContractAbi:
    """Encoder/decoder for one contract's ABI."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self.abi = abi
        self.functions: dict[str, dict[str, Any]] = {}
        self.events: dict[bytes, dict[str, Any]] = {}
        self.event_topics: dict[str, bytes] = {}
        self.errors: dict[bytes, dict[str, Any]] = {}
        for item in abi:
            if item["type"] == "function":
                if item["name"] in self.functions:
                    raise AbiError(f"overloaded function {item['name']} is not supported")
                self.functions[item["name"]] = item
            elif item["type"] == "event":
                topic = event_abi_to_log_topic(item)  # type: ignore[arg-type]
                self.events[topic] = item
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
        """Decode a JSON-RPC log object; None if its topic is not one of this ABI's events."""
        topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
        if not topics or topics[0] not in self.events:
            return None
        item = self.events[topics[0]]
        indexed = [p for p in item["inputs"] if p["indexed"]]
        plain = [p for p in item["inputs"] if not p["indexed"]]
        data = bytes.fromhex(log["data"][2:])
        plain_values = iter(decode(_types(plain), data))
        indexed_values = iter(decode([collapse_if_tuple(p)], t)[0] for p, t in zip(indexed, topics[1:], strict=True))
        names: list[str] = []
        types: list[str] = []
        values: list[Any] = []
        for p in item["inputs"]:
            names.append(p["name"])
            types.append(collapse_if_tuple(p))
            values.append(_python(next(indexed_values) if p["indexed"] else next(plain_values)))
        return DecodedEvent(
            name=item["name"],
            args=dict(zip(names, values, strict=True)),
            topic0=topics[0],
            address=log["address"],
            block_number=int(log["blockNumber"], 16),
            block_hash=log["blockHash"],
            transaction_hash=log["transactionHash"],
            log_index=int(log["logIndex"], 16),
            field_types=tuple(types),
            field_values=tuple(values),
        )
