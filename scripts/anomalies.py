"""Synthetic ledgers with injected anomalies, and precision/recall of registry.anomalies on them.

    python scripts/anomalies.py generate --seed 1 --db /tmp/anom1.db [--receivables 20000 --debtors 50 --per-kind 40]
    python scripts/anomalies.py evaluate --db /tmp/anom1.db [--incremental 20] [--json PATH]
    python scripts/anomalies.py run --seeds 1 2 [--json PATH]          # both, one ledger per seed

``generate`` builds a mirror directly in SQL (migrated schema, no chain): a year of registrations to
``--debtors`` debtors from a few creditors each, with per-debtor habits (amount distribution, some
rounding amounts to 1,000.00, some due at month end, payment terms, confirmation delay), small batches
of 1-4 invoices, cancellations, confirmations, assignments and occasional re-assignments; then
``--per-kind`` injected anomalies of each kind, whose receivable ids are written to ``<db>.labels.json``:

- ``amount_outlier``: face value ``exp(mu +- U(4, 10) sigma)`` of the debtor's log-amount distribution;
- ``burst``: 10-30 registrations to one debtor within 0.5-4 hours (every one of them is labelled);
- ``rapid_reassignment``: assigned and re-assigned 2-3 times within hours to a day and a half, a fifth of
  them back to the first factor;
- ``late_registration``: registered 0.1-4 days before the due date (terms of 30 days or more);
- ``near_duplicate``: a copy of an earlier live registration (same debtor, currency, amount, due date;
  another number; the same issue date in 70% of cases, the same document hash in 40%) registered 1-30
  days later, by the same or another creditor;
- ``confirmation_speed``: confirmed within 10 s - 5 min, or after 15-40 times the debtor's usual delay.

The mirror holds what the detectors read: versioned ``receivables`` rows, ``assignments``,
``ReceivableConfirmed`` raw events, block headers of the blocks with events (2 s blocks) and the cursor.
Natural look-alikes (two round amounts due the same month end, a lognormal tail) are *not* labelled: they
count as false positives, as they would in production.

``evaluate`` runs :class:`registry.anomalies.Scanner` over the whole ledger (one scan), compares the open
flags of each kind with the labels, and with ``--incremental N`` also scans a copy in N steps of blocks
and checks that the flags are the same.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select

from registry.anomalies import AnomalyParams, Kind, Scanner
from registry.domain import Status
from registry.store.db import make_engine, migrate
from registry.store.models import (
    AnomalyFlag,
    Assignment,
    BlockHeader,
    Cursor,
    RawEvent,
    Receivable,
    table_of,
)

DAY = 86_400
HOUR = 3_600
T0 = 1_704_067_200  # 2024-01-01 UTC
BLOCK_TIME = 2
YEAR = 365 * DAY


def block_at(t: float) -> int:
    return int((t - T0) // BLOCK_TIME) + 1


def time_of(block: int) -> int:
    return T0 + (block - 1) * BLOCK_TIME


def fake_hash(*parts: Any) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class Debtor:
    id: int
    rate: float  # registrations per day
    mu: float  # log face value (fen)
    sigma: float
    rounding: int  # 0 or the minor units amounts are rounded to
    month_end: bool
    terms: list[int]
    confirm_median: float  # seconds
    confirm_sigma: float
    creditors: list[int]


@dataclass
class Spec:
    """One registration to be, with its lifecycle."""

    time: float
    debtor: Debtor
    creditor: int
    face_value: int
    issue: int
    due: int
    document: bytes
    label: Kind | None = None
    confirm_delay: float | None = None  # None: drawn from the debtor's habit
    chain: list[float] = field(default_factory=list)  # absolute times of assignments (injected chains)
    cycle: bool = False
    no_cancel: bool = False
    copy_of: Spec | None = None
    id: int = 0


def month_end(t: int) -> int:
    d = datetime.datetime.fromtimestamp(t, datetime.UTC)
    last = calendar.monthrange(d.year, d.month)[1]
    return int(datetime.datetime(d.year, d.month, last, tzinfo=datetime.UTC).timestamp())


class Generator:
    def __init__(self, seed: int, receivables: int, debtors: int, per_kind: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.n = receivables
        self.per_kind = per_kind
        rng = self.rng
        weights = [rng.lognormvariate(0, 0.8) for _ in range(debtors)]
        scale = receivables / 365 / sum(weights)
        self.creditors = list(range(101, 101 + 4 * debtors))
        self.factors = list(range(901, 911))
        self.debtors = [
            Debtor(
                id=i + 1,
                rate=w * scale,
                mu=math.log(rng.uniform(20_000, 2_000_000) * 100),
                sigma=rng.uniform(0.3, 0.9),
                rounding=100_000 if rng.random() < 0.25 else 0,
                month_end=rng.random() < 0.3,
                terms=rng.choice([[30], [30, 60], [60, 90], [90, 120], [7, 30]]),
                confirm_median=rng.uniform(0.5, 5) * DAY,
                confirm_sigma=rng.uniform(0.3, 0.7),
                creditors=rng.sample(self.creditors, rng.randint(3, 10)),
            )
            for i, w in enumerate(weights)
        ]

    # ------------------------------------------------------------------ registrations

    def amount(self, d: Debtor, shift: float = 0.0) -> int:
        value = int(math.exp(self.rng.gauss(d.mu, d.sigma) + shift * d.sigma))
        if d.rounding:
            value = max(d.rounding, round(value / d.rounding) * d.rounding)
        return max(1, value)

    def terms(self, d: Debtor, reg_time: float, min_term: int = 0) -> tuple[int, int]:
        rng = self.rng
        term = max(min_term, rng.choice(d.terms)) * DAY
        delay = min(rng.expovariate(1 / (3 * DAY)), 0.8 * term)
        issue = int(reg_time - delay)
        due = issue + term
        if d.month_end:
            due = month_end(due)
        return issue - issue % DAY, due - due % DAY + 12 * HOUR

    def spec(self, d: Debtor, t: float, **kw: Any) -> Spec:
        rng = self.rng
        issue, due = self.terms(d, t)
        document = rng.randbytes(32) if rng.random() < 0.8 else bytes(32)
        return Spec(t, d, rng.choice(d.creditors), self.amount(d), issue, due, document, **kw)

    def normal(self) -> list[Spec]:
        rng = self.rng
        out = []
        for d in self.debtors:
            mean_batch = 1.6
            t = T0 + rng.expovariate(d.rate / mean_batch) * DAY
            while t < T0 + YEAR:
                size = rng.choices([1, 2, 3, 4], [0.6, 0.25, 0.1, 0.05])[0]
                creditor = rng.choice(d.creditors)
                for _ in range(size):
                    s = self.spec(d, t)
                    s.creditor = creditor
                    out.append(s)
                t += rng.expovariate(d.rate / mean_batch) * DAY
        return out

    def inject(self, normal: list[Spec]) -> list[Spec]:
        rng, k = self.rng, self.per_kind
        late_start = T0 + 60 * DAY
        out: list[Spec] = []

        def when() -> float:
            return rng.uniform(late_start, T0 + YEAR - 20 * DAY)

        busy = [d for d in self.debtors if d.rate * 60 >= 25]  # enough history after 60 days
        for _ in range(k):
            d = rng.choice(busy)
            s = self.spec(d, when(), label=Kind.AMOUNT_OUTLIER)
            s.face_value = self.amount(d, shift=rng.choice([-1, 1]) * rng.uniform(4, 10))
            out.append(s)
        bursts = 0
        while sum(1 for s in out if s.label is Kind.BURST) < k and bursts < k:
            bursts += 1
            d, start, size = rng.choice(self.debtors), when(), rng.randint(10, 30)
            span = rng.uniform(0.5, 4) * HOUR
            creditors = rng.sample(d.creditors, min(len(d.creditors), rng.randint(1, 3)))
            for _ in range(size):
                s = self.spec(d, start + rng.uniform(0, span), label=Kind.BURST)
                s.creditor = rng.choice(creditors)
                out.append(s)
        for _ in range(k):
            s = self.spec(rng.choice(self.debtors), when(), label=Kind.RAPID_REASSIGNMENT, no_cancel=True)
            s.confirm_delay = rng.uniform(HOUR, 2 * DAY)
            first = s.time + s.confirm_delay + rng.uniform(HOUR, 3 * DAY)
            s.chain = [first]
            for _ in range(2 if rng.random() < 0.7 else 3):
                s.chain.append(s.chain[-1] + rng.uniform(2 * HOUR, 18 * HOUR))
            s.cycle = rng.random() < 0.2
            out.append(s)
        for _ in range(k):
            d = rng.choice(self.debtors)
            t = when()
            term = max(30, rng.choice(d.terms)) * DAY
            due = int(t + rng.uniform(0.1, 4) * DAY)
            s = self.spec(d, t, label=Kind.LATE_REGISTRATION)
            s.due, s.issue = due, due - term
            out.append(s)
        originals = [s for s in normal if s.time < T0 + YEAR - 31 * DAY and s.label is None]
        for original in rng.sample(originals, k):
            original.no_cancel = True
            d = original.debtor
            s = self.spec(d, original.time + rng.uniform(1, 30) * DAY, label=Kind.NEAR_DUPLICATE, copy_of=original)
            s.face_value, s.due, s.issue = original.face_value, original.due, original.issue
            if rng.random() < 0.3:  # the copy's issue date moved a few days
                s.issue += rng.choice([-1, 1]) * rng.randint(1, 5) * DAY
            s.creditor = original.creditor if rng.random() < 0.5 else rng.choice(d.creditors)
            s.document = original.document if rng.random() < 0.4 else rng.randbytes(32)
            out.append(s)
        for _ in range(k):
            d = rng.choice(busy)
            s = self.spec(d, when(), label=Kind.CONFIRMATION_SPEED, no_cancel=True)
            fast = rng.random() < 0.5
            s.confirm_delay = rng.uniform(10, 300) if fast else d.confirm_median * rng.uniform(15, 40)
            out.append(s)
        return out

    # ------------------------------------------------------------------ the mirror

    def build(self, url: str) -> dict[str, Any]:
        started = time.perf_counter()
        normal = self.normal()
        injected = self.inject(normal)
        specs = sorted(normal + injected, key=lambda s: s.time)
        for i, s in enumerate(specs, start=1):
            s.id = i
        rng = self.rng
        receivables: list[dict[str, Any]] = []
        assignments: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        log_index: Counter[int] = Counter()
        end_block = block_at(T0 + YEAR)

        def log_at(block: int) -> int:
            log_index[block] += 1
            return log_index[block] - 1

        for s in specs:
            reg_block = block_at(s.time)
            log_at(reg_block)
            row = {
                "id": s.id,
                "creditor": s.creditor,
                "debtor": s.debtor.id,
                "holder": s.creditor,
                "status": int(Status.REGISTERED),
                "recourse": False,
                "face_value": s.face_value,
                "paid": 0,
                "currency": "CNY",
                "issue_date": s.issue,
                "due_date": s.due,
                "fingerprint": rng.randbytes(32),
                "invoice_key": rng.randbytes(32),
                "number_hash": rng.randbytes(32),
                "document_hash": s.document,
                "parent_id": None,
                "supersedes": None,
                "registered_block": reg_block,
            }
            versions: list[tuple[int, dict[str, Any]]] = [(reg_block, dict(row))]

            def change(block: int, versions: list[tuple[int, dict[str, Any]]] = versions, **changes: Any) -> None:
                state = {**versions[-1][1], **changes}
                if versions[-1][0] == block:
                    versions[-1] = (block, state)
                else:
                    versions.append((block, state))

            if not s.no_cancel and s.label is None and rng.random() < 0.03:
                cancel = block_at(s.time + rng.uniform(HOUR, 10 * DAY))
                if cancel <= end_block:
                    log_at(cancel)
                    change(cancel, status=int(Status.CANCELLED))
            elif s.no_cancel or rng.random() < 0.9:
                delay = s.confirm_delay
                if delay is None:
                    delay = rng.lognormvariate(math.log(s.debtor.confirm_median), s.debtor.confirm_sigma)
                confirm = block_at(s.time + delay)
                if confirm <= end_block:
                    events.append(
                        {
                            "block_number": confirm,
                            "log_index": log_at(confirm),
                            "block_hash": fake_hash(confirm),
                            "tx_hash": fake_hash("tx", confirm, s.id),
                            "name": "ReceivableConfirmed",
                            "seq": None,
                            "ledger_head": None,
                            "args": json.dumps({"id": s.id, "debtor": s.debtor.id}, separators=(",", ":")),
                        }
                    )
                    change(confirm, status=int(Status.CONFIRMED))
                    chain = s.chain
                    if not chain and rng.random() < 0.45:
                        chain = [s.time + delay + rng.expovariate(1 / (5 * DAY))]
                        if rng.random() < 0.04:
                            chain.append(chain[0] + rng.uniform(15, 60) * DAY)
                    holder = s.creditor
                    factors = rng.sample(self.factors, len(chain))
                    if s.cycle:
                        factors[-1] = factors[0]
                    for at, factor in zip(chain, factors, strict=True):
                        block = max(block_at(at), confirm + 1)
                        if block > end_block:
                            break
                        assignments.append(
                            {
                                "block_number": block,
                                "log_index": log_at(block),
                                "receivable_id": s.id,
                                "from_entity": holder,
                                "to_entity": factor,
                                "advance": s.face_value * 9 // 10,
                                "recourse": False,
                                "terms_hash": bytes(32),
                            }
                        )
                        change(block, holder=factor, status=int(Status.ASSIGNED))
                        holder = factor
            for i, (block, state) in enumerate(versions):
                upto = versions[i + 1][0] if i + 1 < len(versions) else None
                receivables.append({**state, "valid_from": block, "valid_to": upto})
        blocks = sorted(set(log_index) | {end_block})
        engine = make_engine(url)
        migrate(engine)
        with engine.begin() as conn:
            for table, rows in (
                (Receivable, receivables),
                (Assignment, assignments),
                (RawEvent, events),
                (
                    BlockHeader,
                    [
                        {"number": b, "hash": fake_hash(b), "parent_hash": fake_hash(b - 1), "timestamp": time_of(b)}
                        for b in blocks
                    ],
                ),
            ):
                for i in range(0, len(rows), 5_000):
                    conn.execute(insert(table_of(table)), rows[i : i + 5_000])
            conn.execute(
                insert(table_of(Cursor)),
                {
                    "id": 1,
                    "chain_id": 31337,
                    "registry_address": "0x" + "00" * 20,
                    "genesis_hash": fake_hash(0),
                    "deploy_block": 1,
                    "block_number": end_block,
                    "block_hash": fake_hash(end_block),
                    "block_timestamp": time_of(end_block),
                    "ledger_head": bytes(32),
                    "ledger_count": 0,
                    "updated_at": time.time(),
                },
            )
        engine.dispose()
        labels: dict[str, list[int]] = defaultdict(list)
        for s in specs:
            if s.label is not None:
                labels[s.label.value].append(s.id)
        return {
            "seed": self.seed,
            "receivables": len(specs),
            "debtors": len(self.debtors),
            "assignments": len(assignments),
            "confirmations": len(events),
            "end_block": end_block,
            "labels": {k.value: sorted(labels.get(k.value, [])) for k in Kind},
            "seconds": round(time.perf_counter() - started, 2),
        }


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _flags(url: str) -> dict[tuple[str, int], tuple[str, float]]:
    engine = make_engine(url)
    f = table_of(AnomalyFlag)
    with engine.connect() as conn:
        rows = conn.execute(
            select(f.c.kind, f.c.receivable_id, f.c.severity, f.c.score).where(f.c.state == "open")
        ).all()
    engine.dispose()
    return {(str(k), int(r)): (str(s), float(score)) for k, r, s, score in rows}


def evaluate(db: Path, incremental: int, params: AnomalyParams | None = None) -> dict[str, Any]:
    labels: dict[str, list[int]] = json.loads(db.with_name(db.name + ".labels.json").read_text())["labels"]
    work = db.with_name(db.name + ".eval.db")
    shutil.copyfile(db, work)
    url = f"sqlite:///{work}"
    engine = make_engine(url)
    scanner = Scanner(params)
    report = scanner.run_once(engine)
    rescan = scanner.run_once(engine)
    engine.dispose()
    flags = _flags(url)
    result: dict[str, Any] = {
        "scan_seconds": round(report.seconds, 2),
        "flags_raised": report.raised,
        "rescan_changes": rescan.raised + rescan.updated + rescan.reopened + rescan.retired,
        "kinds": {},
    }
    for kind in Kind:
        truth = set(labels[kind.value])
        found = {rid for (k, rid) in flags if k == kind.value}
        tp = len(truth & found)
        serious = {rid for rid in found if flags[(kind.value, rid)][0] != "low"}
        result["kinds"][kind.value] = {
            "injected": len(truth),
            "flagged": len(found),
            "true_positives": tp,
            "precision": round(tp / len(found), 3) if found else None,
            "recall": round(tp / len(truth), 3) if truth else None,
            "precision_medium_up": round(len(truth & serious) / len(serious), 3) if serious else None,
            "recall_medium_up": round(len(truth & serious) / len(truth), 3) if truth else None,
            "severity": dict(Counter(flags[(kind.value, rid)][0] for rid in found)),
            "severity_of_true_positives": dict(Counter(flags[(kind.value, rid)][0] for rid in truth & found)),
            "scores_of_false_positives": sorted(round(flags[(kind.value, rid)][1], 1) for rid in found - truth)[:50],
            "scores_of_true_positives": sorted(round(flags[(kind.value, rid)][1], 1) for rid in truth & found)[:50],
        }
    if incremental:
        inc = db.with_name(db.name + ".inc.db")
        shutil.copyfile(db, inc)
        inc_url = f"sqlite:///{inc}"
        engine = make_engine(inc_url)
        with engine.connect() as conn:
            end = int(conn.execute(select(Cursor.block_number)).scalar_one())
        started = time.perf_counter()
        for step in range(1, incremental + 1):
            scanner.run_once(engine, as_of_block=end * step // incremental)
        result["incremental_seconds"] = round(time.perf_counter() - started, 2)
        engine.dispose()
        inc_flags = _flags(inc_url)
        result["incremental_steps"] = incremental
        result["incremental_equal"] = inc_flags == flags
        if inc_flags != flags:
            result["incremental_difference"] = sorted(
                [list(k) for k in set(inc_flags.items()) ^ set(flags.items())], key=str
            )[:20]
        inc.unlink()
    work.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate")
    ev = sub.add_parser("evaluate")
    run = sub.add_parser("run")
    for p in (gen, run):
        p.add_argument("--receivables", type=int, default=20_000)
        p.add_argument("--debtors", type=int, default=50)
        p.add_argument("--per-kind", type=int, default=40)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--db", type=Path, required=True)
    ev.add_argument("--db", type=Path, required=True)
    for p in (ev, run):
        p.add_argument("--incremental", type=int, default=0, help="also scan a copy in this many steps")
        p.add_argument("--json", type=Path)
    run.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    run.add_argument("--dir", type=Path, default=Path("build/anomalies"))
    args = parser.parse_args()

    def generate(seed: int, db: Path) -> dict[str, Any]:
        if db.exists():
            db.unlink()
        db.parent.mkdir(parents=True, exist_ok=True)
        info = Generator(seed, args.receivables, args.debtors, args.per_kind).build(f"sqlite:///{db}")
        db.with_name(db.name + ".labels.json").write_text(json.dumps(info, indent=1))
        return info

    out: dict[str, Any]
    if args.command == "generate":
        info = generate(args.seed, args.db)
        print(json.dumps({k: v for k, v in info.items() if k != "labels"}, indent=1))
        return
    if args.command == "evaluate":
        out = evaluate(args.db, args.incremental)
    else:
        out = {"params": AnomalyParams().__dict__, "seeds": {}}
        for seed in args.seeds:
            db = args.dir / f"seed{seed}.db"
            info = generate(seed, db)
            result = evaluate(db, args.incremental)
            result["ledger"] = {k: v for k, v in info.items() if k != "labels"}
            out["seeds"][str(seed)] = result
    text = json.dumps(out, indent=1)
    print(text if args.command == "evaluate" else _table(out))
    if args.json:
        args.json.write_text(text)


def _table(out: dict[str, Any]) -> str:
    lines = []
    for seed, result in out["seeds"].items():
        ledger = result["ledger"]
        lines.append(
            f"seed {seed}: {ledger['receivables']} receivables, scan {result['scan_seconds']} s, "
            f"rescan changes {result['rescan_changes']}, incremental equal {result.get('incremental_equal', '-')}"
        )
        for kind, r in result["kinds"].items():
            lines.append(
                f"  {kind:20} injected {r['injected']:4} flagged {r['flagged']:4} "
                f"precision {r['precision']} recall {r['recall']}; medium and high only: "
                f"precision {r['precision_medium_up']} recall {r['recall_medium_up']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
