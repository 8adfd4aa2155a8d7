"""The automations beside the indexer: an anomaly scan whenever the mirror advanced, reminder cycles, and
loops that survive a failed cycle and stop when asked."""

from __future__ import annotations

import time

from sqlalchemy import select

from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from registry.indexer.indexer import Indexer
from registry.settings import Settings
from registry.store.db import make_engine
from registry.store.models import Cursor
from registry.workers import Workers
from tests.conftest import InvoiceFactory


def _wait_cursor(workers: Workers, block: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with workers.engine.connect() as conn:
            if (conn.execute(select(Cursor.block_number)).scalar() or -1) >= block:
                return
        assert time.monotonic() < deadline, "the indexer did not reach the block"
        time.sleep(0.05)


def test_scans_once_per_new_block_and_reminds(
    api_settings: Settings,
    live_indexer: Indexer,
    registry: RegistryClient,
    consortium: Consortium,
    make_invoice: InvoiceFactory,
) -> None:
    engine = make_engine(api_settings.database)
    workers = Workers(engine, api_settings)
    assert workers.scan_anomalies() is True
    assert workers.scan_anomalies() is False, "nothing new: no second scan"
    registry.register(consortium.creditors[0].account, make_invoice())
    _wait_cursor(workers, registry.chain.block_number())
    assert workers.scan_anomalies() is True
    assert workers.scanned_block == registry.chain.block_number()
    report = workers.reminders.run_once()
    assert report.scan_seconds >= 0
    engine.dispose()


def test_loops_survive_a_failed_cycle_and_stop(api_settings: Settings, live_indexer: Indexer) -> None:
    engine = make_engine(api_settings.database)
    settings = api_settings.model_copy(update={"anomaly_interval": 0.05, "reminder_interval": 0.05})
    workers = Workers(engine, settings)
    calls: list[int] = []
    scan = workers.scanner.run_once

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return scan(engine)

    workers.scanner.run_once = flaky  # type: ignore[method-assign]
    workers.start()
    deadline = time.monotonic() + 10
    while len(calls) < 2 or workers.scanned_block < 0:
        assert time.monotonic() < deadline, "the anomaly loop stopped after a failure"
        time.sleep(0.02)
    started = time.monotonic()
    workers.stop()
    assert time.monotonic() - started < 5
    assert not workers._threads
    engine.dispose()
