"""The one exception tree of the package.

Everything the package raises on purpose derives from :class:`RegistryError`.
Solidity custom errors are decoded into subclasses of :class:`ContractRevert`
named exactly like the Solidity error (see :mod:`registry.chain.errors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class RegistryError(Exception):
    """Raised when anything in the registry fails on purpose; the root of the tree."""


class FieldError(RegistryError, ValueError):
    """Raised when named input fields are malformed. ``field`` and ``message`` name the first problem;
    ``problems`` lists every one found, in field order, so that one answer names every bad field."""

    def __init__(self, field: str, message: str, *, more: tuple[tuple[str, str], ...] = ()) -> None:
        self.problems: tuple[tuple[str, str], ...] = ((field, message), *more)
        super().__init__("; ".join(f"{f}: {m}" for f, m in self.problems))
        self.field = field
        self.message = message

    def field_errors(self) -> list[dict[str, str]]:
        """Each problem as ``{"field", "message"}``: problem+json's ``errors`` entries, a report's lines."""
        return [{"field": field, "message": message} for field, message in self.problems]

    @classmethod
    def of(cls, problems: Sequence[tuple[str, str]]) -> Self:
        """One error listing each (field, message) of ``problems`` (at least one)."""
        return cls(*problems[0], more=tuple(problems[1:]))


class InvalidInvoice(FieldError):
    """Raised when invoice fields cannot be normalised (bad number, amount, currency or date);
    ``Invoice.parse`` names every bad field at once."""


class ConfigurationError(RegistryError):
    """Raised when settings, the deployment file or the toolchain are missing or inconsistent."""


class ToolchainError(ConfigurationError):
    """Raised when the Solidity compiler or the local node cannot be run."""


class ChainError(RegistryError):
    """Raised when the chain node cannot be reached or answers with a JSON-RPC error."""


class TransactionFailed(ChainError):
    """Raised when a mined transaction reverted without a decodable custom error."""
