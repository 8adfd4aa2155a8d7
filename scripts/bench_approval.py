"""Auto-approval figure (issue 6, "Figures"): time from an eligible offer to its on-chain assignment,
beside the raw relay of the same kind of signed request, on the local stack.

    python scripts/bench_approval.py --json build/bench-approval.json [--offers 200] [--modes automine,1s]

Set-up (not timed): a fresh Anvil (the registry deployed, the demo consortium admitted), a SQLite mirror
kept current by a live indexer thread (polling every 20 ms), ``2 x --offers`` confirmed receivables of
one creditor against one debtor (distinct amounts: no near-duplicates), and the first factor's policy
(every rule on, limits far above what the run assigns, so every offer is eligible).

Timed, per mining mode (Anvil's automine, and interval mining with 1 s blocks as the long-lived local
chain runs), alternating offer / raw so that both see the same machine and chain:

- ``offer_to_assigned``: the creditor's ``assign`` request is signed beforehand (EIP-712, nonce and
  deadline set); the clock runs from ``OfferDesk.submit`` (the relayer's checks and simulation, the wait
  for the mirror to reach the simulated block, the decision under the factor's lock, the relay) to the
  mined receipt of the assignment, which ``submit`` waits for. ``decision`` is the part up to the
  recorded decision (``decided_at``).
- ``raw_relay``: a request of the same kind (another receivable, same holder, factor and terms) relayed
  straight through ``Relayer.submit``, from the call to the mined receipt.

Every offer must end ``assigned`` with the factor as holder on-chain (checked). The desk runs in this
process (no HTTP: ``POST /offers`` adds a request's parsing and sign-in lookup to it). The machine is
shared: the load average is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import Stack, log, set_automine, set_interval_mining, stack

from registry.approval import OfferDesk
from registry.chain.contract import SignedRequest
from registry.checks import DuplicateChecker
from registry.demo import DAY
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.invoice import Invoice
from registry.relay import Relayer
from registry.store.db import make_engine

POLICY = {
    "enabled": True,
    "currencies": ["CNY"],
    "confirmed_only": True,
    "max_amount": {"CNY": "10,000,000.00"},
    "max_tenor_days": 365,
    "min_advance_rate": "0.5",
    "max_advance_rate": "0.95",
    "debtor_limit": {"CNY": "1,000,000,000.00"},
    "total_limit": {"CNY": "1,000,000,000.00"},
    "no_anomaly_flag": True,
    "no_near_duplicate": True,
}


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] * 1000, 1)

    return {
        "n": len(ordered),
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


def _receivables(s: Stack, count: int, prefix: str) -> list[tuple[int, Invoice]]:
    """``count`` confirmed receivables of the first creditor against the first debtor (set-up)."""
    creditor, debtor = s.consortium.creditors[0], s.consortium.debtors[0]
    now = s.now
    invoices = [
        Invoice.parse(
            debtor=debtor.entity,
            invoice_number=f"{prefix}-{i:06d}",
            face_value=1_000_000 + i * 100,  # minor units, distinct
            currency="CNY",
            issue_date=now - DAY,
            due_date=now + 90 * DAY,
        )
        for i in range(count)
    ]
    out: list[tuple[int, Invoice]] = []
    for start in range(0, count, 250):
        chunk = invoices[start : start + 250]
        outcomes = s.registry.register_batch(creditor.account, chunk)
        for outcome, invoice in zip(outcomes, chunk, strict=True):
            assert outcome.id is not None, outcome.error
            out.append((int(outcome.id), invoice))
    for rid, invoice in out:
        s.registry.confirm(debtor.account, rid, invoice.fingerprint)
    return out


def _signed(s: Stack, rid: int, invoice: Invoice) -> SignedRequest:
    creditor, factor = s.consortium.creditors[0], s.consortium.factors[0]
    deadline = max(int(time.time()), s.now) + 3600
    return s.registry.sign_request(
        creditor.account,
        "assign",
        rid,
        factor.entity,
        invoice.face_value * 8 // 10,
        False,
        bytes(32),
        deadline=deadline,
    )


def run(offers: int, modes: list[str], workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with stack(gas_limit=300_000_000) as s:
        engine = make_engine(f"sqlite:///{workdir / 'mirror.db'}")
        indexer = Indexer(s.chain, s.registry.deployment, engine, IndexerConfig(poll_interval=0.02))
        indexer.start()
        thread = threading.Thread(target=indexer.run, daemon=True)
        thread.start()
        try:
            relayer = Relayer(s.registry, engine, s.consortium.relayer)
            desk = OfferDesk(s.registry, engine, relayer, DuplicateChecker(engine))
            factor = s.consortium.factors[0]
            desk.set_policy(factor.entity, POLICY, factor.address)
            for mode in modes:
                log(f"[{mode}] set-up: {2 * offers} confirmed receivables")
                set_automine(s)
                pool = _receivables(s, 2 * offers, f"BENCH-{mode}")
                if mode != "automine":
                    set_interval_mining(s, float(mode.removesuffix("s")))
                offer_times: list[float] = []
                decision_times: list[float] = []
                raw_times: list[float] = []
                for i in range(offers):
                    (rid, invoice), (raw_rid, raw_invoice) = pool[2 * i], pool[2 * i + 1]
                    request = _signed(s, rid, invoice)
                    wall, t0 = time.time(), time.perf_counter()
                    view = desk.submit(request)
                    offer_times.append(time.perf_counter() - t0)
                    decision_times.append(view.decided_at - wall)
                    if view.state != "assigned":
                        raise SystemExit(f"offer {view.id} ended {view.state}: {view.rules} {view.error}")
                    raw = _signed(s, raw_rid, raw_invoice)
                    t0 = time.perf_counter()
                    relayer.submit(raw, "assign", wait_indexed=0)
                    raw_times.append(time.perf_counter() - t0)
                    if (i + 1) % 50 == 0:
                        log(f"[{mode}] {i + 1}/{offers}: offer p50 {_stats(offer_times)['p50_ms']} ms")
                holders = {s.registry.get_receivable(rid).holder for rid, _ in pool}
                assert holders == {factor.entity}, holders
                results[mode] = {
                    "offer_to_assigned": _stats(offer_times),
                    "decision": _stats(decision_times),
                    "raw_relay": _stats(raw_times),
                }
                log(f"[{mode}] {json.dumps(results[mode])}")
        finally:
            indexer.stop()
            thread.join(10)
            indexer.close()
            engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--offers", type=int, default=200)
    parser.add_argument("--modes", default="automine,1s", help="comma-separated: automine and/or '<seconds>s'")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m != "automine" and not (m.endswith("s") and m[:-1].replace(".", "", 1).isdigit()):
            parser.error(f"--modes: {m!r} is neither automine nor '<seconds>s'")
    if args.offers < 1:
        parser.error("--offers: at least 1")
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-approval-") as tmp:
        figures = run(args.offers, modes, Path(tmp))
    report = {
        "benchmark": "auto-approval: eligible offer -> on-chain assignment",
        "offers_per_mode": args.offers,
        "modes": figures,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
