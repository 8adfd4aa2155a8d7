"""Soak test of the indexer: ``registry index`` killed with SIGKILL at random points, again and again.

A fresh Anvil with the registry deployed and the demo consortium admitted; a workload thread keeps
registering (single and batched, with refused duplicate lines), confirming and assigning; the indexer
runs as a child process and is SIGKILLed at a random point (a quarter of the time somewhere in its
start-up, otherwise somewhere after its first commit), then restarted, ``--kills`` times. Finally the
workload stops, a fresh ``python -m registry.cli index --once`` catches up, and the oracle of
tests/indexer/oracle.py judges: the database equals a fresh re-index of the same chain, the cursor hash
is the chain's, no gaps, no duplicates, the ledger head agrees with the contract's.

    python scripts/soak_indexer.py --kills 100 --seed 1 --json build/soak-indexer.json
    python scripts/soak_indexer.py --database-url postgresql://postgres@127.0.0.1:5432/soak  # an empty database

Exits 0 when the oracle holds, 1 otherwise; prints every kill and a summary, writes the JSON report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/soak_indexer.py` from anywhere
    sys.path.insert(0, str(ROOT))

from tests.indexer.oracle import kill_loop, local_stack  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="how many times to SIGKILL the indexer (100)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill points and the workload (1)")
    parser.add_argument("--database-url", help="an empty database to index into (default: SQLite in --work-dir)")
    parser.add_argument("--work-dir", type=Path, help="logs, deployment file, SQLite database (default: a temp dir)")
    parser.add_argument(
        "--spawn",
        choices=("fork", "exec"),
        default="fork",
        help="fork: `registry index` forked from a pre-loaded server (fast start, kills land in indexing); "
        "exec: a fresh `python -m registry.cli index` each time (seconds of imports per start)",
    )
    parser.add_argument("--startup-kills", type=float, default=0.25, help="share of kills during start-up (0.25)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="soak-indexer-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{work_dir / 'mirror.db'}"
    print(f"soak: {args.kills} kills, seed {args.seed}, spawn {args.spawn}, database {url}, work dir {work_dir}")
    started = time.monotonic()
    result: dict[str, object] = {"kills": args.kills, "seed": args.seed, "spawn": args.spawn, "work_dir": str(work_dir)}
    ok = False
    try:
        with local_stack(log_path=work_dir / "anvil.log") as stack:
            report = kill_loop(
                stack,
                url,
                work_dir / "runs",
                kills=args.kills,
                seed=args.seed,
                spawn=args.spawn,
                startup_kills=args.startup_kills,
                log=lambda line: print(line, flush=True),
            )
        result.update(json.loads(report.to_json()))
        ok = True
        oracle = report.oracle
        print(
            f"oracle holds after {len(report.records)} kills ({report.by_mode()}), {report.progressed} with progress, "
            f"{report.lock_retries} lock retries: cursor {oracle['cursor_block']}, {oracle['events']} events, "
            f"ledger {oracle['ledger_count']}; workload {report.workload}; {report.seconds}s"
        )
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        print(f"FAILED: {result['error']}", file=sys.stderr)
    result["ok"] = ok
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"report written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
