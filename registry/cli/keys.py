"""`registry keys`: the user's own signing keys, as encrypted (v3) keystores under the keys directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from registry.cli._common import (
    CliError,
    JsonOpt,
    PasswordFileOpt,
    console,
    errors,
    find_keystore,
    keys_dir,
    list_keystores,
    print_json,
    read_password,
    settings,
    slug,
)

app = typer.Typer(
    help="Your signing keys: encrypted keystores under the keys directory (REGISTRY_DATA_DIR/keys).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="the identity's name (its keystore file is NAME.json, slugified)")]


def _target(name: str, directory: Path) -> Path:
    file = slug(name)
    if not file:
        raise CliError(f"invalid name {name!r}: use letters or digits", 2)
    path = directory / f"{file}.json"
    if path.exists():
        raise CliError(f"{path} exists already", 2, "choose another name, or remove the old keystore first")
    return path


def _saved(name: str, path: Path, address: str, as_json: bool) -> None:
    if as_json:
        print_json({"name": name, "address": address, "keystore": str(path)})
        return
    console.print(f"{name}: address {address}, keystore {path}")
    console.print("ask the consortium operator to admit this address (or add it as a key of your entity)")


@app.command("create")
def create(name: NameArg, password_file: PasswordFileOpt = None, as_json: JsonOpt = False) -> None:
    """Create a new key, encrypted with a password, and print its address."""
    from registry.keys import new_account, save_keystore

    with errors():
        path = _target(name, keys_dir(settings()))
        password = read_password(password_file, confirm=True, prompt="New keystore password")
        account = new_account()
        save_keystore(account, path, password)
    _saved(name, path, account.address, as_json)


@app.command("import")
def import_(
    name: NameArg,
    from_keystore: Annotated[
        Path | None,
        typer.Option("--from-keystore", help="import this v3 keystore file (same password) instead of a raw key"),
    ] = None,
    password_file: PasswordFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a private key (asked for without echo, or read from stdin) or a keystore file, encrypted
    with a password under the keys directory."""
    from registry.keys import account_from_key, load_keystore, save_keystore

    with errors():
        path = _target(name, keys_dir(settings()))
        if from_keystore is not None:
            password = read_password(password_file)
            account = load_keystore(from_keystore, password)
        else:
            tty = sys.stdin.isatty()
            raw = typer.prompt("Private key (0x hex)", hide_input=True) if tty else sys.stdin.readline()
            if not raw.strip():
                raise CliError("no private key given", 2, "type it at the prompt or pipe it on stdin")
            account = account_from_key(raw.strip())
            password = read_password(password_file, confirm=True, prompt="New keystore password")
        save_keystore(account, path, password)
    _saved(name, path, account.address, as_json)


@app.command("list")
def list_(
    chain: Annotated[bool, typer.Option(help="also look up each key's entity and roles on the chain")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Your identities: name, address, keystore file; and, when the node answers, entity and roles."""
    directory = keys_dir(settings())
    with errors():
        entries = list_keystores(directory)
    rows: list[dict[str, Any]] = [
        {"name": e.path.stem, "label": e.name, "address": e.address, "keystore": str(e.path)} for e in entries
    ]
    note = ""
    if chain and rows:
        note = _add_chain_info(rows)
    if as_json:
        print_json({"keys_dir": str(directory), "identities": rows})
        return
    if not rows:
        console.print(f"no keystores in {directory}: `registry keys create NAME` or `registry keys import NAME`")
        return
    table = Table(title=f"Identities in {directory}")
    for col in ("identity (--as)", "name", "address", "entity", "roles", "keystore"):
        table.add_column(col)
    for r in rows:
        entity = r.get("entity")
        table.add_row(
            r["name"],
            r["label"],
            r["address"],
            "-" if entity is None else str(entity),
            ", ".join(r.get("roles", [])) or "-",
            r["keystore"],
        )
    console.print(table)
    if note:
        console.print(note)


def _add_chain_info(rows: list[dict[str, Any]]) -> str:
    """Entity, key status and roles of each address, from the chain; a note when it cannot be reached."""
    from registry.cli._common import registry_client
    from registry.domain import PARTY_ROLES, Role
    from registry.errors import RegistryError

    try:
        client = registry_client(settings())
    except (RegistryError, CliError) as exc:
        return f"(entities not shown: {getattr(exc, 'message', exc)})"
    try:
        for r in rows:
            info = client.entity_of_key(r["address"])
            r["entity"] = int(info.entity) or None
            r["key_status"] = info.status.name.lower()
            roles = [role.label for role in PARTY_ROLES if info.entity and client.entity_has_role(info.entity, role)]
            if client.has_role(Role.ADMIN, r["address"]):
                roles.insert(0, "admin")
            r["roles"] = roles
    except RegistryError as exc:
        return f"(entities not shown: {exc})"
    finally:
        client.chain.close()
    return ""


@app.command("show")
def show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Where an identity's keystore is and its address (no password needed)."""
    with errors():
        entry = find_keystore(name, keys_dir(settings()))
    if as_json:
        print_json(
            {"name": entry.path.stem, "label": entry.name, "address": entry.address, "keystore": str(entry.path)}
        )
        return
    console.print(f"{entry.name}: address {entry.address}, keystore {entry.path}")
