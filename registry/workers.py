"""The automations that run beside the indexer (issue 6), on the same settings and mirror: anomaly scans
whenever the mirror has advanced, and the reminder worker's cycles. ``registry up`` starts them with the
indexer; ``registry work`` runs them on their own (e.g. beside ``registry index`` on another host).

Each loop survives a failed cycle (logged, retried at the next interval); both stop on :meth:`stop`.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, select

from registry.anomalies import Scanner
from registry.reminders import ReminderWorker
from registry.settings import Settings
from registry.store.models import Cursor

log = logging.getLogger("registry.workers")


class Workers:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.scanner = Scanner()
        self.reminders = ReminderWorker(engine, settings)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.scanned_block = -1

    def scan_anomalies(self) -> bool:
        """One anomaly scan if the mirror's cursor moved since the last; returns whether it ran."""
        with self.engine.connect() as conn:
            block = conn.execute(select(Cursor.block_number)).scalar()
        if block is None or block == self.scanned_block:
            return False
        report = self.scanner.run_once(self.engine)
        self.scanned_block = int(block)
        log.info("anomaly scan to block %s: %s", block, report)
        return True

    def _anomaly_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_anomalies()
            except Exception:
                log.exception("anomaly scan failed; retrying in %.1fs", self.settings.anomaly_interval)
            self._stop.wait(self.settings.anomaly_interval)

    def start(self) -> None:
        for name, target in (("anomalies", self._anomaly_loop), ("reminders", self.reminders.run)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.reminders.stop()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
