"""Reminder throughput: notices per second over a mirror of 100,000 receivables, and the worker's cost per cycle.

The mirror (SQLite by default, or PostgreSQL with ``--postgres DSN``) is written by bulk SQL, as
scripts/bench_indexer.py's check_database does: receivables in every status with due dates spread over
+-120 days of the cursor's block time, some unconfirmed registrations and pending payment claims, one
webhook subscription for a share of the debtors. Then, measured:

- cold cycle: the first scan makes every notice due (notices/s = notices made / scan seconds);
- steady cycle: the same block again, nothing new (the worker's cost per cycle: wall and CPU seconds);
- next-block cycle: the cursor one block (2 s) later, no new rows (the cost of a cycle on a live chain);
- next-day cycle: the cursor one day later, the notices that day brings;
- delivery: the queued webhook deliveries sent to a local receiver (deliveries/s).

    python scripts/bench_reminders.py --json reminders.json [--receivables 100000] [--postgres DSN]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, insert, text  # noqa: E402

from registry.domain import ClaimStatus, Status  # noqa: E402
from registry.reminders import CycleReport, ReminderWorker  # noqa: E402
from registry.settings import Settings  # noqa: E402
from registry.store.db import make_engine, migrate  # noqa: E402
from registry.store.models import NoticeSubscription, PaymentClaimRow, Receivable, table_of  # noqa: E402

DAY = 86_400
BLOCK_SECONDS = 2
HEAD = 5_000_000  # cursor block
NOW = 1_780_000_000  # its timestamp
DEBTORS, CREDITORS, FACTORS = 500, 500, 20


def block_time(n: int) -> int:
    return NOW - (HEAD - n) * BLOCK_SECONDS


def log(message: str) -> None:
    print(f"[bench_reminders] {message}", file=sys.stderr, flush=True)


def fill(engine: Engine, receivables: int, seed: int = 7) -> dict[str, int]:
    """Bulk rows: 60% confirmed/assigned/partially paid, 15% registered, 25% settled/cancelled/disputed."""
    rng = random.Random(seed)
    t = table_of(Receivable)
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    open_statuses = [Status.CONFIRMED, Status.ASSIGNED, Status.PARTIALLY_PAID]
    closed = [Status.SETTLED, Status.CANCELLED, Status.DISPUTED]
    for i in range(1, receivables + 1):
        roll = rng.random()
        status = rng.choice(open_statuses) if roll < 0.60 else Status.REGISTERED if roll < 0.75 else rng.choice(closed)
        counts[status.name.lower()] = counts.get(status.name.lower(), 0) + 1
        debtor = 1_000 + rng.randrange(DEBTORS)
        creditor = 2_000 + rng.randrange(CREDITORS)
        holder = 3_000 + rng.randrange(FACTORS) if status is Status.ASSIGNED else creditor
        face = rng.randrange(10_000, 10_000_000)
        paid = face if status is Status.SETTLED else face // 3 if status is Status.PARTIALLY_PAID else 0
        registered = HEAD - rng.randrange(0, 120 * DAY // BLOCK_SECONDS)
        rows.append(
            {
                "id": i,
                "valid_from": registered,
                "valid_to": None,
                "creditor": creditor,
                "debtor": debtor,
                "holder": holder,
                "status": int(status),
                "recourse": True,
                "face_value": face,
                "paid": paid,
                "currency": "CNY",
                "issue_date": block_time(registered) - 10 * DAY,
                "due_date": NOW + rng.randrange(-120 * DAY, 120 * DAY),
                "fingerprint": None,
                "invoice_key": None,
                "number_hash": None,
                "document_hash": None,
                "parent_id": None,
                "supersedes": None,
                "registered_block": registered,
            }
        )
    claims = [
        {
            "claim_id": n,
            "valid_from": HEAD - rng.randrange(0, 10 * DAY // BLOCK_SECONDS),
            "valid_to": None,
            "receivable_id": r["id"],
            "payee": r["holder"],
            "amount": r["face_value"] // 3,
            "status": int(ClaimStatus.PENDING),
            "payment_ref": bytes(32),
        }
        for n, r in enumerate((r for r in rows if r["status"] == Status.PARTIALLY_PAID), start=1)
        if n <= receivables // 20
    ]
    with engine.begin() as conn:
        for i in range(0, len(rows), 10_000):
            conn.execute(insert(t), rows[i : i + 10_000])
        for i in range(0, len(claims), 10_000):
            conn.execute(insert(table_of(PaymentClaimRow)), claims[i : i + 10_000])
        store_header(conn, HEAD)
        conn.execute(
            text(
                "INSERT INTO cursor (id, chain_id, registry_address, genesis_hash, deploy_block, block_number, "
                "block_hash, block_timestamp, ledger_head, ledger_count, updated_at) VALUES (1, 31337, :a, :g, 1, "
                ":b, :h, :t, :l, :c, :u)"
            ),
            {
                "a": "0x" + "11" * 20,
                "g": "0x" + "22" * 32,
                "b": HEAD,
                "h": block_hash(HEAD),
                "t": NOW,
                "l": bytes(32),
                "c": receivables,
                "u": time.time(),
            },
        )
    counts["pending_claims"] = len(claims)
    return counts


def block_hash(n: int) -> str:
    return f"0x{n:064x}"


def store_header(conn: Any, n: int) -> None:
    """The cursor block's header, as the indexer stores every block near the tip (the worker's reorg check)."""
    conn.execute(
        text("INSERT INTO block_headers (number, hash, parent_hash, timestamp) VALUES (:n, :h, :p, :t)"),
        {"n": n, "h": block_hash(n), "p": block_hash(n - 1), "t": block_time(n)},
    )


def move_cursor(engine: Engine, block: int) -> None:
    with engine.begin() as conn:
        store_header(conn, block)
        conn.execute(
            text("UPDATE cursor SET block_number = :b, block_hash = :h, block_timestamp = :t WHERE id = 1"),
            {"b": block, "h": block_hash(block), "t": block_time(block)},
        )


@contextmanager
def receiver() -> Iterator[tuple[str, list[int]]]:
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for the whole run

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            count[0] += 1
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/notices", count
    finally:
        server.shutdown()
        server.server_close()


def measured(worker: ReminderWorker, *, deliver: bool) -> tuple[CycleReport, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    if deliver:
        report = worker.run_once()
    else:
        report = CycleReport()
        worker.scan(report)
    return report, time.perf_counter() - wall, time.process_time() - cpu


def cycle_figures(report: CycleReport, wall: float, cpu: float) -> dict[str, Any]:
    return {
        "block": report.as_of_block,
        "rows_scanned": report.scanned,
        "notices_made": report.created,
        "notices_checked": report.checked,
        "withdrawn": report.withdrawn,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "notices_per_second": round(report.created / wall, 1) if wall else None,
    }


def run(url: str, receivables: int, subscribed_debtors: int, deliveries_cap: int) -> dict[str, Any]:
    engine = make_engine(url)
    migrate(engine)
    t0 = time.perf_counter()
    counts = fill(engine, receivables)
    log(f"filled {receivables} receivables in {time.perf_counter() - t0:.1f}s: {counts}")
    with receiver() as (hook, received):
        with engine.begin() as conn:
            conn.execute(
                insert(table_of(NoticeSubscription)),
                [
                    {
                        "entity_id": 1_000 + d,
                        "channel": "webhook",
                        "target": hook,
                        "kinds": "",
                        "active": True,
                        "created_at": time.time(),
                    }
                    for d in range(subscribed_debtors)
                ],
            )
        settings = Settings(data_dir=Path(tempfile.gettempdir()), webhook_secret="bench", finality_depth=64)
        worker = ReminderWorker(engine, settings, block_timestamp=block_time, delivery_batch=deliveries_cap)
        cold = cycle_figures(*measured(worker, deliver=False))
        log(f"cold cycle: {cold}")
        steady = [cycle_figures(*measured(worker, deliver=False)) for _ in range(3)]
        log(f"steady cycles: {steady}")
        move_cursor(engine, HEAD + 1)
        next_block = cycle_figures(*measured(worker, deliver=False))
        log(f"next-block cycle: {next_block}")
        restarted = ReminderWorker(engine, settings, block_timestamp=block_time, delivery_batch=deliveries_cap)
        after_restart = cycle_figures(*measured(restarted, deliver=False))
        log(f"first cycle after a restart: {after_restart}")
        move_cursor(engine, HEAD + DAY // BLOCK_SECONDS)
        next_day = cycle_figures(*measured(worker, deliver=False))
        log(f"next-day cycle: {next_day}")
        with engine.connect() as conn:
            queued = conn.execute(text("SELECT count(*) FROM notice_deliveries WHERE state = 'pending'")).scalar_one()
        cpu, wall = time.process_time(), time.perf_counter()
        report = CycleReport()
        worker.deliver(report)  # one batch of at most deliveries_cap
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        delivery = {
            "queued": queued,
            "sent": report.delivered,
            "received": received[0],
            "failed": report.failed,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "deliveries_per_second": round(report.delivered / wall, 1) if wall else None,
        }
        log(f"delivery: {delivery}")
    engine.dispose()
    return {
        "database": url.split(":", 1)[0],
        "receivables": receivables,
        "mirror": counts,
        "subscribed_debtors": subscribed_debtors,
        "cold_cycle": cold,
        "steady_cycles": steady,
        "next_block_cycle": next_block,
        "first_cycle_after_restart": after_restart,
        "next_day_cycle": next_day,
        "delivery": delivery,
        "load_average": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--receivables", type=int, default=100_000)
    parser.add_argument("--subscribed-debtors", type=int, default=50, help="debtors with a webhook subscription")
    parser.add_argument("--deliveries", type=int, default=2_000, help="deliveries sent in the delivery figure")
    parser.add_argument("--postgres", help="a PostgreSQL DSN to run on instead of a temporary SQLite file")
    args = parser.parse_args(argv)
    if args.postgres:
        figures = run(args.postgres, args.receivables, args.subscribed_debtors, args.deliveries)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = run(f"sqlite:///{tmp}/reminders.db", args.receivables, args.subscribed_debtors, args.deliveries)
    text_out = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text_out + "\n")
    print(text_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
