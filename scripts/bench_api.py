"""API figures (issue 4, "Figures"): single double-financing checks over HTTP at 50 concurrent clients,
beside a bare FastAPI endpoint measured in the same run, and bulk checks through HTTP.

    python scripts/bench_api.py --json build/bench-api.json [--duration 15] [--clients 50]
        [--receivables 5000] [--bulk-size 5000] [--bulk-calls 4] [--rounds 2] [--profile prof.out]
        [--server-profile server.prof] [--bound] [--breakdown]

Set-up (not timed): a fresh Anvil, the registry deployed and the demo consortium admitted, a few
thousand receivables registered (500-line batches by three creditors for two debtors; some confirmed
and assigned), and a SQLite mirror indexed to the head. Then, each in its own uvicorn process on a free
loopback port with the same settings (one worker, asyncio loop, h11, no access log, log level warning):

- the API (``api.app:create_app``, settings from ``REGISTRY_*`` variables; the per-principal rate
  limit is raised out of the way, since all clients share one factor's session);
- a bare FastAPI app with one ``POST`` route returning a constant (no body parsing, no auth, and none
  of the API's middleware: the request-id/body-limit/log middleware and the problem handlers are part
  of what the API costs, so the baseline is plain FastAPI under the same server settings).

What is timed, from this process (asyncio, one ``httpx.AsyncClient`` per client, keep-alive):

- ``check_rps`` / ``check_p99_ms``: ``--clients`` clients posting ``POST /checks`` with invoice fields
  (half of them registered invoices, reformatted; half unknown ones), signed in as a factor, for
  ``--duration`` seconds after a short warm-up; every answer must be a 200 with the expected
  ``registered``;
- ``bare_rps`` (and ``bare_p99_ms``): the same clients and bodies against the bare endpoint;
- ``bulk_check_per_s``: invoices per second through ``POST /checks/bulk``, ``--bulk-size`` invoices a
  call, ``--bulk-calls`` calls one after the other (JSON encoding of the request and decoding of the
  answer included).

Where the gap to bare lies (optional; not targets):

- ``--bound``: a third server, the API with each invoice's check answered from memory after its first
  time (``remembered_app``), in the same alternation: what ``/checks`` would serve if the
  double-financing check cost nothing, every other step of the request unchanged (the principal's
  lookup on the mirror, the rate limit, the body's validation, the invoice's parsing, the answer's
  JSON). ``remembered_rps``, ``remembered_to_bare``, ``remembered_server_cpu_ms``.
- ``--breakdown``: a single check's stages timed in this process over the same invoices (best of
  three passes, microseconds each): parsing the invoice, its number variants, the variants' and the
  keys' hashes, the one SQL statement (and the same without the variants' probes), the whole check,
  the answer's JSON. ``check_breakdown_us``.

The rate measurements alternate for ``--rounds`` rounds (bare, API[, remembered], bare, ...) so that all
see the same machine; each figure sums its rounds. Target: ``check_rps`` >= 50% of ``bare_rps``. The
machine is shared: the load average is printed and recorded beside the figures. The client runs in
this process and the server in another, so the two cores are split between them as in production
(a load balancer's clients are elsewhere), but a busy machine slows both.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from fastapi import FastAPI  # noqa: E402

HOST = "127.0.0.1"
UVICORN_FLAGS = ["--workers", "1", "--loop", "asyncio", "--http", "h11", "--no-access-log", "--log-level", "warning"]
TARGET_RATIO = 0.5
DAY = 86_400


def bare_app() -> FastAPI:
    """The baseline: FastAPI with one POST route returning a constant (uvicorn ``--factory``)."""
    app = FastAPI()

    @app.post("/bare")
    async def bare() -> dict[str, bool]:
        return {"ok": True}

    return app


def remembered_app() -> FastAPI:
    """The API with each invoice's check answered from memory after its first time (``--bound``; uvicorn
    ``--factory``): an upper bound on what a faster double-financing check could give ``/checks``, the
    rest of the request as the API serves it. (Its answers go stale as the mirror moves: a bound, not a
    cache to serve.)"""
    from api.app import create_app

    app = create_app()
    checker = app.state.services.checker
    check = checker.check
    answers: dict[tuple[Any, int | None, bool], Any] = {}

    def remembered(invoice: Any, *, viewer_entity: int | None = None, near_duplicates: bool = True) -> Any:
        key = (invoice, viewer_entity, near_duplicates)
        answer = answers.get(key)
        if answer is None:
            answer = answers[key] = check(invoice, viewer_entity=viewer_entity, near_duplicates=near_duplicates)
        return answer

    checker.check = remembered
    return app


# ---------------------------------------------------------------------------------------- set-up


@dataclass(frozen=True)
class Paper:
    """An invoice as typed: what ``POST /checks`` takes."""

    debtor: int
    number: str
    amount: str
    issue: str
    due: str

    def fields(self) -> dict[str, Any]:
        return {
            "debtor": self.debtor,
            "invoice_number": self.number,
            "face_value": self.amount,
            "currency": "CNY",
            "issue_date": self.issue,
            "due_date": self.due,
        }

    def invoice(self) -> Any:
        from registry.invoice import Invoice

        return Invoice.parse(
            debtor=self.debtor,
            invoice_number=self.number,
            face_value=self.amount,
            currency="CNY",
            issue_date=self.issue,
            due_date=self.due,
        )


def _day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def papers(debtors: Sequence[int], prefix: str, count: int, now: int, *, base: int = 12_000) -> list[Paper]:
    """``count`` distinct invoices; amounts from ``base`` up (another base: no amount in common)."""
    return [
        Paper(
            debtor=debtors[i % len(debtors)],
            number=f"{prefix}-2026-{i:06d}",
            amount=f"{base + (i * 7919) % 900_000:,}.{i % 100:02d}",
            issue=_day(now - (10 + i % 20) * DAY),
            due=_day(now + (60 + i % 90) * DAY),
        )
        for i in range(count)
    ]


def respelled(p: Paper) -> Paper:
    """The same invoice as another system types it (lower case, spaces for dashes, no grouping)."""
    return Paper(p.debtor, p.number.lower().replace("-", " "), p.amount.replace(",", ""), p.issue, p.due)


@dataclass
class Ledger:
    url: str
    deployment_file: Path
    database_url: str
    registered: list[Paper]
    unknown: list[Paper]
    factor_key: Any
    receivables: int
    setup_seconds: float


@contextmanager
def ledger(workdir: Path, receivables: int) -> Iterator[Ledger]:
    """A node with ``receivables`` registrations (some confirmed and assigned) and their mirror."""
    import _bench as B

    from registry.indexer.indexer import Indexer
    from registry.store.db import make_engine

    t0 = time.perf_counter()
    with B.stack(gas_limit=300_000_000) as s:
        c = s.consortium
        debtors = [d.entity for d in c.debtors]
        seeded = papers(debtors, "BENCH", receivables, s.now)
        creditors = c.creditors
        for k, creditor in enumerate(creditors):
            mine = seeded[k :: len(creditors)]
            outcomes = s.registry.register_many(creditor.account, [p.invoice() for p in mine], batch_size=500)
            if not all(o.accepted for o in outcomes):
                raise RuntimeError("set-up: a seeded invoice was refused")
        # A couple of hundred further along: confirmed by their debtor, some assigned to a factor.
        ids = {s.registry.receivable_id_by_invoice_key(p.invoice().key): p for p in seeded[:200]}
        debtor_of = {int(d.entity): d for d in c.debtors}
        for rid, p in ids.items():
            s.registry.confirm(debtor_of[p.debtor].account, rid, p.invoice().fingerprint)
        for rid in sorted(ids)[:60]:
            state = s.registry.get_receivable(rid)
            creditor = next(m for m in creditors if m.entity == state.creditor)
            s.registry.assign(creditor.account, rid, c.factors[0].entity, 1)
        deployment_file = workdir / "deployment.json"
        s.registry.deployment.save(deployment_file)
        database_url = f"sqlite:///{workdir / 'mirror.db'}"
        engine = make_engine(database_url)
        with Indexer(s.chain, s.registry.deployment, engine) as indexer:
            indexer.sync()
        engine.dispose()
        unknown = papers(debtors, "UNSEEN", max(1000, receivables // 5), s.now, base=2_000_000)
        yield Ledger(
            url=s.node.url,
            deployment_file=deployment_file,
            database_url=database_url,
            registered=seeded,
            unknown=unknown,
            factor_key=c.factors[0].account,
            receivables=s.registry.receivable_count(),
            setup_seconds=time.perf_counter() - t0,
        )


@dataclass(frozen=True)
class Served:
    """A running server: its base URL and process."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_PROFILED_UVICORN = """
import cProfile, signal, sys, uvicorn
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
profiler = cProfile.Profile()
profiler.enable()
try:
    uvicorn.main(args=sys.argv[1:], standalone_mode=False)
finally:
    profiler.disable()
    profiler.dump_stats({path!r})
"""


@contextmanager
def server(
    app: str,
    env: dict[str, str],
    *,
    port: int | None = None,
    factory: bool = True,
    app_dir: Path | None = None,
    profile: Path | None = None,
) -> Iterator[Served]:
    """``uvicorn`` serving ``app`` on ``port`` (default: a free one) on loopback; yields it once it
    answers. With ``profile``, the server runs under cProfile (its event loop, where the async
    routes do their work) and writes the statistics there when it stops."""
    from registry.chain.node import free_port

    port = port or free_port(HOST)
    # (uvicorn re-raises SIGTERM after its graceful shutdown: a handler of ours turns it into an exit, so
    # that the statistics are written.)
    launch = ["-m", "uvicorn"] if profile is None else ["-c", _PROFILED_UVICORN.format(path=str(profile))]
    cmd = [sys.executable, *launch, app, "--host", HOST, "--port", str(port), *UVICORN_FLAGS]
    if factory:
        cmd.append("--factory")
    if app_dir is not None:
        cmd += ["--app-dir", str(app_dir)]
    process = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env})
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn {app} exited with {process.returncode}")
            try:
                httpx.get(url + "/", timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn {app} did not answer on {url}") from None
                time.sleep(0.1)
        yield Served(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sign_in(url: str, account: Any) -> str:
    from eth_account.messages import encode_defunct

    with httpx.Client(base_url=url, timeout=30) as client:
        challenge = client.post("/auth/challenge", json={"address": account.address}).raise_for_status().json()
        signature = account.sign_message(encode_defunct(text=challenge["message"])).signature
        answer = client.post(
            "/auth/session", json={"message": challenge["message"], "signature": "0x" + bytes(signature).hex()}
        ).raise_for_status()
        return str(answer.json()["token"])


# ---------------------------------------------------------------------------------------- load


@dataclass
class Load:
    """What one timed burst saw."""

    requests: int = 0
    seconds: float = 0.0
    served: int = 0
    """Answers, warm-up included (what the server's CPU time was spent on)."""
    server_cpu: float = 0.0
    """CPU seconds the server used over the burst, warm-up included."""
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, other: Load) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.served += other.served
        self.server_cpu += other.server_cpu
        self.latencies += other.latencies
        self.errors += other.errors

    @property
    def cpu_ms_per_request(self) -> float:
        """The server's CPU time per answer: its cost, whatever else the machine was doing."""
        return 1000 * self.server_cpu / self.served if self.served else float("nan")

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _requests(url: str, path: str, bodies: Sequence[dict[str, Any]], headers: dict[str, str]) -> list[bytes]:
    """HTTP/1.1 keep-alive requests, encoded once: the load generator's per-request work is a write
    and a read, so that it measures the server and not the client library."""
    host = url.split("://", 1)[1]
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    out = []
    for body in bodies:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        out.append(head.encode() + data)
    return out


async def _burst(
    url: str, requests: Sequence[bytes], expected: Sequence[bytes | None], clients: int, duration: float, warmup: float
) -> Load:
    """``clients`` connections sending ``requests`` (round robin), each waiting for its answer before the
    next: warm-up, then ``duration`` s timed. ``expected[i]``: bytes answer i must contain (None: any)."""
    host, port = url.split("://", 1)[1].split(":")
    load = Load()
    start = time.perf_counter() + warmup
    stop = start + duration
    counter = iter(range(10**12))

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while True:
                i = next(counter) % len(requests)
                sent = time.perf_counter()
                if sent >= stop:
                    return
                writer.write(requests[i])
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                done = time.perf_counter()
                load.served += 1
                status = head[9:12]
                if status != b"200":
                    load.errors.append(f"{status.decode()} {body[:200]!r}")
                elif (want := expected[i]) is not None and want not in body:
                    load.errors.append(f"unexpected answer: {body[:200]!r}")
                if sent >= start and done <= stop:
                    load.requests += 1
                    load.latencies.append(done - sent)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = duration
    return load


def burst(
    target: Served,
    path: str,
    bodies: Sequence[tuple[dict[str, Any], bool | None]],
    headers: dict[str, str],
    *,
    clients: int,
    duration: float,
    warmup: float = 2.0,
) -> Load:
    requests = _requests(target.url, path, [b for b, _ in bodies], headers)
    expected = [None if e is None else b'"registered":' + (b"true" if e else b"false") for _, e in bodies]
    cpu = target.cpu_seconds()
    load = asyncio.run(_burst(target.url, requests, expected, clients, duration, warmup))
    load.server_cpu = target.cpu_seconds() - cpu
    return load


def bulk(
    url: str, headers: dict[str, str], lines: Sequence[Paper], registered: set[Paper], size: int, calls: int
) -> dict[str, Any]:
    """Invoices per second through ``POST /checks/bulk``, ``size`` a call, ``calls`` calls in sequence."""
    payloads = [[lines[(k * size + i) % len(lines)] for i in range(size)] for k in range(calls)]
    bodies = [json.dumps({"invoices": [p.fields() for p in chunk]}) for chunk in payloads]
    seconds: list[float] = []
    with httpx.Client(base_url=url, headers={**headers, "content-type": "application/json"}, timeout=300) as http:
        http.post("/checks/bulk", content=bodies[0]).raise_for_status()  # warm-up, not timed
        for chunk, body in zip(payloads, bodies, strict=True):
            t0 = time.perf_counter()
            answer = http.post("/checks/bulk", content=body)
            answer.raise_for_status()
            results = answer.json()["results"]
            seconds.append(time.perf_counter() - t0)
            wrong = [
                i for i, (p, r) in enumerate(zip(chunk, results, strict=True)) if r["registered"] != (p in registered)
            ]
            if len(results) != size or wrong:
                raise RuntimeError(f"bulk check: {len(results)} results for {size} lines, {len(wrong)} wrong")
    return {
        "bulk_check_per_s": size * calls / sum(seconds),
        "bulk_call_seconds_median": statistics.median(seconds),
        "bulk_invoices_per_call": size,
        "bulk_calls": calls,
    }


def breakdown(database_url: str, papers: Sequence[Paper], passes: int = 3) -> dict[str, float]:
    """A single check's stages over ``papers``, timed in this process: microseconds per invoice, the best
    of ``passes`` passes each. Reaches into the checker's stages (``_line``, ``_check_single``,
    ``_statement``) to time each on its own, as ``DuplicateChecker.check`` runs them."""
    from api.routes.core import check_json
    from registry.checks import DuplicateChecker, number_variants
    from registry.store.db import make_engine

    engine = make_engine(database_url)
    checker = DuplicateChecker(engine)
    invoices = [p.invoice() for p in papers]
    lines = [checker._line(invoice, variants=True) for invoice in invoices]

    def statement(line: Any) -> None:
        with checker._statement() as dbapi:
            checker._check_single.rows(dbapi, line)

    viewer = -1  # a factor party to none of them (as the benchmark's factor is to nearly all)
    results = [checker.check(invoice, viewer_entity=viewer) for invoice in invoices]
    stages: list[tuple[str, Any, Sequence[Any]]] = [
        ("parse", Paper.invoice, papers),
        ("variants", lambda inv: number_variants(inv.normalized_number), invoices),
        ("variants_and_hashes", lambda inv: checker._line(inv, variants=True), invoices),
        ("statement", statement, lines),
        ("statement_without_variants", statement, [dataclasses.replace(line, variant_hashes=[]) for line in lines]),
        ("check", lambda inv: checker.check(inv, viewer_entity=viewer), invoices),
        ("answer_json", check_json, results),
    ]
    out: dict[str, float] = {}
    try:
        for name, work, items in stages:
            best = float("inf")
            for _ in range(passes):
                t0 = time.perf_counter()
                for item in items:
                    work(item)
                best = min(best, time.perf_counter() - t0)
            out[name] = round(1e6 * best / len(items), 1)
    finally:
        engine.dispose()
    out["hashes"] = round(out["variants_and_hashes"] - out["variants"], 1)
    out["variants_per_invoice"] = round(
        sum(len(number_variants(inv.normalized_number)) for inv in invoices) / len(invoices), 1
    )
    return out


# ---------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    from registry.chain.node import free_port

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp, ledger(Path(tmp), args.receivables) as led:
        print(f"set-up: {led.receivables} receivables indexed in {led.setup_seconds:.1f}s", file=sys.stderr)
        api_port = free_port(HOST)
        env = {
            "REGISTRY_DATA_DIR": tmp,
            "REGISTRY_RPC_URL": led.url,
            "REGISTRY_DEPLOYMENT_FILE": str(led.deployment_file),
            "REGISTRY_DATABASE_URL": led.database_url,
            "REGISTRY_API_HOST": HOST,
            "REGISTRY_API_PORT": str(api_port),
            "REGISTRY_SESSION_SECRET": "bench-secret",
            "REGISTRY_RATE_LIMIT_PER_MINUTE": str(10**9),  # one session for every client: no throttling
        }
        # Half the checks hit a registered invoice (respelled: the normalisation is on the path), half miss.
        checked = [
            p
            for hit, miss in zip(led.registered[:1000], led.unknown[:1000], strict=False)
            for p in (respelled(hit), miss)
        ]
        bodies: list[tuple[dict[str, Any], bool | None]] = [
            ({"invoice": p.fields()}, i % 2 == 0) for i, p in enumerate(checked)
        ]
        bare_bodies: list[tuple[dict[str, Any], bool | None]] = [(b, None) for b, _ in bodies]

        check_load, bare_load, remembered_load = Load(), Load(), Load()
        per_round: list[dict[str, float]] = []
        with ExitStack() as servers:
            api = servers.enter_context(server("api.app:create_app", env, port=api_port, profile=args.server_profile))
            bare = servers.enter_context(server("bench_api:bare_app", {}, app_dir=ROOT / "scripts"))
            remembered = (
                servers.enter_context(server("bench_api:remembered_app", env, app_dir=ROOT / "scripts"))
                if args.bound
                else None
            )
            api_url = api.url
            token = sign_in(api_url, led.factor_key)
            headers = {"Authorization": f"Bearer {token}"}
            # (The same session on the remembered server: same secret, same mirror.)
            profiler = cProfile.Profile() if args.profile else None
            for r in range(args.rounds):
                each = args.duration / args.rounds
                b = burst(bare, "/bare", bare_bodies, {}, clients=args.clients, duration=each)
                c = burst(api, "/checks", bodies, headers, clients=args.clients, duration=each)
                line = (
                    f"  round {r + 1}: bare {b.rps:,.0f}/s ({b.cpu_ms_per_request:.3f} ms CPU each), "
                    f"/checks {c.rps:,.0f}/s ({c.cpu_ms_per_request:.3f} ms CPU each)"
                )
                bare_load.add(b)
                check_load.add(c)
                per_round.append({"bare_rps": round(b.rps, 1), "check_rps": round(c.rps, 1)})
                if remembered is not None:
                    m = burst(remembered, "/checks", bodies, headers, clients=args.clients, duration=each)
                    line += f", remembered {m.rps:,.0f}/s ({m.cpu_ms_per_request:.3f} ms CPU each)"
                    remembered_load.add(m)
                    per_round[-1]["remembered_rps"] = round(m.rps, 1)
                print(line, file=sys.stderr)
            registered = {respelled(p) for p in led.registered} | set(led.registered)
            lines = [x for pair in zip(led.registered, led.unknown, strict=False) for x in pair]
            lines = [respelled(p) if i % 4 == 0 else p for i, p in enumerate(lines)]
            if profiler:
                profiler.enable()
            bulk_figures = bulk(api_url, headers, lines, registered, args.bulk_size, args.bulk_calls)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
        stages = breakdown(led.database_url, checked) if args.breakdown else None
    errors = check_load.errors + bare_load.errors + remembered_load.errors
    if errors:
        raise RuntimeError(f"errors: {errors[:5]}")
    figures: dict[str, Any] = {
        "check_rps": round(check_load.rps, 1),
        "check_p99_ms": round(check_load.percentile_ms(0.99), 2),
        "bare_rps": round(bare_load.rps, 1),
        "bulk_check_per_s": round(bulk_figures["bulk_check_per_s"], 1),
        "check_p50_ms": round(check_load.percentile_ms(0.50), 2),
        "bare_p50_ms": round(bare_load.percentile_ms(0.50), 2),
        "bare_p99_ms": round(bare_load.percentile_ms(0.99), 2),
        "check_to_bare": round(check_load.rps / bare_load.rps, 3) if bare_load.rps else None,
        # The servers' CPU time per answer: what each request costs, less sensitive to a busy machine than
        # the rates (the client in this process and other load take the rest of the two cores).
        "check_server_cpu_ms": round(check_load.cpu_ms_per_request, 3),
        "bare_server_cpu_ms": round(bare_load.cpu_ms_per_request, 3),
        "target_check_to_bare": TARGET_RATIO,
        "bulk_call_seconds_median": round(bulk_figures["bulk_call_seconds_median"], 3),
        "bulk_invoices_per_call": args.bulk_size,
        "clients": args.clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "per_round": per_round,
        "receivables": led.receivables,
        "server": "uvicorn " + " ".join(UVICORN_FLAGS),
        "loadavg": list(os.getloadavg()),
        "cpus": os.cpu_count(),
    }
    if args.bound:
        figures["remembered_rps"] = round(remembered_load.rps, 1)
        figures["remembered_to_bare"] = round(remembered_load.rps / bare_load.rps, 3) if bare_load.rps else None
        figures["remembered_server_cpu_ms"] = round(remembered_load.cpu_ms_per_request, 3)
    if stages is not None:
        figures["variants_per_invoice"] = stages.pop("variants_per_invoice")
        figures["check_breakdown_us"] = stages
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--duration", type=float, default=15.0, help="timed seconds per measurement (all rounds)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/API rounds")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--receivables", type=int, default=5000)
    parser.add_argument("--bulk-size", type=int, default=5000, help="invoices per /checks/bulk call")
    parser.add_argument("--bulk-calls", type=int, default=4)
    parser.add_argument("--profile", type=Path, help="cProfile of the bulk calls' client side (this process)")
    parser.add_argument(
        "--server-profile", type=Path, help="cProfile of the API server process (slows it: not for figures)"
    )
    parser.add_argument(
        "--bound", action="store_true", help="also serve /checks with each check answered from memory after its first"
    )
    parser.add_argument("--breakdown", action="store_true", help="time a single check's stages in this process")
    args = parser.parse_args()

    figures = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ratio = figures["check_to_bare"] or 0.0
    rows = [
        ("POST /checks (single)", f"{figures['check_rps']:,.0f} req/s", f"p99 {figures['check_p99_ms']} ms"),
        ("bare FastAPI POST", f"{figures['bare_rps']:,.0f} req/s", f"p99 {figures['bare_p99_ms']} ms"),
        ("/checks over bare", f"{ratio:.0%}", f"target >= {TARGET_RATIO:.0%}"),
        (
            "server CPU per answer",
            f"{figures['check_server_cpu_ms']} ms",
            f"bare {figures['bare_server_cpu_ms']} ms",
        ),
        ("POST /checks/bulk", f"{figures['bulk_check_per_s']:,.0f} invoices/s", f"{args.bulk_size:,} a call"),
    ]
    if args.bound:
        rows.append(
            (
                "/checks, checks remembered",
                f"{figures['remembered_rps']:,.0f} req/s",
                f"{figures['remembered_to_bare']:.0%} of bare, {figures['remembered_server_cpu_ms']} ms CPU each",
            )
        )
    if args.breakdown:
        stages = figures["check_breakdown_us"]
        rows.append(
            (
                "a check's stages (us)",
                f"{stages['check']} in all",
                ", ".join(f"{k} {v}" for k, v in stages.items() if k != "check")
                + f"; {figures['variants_per_invoice']} variants an invoice",
            )
        )
    width = max(len(r[0]) for r in rows)
    load = figures["loadavg"][0]
    print(f"\n{figures['clients']} clients, {figures['duration_s']:.0f} s each, load average {load:.2f}")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>20}  {note}")
    print(f"\nwritten to {args.json}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
