"""kill -9 of the indexer: the mirror after any number of crashes equals a fresh re-index.

- ``registry index`` SIGKILLed at random points 20 times (seeded) while a workload keeps registering,
  confirming and assigning; restarted each time; finally ``registry index --once`` catches up and
  the oracle judges (``scripts/soak_indexer.py`` does the same 100 times).
- Deterministic points: inside a batch's transaction after everything was written but before the
  commit (the mirror stays at the previous batch, which equals a re-index up to there), and in the
  middle of the first migration (the next start migrates from scratch).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from registry.demo import seed_ledger
from registry.store.db import make_engine
from tests.indexer.oracle import (
    IndexerProcess,
    Stack,
    check_mirror,
    die_inside,
    indexer_env,
    kill_loop,
    local_stack,
    read_cursor,
    run_child,
    table_rows,
)

KILLS = 20
SEED = 20_261_129


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with local_stack() as running:
        yield running


@pytest.mark.parametrize(
    ("db", "kills"), [pytest.param("sqlite", KILLS, id="sqlite"), pytest.param("postgresql", 10, id="postgresql")]
)
def test_kill_9_at_random_points_while_the_chain_grows(
    stack: Stack, request: pytest.FixtureRequest, tmp_path: Path, db: str, kills: int
) -> None:
    url = str(request.getfixturevalue("postgres_url" if db == "postgresql" else "sqlite_url"))
    report = kill_loop(stack, url, tmp_path / "kills", kills=kills, seed=SEED, spawn="fork")
    assert len(report.records) == kills
    modes = report.by_mode()
    assert modes.get("start-up", 0) >= 1 and modes.get("indexing", 0) >= kills // 2, modes
    # Kills after a first commit found the indexer with work left (the workload keeps the chain ahead).
    assert report.progressed >= modes["indexing"], report.to_json()
    assert report.behind_at_kill >= kills // 2, report.to_json()
    assert report.workload["registered"] > 0 and report.workload["batches"] > 0
    assert report.oracle["events"] > 0


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Stack:
    seed_ledger(stack.registry, stack.consortium, per_state=1)
    return stack


@pytest.mark.parametrize("nth", [1, 4])
def test_kill_inside_a_batch_transaction_leaves_the_previous_batch(
    seeded: Stack, sqlite_url: str, tmp_path: Path, nth: int
) -> None:
    env = indexer_env(seeded.node.url, seeded.deployment, sqlite_url, tmp_path, max_log_range=4)
    engine = make_engine(sqlite_url)
    cursors = []
    for round_ in range(2):
        before = read_cursor(engine)
        status = run_child(die_inside, env, "batch", nth, str(tmp_path / f"die-{round_}.log"))
        assert status == -signal.SIGKILL, (tmp_path / f"die-{round_}.log").read_text()
        after = read_cursor(engine)
        cursors.append(after)
        if nth == 1:
            assert after == before is None, "the killed batch's transaction must leave nothing"
            assert not any(table_rows(engine).values()), "rows of an uncommitted batch survived the kill"
        else:
            assert after is not None and after > (before or 0)
            check_mirror(engine, seeded.chain, seeded.deployment, at_head=False)
    proc = IndexerProcess(env, tmp_path / "final.log", once=True, spawn="fork")
    assert proc.wait(120) == 0, proc.log_tail()
    check_mirror(engine, seeded.chain, seeded.deployment)
    engine.dispose()


def test_kill_during_the_first_migration_then_restart(seeded: Stack, sqlite_url: str, tmp_path: Path) -> None:
    env = indexer_env(seeded.node.url, seeded.deployment, sqlite_url, tmp_path)
    engine = make_engine(sqlite_url)
    status = run_child(die_inside, env, "migration", 3, str(tmp_path / "die.log"))
    assert status == -signal.SIGKILL, (tmp_path / "die.log").read_text()
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}, "a half-built schema was committed"
    proc = IndexerProcess(env, tmp_path / "restart.log", once=True, spawn="fork")
    assert proc.wait(120) == 0, proc.log_tail()
    check_mirror(engine, seeded.chain, seeded.deployment)
    engine.dispose()
