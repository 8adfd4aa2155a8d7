"""Signing keys: the user's own (keystore files), and Anvil's public test keys for local chains."""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from registry.errors import RegistryError
from registry.settings import ANVIL_MNEMONIC

Account.enable_unaudited_hdwallet_features()

# scrypt cost of the keystores written here: N = 2**14 (r = 8, p = 1) is the "light" setting of the
# Web3 Secret Storage tooling (geth --lightkdf, ethers' defaults before v6 raised them), about 0.08 s per
# file here against 1.2 s for eth-account's default 2**18. Still standard v3, so any wallet (ethers v6
# Wallet.fromEncryptedJson included) decrypts it; the demo keys it guards are Anvil's public ones anyway.
KEYSTORE_SCRYPT_N = 2**14


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
    """Writes a standard Web3 Secret Storage (v3, scrypt) JSON keystore, readable by its owner only.

    The file appears whole or not at all (written beside it, then renamed), so a crash never leaves a
    truncated keystore in place of a good one."""
    if not password:
        raise KeystoreError("a keystore needs a non-empty password")
    keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=KEYSTORE_SCRYPT_N)
    return write_atomic(path, json.dumps(keystore), mode=0o600)


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> Path:
    """Writes ``text`` to ``path`` whole or not at all: into a file beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_keystore(path: Path, password: str) -> LocalAccount:
    """Decrypts a v3 keystore; a missing or malformed file or a wrong password is a KeystoreError."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != 3 or not isinstance(data.get("crypto"), dict):
        raise KeystoreError(f"{path} is not a Web3 Secret Storage v3 keystore")
    try:
        secret = Account.decrypt(data, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeystoreError(f"wrong password for keystore {path}") from None
        raise KeystoreError(f"cannot decrypt keystore {path}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is not a valid v3 keystore (missing or bad {exc})") from None
    account: LocalAccount = Account.from_key(secret)
    return account
