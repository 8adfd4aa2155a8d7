"""Custom errors of the contracts as Python exceptions of the same name and fields.

``decode_revert(data)`` turns revert data into e.g. ``InvoiceKeyTaken(invoiceKey=0x.., existingId=3)``;
the class ``reverts.InvoiceKeyTaken`` exists for every error in the compiled ABIs (created from the
artifacts on first use, so the Python side can never drift from the Solidity one).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from eth_abi.abi import decode

from registry.chain.abi import ContractAbi, _python, _types
from registry.errors import ChainError

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


class ContractRevert(ChainError):
    """Raised when a contract call reverts; subclasses are named after the Solidity custom error."""

    error_name: str = "ContractRevert"

    def __init__(self, fields: dict[str, Any] | None = None, data: bytes = b"") -> None:
        self.fields = dict(fields or {})
        self.data = data
        super().__init__(self._render())

    def _render(self) -> str:
        parts = ", ".join(f"{k}={_show(v)}" for k, v in self.fields.items())
        return f"{self.error_name}({parts})"

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)


class UnknownRevert(ContractRevert):
    """Raised when the revert data matches no known error (or there is none)."""

    error_name = "UnknownRevert"


class RevertWithMessage(ContractRevert):
    """Raised on ``Error(string)`` reverts (``require`` with a message)."""

    error_name = "Error"


class Panic(ContractRevert):
    """Raised on ``Panic(uint256)`` (arithmetic overflow, bad enum value, ...)."""

    error_name = "Panic"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value)


@cache
def _error_abi() -> ContractAbi:
    from registry.chain.compiler import registry_error_abi

    return ContractAbi(registry_error_abi())


_classes: dict[str, type[ContractRevert]] = {}


def error_class(name: str) -> type[ContractRevert]:
    """The exception class for Solidity error ``name``."""
    if name not in _classes:
        known = {item["name"] for item in _error_abi().errors.values()}
        if name not in known:
            raise AttributeError(f"no contract error named {name!r}")
        doc = f"Raised when the contract reverts with ``{name}``."
        _classes[name] = type(name, (ContractRevert,), {"error_name": name, "__doc__": doc, "__module__": __name__})
    return _classes[name]


def decode_revert(data: bytes) -> ContractRevert:
    """The typed exception for raw revert data."""
    if len(data) < 4:
        return UnknownRevert({"data": data}, data)
    selector, body = data[:4], data[4:]
    if selector == ERROR_STRING_SELECTOR:
        return RevertWithMessage({"message": decode(["string"], body)[0]}, data)
    if selector == PANIC_SELECTOR:
        return Panic({"code": decode(["uint256"], body)[0]}, data)
    item = _error_abi().errors.get(selector)
    if item is None:
        return UnknownRevert({"data": data}, data)
    values = decode(_types(item["inputs"]), body)
    fields = {p["name"]: _python(v) for p, v in zip(item["inputs"], values, strict=True)}
    return error_class(item["name"])(fields, data)


def __getattr__(name: str) -> type[ContractRevert]:
    if name.startswith("__"):
        raise AttributeError(name)
    return error_class(name)
