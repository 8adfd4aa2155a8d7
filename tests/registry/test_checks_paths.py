"""The double-financing checker's two SQL paths agree: a single check (prepared statements on the
driver's cursor) and a bulk check (statements written out per dialect) give every line the same
answer, on SQLite and PostgreSQL; and the bulk statements stay on the partial indexes.

No chain here: the mirror is filled with rows as the projector writes them (registrations with their
key and fingerprint, split parts without, a cancelled one), so the tests are fast and exact.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert

from registry.checks import CheckResult, DuplicateChecker, MatchKind, NearDuplicateReason, _BulkSql
from registry.domain import PAID_OR_CLOSED_STATUSES, Status, is_financed
from registry.invoice import Invoice
from registry.store.db import make_engine, migrate
from registry.store.models import Assignment, Cursor, Receivable, table_of

NOW = 1_780_000_000
DAY = 86_400
BLOCK = 77
CREDITOR, OTHER_CREDITOR, FACTOR = 11, 12, 13
DEBTOR, OTHER_DEBTOR = 21, 22


def paper(number: str, amount: str = "1,000.00", *, debtor: int = DEBTOR, due: int = 60, doc: str = "") -> Invoice:
    return Invoice.parse(
        debtor=debtor,
        invoice_number=number,
        face_value=amount,
        currency="CNY",
        issue_date=NOW - 10 * DAY,
        due_date=NOW + due * DAY,
        document_hash="0x" + doc * 32 if doc else None,
    )


def row(
    rid: int, inv: Invoice, *, status: Status = Status.REGISTERED, creditor: int = CREDITOR, **extra: Any
) -> dict[str, Any]:
    return {
        "id": rid,
        "valid_from": 1,
        "valid_to": None,
        "creditor": creditor,
        "debtor": inv.debtor,
        "holder": creditor,
        "status": int(status),
        "recourse": False,
        "face_value": inv.face_value,
        "paid": 0,
        "currency": inv.currency,
        "issue_date": inv.issue_date,
        "due_date": inv.due_date,
        "fingerprint": inv.fingerprint,
        "invoice_key": inv.key,
        "number_hash": inv.number_hash,
        "document_hash": inv.document_hash,
        "parent_id": None,
        "supersedes": None,
        "registered_block": 1,
        **extra,
    }


LEDGER = {
    "plain": paper("INV-2026-0001", "1,000.00"),
    "other_creditor": paper("INV-2026-0500", "2,000.00"),
    "financed": paper("FIN-77", "3,000.00"),
    "documented": paper("DOC-1", "4,000.00", doc="ab"),
    "cancelled": paper("CAN-2026-9", "5,000.00"),
    "split": paper("SPL-2026-4", "6,000.00"),
    "other_debtor": paper("INV-2026-0001", "7,000.00", debtor=OTHER_DEBTOR),
}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    rows = [
        row(1, LEDGER["plain"]),
        row(2, LEDGER["other_creditor"], creditor=OTHER_CREDITOR),
        row(3, LEDGER["financed"], status=Status.ASSIGNED, holder=FACTOR),
        row(4, LEDGER["documented"]),
        row(5, LEDGER["cancelled"], status=Status.CANCELLED),
        row(6, LEDGER["split"], status=Status.SPLIT),
        # The split's parts: the parent's debtor and number hash, no key or fingerprint of their own.
        row(7, LEDGER["split"], invoice_key=None, fingerprint=None, parent_id=6, face_value=2_000_00),
        row(8, LEDGER["split"], invoice_key=None, fingerprint=None, parent_id=6, face_value=4_000_00),
        row(9, LEDGER["other_debtor"]),
    ]
    cursor = {
        "id": 1,
        "chain_id": 31337,
        "registry_address": "0x" + "00" * 20,
        "genesis_hash": "0x" + "00" * 32,
        "deploy_block": 0,
        "block_number": BLOCK,
        "block_hash": "0x" + "cd" * 32,
        "block_timestamp": NOW,
        "ledger_head": b"\0" * 32,
        "ledger_count": 0,
        "updated_at": 0.0,
    }
    with engine.begin() as conn:
        conn.execute(insert(table_of(Receivable)), rows)
        conn.execute(insert(table_of(Cursor)), [cursor])
    yield engine
    engine.dispose()


# Each query with what a check of it must find against the ledger above (registered id, reasons).
QUERIES: dict[str, tuple[Invoice, int | None, set[NearDuplicateReason]]] = {
    "respelled_hit": (paper("inv 2026 0001", "1000"), 1, set()),
    "ocr_variant": (paper("INV-2O26-0001", "1,111.00"), None, {NearDuplicateReason.SIMILAR_INVOICE_NUMBER}),
    "deleted_char": (paper("INV-2026-001", "1,112.00"), None, {NearDuplicateReason.SIMILAR_INVOICE_NUMBER}),
    "same_amount_due": (paper("ZZZ-1", "2,000.00"), None, {NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE}),
    "same_document": (paper("YYY-1", "8,888.00", doc="ab"), None, {NearDuplicateReason.SAME_DOCUMENT_HASH}),
    "financed_hit": (paper("FIN-77", "3,000.00"), 3, set()),
    "similar_to_cancelled": (paper("CAN-2026-99", "5,555.00"), None, set()),
    "similar_to_split": (paper("SPL-2026-44", "6,666.00"), None, {NearDuplicateReason.SIMILAR_INVOICE_NUMBER}),
    "split_hit": (paper("SPL-2026-4", "6,000.00"), 6, set()),
    "other_debtor_variant": (paper("INV-2026-00001", "7,777.00", debtor=OTHER_DEBTOR), None,
                             {NearDuplicateReason.SIMILAR_INVOICE_NUMBER}),
    "unknown": (paper("NEW-2026-123456", "9,999.00", due=90), None, set()),
}  # fmt: skip


def ledger_view(result: CheckResult) -> tuple[Any, ...]:
    """Everything a result says about the ledger (not about other lines of its batch)."""
    return (
        result.registered,
        result.status,
        result.financed,
        result.receivable_id,
        result.match,
        result.parties,
        tuple(flag for flag in result.near_duplicates if flag.batch_line is None),
        result.as_of_block,
        result.as_of_block_hash,
    )


@pytest.mark.parametrize("viewer", [CREDITOR, FACTOR, None], ids=["creditor", "factor", "auditor"])
def test_single_and_bulk_checks_give_every_line_the_same_answer(engine: Engine, viewer: int | None) -> None:
    checker = DuplicateChecker(engine)
    names = list(QUERIES)
    invoices = [QUERIES[name][0] for name in names]
    bulk = checker.check_many(invoices, viewer_entity=viewer)
    for name, invoice, in_bulk in zip(names, invoices, bulk, strict=True):
        single = checker.check(invoice, viewer_entity=viewer)
        _, registered_as, reasons = QUERIES[name]
        assert single.receivable_id == registered_as, name
        assert {flag.reason for flag in single.near_duplicates} == reasons, (name, single.near_duplicates)
        assert single.as_of_block == BLOCK
        assert ledger_view(in_bulk) == ledger_view(single), name
    # The split's parts are found through its debtor and number hash, yet counted once, as the parent.
    [flag] = checker.check(QUERIES["similar_to_split"][0], viewer_entity=CREDITOR).near_duplicates
    assert flag.receivable_id == 6
    assert checker.check(QUERIES["financed_hit"][0]).financed


def test_a_near_duplicate_names_the_receivable_only_to_its_parties(engine: Engine) -> None:
    checker = DuplicateChecker(engine)
    invoice, far = QUERIES["ocr_variant"][0], QUERIES["unknown"][0]
    for viewer, named in ((CREDITOR, 1), (DEBTOR, 1), (FACTOR, None), (OTHER_CREDITOR, None)):
        single = checker.check(invoice, viewer_entity=viewer)
        assert [flag.receivable_id for flag in single.near_duplicates] == [named], viewer
        in_bulk = checker.check_many([invoice, far], viewer_entity=viewer)[0]
        assert ledger_view(in_bulk) == ledger_view(single), viewer


def test_bulk_checks_of_large_batches_agree_with_single_checks(engine: Engine) -> None:
    """Long enough to cut the lists into several statements (by parameters and by debtors)."""
    checker = DuplicateChecker(engine)
    fillers = [paper(f"FILL-{i:05d}", f"{10_000 + i}.00", debtor=100 + i % 150, due=30 + i % 50) for i in range(1_500)]
    probes = [QUERIES[name][0] for name in QUERIES]
    batch = [*fillers[:700], *probes, *fillers[700:]]
    results = checker.check_many(batch, viewer_entity=CREDITOR)
    assert len(results) == len(batch)
    for offset, probe in enumerate(probes):
        assert ledger_view(results[700 + offset]) == ledger_view(checker.check(probe, viewer_entity=CREDITOR))
    assert not any(r.registered or any(f.batch_line is None for f in r.near_duplicates) for r in results[:700])


def test_the_bulk_statements_stay_on_the_partial_indexes(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner (PostgreSQL plans depend on statistics; see tests/indexer/test_checks.py)")
    bulk = _BulkSql(engine.dialect)
    hashes = [bytes([i]) * 32 for i in range(3)]
    cases: dict[str, tuple[list[Any], tuple[str, ...]]] = {
        bulk.exact(3, 3): (hashes + hashes, ("ix_receivables_current_key", "ix_receivables_current_fp")),
        bulk.documents(3): (hashes, ("ix_receivables_current_doc",)),
        bulk.similar_numbers([3, 3]): (
            [DEBTOR, *hashes, OTHER_DEBTOR, *hashes], ("ix_receivables_current_debtor_number",)
        ),
        bulk.amounts(2): (
            [DEBTOR, "CNY", 1, 2, OTHER_DEBTOR, "CNY", 3, 4], ("ix_receivables_current_debtor_amount",)
        ),
    }  # fmt: skip
    with engine.connect() as conn:
        for sql, (params, indexes) in cases.items():
            plan = "\n".join(str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, tuple(params)))
            for index in indexes:
                assert f"USING INDEX {index}" in plan, plan
            # Not a walk of every current row (valid_to IS NULL read as selective) nor a scan.
            assert "ix_receivables_valid_to" not in plan, plan
            assert "SCAN receivables" not in plan, plan


def test_a_check_reads_one_snapshot_even_with_split_matches(engine: Engine) -> None:
    checker = DuplicateChecker(engine)
    result = checker.check(QUERIES["split_hit"][0], viewer_entity=CREDITOR)
    assert (result.status, result.financed, result.as_of_block) == (Status.SPLIT, False, BLOCK)
    assert result.as_of_block_hash == "0x" + "cd" * 32


def test_a_bulk_exact_check_probes_the_key_index_alone_and_still_tells_fingerprint_from_key(engine: Engine) -> None:
    """A registration holding a line's fingerprint holds its key too (both hash the debtor and number
    hash), so check_many looks lines up by key only and tells the match kinds apart in Python."""
    altered = paper("INV-2026-0001", "1,001.00")  # the plain registration's key, another amount
    batch = [QUERIES["respelled_hit"][0], altered, QUERIES["split_hit"][0], QUERIES["unknown"][0]]
    statements: list[str] = []
    if engine.dialect.name == "sqlite":
        engine.dispose()
        event.listen(engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(statements.append))
    checker = DuplicateChecker(engine, clock=lambda: NOW + 5.0)
    results = checker.check_many(batch, near_duplicates=False)
    assert [(r.receivable_id, r.match) for r in results] == [
        (1, MatchKind.FINGERPRINT),
        (1, MatchKind.INVOICE_KEY),
        (6, MatchKind.FINGERPRINT),
        (None, None),
    ]
    assert [r.duplicate_of_line for r in results] == [None, 0, None, None]  # the same key as line 0
    for line, in_bulk in zip(batch, results, strict=True):
        assert replace(in_bulk, duplicate_of_line=None) == checker.check(line, near_duplicates=False), line
    if engine.dialect.name != "sqlite":
        return
    [exact] = [s for s in statements if "receivables.invoice_key IN" in s]
    assert "fingerprint IN" not in exact
    with engine.connect() as conn:
        plan = "\n".join(str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + exact))
    assert "SEARCH receivables USING INDEX ix_receivables_current_key (invoice_key=?)" in plan, plan
    assert "ix_receivables_current_fp" not in plan, plan
    assert "SEARCH receivables USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan  # the table in rowid order
    assert "SCAN receivables" not in plan, plan


def test_financed_reads_the_assignment_history_only_for_paid_or_closed_statuses() -> None:
    """The bulk statement probes the assignments of paid or closed registrations only: for any other
    status the history cannot change whether the registration is financed."""
    for status in Status:
        for holder, parts_financed in ((CREDITOR, False), (CREDITOR, True), (FACTOR, False)):
            with_history = is_financed(status, holder, CREDITOR, True, parts_financed)
            without = is_financed(status, holder, CREDITOR, False, parts_financed)
            assert with_history == without or status in PAID_OR_CLOSED_STATUSES, status


def test_bulk_and_single_checks_agree_on_financed_after_an_assignment_history(engine: Engine) -> None:
    """Paid or closed after an assignment and a buy-back (held by the creditor again): financed; the same
    without an assignment, or confirmed again after a buy-back: not financed."""
    history = {
        "settled_after_buy_back": (paper("HIS-1", "1,100.00"), Status.SETTLED, True, True),
        "part_paid_after_buy_back": (paper("HIS-2", "1,200.00"), Status.PARTIALLY_PAID, True, True),
        "written_off_never_assigned": (paper("HIS-3", "1,300.00"), Status.WRITTEN_OFF, False, False),
        "confirmed_after_buy_back": (paper("HIS-4", "1,400.00"), Status.CONFIRMED, True, False),
    }
    rows = [row(100 + i, inv, status=status) for i, (inv, status, _, _) in enumerate(history.values())]
    assignments = [
        {
            "block_number": 2,
            "log_index": i,
            "receivable_id": 100 + i,
            "from_entity": CREDITOR,
            "to_entity": FACTOR,
            "advance": 1,
            "recourse": True,
            "terms_hash": b"\0" * 32,
        }
        for i, (_, _, assigned, _) in enumerate(history.values())
        if assigned
    ]
    with engine.begin() as conn:
        conn.execute(insert(table_of(Receivable)), rows)
        conn.execute(insert(table_of(Assignment)), assignments)
    checker = DuplicateChecker(engine)
    invoices = [inv for inv, _, _, _ in history.values()]
    for exact_only in (True, False):
        bulk = checker.check_many(invoices, viewer_entity=CREDITOR, near_duplicates=not exact_only)
        for (name, (inv, status, _, financed)), in_bulk in zip(history.items(), bulk, strict=True):
            assert (in_bulk.status, in_bulk.financed) == (status, financed), name
            single = checker.check(inv, viewer_entity=CREDITOR, near_duplicates=not exact_only)
            assert ledger_view(in_bulk) == ledger_view(single), name


def test_a_bulk_check_runs_with_the_collector_paused_and_resumes_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    checker = DuplicateChecker(engine)
    during: list[bool] = []
    inner = checker._check_many

    def observed(*args: Any) -> list[CheckResult]:
        during.append(gc.isenabled())
        return inner(*args)

    monkeypatch.setattr(checker, "_check_many", observed)
    results = checker.check_many([paper("INV-1"), paper("NEW-9")])
    assert during == [False] and gc.isenabled()
    assert [r.registered for r in results] == [
        r.registered for r in map(checker.check, [paper("INV-1"), paper("NEW-9")])
    ]
