"""Allocation-heavy batches (an indexer batch, a bulk check): the cyclic garbage collector paused."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused_gc"]


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused for one batch. Reading, decoding, pickling and writing an
    indexer batch, or answering a bulk check, allocate hundreds of thousands of objects, none of them in
    a cycle, which the collector would otherwise traverse again each time they survive into an older
    generation, together with everything else the process holds (measured: parsing a node's answer 40%
    slower while earlier ones are held; a bulk check 30% slower beside a large heap). It resumes
    afterwards and collects whatever cycles came meanwhile; of overlapping pauses (threads), the first
    to end resumes it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
