"""The ``registry`` command line (typer + rich).

Every command reads the one settings object (environment ``REGISTRY_*`` or ``.env``) and exits
with a code scripts can trust: 0 success, 1 a refused or failed operation, 2 bad usage or setup.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from registry.chain.client import ChainClient
from registry.chain.contract import RegistryClient
from registry.chain.deployment import Deployment, check_deployment, ensure_deployment
from registry.chain.node import LocalNode
from registry.demo import ADMIN_INDEX, Consortium, seed_demo
from registry.domain import ROLE_NAMES
from registry.errors import ConfigurationError, RegistryError
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.keys import account_from_key, anvil_account
from registry.settings import Settings, get_settings
from registry.store.db import make_engine, reset_database
from registry.store.queries import freshness, status_counts

app = typer.Typer(help="Permissioned receivables registry: chain, demo and audit tools.", no_args_is_help=True)
chain_app = typer.Typer(help="The local node and the contracts' deployment.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo consortium.", no_args_is_help=True)
app.add_typer(chain_app, name="chain")
app.add_typer(demo_app, name="demo")

console = Console()
err_console = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Every expected failure becomes a one-line message and a non-zero exit code."""
    try:
        yield
    except ConfigurationError as exc:
        raise _fail(str(exc), 2) from None
    except RegistryError as exc:
        raise _fail(f"{type(exc).__name__}: {exc}", 1) from None


def _admin(settings: Settings) -> Any:
    return account_from_key(settings.admin_key) if settings.admin_key else anvil_account(ADMIN_INDEX)


def _local_node(settings: Settings, block_time: float = 0.0) -> LocalNode:
    return LocalNode(
        kind=settings.node,
        host=settings.rpc_host,
        port=settings.rpc_port,
        chain_id=settings.chain_id,
        block_time=block_time,
        gas_limit=settings.block_gas_limit,
        state_dir=settings.node_dir,
        log_path=settings.data_dir / "node.log",
    )


def _rpc_url(settings: Settings) -> str:
    return settings.rpc_url or f"http://{settings.rpc_host}:{settings.rpc_port}"


def _client(settings: Settings) -> RegistryClient:
    chain = ChainClient(_rpc_url(settings))
    deployment = Deployment.load(settings.deployment_path)
    check_deployment(chain, deployment)
    return RegistryClient(chain, deployment)


# ---------------------------------------------------------------------------------------- chain


@chain_app.command("deploy")
def chain_deploy(as_json: JsonOpt = False) -> None:
    """Deploy the contracts to the configured node (reuses a deployment that still fits)."""
    settings = get_settings()
    with _errors():
        chain = ChainClient(_rpc_url(settings))
        deployment, created = ensure_deployment(chain, _admin(settings), settings.deployment_path)
    if as_json:
        print(json.dumps({"created": created, **deployment.__dict__}))
        return
    verb = "deployed" if created else "reused"
    console.print(
        f"{verb} registry {deployment.registry} (forwarder {deployment.forwarder}) on chain "
        f"{deployment.chain_id}; deployment file {settings.deployment_path}"
    )


@chain_app.command("status")
def chain_status(as_json: JsonOpt = False) -> None:
    """Chain height, ledger head and receivables count of the deployment."""
    settings = get_settings()
    with _errors():
        client = _client(settings)
        head, count = client.ledger()
        info = {
            "rpc_url": client.chain.url,
            "chain_id": client.chain.chain_id,
            "block": client.chain.block_number(),
            "registry": client.address,
            "ledger_head": "0x" + head.hex(),
            "ledger_events": count,
            "receivables": client.receivable_count(),
            "participants": client.entity_count(),
            "paused": client.paused(),
        }
    if as_json:
        print(json.dumps(info))
        return
    table = Table(show_header=False)
    for key, value in info.items():
        table.add_row(key, str(value))
    console.print(table)


@chain_app.command("node")
def chain_node(block_time: Annotated[float, typer.Option(help="interval mining seconds; 0 = automine")] = 1.0) -> None:
    """Run the local node in the foreground with persistent state under the data directory."""
    settings = get_settings()
    node = _local_node(settings, block_time)
    with _errors():
        node.start()
    console.print(f"{settings.node} listening on {node.url} (pid {node.pid}); state in {settings.node_dir}")
    _wait_for_interrupt()
    node.stop()


# ---------------------------------------------------------------------------------------- index


def indexer_config(settings: Settings) -> IndexerConfig:
    return IndexerConfig(
        finality_depth=settings.finality_depth,
        header_window=settings.header_window,
        poll_interval=settings.poll_interval,
        max_log_range=settings.max_log_range,
    )


@app.command("index")
def index(
    once: Annotated[bool, typer.Option("--once", help="index up to the current head, then exit")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="drop the mirror and re-index from the deploy block")] = False,
) -> None:
    """Mirror the chain into SQL: backfill, then follow new blocks (reorg-safe, resumable)."""
    settings = get_settings()
    with _errors():
        client = _client(settings)
        engine = make_engine(settings.database)
        if reset:
            reset_database(engine)
        indexer = Indexer(client.chain, client.deployment, engine, indexer_config(settings))
        indexer.start()
        try:
            if once:
                block = indexer.sync()
                console.print(f"indexed to block {block} into {engine.url.render_as_string(hide_password=True)}")
                return
            signal.signal(signal.SIGTERM, lambda *_: indexer.stop())
            console.print(
                f"indexing {client.address} into {engine.url.render_as_string(hide_password=True)}; Ctrl-C stops"
            )
            with suppress(KeyboardInterrupt):
                indexer.run()
        finally:
            indexer.close()


# ---------------------------------------------------------------------------------------- demo


@demo_app.command("seed")
def demo_seed(as_json: JsonOpt = False) -> None:
    """Admit the demo consortium and, on an empty ledger, seed invoices in every state."""
    settings = get_settings()
    with _errors():
        consortium, seeded = seed_demo(_client(settings))
    if as_json:
        print(json.dumps({"members": _members_json(consortium), "seeded": dict(seeded or {})}))
        return
    _print_consortium(consortium)
    console.print(f"seeded: {dict(seeded)}" if seeded else "ledger already seeded")


def _members_json(consortium: Consortium) -> list[dict[str, Any]]:
    return [
        {
            "name": m.name,
            "entity": m.entity,
            "roles": [ROLE_NAMES[bytes(r)] for r in m.roles],
            "address": m.address,
        }
        for m in consortium.members
    ]


def _print_consortium(consortium: Consortium) -> None:
    table = Table(title="Demo consortium (Anvil's public test keys: local use only)")
    for col in ("entity", "name", "roles", "address"):
        table.add_column(col)
    table.add_row("-", "Consortium operator (admin)", "admin", consortium.admin.address)
    for m in consortium.members:
        table.add_row(str(m.entity), m.name, ", ".join(ROLE_NAMES[bytes(r)] for r in m.roles), m.address)
    console.print(table)


# ---------------------------------------------------------------------------------------- up


@app.command("up")
def up(
    block_time: Annotated[float | None, typer.Option(help="interval mining seconds (default: settings)")] = None,
    exit_after_seed: Annotated[bool, typer.Option(help="stop once ready (for scripts and tests)")] = False,
) -> None:
    """Start the whole local stack: node with persistent state, deployment (once), demo seed."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.rpc_url:
        raise _fail("`registry up` runs a local node; unset REGISTRY_RPC_URL to use it", 2)
    # Automine while deploying and seeding (fast), then interval mining like a QBFT network.
    node = _local_node(settings, block_time=0)
    indexer: Indexer | None = None
    indexing: threading.Thread | None = None
    api: _ApiServer | None = None
    with _errors():
        node.start()
    try:
        with _errors():
            chain = ChainClient(node.url)
            deployment, created = ensure_deployment(chain, _admin(settings), settings.deployment_path)
            client = RegistryClient(chain, deployment)
            consortium, seeded = seed_demo(client)
            engine = make_engine(settings.database)
            if created:
                reset_database(engine)  # a mirror of a previous chain means nothing now
            indexer = Indexer(chain, deployment, engine, indexer_config(settings))
            indexer.start()
            indexer.sync()
            indexing = threading.Thread(target=indexer.run, name="indexer", daemon=True)
            indexing.start()
            interval = settings.block_time if block_time is None else block_time
            if interval > 0 and settings.node == "anvil":
                chain.rpc.call("evm_setIntervalMining", [max(1, round(interval))])
        api = _ApiServer.start(settings, node.url)
        console.rule("[bold]Receivables registry is up")
        console.print(
            f"node      {settings.node} at {node.url} (pid {node.pid}), chain {deployment.chain_id}, "
            f"block time {interval}s"
        )
        console.print(f"registry  {deployment.registry} ({'deployed now' if created else 'reused'})")
        console.print(f"data      {settings.data_dir} (deployment file {settings.deployment_path})")
        with engine.connect() as conn:
            counts = {s.name.lower(): n for s, n in status_counts(conn).items()}
            fresh = freshness(conn)
        console.print(
            f"indexer   {engine.url.render_as_string(hide_password=True)} at block "
            f"{fresh.block_number if fresh else '-'}, following the chain"
        )
        console.print(
            f"ledger    {client.receivable_count()} receivables {counts}; "
            f"{'seeded now' if seeded else 'kept from last run'}"
        )
        console.print(
            f"api       {api.url} (docs {api.url}/docs)" if api.url else f"api       not started: {api.error}"
        )
        _print_consortium(consortium)
        if exit_after_seed:
            return
        console.print("Press Ctrl-C to stop; the next `make up` resumes where this one stopped.")
        _wait_for_interrupt()
    finally:
        if api is not None:
            api.stop()
        if indexer is not None:
            indexer.stop()
            if indexing is not None:
                indexing.join(10)
            indexer.close()
        node.stop()
        console.print("stopped")


# ---------------------------------------------------------------------------------------- api


class _ApiServer:
    """The HTTP API on a background thread (uvicorn), for `registry up`."""

    def __init__(self, server: Any, thread: threading.Thread | None, url: str | None, error: str | None) -> None:
        self.server, self.thread, self.url, self.error = server, thread, url, error

    @classmethod
    def start(cls, settings: Settings, rpc_url: str, timeout: float = 30.0) -> _ApiServer:
        """Starts it on settings.api_host:api_port (0: a free port); a failure is reported, not fatal."""
        import socket

        import uvicorn

        from api.app import create_app

        port = settings.api_port
        if port == 0:
            with socket.socket() as probe:
                probe.bind((settings.api_host, 0))
                port = int(probe.getsockname()[1])
        api_settings = settings.model_copy(update={"rpc_url": rpc_url, "api_port": port})
        try:
            application = create_app(api_settings)
        except RegistryError as exc:
            return cls(None, None, None, f"{type(exc).__name__}: {exc}")
        server = uvicorn.Server(uvicorn.Config(application, host=settings.api_host, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, name="api", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            server.should_exit = True
            return cls(None, None, None, f"could not listen on {settings.api_host}:{port} (set REGISTRY_API_PORT)")
        return cls(server, thread, f"http://{settings.api_host}:{port}", None)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(10)


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="interface (default: settings api_host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: settings api_port)")] = None,
) -> None:
    """Run the HTTP API (uvicorn) over the configured node, deployment and mirror; Ctrl-C stops."""
    import uvicorn

    from api.app import create_app

    settings = get_settings()
    update: dict[str, Any] = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    settings = settings.model_copy(update=update) if update else settings
    with _errors():
        application = create_app(settings)
    console.print(f"API at {settings.api_url} (docs {settings.api_url}/docs); Ctrl-C stops")
    uvicorn.run(application, host=settings.api_host, port=settings.api_port, log_level="info")


def _wait_for_interrupt() -> None:
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


# ---------------------------------------------------------------------------------------- audit

audit_app = typer.Typer(help="Auditor tools: check the ledger and the mirror against the chain.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


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
    from pathlib import Path

    from registry.audit import default_database, render, run_audit

    settings = get_settings()
    database_url = None if ledger_only else (database or default_database(settings))
    try:
        result = run_audit(
            rpc_url or _rpc_url(settings),
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
    from pathlib import Path

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


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
