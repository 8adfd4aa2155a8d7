"""Anomaly detectors on constructed mirrors (rows written in SQL, no chain): each kind fires on its case
and stays quiet on normal behaviour; rescans are idempotent; a reorg retires; clearing needs a note and an
entitled party."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from registry.anomalies import (
    AnomalyParams,
    FlagNotFound,
    FlagNotOpen,
    FlagState,
    InvalidNote,
    Kind,
    NotEntitledToClear,
    Scanner,
    Severity,
    clear_flag,
    list_flags,
    open_flags,
    poisson_tail_log10,
    robust_z,
    scan,
)
from registry.domain import Status
from registry.indexer.projector import rollback_to, write_cursor
from registry.store.db import make_engine, migrate
from registry.store.models import (
    AnomalyFlag,
    AnomalyScanBlock,
    Assignment,
    BlockHeader,
    Cursor,
    RawEvent,
    Receivable,
    table_of,
)
from registry.store.queries import Visibility

DAY = 86_400
HOUR = 3_600
T0 = 1_700_000_000
BLOCK = 2  # seconds per block
DEBTOR, OTHER_DEBTOR = 1, 2
CREDITOR, OTHER_CREDITOR = 11, 12
FACTORS = (21, 22, 23, 24)
AUDITOR = 31


def at(block: int) -> int:
    return T0 + block * BLOCK


def block_of(t: float) -> int:
    return int((t - T0) // BLOCK)


class Mirror:
    """Writes a small mirror: registrations, confirmations, assignments, headers and the cursor."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ids = itertools.count(1)
        self.logs: dict[int, int] = {}
        self.rng = random.Random(7)
        self.head = 0

    def _log(self, block: int) -> int:
        self.logs[block] = self.logs.get(block, -1) + 1
        self._header(block)
        return self.logs[block]

    def _header(self, block: int) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(select(BlockHeader.number).where(BlockHeader.number == block)).first()
            if exists is None:
                conn.execute(
                    insert(table_of(BlockHeader)),
                    {
                        "number": block,
                        "hash": f"0x{block:064x}",
                        "parent_hash": f"0x{block - 1:064x}",
                        "timestamp": at(block),
                    },
                )
        self.head = max(self.head, block)

    def register(
        self,
        t: float,
        *,
        amount: int = 1_000_000,
        debtor: int = DEBTOR,
        creditor: int = CREDITOR,
        term_days: int = 60,
        due: int | None = None,
        issue: int | None = None,
        document: bytes | None = None,
        number: bytes | None = None,
    ) -> int:
        block = block_of(t)
        self._log(block)
        rid = next(self.ids)
        issue = issue if issue is not None else int(t) - 2 * DAY
        row = {
            "id": rid,
            "valid_from": block,
            "valid_to": None,
            "creditor": creditor,
            "debtor": debtor,
            "holder": creditor,
            "status": int(Status.REGISTERED),
            "recourse": False,
            "face_value": amount,
            "paid": 0,
            "currency": "CNY",
            "issue_date": issue,
            "due_date": due if due is not None else issue + term_days * DAY,
            "fingerprint": self.rng.randbytes(32),
            "invoice_key": self.rng.randbytes(32),
            "number_hash": number or self.rng.randbytes(32),
            "document_hash": document if document is not None else self.rng.randbytes(32),
            "parent_id": None,
            "supersedes": None,
            "registered_block": block,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(table_of(Receivable)), row)
        return rid

    def _change(self, rid: int, block: int, **changes: Any) -> None:
        r = table_of(Receivable)
        with self.engine.begin() as conn:
            current = conn.execute(select(r).where(r.c.id == rid, r.c.valid_to.is_(None))).mappings().one()
            conn.execute(update(r).where(r.c.row_id == current["row_id"]).values(valid_to=block))
            row = {k: v for k, v in current.items() if k != "row_id"}
            conn.execute(insert(r), {**row, **changes, "valid_from": block, "valid_to": None})

    def confirm(self, rid: int, t: float, debtor: int = DEBTOR) -> None:
        block = block_of(t)
        index = self._log(block)
        with self.engine.begin() as conn:
            conn.execute(
                insert(table_of(RawEvent)),
                {
                    "block_number": block,
                    "log_index": index,
                    "block_hash": f"0x{block:064x}",
                    "tx_hash": "0x" + "00" * 32,
                    "name": "ReceivableConfirmed",
                    "seq": None,
                    "ledger_head": None,
                    "args": json.dumps({"id": rid, "debtor": debtor}),
                },
            )
        self._change(rid, block, status=int(Status.CONFIRMED))

    def assign(self, rid: int, t: float, frm: int, to: int) -> None:
        block = block_of(t)
        index = self._log(block)
        with self.engine.begin() as conn:
            conn.execute(
                insert(table_of(Assignment)),
                {
                    "block_number": block,
                    "log_index": index,
                    "receivable_id": rid,
                    "from_entity": frm,
                    "to_entity": to,
                    "advance": 1,
                    "recourse": False,
                    "terms_hash": bytes(32),
                },
            )
        self._change(rid, block, holder=to, status=int(Status.ASSIGNED))

    def sync(self, t: float | None = None) -> int:
        """Moves the cursor to the newest block written (or the block at ``t``)."""
        block = max(self.head, block_of(t)) if t is not None else self.head
        self._header(block)
        with self.engine.begin() as conn:
            write_cursor(
                conn,
                {
                    "chain_id": 31337,
                    "registry_address": "0x" + "00" * 20,
                    "genesis_hash": "0x" + "00" * 32,
                    "deploy_block": 0,
                    "block_number": block,
                    "block_hash": f"0x{block:064x}",
                    "block_timestamp": at(block),
                    "ledger_head": bytes(32),
                    "ledger_count": 0,
                },
            )
        return block

    def history(self, days: int = 100, per_day: int = 1, amount: int = 1_000_000) -> float:
        """Normal behaviour for DEBTOR: one registration a day (amounts within +-20%), each confirmed
        about a day later (+-20%); returns the time after it."""
        t = T0 + DAY
        for _ in range(days):
            for _ in range(per_day):
                rid = self.register(t, amount=int(amount * self.rng.uniform(0.8, 1.2)))
                self.confirm(rid, t + DAY * self.rng.uniform(0.8, 1.2))
                t += DAY / per_day
        return t + 2 * DAY


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def mirror(engine: Engine) -> Mirror:
    return Mirror(engine)


def flags_of(engine: Engine, kind: Kind, params: AnomalyParams | None = None) -> dict[int, Any]:
    with engine.connect() as conn:
        block = int(conn.execute(select(Cursor.block_number)).scalar_one())
        return {f.receivable_id: f for f in scan(conn, block, params=params, kinds=[kind])}


# ---------------------------------------------------------------------------------------------- statistics


def test_robust_z_ignores_the_outliers_of_the_history() -> None:
    history = [10.0, 11.0, 9.0, 10.5, 9.5, 1000.0]
    assert abs(robust_z(10.0, history)) < 1
    assert robust_z(100.0, history) > 20
    assert robust_z(5.0, [5.0] * 30) == 0
    assert robust_z(6.0, [5.0] * 30) > 50  # a constant history: any change is extreme


def test_poisson_tail_is_the_surprise_of_a_count() -> None:
    assert poisson_tail_log10(0, 1.0) == 0
    assert poisson_tail_log10(1, 1.0) == pytest.approx(-__import__("math").log10(1 - __import__("math").exp(-1)))
    assert poisson_tail_log10(20, 0.5) > poisson_tail_log10(10, 0.5) > 5


# ---------------------------------------------------------------------------------------------- each kind


def test_amount_far_outside_the_debtors_history_is_flagged(mirror: Mirror, engine: Engine) -> None:
    t = mirror.history(days=40)
    normal = mirror.register(t, amount=1_100_000)
    small = mirror.register(t + HOUR, amount=900_000)
    outlier = mirror.register(t + 2 * HOUR, amount=80_000_000)
    new_debtor = mirror.register(t + 3 * HOUR, amount=80_000_000, debtor=OTHER_DEBTOR)  # no history: no opinion
    mirror.sync()
    flags = flags_of(engine, Kind.AMOUNT_OUTLIER)
    assert set(flags) == {outlier}
    assert flags[outlier].severity is Severity.HIGH and "x the debtor's median" in flags[outlier].reason
    assert normal not in flags and small not in flags and new_debtor not in flags


def test_burst_of_invoices_to_one_debtor_is_flagged_but_usual_batches_are_not(mirror: Mirror, engine: Engine) -> None:
    t = mirror.history(days=60)
    batch = [mirror.register(t, creditor=OTHER_CREDITOR) for _ in range(3)]  # one batch, usual
    burst = [mirror.register(t + DAY + i * 300) for i in range(25)]  # 25 in two hours
    mirror.sync()
    flags = flags_of(engine, Kind.BURST)
    assert set(flags) == set(burst)
    assert not set(batch) & set(flags)
    assert {f.severity for f in flags.values()} == {Severity.HIGH}


def test_rapid_reassignment_chain_is_flagged_and_a_slow_one_is_not(mirror: Mirror, engine: Engine) -> None:
    t = T0 + DAY
    fast, slow, cycle = (mirror.register(t + i) for i in range(0, 6, 2))
    for rid in (fast, slow, cycle):
        mirror.confirm(rid, t + HOUR)
    mirror.assign(fast, t + 2 * HOUR, CREDITOR, FACTORS[0])
    mirror.assign(fast, t + 6 * HOUR, FACTORS[0], FACTORS[1])
    mirror.assign(fast, t + 20 * HOUR, FACTORS[1], FACTORS[2])
    mirror.assign(slow, t + 2 * HOUR, CREDITOR, FACTORS[0])
    mirror.assign(slow, t + 20 * DAY, FACTORS[0], FACTORS[1])
    mirror.assign(slow, t + 40 * DAY, FACTORS[1], FACTORS[2])
    mirror.assign(cycle, t + 2 * HOUR, CREDITOR, FACTORS[0])
    mirror.assign(cycle, t + 3 * DAY, FACTORS[0], FACTORS[1])
    mirror.assign(cycle, t + 30 * DAY, FACTORS[1], FACTORS[0])
    mirror.sync()
    flags = flags_of(engine, Kind.RAPID_REASSIGNMENT)
    assert set(flags) == {fast, cycle}
    assert flags[fast].severity is Severity.MEDIUM and "3 assignments" in flags[fast].reason
    assert flags[cycle].severity is Severity.HIGH and "earlier holder" in flags[cycle].reason


def test_registration_just_before_the_due_date_is_flagged(mirror: Mirror, engine: Engine) -> None:
    t = T0 + 10 * DAY
    late = mirror.register(t, due=int(t + 12 * HOUR), issue=int(t - 60 * DAY))
    past = mirror.register(t + 1, due=int(t - DAY), issue=int(t - 60 * DAY))
    prompt = mirror.register(t + 2, term_days=60)
    short_term = mirror.register(t + 3, due=int(t + 4 * DAY), issue=int(t - DAY))  # 5-day term, 80% left
    mirror.sync()
    flags = flags_of(engine, Kind.LATE_REGISTRATION)
    assert set(flags) == {late, past}
    assert flags[late].severity is Severity.HIGH and "before its due date" in flags[late].reason
    assert "after its due date" in flags[past].reason
    assert prompt not in flags and short_term not in flags


def test_near_duplicate_of_an_earlier_live_registration_is_flagged(mirror: Mirror, engine: Engine) -> None:
    t = T0 + DAY
    original = mirror.register(t, amount=5_000_000, due=T0 + 60 * DAY, issue=T0)
    copy = mirror.register(t + DAY, amount=5_000_000, due=T0 + 60 * DAY, issue=T0, creditor=OTHER_CREDITOR)
    document = b"\x07" * 32
    first_doc = mirror.register(t + 2 * DAY, amount=1, document=document)
    same_doc = mirror.register(t + 3 * DAY, amount=2, document=document, debtor=OTHER_DEBTOR)
    number = b"\x09" * 32  # the same invoice number and debtor (a split lineage): never its own near-duplicate
    mirror.register(t + 4 * DAY, amount=7, due=T0 + 90 * DAY, number=number)
    lineage = mirror.register(t + 5 * DAY, amount=7, due=T0 + 90 * DAY, number=number)
    coincidence = mirror.register(t + 6 * DAY, amount=5_000_000, due=T0 + 60 * DAY, issue=T0 + DAY, creditor=13)
    other_amount = mirror.register(t + 7 * DAY, amount=5_000_001, due=T0 + 60 * DAY, issue=T0)
    mirror.sync()
    flags = flags_of(engine, Kind.NEAR_DUPLICATE)
    assert set(flags) == {copy, same_doc, coincidence}
    assert flags[copy].related_id == original and flags[copy].severity is Severity.HIGH
    assert "SAME_DEBTOR_AMOUNT_DUE_DATE" in flags[copy].reason
    assert flags[same_doc].related_id == first_doc and "SAME_DOCUMENT_HASH" in flags[same_doc].reason
    assert flags[coincidence].severity is Severity.LOW  # other issue date, other creditors: a coincidence
    assert original not in flags and lineage not in flags and other_amount not in flags


def test_debtor_confirming_far_faster_or_slower_than_usual_is_flagged(mirror: Mirror, engine: Engine) -> None:
    t = mirror.history(days=40)
    fast = mirror.register(t)
    mirror.confirm(fast, t + 30)
    usual = mirror.register(t + HOUR)
    mirror.confirm(usual, t + HOUR + DAY)
    slow = mirror.register(t + 2 * HOUR)
    mirror.confirm(slow, t + 2 * HOUR + 40 * DAY)
    mirror.sync()
    flags = flags_of(engine, Kind.CONFIRMATION_SPEED)
    assert set(flags) == {fast, slow}
    assert "faster" in flags[fast].reason and flags[fast].severity is Severity.HIGH
    assert "slower" in flags[slow].reason


def test_normal_behaviour_raises_no_flag(mirror: Mirror, engine: Engine) -> None:
    t = mirror.history(days=120)
    for i, rid in enumerate(range(1, 30)):
        if i % 3 == 0:
            mirror.assign(rid, t + i * HOUR, CREDITOR, FACTORS[i % 4])
    mirror.sync()
    with engine.connect() as conn:
        assert scan(conn, mirror.head) == []


# ---------------------------------------------------------------------------------------------- the scanner


def _build_mixed(mirror: Mirror) -> dict[Kind, int]:
    t = mirror.history(days=40)
    outlier = mirror.register(t, amount=90_000_000)
    late = mirror.register(t + HOUR, due=int(t + 6 * HOUR), issue=int(t - 60 * DAY))
    fast = mirror.register(t + 2 * HOUR)
    mirror.confirm(fast, t + 2 * HOUR + 10)
    return {Kind.AMOUNT_OUTLIER: outlier, Kind.LATE_REGISTRATION: late, Kind.CONFIRMATION_SPEED: fast}


def _stored(engine: Engine) -> list[tuple[str, int, str, str]]:
    f = table_of(AnomalyFlag)
    with engine.connect() as conn:
        rows = conn.execute(select(f.c.kind, f.c.receivable_id, f.c.severity, f.c.state).order_by(f.c.id)).all()
    return [(str(k), int(r), str(s), str(st)) for k, r, s, st in rows]


def test_rescan_is_idempotent_and_incremental_scans_equal_one_scan(sqlite_url: str, tmp_path: Any) -> None:
    engines = [make_engine(sqlite_url), make_engine(f"sqlite:///{tmp_path / 'other.db'}")]
    for engine in engines:
        migrate(engine)
    mirrors = [Mirror(e) for e in engines]
    expected, _ = (_build_mixed(m) for m in mirrors)
    end, _ = (m.sync() for m in mirrors)
    scanner = Scanner()
    first = scanner.run_once(engines[0])
    assert first.raised == 3
    again = scanner.run_once(engines[0])
    assert (again.raised, again.updated, again.reopened, again.retired) == (0, 0, 0, 0)
    for step in range(1, 8):  # the same ledger scanned in seven windows
        scanner.run_once(engines[1], as_of_block=end * step // 7)
    scanner.run_once(engines[1])
    one, many = _stored(engines[0]), _stored(engines[1])
    assert sorted(one) == sorted(many)
    assert {(k, r) for k, r, _, _ in one} == {(k.value, r) for k, r in expected.items()}
    for engine in engines:
        engine.dispose()


def test_reorg_that_removes_the_receivable_retires_its_flag_and_a_new_fork_reopens_it(
    mirror: Mirror, engine: Engine
) -> None:
    t = mirror.history(days=40)
    ancestor = mirror.sync()
    outlier = mirror.register(t, amount=90_000_000)
    mirror.sync()
    scanner = Scanner(kinds=[Kind.AMOUNT_OUTLIER])
    assert scanner.run_once(engine).raised == 1
    with engine.begin() as conn:  # what the indexer does on a reorg: roll back, cursor at the ancestor
        rollback_to(conn, ancestor)
        conn.execute(update(table_of(Cursor)).values(block_number=ancestor, block_hash=f"0x{ancestor:064x}"))
    report = scanner.run_once(engine)
    assert report.retired == 1 and report.reorg_ancestor == ancestor
    with engine.connect() as conn:
        assert open_flags(conn, [outlier]) == {outlier: []}
        retired = list_flags(conn, Visibility(everything=True), states=[FlagState.RETIRED])
    assert [(r["receivable_id"], r["retired_block"]) for r in retired] == [(outlier, ancestor)]
    # The new fork has the same registration a few blocks later: the flag is reopened, not duplicated.
    mirror.head = ancestor
    again = mirror.register(t + 60, amount=90_000_000)
    assert again != outlier
    with engine.begin() as conn:
        conn.execute(update(table_of(Receivable)).where(Receivable.id == again).values(id=outlier))
    mirror.sync()
    report = scanner.run_once(engine)
    assert report.reopened == 1 and report.raised == 0
    assert [s for _, _, _, s in _stored(engine)] == ["open"]


def test_scanner_hook_fits_the_indexers_batch_callback(mirror: Mirror, engine: Engine) -> None:
    _build_mixed(mirror)
    mirror.sync()
    Scanner().hook(engine)(mirror.head, 10)
    assert len(_stored(engine)) == 3


# ---------------------------------------------------------------------------------------------- clearing


@pytest.fixture
def flagged(mirror: Mirror, engine: Engine) -> tuple[int, int]:
    """(flag id, receivable id): an open amount-outlier flag on a receivable assigned to FACTORS[0]."""
    t = mirror.history(days=40)
    rid = mirror.register(t, amount=90_000_000)
    mirror.confirm(rid, t + DAY)
    mirror.assign(rid, t + 2 * DAY, CREDITOR, FACTORS[0])
    mirror.sync()
    Scanner().run_once(engine)
    with engine.connect() as conn:
        (flag,) = open_flags(conn, [rid])[rid]
    return int(flag["id"]), rid


def _clear(engine: Engine, flag_id: int, entity: int | None, note: str = "checked the contract", **kw: Any) -> Any:
    with engine.begin() as conn:
        return clear_flag(conn, flag_id, entity=entity, auditor=kw.get("auditor", False), address="0xabc", note=note)


def test_clearing_needs_a_note(engine: Engine, flagged: tuple[int, int]) -> None:
    flag_id, _ = flagged
    for note in ("", "   "):
        with pytest.raises(InvalidNote):
            _clear(engine, flag_id, FACTORS[0], note)
    with pytest.raises(InvalidNote):
        _clear(engine, flag_id, FACTORS[0], "x" * 2001)


def test_only_the_holder_or_an_auditor_may_clear(engine: Engine, flagged: tuple[int, int]) -> None:
    flag_id, rid = flagged
    with pytest.raises(NotEntitledToClear):
        _clear(engine, flag_id, DEBTOR)  # may read it, may not clear it
    with pytest.raises(NotEntitledToClear):
        _clear(engine, flag_id, CREDITOR)  # an earlier holder
    with pytest.raises(FlagNotFound):
        _clear(engine, flag_id, FACTORS[3])  # not a party: not even told it exists
    with pytest.raises(FlagNotFound):
        _clear(engine, flag_id, None)  # the admin has no entity
    row = _clear(engine, flag_id, FACTORS[0], "  invoice seen, amount agreed with buyer ")
    assert row["state"] == "cleared" and row["clear_note"] == "invoice seen, amount agreed with buyer"
    assert row["cleared_entity"] == FACTORS[0]
    with pytest.raises(FlagNotOpen):
        _clear(engine, flag_id, AUDITOR, auditor=True)
    with engine.connect() as conn:
        assert open_flags(conn, [rid]) == {rid: []}


def test_a_cleared_flag_stays_cleared_on_rescan(engine: Engine, flagged: tuple[int, int], mirror: Mirror) -> None:
    flag_id, _ = flagged
    _clear(engine, flag_id, AUDITOR, auditor=True)
    with engine.begin() as conn:  # forget the watermark: the next run scans everything again
        conn.execute(delete(table_of(AnomalyScanBlock)))
    report = Scanner().run_once(engine)
    assert report.since_block == -1 and report.raised == report.reopened == report.updated == 0
    with engine.connect() as conn:
        state = conn.execute(select(AnomalyFlag.state).where(AnomalyFlag.id == flag_id)).scalar_one()
    assert state == "cleared"


def test_flags_are_visible_to_the_parties_of_the_receivable(engine: Engine, flagged: tuple[int, int]) -> None:
    _, rid = flagged
    with engine.connect() as conn:
        for entity in (CREDITOR, DEBTOR, FACTORS[0]):
            assert [f["receivable_id"] for f in list_flags(conn, Visibility(entity=entity))] == [rid]
        assert list_flags(conn, Visibility(entity=FACTORS[3])) == []
        assert list_flags(conn, Visibility(entity=None)) == []
        assert len(list_flags(conn, Visibility(everything=True), kind=Kind.AMOUNT_OUTLIER)) == 1
        assert list_flags(conn, Visibility(everything=True), kind=Kind.BURST) == []


def test_parameters_change_what_is_flagged(mirror: Mirror, engine: Engine) -> None:
    t = mirror.history(days=40)
    rid = mirror.register(t, amount=1_500_000)  # 1.5x the median: robust z about 2.7
    mirror.sync()
    assert rid not in flags_of(engine, Kind.AMOUNT_OUTLIER)
    assert rid in flags_of(engine, Kind.AMOUNT_OUTLIER, replace(AnomalyParams(), z_threshold=2.0))
