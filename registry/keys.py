"""Signing keys: the user's own (keystore files), and Anvil's public test keys for local chains."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from registry.errors import RegistryError
from registry.settings import ANVIL_MNEMONIC

Account.enable_unaudited_hdwallet_features()


class KeystoreError(RegistryError):
    """Raised when a key or keystore cannot be read, decrypted or written."""


@cache
def anvil_account(index: int) -> LocalAccount:
    """Test key ``index`` of Anvil's well-known mnemonic (public: local chains only)."""
    account: LocalAccount = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def new_account() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


def account_from_key(private_key: str) -> LocalAccount:
    try:
        account: LocalAccount = Account.from_key(private_key)
        return account
    except (ValueError, TypeError) as exc:
        raise KeystoreError(f"not a valid private key: {exc}") from None


def save_keystore(account: LocalAccount, path: Path, password: str) -> Path:
    """Writes a standard Web3 Secret Storage (v3) JSON keystore."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(Account.encrypt(account.key, password, iterations=2**14)))
    path.chmod(0o600)
    return path


def load_keystore(path: Path, password: str) -> LocalAccount:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from None
    try:
        account: LocalAccount = Account.from_key(Account.decrypt(data, password))
        return account
    except ValueError:
        raise KeystoreError(f"wrong password for keystore {path}") from None
