"""`registry participants`: the consortium operator admits, suspends and reinstates participants and
manages their keys and roles (admin key); anyone reads the participant registry from the chain."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from registry.cli._common import (
    ApiOpt,
    AsOpt,
    CliError,
    JsonOpt,
    KeystoreOpt,
    PasswordFileOpt,
    Who,
    console,
    errors,
    print_json,
    registry_client,
    run_write,
    settings,
)

app = typer.Typer(
    help="Participants (legal entities), their keys and roles. Writes need the consortium operator's key.",
    no_args_is_help=True,
)

EntityArg = Annotated[int, typer.Argument(help="the participant's entity id", min=1)]
RoleArg = Annotated[str, typer.Argument(help="creditor, debtor, factor or auditor")]


@app.command("admit")
def admit(
    registration_number: Annotated[
        str, typer.Argument(help="registration number (USCC, LEI); only its hash goes on-chain")
    ],
    roles: Annotated[str, typer.Option("--roles", help="comma-separated: creditor,debtor,factor,auditor")],
    first_key: Annotated[str, typer.Option("--key", help="the participant's first signing address")],
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Admit a participant with its roles and first key; prints its entity id."""
    args = {
        "registration_number": registration_number,
        "roles": [r.strip() for r in roles.split(",") if r.strip()],
        "first_key": first_key,
    }
    result = run_write(Who(as_, keystore, password_file, api), "admit-participant", args, as_json)
    if not as_json:
        for event in result.get("events", []):
            if event["name"] == "ParticipantAdmitted":
                console.print(f"admitted as entity {event['args'].get('entityId')}")


def _entity_command(name: str, action: str, doc: str) -> None:
    def command(
        entity: EntityArg,
        as_: AsOpt = None,
        keystore: KeystoreOpt = None,
        password_file: PasswordFileOpt = None,
        api: ApiOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        run_write(Who(as_, keystore, password_file, api), action, {"entity": entity}, as_json)

    command.__doc__ = doc
    app.command(name)(command)


_entity_command("suspend", "suspend-participant", "Suspend a participant: none of its keys may act until reinstated.")
_entity_command("reinstate", "reinstate-participant", "Reinstate a suspended participant.")


def _role_command(name: str, action: str, doc: str) -> None:
    def command(
        entity: EntityArg,
        role: RoleArg,
        as_: AsOpt = None,
        keystore: KeystoreOpt = None,
        password_file: PasswordFileOpt = None,
        api: ApiOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        run_write(Who(as_, keystore, password_file, api), action, {"entity": entity, "role": role}, as_json)

    command.__doc__ = doc
    app.command(name)(command)


_role_command("grant-role", "grant-entity-role", "Grant a party role to a participant.")
_role_command("revoke-role", "revoke-entity-role", "Revoke a party role from a participant.")


@app.command("add-key")
def add_key(
    entity: EntityArg,
    key: Annotated[str, typer.Argument(help="the new signing address")],
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a signing key to a participant (key rotation loses none of its history)."""
    run_write(Who(as_, keystore, password_file, api), "add-key", {"entity": entity, "key": key}, as_json)


@app.command("revoke-key")
def revoke_key(
    key: Annotated[str, typer.Argument(help="the signing address to revoke")],
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a signing key (a participant keeps at least one active key)."""
    run_write(Who(as_, keystore, password_file, api), "revoke-key", {"key": key}, as_json)


def _entity_json(client: Any, entity: int) -> dict[str, Any]:
    from registry.domain import PARTY_ROLES

    info = client.get_entity(entity)
    return {
        "entity": entity,
        "status": info.status.name.lower(),
        "registration_hash": "0x" + bytes(info.registration_hash).hex(),
        "roles": [r.label for r in PARTY_ROLES if client.entity_has_role(entity, r)],
        "active_keys": info.active_keys,
        "keys": client.keys_of(entity),
    }


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Every participant: status, roles and keys (read from the chain)."""
    with errors():
        client = registry_client(settings())
        try:
            rows = [_entity_json(client, e) for e in range(1, client.entity_count() + 1)]
        finally:
            client.chain.close()
    if as_json:
        print_json({"participants": rows})
        return
    table = Table(title="Participants")
    for col in ("entity", "status", "roles", "keys"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["entity"]), r["status"], ", ".join(r["roles"]), "\n".join(r["keys"]))
    console.print(table)


@app.command("show")
def show(entity: EntityArg, as_json: JsonOpt = False) -> None:
    """One participant: status, registration hash, roles and keys (read from the chain)."""
    with errors():
        client = registry_client(settings())
        try:
            if entity > client.entity_count():
                raise CliError(f"no participant {entity}", 1, "list them with `registry participants list`")
            row = _entity_json(client, entity)
        finally:
            client.chain.close()
    if as_json:
        print_json(row)
        return
    for key, value in row.items():
        console.print(f"{key:18} {', '.join(value) if isinstance(value, list) else value}", highlight=False)
