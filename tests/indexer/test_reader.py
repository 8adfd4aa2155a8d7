"""The read side's pure parts: the raw log's JSON text and the ledger fold, and the reader process's
framing and failure handling (no node needed)."""

from __future__ import annotations

import gc
import io
import json
import os
import pickle
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.chain.abi import ContractAbi, DecodedEvent
from registry.chain.compiler import artifact
from registry.indexer.reader import (
    LedgerPosition,
    Read,
    ReaderConfig,
    ReaderProcess,
    _Failed,
    _pickled,
    _receive,
    _send,
    _take_answer,
    args_json,
    json_writers,
    prepare,
)
from registry.ledger import GENESIS_HEAD, LedgerState, replay
from registry.memory import HeldCollector, paused_gc

ABI = ContractAbi(artifact("ReceivableRegistry").abi)
WRITERS = json_writers(ABI)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def _value(abi_type: str) -> st.SearchStrategy[Any]:
    if abi_type == "bool":
        return st.booleans()
    if abi_type.startswith("uint"):
        return st.integers(0, 2**256 - 1)
    if abi_type.startswith("int"):
        return st.integers(-(2**255), 2**255 - 1)
    if abi_type == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    return st.binary(min_size=int(abi_type[5:]), max_size=int(abi_type[5:]))


STATIC_EVENTS = sorted(WRITERS)


def test_every_static_event_of_the_abi_has_a_writer() -> None:
    assert {"ReceivableRegistered", "ReceivableAssigned", "ReceivableConfirmed"} <= set(WRITERS)
    assert "RegistrationRejected" not in WRITERS  # bytes reason: dynamic, written generically


@pytest.mark.parametrize("name", STATIC_EVENTS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_writer_writes_what_json_dumps_writes(name: str, data: st.DataObject) -> None:
    item = next(e for e in ABI.events.values() if e["name"] == name)
    args = {p["name"]: data.draw(_value(p["type"])) for p in item["inputs"]}
    expected = json.dumps({k: _plain(v) for k, v in args.items()}, separators=(",", ":"))
    assert WRITERS[name](args) == expected
    assert args_json(args) == expected


def test_a_value_of_another_shape_falls_back_to_the_generic_text() -> None:
    event = _event("ReceivableConfirmed", {"id": True, "fingerprint": b"\1" * 32})  # a bool where an int goes
    with pytest.raises(TypeError):
        WRITERS["ReceivableConfirmed"](event.args)
    prepared = prepare([event], WRITERS)
    assert prepared.raw[0][-1] == json.dumps({"id": True, "fingerprint": "0x" + "01" * 32}, separators=(",", ":"))


def _event(name: str, args: dict[str, Any], block: int = 7, index: int = 0) -> DecodedEvent:
    topic0 = ABI.event_topics[name]
    payload = b"".join(
        (v.ljust(32, b"\0") if isinstance(v, bytes) else int(v).to_bytes(32, "big")) for v in args.values()
    )
    return DecodedEvent(name, args, topic0, "0x" + "00" * 20, block, "0x" + "ab" * 32, "0x" + "cd" * 32, index, payload)


def test_a_prepared_range_folds_as_the_ledger_replays_and_chains_from_its_start() -> None:
    events = [
        _event("ReceivableConfirmed", {"id": i, "fingerprint": bytes([i]) * 32}, block=10 + i // 3, index=i % 3)
        for i in range(1, 10)
    ]
    events.insert(4, _event("RegistrationRejected", {"creditor": 2, "line": 1, "reason": b"\x01\x02"}))
    start = LedgerPosition(GENESIS_HEAD, 0)
    whole = prepare(events, WRITERS)
    assert all(row[5] is None and row[6] is None for row in whole.raw), "folded by the writer, not here"
    end = whole.fold(start)
    expected = replay(events, LedgerState(GENESIS_HEAD, 0))
    assert (end.head, end.count) == (expected.head, expected.count) and end.count == 9
    first, second = prepare(events[:5], WRITERS), prepare(events[5:], WRITERS)
    assert second.fold(first.fold(start)) == end and first.raw + second.raw == whole.raw
    assert whole.fold(start) == end and whole.raw == first.raw + second.raw, "folding again refills the same"
    elsewhere = LedgerPosition(b"\x09" * 32, 40)
    moved = second.fold(elsewhere)  # (another start: a rollback, then the same range read anew)
    assert moved.count == 45 and moved != end and second.raw[0][5] == 41 and second.raw[-1][6] == moved.head
    rejected = whole.raw[4]
    assert rejected[4] == "RegistrationRejected" and rejected[5] is None and rejected[6] is None  # not folded
    assert [row[5] for row in whole.raw if row[5] is not None] == list(range(1, 10))
    assert len(whole) == 10 and whole.events[0] == ("ReceivableConfirmed", 10, 1, events[0].args)


# ---------------------------------------------------------------------------------------- the process's framing


def test_a_read_is_pickled_without_the_memo_and_unpickles_equal() -> None:
    events = [
        _event("ReceivableConfirmed", {"id": i, "fingerprint": bytes([i]) * 32}, block=10 + i // 3, index=i % 3)
        for i in range(1, 10)
    ]
    header = {"number": "0xa", "hash": "0x" + "ab" * 32, "parentHash": "0x" + "cd" * 32, "timestamp": "0x1"}
    read = Read(10, 20, 13, {10: header}, prepare(events, WRITERS), (b"\x01" * 32, 9))
    data = _pickled(read)
    assert pickle.loads(data) == read
    shared = "0x" + "ef" * 32  # (one object in two places: a memo would send it once)
    twice = pickle.loads(_pickled([shared, shared]))  # type: ignore[arg-type]
    assert twice == [shared, shared] and twice[0] is not twice[1], "pickled in the fast mode, without the memo"
    cyclic = _Failed(ValueError("a cycle"))
    loop: list[Any] = []
    loop.append(loop)
    cyclic.description = loop  # type: ignore[assignment]
    back = pickle.loads(_pickled(cyclic))  # what the fast mode refuses is pickled as usual
    assert back.description[0] is back.description


def test_messages_are_framed_by_length_and_a_short_stream_is_an_eof() -> None:
    stream = io.BytesIO()
    _send(stream, b"first")
    _send(stream, b"")
    _send(stream, b"x" * 100_000)
    stream.seek(0)
    assert [_receive(stream) for _ in range(3)] == [b"first", b"", b"x" * 100_000]
    with pytest.raises(EOFError):
        _receive(stream)
    cut = io.BytesIO(stream.getvalue()[:40])  # the third message's length, then 11 of its 100,000 bytes
    assert [_receive(cut), _receive(cut)] == [b"first", b""]
    with pytest.raises(EOFError, match="mid-message"):
        _receive(cut)


def test_a_failed_or_broken_read_ahead_is_none_so_the_range_is_read_in_the_foreground() -> None:
    failed: Future[Any] = Future()
    failed.set_result(_Failed(RuntimeError("node went away")))
    broken: Future[Any] = Future()
    broken.set_exception(EOFError("the reader process closed its output"))
    for future in (failed, broken):
        assert ReaderProcess.result(future) is None


def test_an_answer_is_unpickled_as_it_is_taken_off_the_pipe_and_a_garbled_one_raises() -> None:
    stream = io.BytesIO()
    _send(stream, _pickled(_Failed(RuntimeError("node went away"))))
    _send(stream, b"not a pickle")
    _send(stream, pickle.dumps({"not": "a read"}))
    stream.seek(0)
    assert isinstance(_take_answer(stream), _Failed)
    with pytest.raises(pickle.UnpicklingError):
        _take_answer(stream)
    with pytest.raises(TypeError, match="not a read"):
        _take_answer(stream)
    with pytest.raises(EOFError):
        _take_answer(stream)


# ---------------------------------------------------------------------------------------- a range far too dense


class _Rpc:
    def __init__(self, chain: _Chain) -> None:
        self.chain = chain

    def call(self, method: str, params: list[Any]) -> Any:
        assert method == "eth_getBlockByNumber"
        return self.chain.header(params[0])

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        return [self.call(method, params) for method, params in calls]


class _Chain:
    """Blocks 0..20; block n holds ``density(n)`` registry logs (of no known event: nothing to decode)."""

    def __init__(self, density: dict[int, int]) -> None:
        self.density = density
        self.rpc = _Rpc(self)
        self.requests: list[tuple[int, int]] = []
        self.fork = 0  # set: every block hash changes (a reorg from genesis on, for the test's purposes)

    def _hash(self, n: int) -> str:
        return f"0x{self.fork:02x}{n + 1:062x}"

    def header(self, block: str) -> dict[str, Any]:
        n = 20 if block == "latest" else int(block, 16)
        return {"number": hex(n), "hash": self._hash(n), "parentHash": self._hash(n - 1), "timestamp": hex(n)}

    def get_logs(self, address: str, first: int, last: int) -> list[dict[str, Any]]:
        self.requests.append((first, last))
        return [
            {"topics": [], "data": "0x", "blockNumber": hex(n), "blockHash": self._hash(n), "logIndex": hex(i)}
            for n in range(first, last + 1)
            for i in range(self.density.get(n, 0))
        ]


def _grown(chain: _Chain, target: int = 20) -> Any:
    """A fetcher that has read the quiet blocks 1-7 (spans 1, 2, 4, each grown one asked for as the answered
    size, then the rest: the span is now 8, the last answered 4)."""
    from registry.indexer.reader import LogFetcher

    fetcher = LogFetcher(chain, "0x" + "00" * 20, 1, 1_000, target)  # type: ignore[arg-type]
    for start in (1, 2, 4):
        fetcher.fetch(start, 20)
    assert chain.requests == [(1, 1), (2, 2), (3, 3), (4, 5), (6, 7)] and fetcher.span == 8
    chain.requests.clear()
    return fetcher


def test_a_grown_span_reaching_a_dense_stretch_answers_with_the_answered_size_first() -> None:
    """Blocks 1-7 quiet, 8 on dense: the span grew to 8, but 8-11 (already half the target) is the
    answer; the far denser 8-15 is never asked for."""
    chain = _Chain({n: 30 for n in range(8, 21)})
    fetcher = _grown(chain)
    logs, last = fetcher.fetch(8, 20)
    assert (len(logs), last) == (120, 11)
    assert chain.requests == [(8, 11)]
    assert fetcher.span == 1  # aimed at the target from the dense part's density (30 a block)


def test_a_grown_span_over_a_quiet_stretch_is_read_whole_in_two_requests() -> None:
    chain = _Chain({9: 1, 14: 2})
    fetcher = _grown(chain)
    logs, last = fetcher.fetch(8, 20)
    assert (len(logs), last) == (3, 15)
    assert chain.requests == [(8, 11), (12, 15)]
    assert fetcher.span == 16
    fetcher.fetch(16, 20)  # no larger than the answered span: one request
    assert chain.requests[2:] == [(16, 20)]


def test_a_refused_rest_of_a_grown_span_shrinks_the_span_by_the_size_of_the_refused_request() -> None:
    from registry.chain.rpc import RpcError

    chain = _Chain({9: 3, 13: 3, 14: 3})
    fetcher = _grown(chain)
    real = chain.get_logs

    def limited(address: str, first: int, last: int) -> list[dict[str, Any]]:
        logs = real(address, first, last)
        if len(logs) > 5:
            raise RpcError("eth_getLogs", -32005, "query returned more than 5 results")
        return logs

    chain.get_logs = limited  # type: ignore[method-assign]
    logs, last = fetcher.fetch(8, 20)
    # 8-11 answered (3 logs: sparse), 12-15 refused (6): the span drops to half of that request's 4
    # blocks, and 8-9 is the answer; the next span is halfway to the largest not refused.
    assert chain.requests == [(8, 11), (12, 15), (8, 9)]
    assert (len(logs), last) == (3, 9)
    assert (fetcher.ceiling, fetcher.span) == (3, 3)


def test_a_read_far_denser_than_the_target_keeps_whole_blocks_up_to_about_the_target() -> None:
    from registry.indexer.reader import Reader, ReaderConfig

    chain = _Chain({1: 1, 2: 1, 3: 1, 4: 1, **{n: 30 for n in range(5, 11)}})
    config = ReaderConfig("0x" + "00" * 20, 100, 1_000, 20, 256, 0.1, False)
    reader = Reader(chain, config)  # type: ignore[arg-type]
    read = reader.read(1, 20, None, ahead=False)
    # 184 logs in blocks 1-20, more than twice the target: kept through block 5, where the 21st log is.
    assert chain.requests == [(1, 20)]
    assert read.last == 5 and set(read.headers) >= {1, 2, 3, 4, 5, 20} and max(n for n in read.headers if n < 20) == 5
    # The next read starts after it, from the logs already fetched (cut again: blocks 6-10 hold 150).
    nxt = reader.read(6, 20, None, ahead=False)
    assert chain.requests == [(1, 20)], "what was fetched beyond the cut is not fetched again"
    assert (nxt.start, nxt.last) == (6, 6) and len(nxt.prepared) == 0  # (logs of no known event)
    assert set(nxt.headers) >= {6, 20}
    rest = reader.read(7, 20, None, ahead=False)
    assert chain.requests == [(1, 20)] and (rest.start, rest.last) == (7, 7)


def test_logs_kept_beyond_a_cut_are_fetched_again_once_the_chain_changed_under_them() -> None:
    from registry.indexer.reader import Reader, ReaderConfig

    chain = _Chain({n: 30 for n in range(5, 11)})
    reader = Reader(chain, ReaderConfig("0x" + "00" * 20, 100, 1_000, 20, 256, 0.1, False))  # type: ignore[arg-type]
    first = reader.read(1, 20, None, ahead=False)
    assert first.last == 5
    chain.fork = 1  # every block hash changes: the kept logs name blocks of the old fork
    nxt = reader.read(6, 20, None, ahead=False)
    assert len(chain.requests) == 2 and chain.requests[1][0] == 6, "fetched again rather than read from the old fork"
    assert nxt.start == 6 and set(nxt.headers) >= {6, 20}


def test_logs_kept_beyond_a_cut_can_be_handed_to_another_reader_and_only_serve_the_range_they_start() -> None:
    from registry.indexer.reader import Reader, ReaderConfig

    chain = _Chain({n: 30 for n in range(5, 11)})
    config = ReaderConfig("0x" + "00" * 20, 100, 1_000, 20, 256, 0.1, False)
    parent = Reader(chain, config)  # type: ignore[arg-type]
    parent.read(1, 20, None, ahead=False)
    rest = parent.take_rest()
    assert rest is not None and (rest.start, rest.last) == (6, 20) and len(rest.logs) == 150
    assert parent.take_rest() is None, "given up once"
    child = Reader(chain, config)  # type: ignore[arg-type]
    child.give_rest(rest)
    read = child.read(6, 20, None, ahead=False)
    assert chain.requests == [(1, 20)] and (read.start, read.last) == (6, 6)
    other = Reader(chain, config)  # type: ignore[arg-type]
    other.give_rest(rest)
    other.read(3, 20, None, ahead=False)  # (another start: a rollback's re-read)
    assert chain.requests[-1] == (3, 20)


def test_a_first_block_denser_than_the_target_is_kept_whole() -> None:
    from registry.indexer.reader import Reader, ReaderConfig

    chain = _Chain({3: 100, 4: 100})
    reader = Reader(chain, ReaderConfig("0x" + "00" * 20, 100, 1_000, 20, 256, 0.1, False))  # type: ignore[arg-type]
    read = reader.read(3, 20, None, ahead=False)
    assert read.last == 3  # one block cannot be split


def _fetching_reader(chain: _Chain) -> Any:
    from registry.indexer.reader import Reader, ReaderConfig

    # (A first span of 5 blocks: the first read ends short of the range without a cut.)
    config = ReaderConfig("0x" + "00" * 20, 5, 1_000, 20, 256, 0.1, False, fetch_ahead=True)
    return Reader(chain, config)  # type: ignore[arg-type]


def test_the_next_range_is_fetched_while_this_one_is_prepared_and_taken_by_the_next_read() -> None:
    chain = _Chain({n: 30 for n in range(5, 11)})  # the first read: blocks 1-5
    reader = _fetching_reader(chain)
    first = reader.read(1, 20, None, ahead=False)
    assert first.last == 5
    ahead = reader._next.result(timeout=10)  # the fetch from block 6 on, under way on the thread
    assert chain.requests[-1][0] == 6 and len(chain.requests) == 2
    second = reader.read(6, 20, None, ahead=False)
    reader.close()
    assert [r for r in chain.requests if r[0] == 6] == [chain.requests[1]], "block 6 on is not fetched again"
    assert (second.start, second.last, second.end) == (6, ahead.last, 20)
    assert set(second.headers) >= {6, ahead.last, 20}


def test_a_read_of_another_range_drops_what_was_fetched_ahead_and_a_failed_fetch_is_read_again() -> None:
    chain = _Chain({n: 30 for n in range(5, 11)})
    reader = _fetching_reader(chain)
    reader.read(1, 20, None, ahead=False)
    reader.read(3, 20, None, ahead=False)  # (a rollback's re-read, say)
    assert chain.requests[-1][0] == 3, "another start is read as asked"
    reader.close()

    failing = _Chain({n: 30 for n in range(5, 11)})
    reader = _fetching_reader(failing)
    reader.read(1, 20, None, ahead=False)
    reader._next.result(timeout=10)
    broken: Future[Any] = Future()
    broken.set_exception(ConnectionError("node gone"))
    reader._next = broken
    second = reader.read(6, 20, None, ahead=False)
    reader.close()
    assert [r[0] for r in failing.requests].count(6) == 2, "fetched ahead, failed, then read in the foreground"
    assert second.start == 6 and second.last >= 6


# ---------------------------------------------------------------------------------------- ready-made rows


def _registered(rid: int, block: int, index: int) -> DecodedEvent:
    args = {
        "id": rid,
        "creditor": 2,
        "debtor": 4,
        "fingerprint": bytes([rid]) * 32,
        "invoiceKey": bytes([rid + 1]) * 32,
        "invoiceNumberHash": bytes([rid + 2]) * 32,
        "currency": b"CNY",
        "faceValue": 1_000 * rid,
        "issueDate": 100,
        "dueDate": 200,
        "documentHash": bytes(32),
        "supersedes": 0,
    }
    return _event("ReceivableRegistered", args, block=block, index=index)


def test_registrations_reach_the_projector_as_ready_rows_and_a_changed_one_becomes_a_row_again(
    tmp_path: Any,
) -> None:
    """Registrations reach the projector as ready-made values; one changed later in the same batch (in
    its own block, and in a later one) becomes a row first; one never changed is inserted as it came."""
    from sqlalchemy import select

    from registry.indexer.projector import READY_ROWS, Batch
    from registry.store.db import make_engine, migrate
    from registry.store.models import Receivable, table_of

    events = [
        _registered(1, 10, 0),
        _registered(2, 10, 1),
        _event("ReceivableConfirmed", {"id": 1, "fingerprint": bytes([1]) * 32}, block=10, index=2),
        _registered(3, 11, 0),
        _event("ReceivableConfirmed", {"id": 2, "fingerprint": bytes([2]) * 32}, block=12, index=0),
    ]
    start = LedgerPosition(GENESIS_HEAD, 0)
    engine = make_engine(f"sqlite:///{tmp_path}/ready.db")
    migrate(engine)
    prepared = prepare(events, WRITERS, READY_ROWS)
    assert isinstance(prepared.events[0][3], tuple) and isinstance(prepared.events[2][3], dict)
    with engine.begin() as conn:
        batch = Batch(conn, start)
        batch.apply(prepared)
        assert set(batch.receivables.current) == {1, 2}  # 3 stayed values: never changed
        batch.flush()
    table = table_of(Receivable)
    with engine.connect() as conn:
        ready = [dict(r) for r in conn.execute(select(table).order_by(table.c.row_id)).mappings()]
    engine.dispose()
    by_version = {(r["id"], r["valid_from"]): r for r in ready}
    assert sorted(by_version) == [(1, 10), (2, 10), (2, 12), (3, 11)]
    assert by_version[(1, 10)]["status"] == 2 and by_version[(1, 10)]["valid_to"] is None  # confirmed in place
    assert by_version[(2, 10)]["valid_to"] == 12 and by_version[(2, 12)]["status"] == 2
    assert by_version[(3, 11)] == {
        **by_version[(3, 11)],
        "status": 1,
        "currency": "CNY",
        "holder": 2,
        "face_value": 3_000,
        "supersedes": None,
        "registered_block": 11,
        "invoice_key": bytes([4]) * 32,
    }
    assert [r["id"] for r in ready] == [1, 2, 3, 2]  # row ids in creation order, as ever


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # exited (a zombie until whoever adopted it reaps it)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_an_indexer_killed_with_minus_9_leaves_no_reader_process_behind(fork: bool) -> None:
    """The reader ends by itself when its input closes, which a killed parent's exit does."""
    code = (
        "import os, signal\n"
        "from registry.indexer.reader import ReaderConfig, ReaderProcess\n"
        "config = ReaderConfig('0x' + '00' * 20, 1, 10, 10, 8, 0.1, True)\n"
        f"p = ReaderProcess('http://127.0.0.1:9', 1.0, config, fork={fork})\n"
        "print(p._child.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    parent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert parent.returncode == -9
    pid = int(parent.stdout.strip())
    deadline = time.monotonic() + 30
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid), f"the reader process {pid} outlived its killed parent"


# ---------------------------------------------------------------------------------------- the held range


class _Ranges:
    """A stand-in for the reader: ranges of 3 blocks; logs what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    def read(self, start: int, end: int, pin: Any, ahead: bool) -> Any:
        from registry.indexer.reader import Prepared, Read

        self.asked.append((start, end))
        return Read(start, end, min(end, start + 2), {}, Prepared([], [], []), None)

    def close(self) -> None:
        self.closed = True


def _serve_requests(
    requests: list[tuple[int, int]], read_from: tuple[int, int] | None = None
) -> tuple[list[Any], _Ranges]:
    from registry.indexer.reader import _serve

    stream = io.BytesIO()
    for request in requests:
        _send(stream, pickle.dumps(request))
    stream.seek(0)
    answers, ranges = io.BytesIO(), _Ranges()
    _serve(stream, answers, ranges, read_from)  # type: ignore[arg-type]
    answers.seek(0)
    out = []
    while True:
        try:
            out.append(pickle.loads(_receive(answers)))
        except EOFError:
            return out, ranges


def test_the_reader_holds_the_following_range_and_answers_a_request_for_it_without_reading_again() -> None:
    answers, ranges = _serve_requests([(1, 10), (4, 12)])
    assert [(a.start, a.last) for a in answers] == [(1, 3), (4, 6)]
    # Asked 1-10; then read 4-10 unasked (held); the request for 4 (a farther end) got the held read;
    # then 7-10 was read ahead in turn (and dropped when the input ended).
    assert ranges.asked == [(1, 10), (4, 10), (7, 10)]
    assert answers[1].end == 10


def test_the_reader_reads_the_range_it_starts_with_before_it_is_asked() -> None:
    answers, ranges = _serve_requests([(5, 10)], read_from=(5, 9))
    assert [(a.start, a.end) for a in answers] == [(5, 9)], "the held read (its end within the request's)"
    assert ranges.asked == [(5, 9), (8, 9)]


def test_a_request_other_than_the_held_range_is_read_as_asked() -> None:
    answers, ranges = _serve_requests([(1, 10), (2, 10), (3, 10)], read_from=(7, 10))
    assert [a.start for a in answers] == [1, 2, 3]
    assert ranges.asked == [
        (7, 10),  # held from the start, then dropped: another start was asked for
        (1, 10),
        (4, 10),  # held, then dropped
        (2, 10),
        (5, 10),  # held, then dropped
        (3, 10),
        (6, 10),
    ]


def test_the_collector_is_paused_for_a_batch_and_resumed_after_it_even_on_an_error() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():  # (another thread's batch meanwhile)
            assert not gc.isenabled()
        assert not gc.isenabled(), "the inner pause must not resume what the outer one paused"
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), paused_gc():
        1 / 0  # noqa: B018
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled(), "a collector paused by someone else stays paused"
    finally:
        gc.enable()


def test_a_held_collector_stays_paused_across_batches_collects_every_n_and_resumes_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import registry.memory

    collections: list[int] = []
    monkeypatch.setattr(registry.memory.gc, "collect", lambda *a: collections.append(1) or 0)
    assert gc.isenabled()
    collector = HeldCollector(every=3)
    collector.tick()  # not held: nothing
    collector.hold()
    collector.hold()  # already held: nothing
    assert not gc.isenabled() and collector.held
    for _ in range(7):
        collector.tick()
        assert not gc.isenabled(), "paused from one batch to the next"
    assert len(collections) == 2, "a full collection every 3 batches"
    collector.release()
    assert gc.isenabled() and not collector.held
    collector.release()  # released already: nothing
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), HeldCollector():
        assert not gc.isenabled()
        1 / 0  # noqa: B018
    assert gc.isenabled(), "resumed on an error"
    gc.disable()
    try:
        with HeldCollector():
            pass
        assert not gc.isenabled(), "a collector paused by someone else stays paused"
    finally:
        gc.enable()


class _Watched(io.BytesIO):
    """The requests' stream, noting whether the collector runs each time the reader waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.collector_on: list[bool] = []

    def read(self, size: int | None = -1) -> bytes:
        self.collector_on.append(gc.isenabled())
        return super().read(size)


def test_the_reader_process_serves_with_the_collector_paused_between_reads_and_resumes_it_at_the_end() -> None:
    from registry.indexer.reader import _serve

    requests = _Watched()
    for request in [(1, 12), (4, 12), (7, 12)]:
        _send(requests, pickle.dumps(request))
    requests.seek(0)
    assert gc.isenabled()
    requests.collector_on.clear()
    _serve(requests, io.BytesIO(), _Ranges(), (1, 12))  # type: ignore[arg-type]
    assert len(requests.collector_on) >= 4 and not any(requests.collector_on), requests.collector_on
    assert gc.isenabled()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_forked_reader_leaves_the_parents_database_sessions_as_they_were(
    db: str, request: pytest.FixtureRequest
) -> None:
    """The child inherits the parent's open connections (sockets, files) and must end without closing
    or finalising any of them: a session the parent holds, mid-transaction, works on afterwards."""
    from sqlalchemy import text

    from registry.store.db import make_engine

    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "postgres_url")
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.commit()
        conn.execute(text("INSERT INTO t VALUES (1)"))  # a transaction open across the fork
        config = ReaderConfig("0x" + "00" * 20, 1, 10, 10, 8, 0.1, True)
        reader = ReaderProcess("http://127.0.0.1:9", 1.0, config, fork=True)
        pid = reader._child.pid
        reader.close()
        assert reader._child.returncode == 0 and _gone(pid)
        conn.execute(text("INSERT INTO t VALUES (2)"))
        conn.commit()
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2
    engine.dispose()
