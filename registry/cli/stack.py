"""The local stack: `up`, `serve`, `index`, `chain deploy|status|node`, `demo seed`."""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import suppress
from typing import Annotated, Any

import typer
from rich.table import Table

from registry.chain.client import ChainClient
from registry.chain.contract import RegistryClient
from registry.chain.deployment import Deployment, check_deployment, ensure_deployment
from registry.chain.node import LocalNode
from registry.cli._common import JsonOpt, console, errors, fail
from registry.demo import ADMIN_INDEX, Consortium, demo_genesis_timestamp, seed_demo, write_directory
from registry.domain import ROLE_NAMES
from registry.errors import RegistryError
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.keys import account_from_key, anvil_account
from registry.settings import Settings, get_settings
from registry.store.db import make_engine, migrate, reset_database
from registry.store.queries import freshness, status_counts
from registry.workers import Workers

app = typer.Typer(no_args_is_help=True)  # holds `up`, `serve`, `index`; merged into the root app
chain_app = typer.Typer(help="The local node and the contracts' deployment.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo consortium.", no_args_is_help=True)


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


def _client(settings: Settings) -> RegistryClient:
    chain = ChainClient(settings.node_url)
    deployment = Deployment.load(settings.deployment_path)
    check_deployment(chain, deployment)
    return RegistryClient(chain, deployment)


# ---------------------------------------------------------------------------------------- chain


@chain_app.command("deploy")
def chain_deploy(as_json: JsonOpt = False) -> None:
    """Deploy the contracts to the configured node (reuses a deployment that still fits)."""
    settings = get_settings()
    with errors():
        chain = ChainClient(settings.node_url)
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
    with errors():
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
    with errors():
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
    with errors():
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


@app.command("work")
def work(
    once: Annotated[bool, typer.Option("--once", help="one anomaly scan and one reminder cycle, then exit")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the automations over the mirror: anomaly flags after each indexed block, due-date reminders and
    escalations (webhook, e-mail). `registry up` runs them already; this is for a separate process."""
    settings = get_settings()
    with errors():
        engine = make_engine(settings.database)
        migrate(engine)
        workers = Workers(engine, settings)
        if once:
            scanned = workers.scan_anomalies()
            report = workers.reminders.run_once()
            summary = {"anomaly_scan": scanned, "anomaly_block": workers.scanned_block, "reminders": str(report)}
            if as_json:
                print(json.dumps(summary))
            else:
                console.print(f"anomaly scan: {'to block ' + str(workers.scanned_block) if scanned else 'nothing new'}")
                console.print(f"reminders: {report}")
            return
        workers.start()
        console.print(
            f"anomaly scans and reminders over {engine.url.render_as_string(hide_password=True)}; Ctrl-C stops"
        )
        _wait_for_interrupt()
        workers.stop()


# ---------------------------------------------------------------------------------------- demo


@demo_app.command("seed")
def demo_seed(as_json: JsonOpt = False) -> None:
    """Admit the demo consortium and, on an empty ledger, seed invoices in every state."""
    settings = get_settings()
    with errors():
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


def _seed(client: RegistryClient, settings: Settings) -> tuple[Consortium, Any]:
    """``seed_demo`` with the configured number of invoices, where registry.demo supports it."""
    import inspect

    invoices = getattr(settings, "demo_invoices", None)
    if invoices is not None and "invoices" in inspect.signature(seed_demo).parameters:
        return seed_demo(client, invoices=invoices)  # type: ignore[call-arg, unused-ignore]
    return seed_demo(client)


def _print_keystores(consortium: Consortium, settings: Settings) -> None:
    """Writes the demo identities' keystores (where registry.demo provides it) and says how to use them."""
    from registry import demo
    from registry.cli._common import keys_dir, list_keystores

    write = getattr(demo, "write_keystores", None)
    password = getattr(settings, "demo_password", None)
    if write is None or password is None:
        return
    directory = keys_dir(settings)
    write(consortium, directory, password)
    table = Table(title=f"Demo identities: keystores in {directory}, password {password!r} (local use only)")
    for col in ("identity (--as)", "name", "address", "keystore"):
        table.add_column(col)
    for entry in list_keystores(directory):
        table.add_row(entry.path.stem, entry.name, entry.address or "-", str(entry.path))
    console.print(table)
    console.print("act as one: `registry invoices list --as NAME` (password from REGISTRY_KEYSTORE_PASSWORD)")


@app.command("up")
def up(
    block_time: Annotated[float | None, typer.Option(help="interval mining seconds (default: settings)")] = None,
    exit_after_seed: Annotated[bool, typer.Option(help="stop once ready (for scripts and tests)")] = False,
) -> None:
    """Start the whole local stack: node with persistent state, deployment (once), demo seed."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.rpc_url:
        raise fail("`registry up` runs a local node; unset REGISTRY_RPC_URL to use it", 2)
    # Automine while deploying and seeding (fast), then interval mining like a QBFT network.
    node = _local_node(settings, block_time=0)
    if settings.node == "anvil" and not (settings.node_dir / "anvil-state.json").exists():
        # A fresh chain starts in the past, so that the demo's 210-day history ends at the wall clock (its
        # overdue invoices need the chain's clock to pass their due dates); a restart keeps its own clock.
        node.extra_args = [*node.extra_args, "--timestamp", str(demo_genesis_timestamp())]
    indexer: Indexer | None = None
    indexing: threading.Thread | None = None
    api: _ApiServer | None = None
    workers: Workers | None = None
    # From here on Ctrl-C and SIGTERM stop the stack, also while it starts (a signal that came before
    # the wait below used to be lost when a shell had started it in the background, SIGINT ignored).
    _interrupt_on_signals()
    with errors():
        node.start()
    try:
        with errors():
            chain = ChainClient(node.url)
            deployment, created = ensure_deployment(chain, _admin(settings), settings.deployment_path)
            client = RegistryClient(chain, deployment)
            consortium, seeded = _seed(client, settings)
            write_directory(consortium, settings.directory_file)  # display names, kept by the operator
            engine = make_engine(settings.database)
            if created:
                reset_database(engine)  # a mirror of a previous chain means nothing now
            indexer = Indexer(chain, deployment, engine, indexer_config(settings))
            indexer.start()
            indexer.sync()
            indexing = threading.Thread(target=indexer.run, name="indexer", daemon=True)
            indexing.start()
            workers = Workers(engine, settings.model_copy(update={"rpc_url": node.url}))
            workers.start()
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
        if api.url:
            console.print(f"portal    {api.url}/ (sign in with a keystore below and the demo password)")
        _print_consortium(consortium)
        _print_keystores(consortium, settings)
        if exit_after_seed:
            return
        console.print("Press Ctrl-C to stop; the next `make up` resumes where this one stopped.")
        _wait_for_interrupt()
    finally:
        if api is not None:
            api.stop()
        if workers is not None:
            workers.stop()
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
    with errors():
        application = create_app(settings)
    console.print(f"API at {settings.api_url} (docs {settings.api_url}/docs); Ctrl-C stops")
    uvicorn.run(application, host=settings.api_host, port=settings.api_port, log_level="info")


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (SIGINT even if the shell that
    started the process in the background made it ignore SIGINT)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _wait_for_interrupt() -> None:
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    # Also when started in the background by a shell, which starts it with SIGINT ignored.
    signal.signal(signal.SIGINT, handler)
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
