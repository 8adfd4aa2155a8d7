"""Auditor tools: `audit verify`, `audit certificate issue|verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from registry.cli._common import (
    ApiOpt,
    AsOpt,
    CliError,
    JsonOpt,
    KeystoreOpt,
    PasswordFileOpt,
    Who,
    api_url,
    console,
    errors,
    load_identity,
)
from registry.cli._common import fail as _fail
from registry.errors import RegistryError
from registry.settings import get_settings

app = typer.Typer(help="Auditor tools: check the ledger and the mirror against the chain.", no_args_is_help=True)
audit_app = app


@audit_app.command("verify")
def audit_verify(
    rpc_url: Annotated[str | None, typer.Option("--rpc-url", help="JSON-RPC URL (default: settings)")] = None,
    deployment: Annotated[str | None, typer.Option("--deployment", help="deployment file (default: settings)")] = None,
    database: Annotated[
        str | None,
        typer.Option("--database", help="mirror to check (default: the configured database, or the default SQLite)"),
    ] = None,
    ledger_only: Annotated[bool, typer.Option("--ledger-only", help="check the ledger hash chain only")] = False,
    block: Annotated[
        int | None, typer.Option("--block", help="ledger-only: audit as of this block (default: latest)")
    ] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="write the full result as JSON to this path")] = None,
) -> None:
    """Recompute the ledger hash chain from the chain's events and compare the mirror with the contract's
    state at the mirror's block. Exit 0: everything agrees; 1: differences (each named); 2: setup error."""
    from registry.audit import default_database, render, run_audit

    settings = get_settings()
    database_url = None if ledger_only else (database or default_database(settings))
    try:
        result = run_audit(
            rpc_url or settings.node_url,
            Path(deployment) if deployment else settings.deployment_path,
            database_url,
            block=block,
            max_log_range=settings.max_log_range,
        )
    except RegistryError as exc:
        raise _fail(f"audit not completed: {exc}", 2) from None
    render(result, console)
    if json_path:
        result.write_json(Path(json_path))
        console.print(f"full result written to {json_path}")
    raise typer.Exit(0 if result.agrees else 1)


certificate_app = typer.Typer(help="Search certificates issued by the API.", no_args_is_help=True)
audit_app.add_typer(certificate_app, name="certificate")


@certificate_app.command("verify")
def certificate_verify(
    path: Annotated[str, typer.Argument(metavar="FILE", help="the certificate JSON (the body of POST /certificates)")],
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="the registry operator's address the signature must be by")
    ] = None,
    rpc_url: Annotated[
        str | None, typer.Option("--rpc-url", help="also check the block hash and ledger head on this node")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a search certificate offline: canonical form, digest, EIP-191 signature by its issuer (and
    by --issuer). With --rpc-url, also that the chain has that block hash and ledger head at that block.
    Exit 0: valid; 1: invalid (altered, wrong signer, chain disagrees); 2: unreadable or no node."""
    from registry.certificates import CertificateInvalid, check_against_chain, load_certificate, verify_certificate

    try:
        verified = verify_certificate(load_certificate(Path(path)), issuer=issuer)
    except CertificateInvalid as exc:
        raise _fail(f"certificate invalid ({exc.reason}): {exc}", 2 if exc.reason == "malformed" else 1) from None
    problems: list[str] = []
    if rpc_url:
        try:
            problems = check_against_chain(verified, rpc_url)
        except RegistryError as exc:
            raise _fail(f"cannot check against the chain: {exc}", 2) from None
    summary = {
        "valid": not problems,
        "issuer": verified.issuer,
        "block": verified.block,
        "block_hash": verified.block_hash,
        "ledger_head": verified.ledger_head,
        "ledger_count": verified.ledger_count,
        "chain_id": verified.chain_id,
        "registry": verified.registry,
        "issued_at": verified.issued_at,
        "registrations": verified.registrations,
        "statement": verified.statement,
        "checked_on_chain": bool(rpc_url),
        "problems": problems,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        console.print(
            f"signature valid: issued by {verified.issuer}" + ("" if issuer else " (pass --issuer to pin it)")
        )
        console.print(f"as of block {verified.block} ({verified.block_hash}) on chain {verified.chain_id}")
        console.print(f"ledger head {verified.ledger_head} after {verified.ledger_count} events")
        console.print(verified.statement)
        if rpc_url:
            console.print("chain agrees" if not problems else "[bold red]chain disagrees:[/]")
        for problem in problems:
            console.print(f"  - {problem}")
    raise typer.Exit(1 if problems else 0)


@certificate_app.command("issue")
def certificate_issue(
    out: Annotated[Path, typer.Argument(metavar="FILE", help="where to write the signed certificate (JSON)")],
    invoice_key: Annotated[str | None, typer.Option("--invoice-key", help="search by invoice key (0x hex32)")] = None,
    fingerprint: Annotated[str | None, typer.Option("--fingerprint", help="search by fingerprint (0x hex32)")] = None,
    as_: AsOpt = None,
    keystore: KeystoreOpt = None,
    password_file: PasswordFileOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Have the API issue a signed search certificate (everything registered against an invoice key or
    fingerprint, as of the mirror's block) and write it to FILE; verify it later, offline, with
    `registry audit certificate verify FILE`. Needs the API (--api or REGISTRY_CLI_API) and your key."""
    from registry.certificates import load_certificate, verify_certificate

    who = Who(as_, keystore, password_file, api)
    with errors():
        if (invoice_key is None) == (fingerprint is None):
            raise CliError("give exactly one of --invoice-key and --fingerprint", 2)
        settings = get_settings()
        url = api_url(who, settings)
        if not url:
            raise CliError(
                "certificates are issued by the API's operator key", 2, "pass --api URL or set REGISTRY_CLI_API"
            )
        from registry.cli._api import ApiBackend

        client = ApiBackend(url, load_identity(who, settings))
        try:
            body = client.certificate(invoice_key=invoice_key, fingerprint=fingerprint)
        finally:
            client.close()
        out.write_bytes(body)
        verified = verify_certificate(load_certificate(out))
    if as_json:
        print(
            json.dumps(
                {
                    "file": str(out),
                    "issuer": verified.issuer,
                    "block": verified.block,
                    "registrations": verified.registrations,
                    "statement": verified.statement,
                }
            )
        )
        return
    console.print(f"certificate written to {out}: issued by {verified.issuer} as of block {verified.block}")
    console.print(verified.statement)
