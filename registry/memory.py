"""Allocation-heavy batches (an indexer batch, a bulk check): the cyclic garbage collector paused."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["HeldCollector", "paused_gc"]


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused for one batch. Reading, decoding, pickling and writing an
    indexer batch, or answering a bulk check, allocate hundreds of thousands of objects, none of them in
    a cycle, which the collector would otherwise traverse again each time they survive into an older
    generation, together with everything else the process holds (measured: parsing a node's answer 40%
    slower while earlier ones are held; a bulk check 30% slower beside a large heap). It resumes
    afterwards and collects whatever cycles came meanwhile; of overlapping pauses (threads), the one that
    found the collector running resumes it when it ends, whether or not the others have ended."""
    with HeldCollector():
        yield


class HeldCollector:
    """The cyclic garbage collector paused over a run of batches (a backfill), not only within each.

    Between two batches of a backfill the process holds the next one, read ahead: about a million
    objects for 23,000 events. Resumed between batches (:func:`paused_gc`), the collector's first pass
    traverses all of them, since they are young: 5-33 ms a batch in the indexer's process and ~16 ms a
    range in the reader process, 0.33 s of the benchmark's 5 s backfill, most of it on the reader
    process, which bounds the backfill's middle. Held, it runs once every ``every`` batches
    (:meth:`tick`), a full collection, and resumes as it was on :meth:`release`. A batch leaves few
    cycles: ~70 objects a batch over the benchmark's backfill (1,234 for its 18 batches, collected at
    the end in 0.07 s). Not thread-aware beyond :func:`paused_gc`'s rule: the hold that found the
    collector running resumes it on release, whether or not other holds are still on."""

    def __init__(self, every: int = 64) -> None:
        self.every = every
        self._held = False
        self._was_enabled = False
        self._batches = 0

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        """Pauses the collector, unless already held (then nothing)."""
        if not self._held:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._held = True
            self._batches = 0

    def tick(self) -> None:
        """One batch done: every ``every`` batches, a full collection (the collector stays paused)."""
        if not self._held:
            return
        self._batches += 1
        if self._batches >= self.every:
            self._batches = 0
            gc.collect()

    def release(self) -> None:
        """Resumes the collector if it ran before :meth:`hold` (its next pass collects what was left)."""
        if self._held:
            self._held = False
            if self._was_enabled:
                gc.enable()

    def __enter__(self) -> HeldCollector:
        self.hold()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
