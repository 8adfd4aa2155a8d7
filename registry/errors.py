"""The one exception tree of the package.

Everything the package raises on purpose derives from :class:`RegistryError`.
Solidity custom errors are decoded into subclasses of :class:`ContractRevert`
named exactly like the Solidity error (see :mod:`registry.chain.errors`).
"""

from __future__ import annotations


class RegistryError(Exception):
    """Raised when anything in the registry fails on purpose; the root of the tree."""


class InvalidInvoice(RegistryError, ValueError):
    """Raised when invoice fields cannot be normalised (bad number, amount, currency or date)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigurationError(RegistryError):
    """Raised when settings, the deployment file or the toolchain are missing or inconsistent."""


class ToolchainError(ConfigurationError):
    """Raised when the Solidity compiler or the local node cannot be run."""


class ChainError(RegistryError):
    """Raised when the chain node cannot be reached or answers with a JSON-RPC error."""


class TransactionFailed(ChainError):
    """Raised when a mined transaction reverted without a decodable custom error."""
