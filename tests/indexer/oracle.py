"""The fault tests' oracle, and the fault harness they share with ``scripts/soak_indexer.py``.

Oracle (:func:`check_mirror`): after any reorg, crash or outage, the mirror must be what a fresh
re-index of the same chain produces, nothing more and nothing less:

- the cursor's hash is the chain's hash of the cursor block, and every stored block header is on
  the chain;
- ``raw_events`` holds exactly the registry's logs from the deploy block to the cursor, as the chain
  has them: same (block, log_index, block hash, tx hash, event), so no gaps and no duplicates;
- the cursor's ledger head and count equal the contract's ``ledger()`` at the cursor block;
- every versioned table's versions of one key tile the blocks without overlap (one current row);
- every table equals the same table after a fresh re-index up to the cursor block into an empty
  database, row for row, ignoring surrogate ``row_id``s and the cursor's ``updated_at``. Block headers
  are the exception: which headers are kept depends on where batches started and ended, so they are
  checked against the chain instead.

Harness: :func:`local_stack` (a dedicated Anvil + deployment + consortium, for tests that reorganise,
stop or kill things), :class:`Workload` (a thread that keeps registering, confirming and assigning),
:class:`IndexerProcess` (``registry index`` as a child process, killable with SIGKILL) and
:func:`kill_loop` (kill it at random points, restart, repeat).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, select

from registry.chain.abi import ContractAbi
from registry.chain.client import ChainClient
from registry.chain.compiler import artifact
from registry.chain.contract import RegistryClient
from registry.chain.deployment import Deployment, deploy
from registry.chain.node import LocalNode
from registry.demo import Consortium, Member, admit_consortium, demo_invoice
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.invoice import Invoice
from registry.keys import anvil_account
from registry.store.db import make_engine
from registry.store.models import Base, BlockHeader, Cursor, RawEvent, table_of

ROOT = Path(__file__).resolve().parents[2]

# Tables whose rows depend on how the work was cut into batches, not only on the chain.
BATCHING_DEPENDENT_TABLES = frozenset({"block_headers"})
# Columns that differ between two correct mirrors of the same chain.
VOLATILE_COLUMNS = frozenset({"row_id", "updated_at"})
# The business key of each versioned table: its versions must tile the blocks.
VERSION_KEYS = {
    "receivables": "id",
    "participants": "entity_id",
    "participant_keys": "address",
    "payment_claims": "claim_id",
}

Rows = dict[str, list[tuple[Any, ...]]]


# ---------------------------------------------------------------------------------------- oracle


def table_rows(engine: Engine, *, volatile: bool = False, skip: frozenset[str] = frozenset()) -> Rows:
    """Every mirror table's rows, sorted (a comparable picture of the database). Without ``volatile``,
    surrogate row ids and timestamps of the indexer's own clock are left out."""
    existing = set(inspect(engine).get_table_names())
    out: Rows = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in existing or table.name in skip:
                continue
            columns = [c for c in table.columns if volatile or c.name not in VOLATILE_COLUMNS]
            rows = [tuple(_plain(v) for v in row) for row in conn.execute(select(*columns))]
            out[table.name] = sorted(rows, key=repr)
    return out


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def fresh_index(chain: ChainClient, deployment: Deployment, block: int, url: str | None = None) -> Engine:
    """A re-index from the deploy block up to ``block`` into an empty database (SQLite by default)."""
    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='oracle-')}/reference.db"
    engine = make_engine(url)
    with Indexer(chain, deployment, engine) as indexer:
        reached = indexer.sync(until_block=block)
    assert reached == block, f"the reference re-index reached block {reached}, not {block}"
    return engine


@dataclass
class OracleReport:
    cursor_block: int
    cursor_hash: str
    events: int
    ledger_count: int
    rows: dict[str, int]


def chain_logs(chain: ChainClient, deployment: Deployment, last: int, step: int = 5_000) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = []
    for start in range(deployment.deploy_block, last + 1, step):
        logs.extend(chain.get_logs(deployment.registry, start, min(last, start + step - 1)))
    return logs


def check_mirror(engine: Engine, chain: ChainClient, deployment: Deployment, *, at_head: bool = True) -> OracleReport:
    """Asserts that the mirror behind ``engine`` is a fresh re-index of the chain (see module doc).
    With ``at_head``, the cursor must also be at the chain's head."""
    with engine.connect() as conn:
        cursor = conn.execute(select(table_of(Cursor))).mappings().one()
        headers = conn.execute(select(BlockHeader.number, BlockHeader.hash, BlockHeader.parent_hash)).all()
        raw = conn.execute(
            select(
                RawEvent.block_number, RawEvent.log_index, RawEvent.block_hash, RawEvent.tx_hash, RawEvent.name
            ).order_by(RawEvent.block_number, RawEvent.log_index)
        ).all()
    number = int(cursor["block_number"])
    tip = chain.block_number()
    if at_head:
        assert number == tip, f"cursor at block {number}, chain head {tip}"
    block = chain.get_block(number)
    assert cursor["block_hash"] == block["hash"], f"cursor hash {cursor['block_hash']} is not block {number}'s"
    assert cursor["genesis_hash"] == chain.get_block(0)["hash"]

    # Every stored header is on the chain, and linked to its stored predecessor.
    stored = {int(n): (h, p) for n, h, p in headers}
    assert number in stored, "the cursor block's header is not stored"
    assert max(stored) == number, f"headers stored beyond the cursor: {max(stored)} > {number}"
    answers = chain.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in sorted(stored)])
    for n, answer in zip(sorted(stored), answers, strict=True):
        assert answer is not None and answer["hash"] == stored[n][0], f"stored header {n} is not on the chain"
        if n - 1 in stored:
            assert stored[n][1] == stored[n - 1][0], f"stored headers {n - 1} and {n} do not link"

    # raw_events: exactly the chain's registry logs, no gap, no duplicate.
    abi = ContractAbi(artifact("ReceivableRegistry").abi)
    expected = []
    for entry in chain_logs(chain, deployment, number):
        decoded = abi.decode_log(entry)
        if decoded is not None:
            expected.append(
                (
                    int(entry["blockNumber"], 16),
                    int(entry["logIndex"], 16),
                    entry["blockHash"],
                    entry["transactionHash"],
                    decoded.name,
                )
            )
    mirrored = [tuple(r) for r in raw]
    if mirrored != expected:
        missing = sorted(set(expected) - set(mirrored))[:5]
        extra = sorted(set(mirrored) - set(expected))[:5]
        dupes = len(mirrored) - len(set(mirrored))
        raise AssertionError(
            f"raw_events differ from the chain's logs: {len(mirrored)} mirrored, {len(expected)} on chain; "
            f"missing {missing}, extra {extra}, duplicates {dupes}"
        )

    # The ledger hash agrees with the contract's at the cursor block.
    registry = RegistryClient(chain, deployment)
    head, count = registry.ledger(block=number)
    assert (bytes(cursor["ledger_head"]), int(cursor["ledger_count"])) == (head, count), (
        f"mirror ledger ({cursor['ledger_count']}) differs from the contract's ({count}) at block {number}"
    )

    # Versions tile the blocks: for each key, valid_to of one version is valid_from of the next.
    mirror = table_rows(engine, volatile=True)
    _check_versions(engine)

    # Everything equals a fresh re-index of the same chain.
    reference = fresh_index(chain, deployment, number)
    try:
        ours = {k: v for k, v in table_rows(engine, skip=BATCHING_DEPENDENT_TABLES).items()}
        theirs = table_rows(reference, skip=BATCHING_DEPENDENT_TABLES)
    finally:
        reference.dispose()
    assert ours.keys() == theirs.keys(), f"tables differ: {sorted(ours)} vs {sorted(theirs)}"
    for name in ours:
        if ours[name] != theirs[name]:
            a, b = set(ours[name]), set(theirs[name])
            raise AssertionError(
                f"table {name} differs from a fresh re-index: {len(ours[name])} rows vs {len(theirs[name])}; "
                f"only in the mirror {sorted(a - b, key=repr)[:3]}, only in the re-index {sorted(b - a, key=repr)[:3]}"
            )
    return OracleReport(
        cursor_block=number,
        cursor_hash=str(cursor["block_hash"]),
        events=len(mirrored),
        ledger_count=count,
        rows={name: len(rows) for name, rows in mirror.items()},
    )


def _check_versions(engine: Engine) -> None:
    existing = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        for name, key in VERSION_KEYS.items():
            if name not in existing:
                continue
            table = Base.metadata.tables[name]
            versions: dict[Any, list[tuple[int, int | None]]] = defaultdict(list)
            for k, start, end in conn.execute(select(table.c[key], table.c.valid_from, table.c.valid_to)):
                versions[k].append((int(start), None if end is None else int(end)))
            for k, spans in versions.items():
                spans.sort()
                for (s1, e1), (s2, _) in itertools.pairwise(spans):
                    assert e1 == s2, f"{name} {k!r}: version [{s1}, {e1}) is not followed by the one from {s2}"
                for s, e in spans:
                    assert e is None or s < e, f"{name} {k!r}: empty version [{s}, {e})"
                assert spans[-1][1] is None, f"{name} {k!r}: no current version"


# ---------------------------------------------------------------------------------------- stack


@dataclass
class Stack:
    """A dedicated node with the registry deployed and the demo consortium admitted."""

    node: LocalNode
    chain: ChainClient
    registry: RegistryClient
    consortium: Consortium

    @property
    def deployment(self) -> Deployment:
        return self.registry.deployment

    def forget_nonces(self) -> None:
        """After a reorg, rollback or revert dropped transactions: ask the node for nonces again."""
        for account in (self.consortium.admin, self.consortium.relayer, *(m.account for m in self.consortium.members)):
            self.chain.nonces.resync(account.address)

    def now(self) -> int:
        return int(self.chain.get_block("latest")["timestamp"], 16)


@contextmanager
def local_stack(**node_options: Any) -> Iterator[Stack]:
    """Anvil on a free port (automine), the contracts deployed, the consortium admitted."""
    with LocalNode(kind="anvil", port=0, **node_options) as node, ChainClient(node.url) as chain:
        registry = RegistryClient(chain, deploy(chain, anvil_account(0)))
        yield Stack(node, chain, registry, admit_consortium(registry))


# ---------------------------------------------------------------------------------------- workload


class Workload(threading.Thread):
    """Keeps the registry busy until stopped: registrations (single and batched, with a refused
    duplicate line), confirmations and assignments, every one its own block under automine."""

    def __init__(self, url: str, deployment: Deployment, consortium: Consortium, seed: int, pause: float = 0.0) -> None:
        super().__init__(name="workload", daemon=True)
        self.chain = ChainClient(url)
        self.registry = RegistryClient(self.chain, deployment)
        self.consortium = consortium
        self.rng = random.Random(seed)
        self.seed = seed
        self.run_id = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"  # invoice numbers unique on a shared chain
        self.pause = pause
        self.halt = threading.Event()
        self.ops: dict[str, int] = defaultdict(int)
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.halt.set()
        self.join(60)
        self.chain.close()
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        serial = 0
        try:
            while not self.halt.is_set():
                serial += 1
                self._round(serial)
                if self.pause:
                    self.halt.wait(self.pause)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def _invoice(self, debtor: Member, serial: int, line: int = 0) -> Invoice:
        now = int(self.chain.get_block("latest")["timestamp"], 16)
        amount = f"{self.rng.randint(1_000, 900_000)}.00"
        return demo_invoice(debtor.entity, f"W{self.seed}-{self.run_id}-{serial:05d}-{line}", amount, now)

    def _round(self, serial: int) -> None:
        c = self.consortium
        creditor = self.rng.choice(c.creditors)
        debtor = self.rng.choice(c.debtors)
        factor = self.rng.choice(c.factors)
        if serial % 4 == 0:
            invoices = [self._invoice(debtor, serial, line) for line in range(3)]
            outcomes = self.registry.register_batch(creditor.account, [*invoices, invoices[0]])  # last line refused
            self.ops["batches"] += 1
            self.ops["rejected_lines"] += sum(1 for o in outcomes if not o.accepted)
            return
        invoice = self._invoice(debtor, serial)
        rid = self.registry.register(creditor.account, invoice)
        self.ops["registered"] += 1
        if self.rng.random() < 0.7:
            self.registry.confirm(debtor.account, rid, invoice.fingerprint)
            self.ops["confirmed"] += 1
            if self.rng.random() < 0.6:
                self.registry.assign(creditor.account, rid, factor.entity, invoice.face_value * 9 // 10)
                self.ops["assigned"] += 1


# ---------------------------------------------------------------------------------------- indexer process


def indexer_env(
    rpc_url: str, deployment: Deployment, database_url: str, work_dir: Path, max_log_range: int = 16
) -> dict[str, str]:
    """The environment of a ``registry index`` process mirroring ``deployment`` into ``database_url``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    deployment_file = work_dir / "deployment.json"
    if not deployment_file.exists():
        deployment.save(deployment_file)
    return {
        "REGISTRY_RPC_URL": rpc_url,
        "REGISTRY_DEPLOYMENT_FILE": str(deployment_file),
        "REGISTRY_DATABASE_URL": database_url,
        "REGISTRY_DATA_DIR": str(work_dir / "data"),
        "REGISTRY_MAX_LOG_RANGE": str(max_log_range),
        "REGISTRY_POLL_INTERVAL": "0.05",
    }


def _run_cli(env: dict[str, str], argv: list[str], log_path: str) -> None:
    """Body of a forked ``registry`` process: the real CLI entry point, output to ``log_path``."""
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["registry", *argv]
    from registry.cli import main

    main()


def die_inside(env: dict[str, str], where: str, nth: int, log_path: str) -> None:
    """Body of a forked indexer that SIGKILLs itself at a chosen point: ``batch`` inside the ``nth``
    batch's transaction, after its rows, headers and cursor were written and before the commit;
    ``migration`` as the ``nth`` table of the initial schema is created."""
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import alembic.ddl.impl

    from registry.indexer import indexer as module

    calls = 0

    def count_then_die() -> None:
        nonlocal calls
        calls += 1
        if calls == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    if where == "batch":
        write_cursor = module.write_cursor  # type: ignore[attr-defined]

        def write_cursor_then_die(conn: Any, values: dict[str, Any]) -> None:
            write_cursor(conn, values)
            count_then_die()

        module.write_cursor = write_cursor_then_die  # type: ignore[attr-defined]
    elif where == "migration":
        create_table = alembic.ddl.impl.DefaultImpl.create_table

        def create_table_then_die(self: Any, table: Any, **kw: Any) -> None:
            create_table(self, table, **kw)
            count_then_die()

        alembic.ddl.impl.DefaultImpl.create_table = create_table_then_die  # type: ignore[method-assign]
    else:
        raise ValueError(where)
    chain = ChainClient(env["REGISTRY_RPC_URL"])
    deployment = Deployment.load(Path(env["REGISTRY_DEPLOYMENT_FILE"]))
    config = IndexerConfig(max_log_range=int(env["REGISTRY_MAX_LOG_RANGE"]))
    with Indexer(chain, deployment, make_engine(env["REGISTRY_DATABASE_URL"]), config) as indexer:
        indexer.sync()
    sys.exit(3)  # not killed: the chosen point was never reached


def _noop() -> None:
    pass


def warm_forkserver() -> None:
    """Starts the fork server (imports, artifacts) and waits until it serves a first child."""
    assert run_child(_noop) == 0


def run_child(target: Callable[..., None], *args: Any) -> int:
    """Runs ``target(*args)`` in a process forked from the pre-loaded server; returns its exit code."""
    proc = _forkserver().Process(target=target, args=args)
    proc.start()
    proc.join(120)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"{target.__name__} did not end")
    return int(proc.exitcode)


_FORKSERVER: Any = None
_WARM = "REGISTRY_TEST_FORKSERVER_WARM"


def _forkserver() -> Any:
    """Children forked from a server that has imported the CLI and loaded the compiled artifacts
    already: ``registry index`` without the seconds of interpreter start, imports and compiler version
    check (``node solc --version``), so that kills land in indexing rather than in start-up."""
    global _FORKSERVER
    if _FORKSERVER is None:
        os.environ[_WARM] = "1"  # inherited by the server, which then warms the artifact cache on preload
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["registry.cli", "registry.indexer.indexer", "tests.indexer.oracle"])
        _FORKSERVER = ctx
    return _FORKSERVER


if os.environ.get(_WARM) and multiprocessing.parent_process() is None and __name__ != "__main__":
    artifact("ReceivableRegistry")
    artifact("RegistryForwarder")


class IndexerProcess:
    """``registry index`` in a child process: ``exec`` runs ``python -m registry.cli`` afresh,
    ``fork`` forks it from a pre-loaded server (same entry point, started in milliseconds)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, once: bool = False, spawn: str = "exec") -> None:
        argv = ["index", *(["--once"] if once else [])]
        self.log_path = log_path
        self.spawn = spawn
        if spawn == "exec":
            with open(log_path, "ab") as log:
                self._popen: subprocess.Popen[bytes] | None = subprocess.Popen(
                    [sys.executable, "-m", "registry.cli", *argv],
                    cwd=ROOT,
                    env={**os.environ, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self._proc: Any = None
        elif spawn == "fork":
            self._popen = None
            self._proc = _forkserver().Process(target=_run_cli, args=(env, argv, str(log_path)), daemon=False)
            self._proc.start()
        else:
            raise ValueError(f"spawn must be exec or fork, not {spawn!r}")

    @property
    def pid(self) -> int:
        return int(self._popen.pid if self._popen is not None else self._proc.pid)

    def poll(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        return None if self._proc.is_alive() else int(self._proc.exitcode)

    def kill(self) -> int:
        """SIGKILL, as a crash would; returns the exit status (negative: killed by that signal)."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        return self.wait(30)

    def wait(self, timeout: float) -> int:
        if self._popen is not None:
            return self._popen.wait(timeout)
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise TimeoutError(f"indexer process {self.pid} still running after {timeout}s")
        return int(self._proc.exitcode)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


# ---------------------------------------------------------------------------------------- kill loop


@dataclass
class KillRecord:
    round: int
    mode: str  # "start-up": a random delay after the start; "indexing": a random delay after its first commit
    delay: float  # seconds from the start (start-up) or from the first commit (indexing) to the kill
    cursor_before: int | None
    cursor_after: int | None
    chain_head: int
    outcome: str  # "killed"


@dataclass
class KillReport:
    kills: int
    seed: int
    database: str
    spawn: str
    seconds: float
    lock_retries: int
    records: list[KillRecord] = field(default_factory=list)
    workload: dict[str, int] = field(default_factory=dict)
    oracle: dict[str, Any] = field(default_factory=dict)

    @property
    def behind_at_kill(self) -> int:
        """Kills that hit an indexer with work left (cursor below the chain head)."""
        return sum(1 for r in self.records if r.cursor_after is None or r.cursor_after < r.chain_head)

    @property
    def progressed(self) -> int:
        return sum(1 for r in self.records if (r.cursor_after or 0) > (r.cursor_before or 0))

    def by_mode(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.records:
            out[r.mode] += 1
        return dict(out)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(behind_at_kill=self.behind_at_kill, progressed=self.progressed, by_mode=self.by_mode())
        return json.dumps(data, indent=2)


def read_cursor(engine: Engine) -> int | None:
    try:
        with engine.connect() as conn:
            return conn.execute(select(Cursor.block_number)).scalar()
    except Exception:  # no schema yet: killed before the migration committed
        return None


def kill_loop(
    stack: Stack,
    database_url: str,
    work_dir: Path,
    *,
    kills: int,
    seed: int,
    spawn: str = "fork",
    startup_kills: float = 0.25,
    startup_delay: tuple[float, float] = (0.02, 1.0),
    indexing_delay: tuple[float, float] = (0.0, 0.4),
    workload_pause: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> KillReport:
    """Runs ``registry index`` while a workload writes, SIGKILLs it at a random point, restarts it,
    ``kills`` times; then stops the workload, lets a fresh ``registry index --once`` catch up, and applies
    the oracle.

    A random point is, with probability ``startup_kills``, a random delay after the start (settings,
    connections, migration, writer lock, identity check, first batch), and otherwise a random delay
    after the process's first commit (in or between batches). A process that ends on its own fails the
    loop, except a WriterLockHeld on PostgreSQL while the killed predecessor's session is still being
    torn down (retried)."""
    rng = random.Random(seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    env = indexer_env(stack.node.url, stack.deployment, database_url, work_dir)
    engine = make_engine(database_url)
    report = KillReport(kills, seed, engine.url.render_as_string(hide_password=True), spawn, 0.0, 0)
    workload = Workload(stack.node.url, stack.deployment, stack.consortium, seed, workload_pause)
    if spawn == "fork":
        warm_forkserver()
    started = time.monotonic()
    workload.start()
    try:
        done = 0
        while done < kills:
            before = read_cursor(engine)
            mode = "start-up" if rng.random() < startup_kills else "indexing"
            delay = rng.uniform(*(startup_delay if mode == "start-up" else indexing_delay))
            proc = IndexerProcess(env, work_dir / f"indexer-{done:03d}.log", spawn=spawn)
            if mode == "indexing":
                deadline = time.monotonic() + 60
                while read_cursor(engine) == before and proc.poll() is None:
                    if time.monotonic() > deadline:
                        proc.kill()
                        raise AssertionError(f"indexer made no commit within 60s:\n{proc.log_tail()}")
                    time.sleep(0.005)
            time.sleep(delay)
            status = proc.poll()
            if status is not None:
                tail = proc.log_tail()
                if "WriterLockHeld" in tail and report.lock_retries < 10 * kills:
                    report.lock_retries += 1
                    time.sleep(0.1)
                    continue
                raise AssertionError(f"indexer exited with {status} before kill {done}:\n{tail}")
            proc.kill()
            after = read_cursor(engine)
            record = KillRecord(done, mode, round(delay, 3), before, after, stack.chain.block_number(), "killed")
            report.records.append(record)
            if log is not None:
                log(
                    f"kill {done + 1}/{kills} ({mode}, +{delay:.2f}s): cursor {before} -> {after}, "
                    f"head {record.chain_head}"
                )
            done += 1
    finally:
        workload.stop()
    report.workload = dict(workload.ops)
    # Catch up with the real command line, then judge.
    final = IndexerProcess(env, work_dir / "indexer-final.log", once=True, spawn="exec")
    status = final.wait(300)
    assert status == 0, f"the final `registry index --once` failed ({status}):\n{final.log_tail()}"
    try:
        report.oracle = asdict(check_mirror(engine, stack.chain, stack.deployment))
    finally:
        engine.dispose()
    report.seconds = round(time.monotonic() - started, 1)
    return report
