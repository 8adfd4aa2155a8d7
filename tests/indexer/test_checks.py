"""Double-financing checks over the mirror (registry.checks), on SQLite and PostgreSQL.

Invoices are registered on the local chain through the registry client, the mirror is indexed with
the real indexer, and the checker answers from the mirror only.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert

from registry.chain.contract import RegistryClient
from registry.checks import (
    MAX_VARIANTS,
    CheckResult,
    DuplicateChecker,
    MatchKind,
    MirrorNotReady,
    NearDuplicate,
    NearDuplicateReason,
    Risk,
    _fingerprint_of,
    _key_of,
    number_variants,
)
from registry.demo import Member
from registry.domain import Status
from registry.indexer.indexer import Indexer
from registry.invoice import Invoice, invoice_number_hash
from registry.store.db import make_engine, migrate
from registry.store.models import Receivable, table_of
from registry.types import ReceivableId, UnixTime
from tests.conftest import ChainState, InvoiceFactory

SAME_AMOUNT = NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE
SAME_DOCUMENT = NearDuplicateReason.SAME_DOCUMENT_HASH
SIMILAR_NUMBER = NearDuplicateReason.SIMILAR_INVOICE_NUMBER


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def index(registry: RegistryClient, engine: Engine) -> int:
    """Brings the mirror up to the chain's head; returns the cursor block."""
    with Indexer(registry.chain, registry.deployment, engine) as indexer:
        return indexer.sync()


def renumber(invoice: Invoice, number: str) -> Invoice:
    """The same invoice with another invoice number (every other field equal)."""
    return dataclasses.replace(invoice, invoice_number=number, number_hash=invoice_number_hash(number))


def document(text: str) -> bytes:
    return invoice_number_hash(text)  # any 32 bytes


def reasons(result: CheckResult) -> set[NearDuplicateReason]:
    return {flag.reason for flag in result.near_duplicates}


# ---------------------------------------------------------------------------------------- pure parts


def test_fast_hashes_equal_the_contract_derivations(make_invoice: InvoiceFactory, debtor: Member) -> None:
    for number in ("INV-001", "ＩＮＶ－００２", "HX/2026/0815", "発票-12"):
        invoice = make_invoice(number=number, amount="1,850,600.00")
        assert _key_of(invoice.debtor, invoice.number_hash) == invoice.key
        assert _fingerprint_of(invoice) == invoice.fingerprint


@pytest.mark.parametrize(
    ("debtor", "amount", "currency", "issue", "due"),
    [
        (1, "0.01", "CNY", 1, 2),
        (2**24 - 1, "92,233,720,368,547,758.07", "CNY", 2**32 - 2, 2**32 - 1),  # every field at its largest
        (2**16 + 3, "9223372036854775807", "JPY", 1_700_000_000, 1_800_000_000),
        (77, "1,850,600.005", "KWD", 86_400, 2 * 86_400),
    ],
)
def test_packed_preimages_equal_the_contract_derivations_at_the_fields_edges(
    debtor: int, amount: str, currency: str, issue: int, due: int
) -> None:
    invoice = Invoice.parse(
        debtor=debtor, invoice_number="EDGE-1", face_value=amount, currency=currency, issue_date=issue, due_date=due
    )
    assert _key_of(invoice.debtor, invoice.number_hash) == invoice.key
    assert _fingerprint_of(invoice) == invoice.fingerprint


def test_number_variants_cover_typos_and_ocr_confusions_but_not_sequential_numbers() -> None:
    variants = set(number_variants("INV2024815"))
    assert "INV2024815" not in variants
    assert {
        "INV202815",  # deletion
        "INV2024185",  # transposition
        "INV2O24815",  # OCR 0 -> O
        "1NV2024815",  # OCR I -> 1
        "INV2024B15",  # OCR 8 -> B
        "INV20248155",  # doubled keystroke
        "INV20024815",  # zero inserted
        "INV002024815",  # padded by two zeros
        "1NV2O24815",  # two OCR substitutions
    } <= variants
    assert "INV2024816" not in variants  # the next invoice of a series is not "similar" by default
    assert "INV2024816" in number_variants("INV2024815", digit_substitutions=True)
    assert "INV1" in number_variants("INV001")  # zero padding changed by two
    assert len(number_variants("0" * 64)) <= MAX_VARIANTS


# ---------------------------------------------------------------------------------------- exact


def test_exact_hit_by_invoice_key_and_fingerprint_survives_reformatting(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory, engine: Engine
) -> None:
    invoice = make_invoice(number="INV-001", amount="1,850,600.00")
    rid = registry.register(creditor.account, invoice)
    index(registry, engine)
    checker = DuplicateChecker(engine)

    by_invoice = checker.check(invoice)
    assert (by_invoice.registered, by_invoice.status, by_invoice.financed) == (True, Status.REGISTERED, False)
    assert by_invoice.receivable_id == rid
    assert by_invoice.match is MatchKind.FINGERPRINT
    assert by_invoice.duplicate and by_invoice.near_duplicates == ()

    by_key = checker.check_key(invoice.key)
    assert (by_key.registered, by_key.receivable_id, by_key.match) == (True, rid, MatchKind.INVOICE_KEY)
    by_fingerprint = checker.check_fingerprint(invoice.fingerprint)
    assert (by_fingerprint.registered, by_fingerprint.receivable_id) == (True, rid)
    assert by_fingerprint.match is MatchKind.FINGERPRINT

    # "inv 001" and "1850600" are the same invoice once normalised.
    reformatted = Invoice.parse(
        debtor=invoice.debtor,
        invoice_number="inv 001",
        face_value="1850600",
        currency="cny",
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
    )
    assert reformatted.fingerprint == invoice.fingerprint
    hit = checker.check(reformatted)
    assert (hit.registered, hit.receivable_id, hit.match) == (True, rid, MatchKind.FINGERPRINT)

    # Same debtor and number with another amount: still the registered invoice (by key).
    altered = make_invoice(number="INV 001", amount="999.00")
    by_key_only = checker.check(altered)
    assert (by_key_only.registered, by_key_only.receivable_id) == (True, rid)
    assert by_key_only.match is MatchKind.INVOICE_KEY

    miss = checker.check(make_invoice(number="INV-002"))
    assert (miss.registered, miss.status, miss.financed, miss.receivable_id, miss.match) == (
        False,
        Status.NONE,
        False,
        None,
        None,
    )
    assert not checker.check_key(bytes(32)).registered
    assert not checker.check_fingerprint(bytes(32)).registered


def test_cancelled_registration_is_not_live(
    registry: RegistryClient,
    creditor: Member,
    other_creditor: Member,
    make_invoice: InvoiceFactory,
    engine: Engine,
) -> None:
    invoice = make_invoice(number="CXL-7")
    rid = registry.register(creditor.account, invoice)
    registry.cancel(creditor.account, rid)
    index(registry, engine)
    checker = DuplicateChecker(engine)
    for result in (
        checker.check(invoice),
        checker.check_key(invoice.key),
        checker.check_fingerprint(invoice.fingerprint),
    ):
        assert not result.registered and result.status is Status.NONE and result.receivable_id is None

    # The invoice may be registered again (by anyone); the new registration is live.
    again = registry.register(other_creditor.account, invoice)
    index(registry, engine)
    result = checker.check(invoice)
    assert (result.registered, result.receivable_id, result.status) == (True, again, Status.REGISTERED)


def test_financed_follows_assignment_settlement_split_and_buy_back(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    engine: Engine,
) -> None:
    def confirmed(number: str, amount: str = "10,000.00") -> tuple[ReceivableId, Invoice]:
        invoice = make_invoice(number=number, amount=amount)
        rid = registry.register(creditor.account, invoice)
        registry.confirm(debtor.account, rid, invoice.fingerprint)
        return rid, invoice

    _, only_confirmed = confirmed("F-CONFIRMED")
    rid, assigned = confirmed("F-ASSIGNED")
    registry.assign(creditor.account, rid, factor.entity, assigned.face_value * 9 // 10)
    rid, settled = confirmed("F-SETTLED")
    registry.assign(creditor.account, rid, factor.entity, settled.face_value // 2)
    registry.record_payment(factor.account, rid, settled.face_value)
    rid, split_financed = confirmed("F-SPLIT-A")
    parts = registry.split(creditor.account, rid, [split_financed.face_value // 2] * 2)
    registry.assign(creditor.account, parts[1], factor.entity, 1)
    rid, split_idle = confirmed("F-SPLIT-B")
    registry.split(creditor.account, rid, [split_idle.face_value // 2] * 2)
    rid, bought_back = confirmed("F-BOUGHT-BACK")
    registry.assign(creditor.account, rid, factor.entity, 1, recourse=True)
    registry.buy_back(factor.account, rid)  # the holder sells it back under recourse
    index(registry, engine)

    results = DuplicateChecker(engine).check_many(
        [only_confirmed, assigned, settled, split_financed, split_idle, bought_back]
    )
    assert [(r.status, r.financed) for r in results] == [
        (Status.CONFIRMED, False),
        (Status.ASSIGNED, True),
        (Status.SETTLED, True),
        (Status.SPLIT, True),
        (Status.SPLIT, False),
        (Status.CONFIRMED, False),
    ]
    checker = DuplicateChecker(engine)
    for result, expected in (
        (checker.check(assigned), (Status.ASSIGNED, True)),
        (checker.check(split_financed), (Status.SPLIT, True)),
        (checker.check(split_financed, near_duplicates=False), (Status.SPLIT, True)),
        (checker.check_key(split_financed.key), (Status.SPLIT, True)),
        (checker.check_fingerprint(split_idle.fingerprint), (Status.SPLIT, False)),
        (checker.check_key(bought_back.key), (Status.CONFIRMED, False)),
    ):
        assert (result.status, result.financed) == expected


def test_factor_learns_status_but_not_parties_or_amount(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    other_factor: Member,
    make_invoice: InvoiceFactory,
    engine: Engine,
) -> None:
    invoice = make_invoice(number="PRIV-1", amount="77,000.00")
    rid = registry.register(creditor.account, invoice)
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    registry.assign(creditor.account, rid, factor.entity, 1)
    index(registry, engine)
    checker = DuplicateChecker(engine)

    outsider = checker.check(invoice, viewer_entity=other_factor.entity)
    assert (outsider.registered, outsider.status, outsider.financed) == (True, Status.ASSIGNED, True)
    assert outsider.parties is None
    assert checker.check(invoice).parties is None
    assert checker.check_key(invoice.key, viewer_entity=other_factor.entity).parties is None

    for party in (creditor, debtor, factor):  # creditor, debtor, holder
        parties = checker.check(invoice, viewer_entity=party.entity).parties
        assert parties is not None
        assert (parties.creditor, parties.debtor, parties.holder) == (creditor.entity, debtor.entity, factor.entity)
        assert (parties.face_value, parties.currency) == (invoice.face_value, "CNY")
    parties = checker.check_fingerprint(invoice.fingerprint, viewer_entity=factor.entity).parties
    assert parties is not None and parties.holder == factor.entity


# ---------------------------------------------------------------------------------------- near-duplicates


def test_same_debtor_amount_and_due_date_is_flagged_high_without_revealing_the_match(
    registry: RegistryClient,
    creditor: Member,
    other_creditor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    engine: Engine,
) -> None:
    registered = make_invoice(number="ND-100", amount="48,250.00")
    rid = registry.register(creditor.account, registered)
    index(registry, engine)
    checker = DuplicateChecker(engine)

    probe = renumber(registered, "XYZ-9")  # another number: not an exact duplicate
    result = checker.check(probe, viewer_entity=factor.entity)
    assert not result.registered
    assert result.near_duplicates == (NearDuplicate(SAME_AMOUNT, Risk.HIGH),)
    assert result.suspicious and not result.duplicate
    # Its creditor (and the debtor) may see which receivable it is; another creditor may not.
    assert checker.check(probe, viewer_entity=creditor.entity).near_duplicates == (
        NearDuplicate(SAME_AMOUNT, Risk.HIGH, receivable_id=rid),
    )
    assert checker.check(probe, viewer_entity=other_creditor.entity).near_duplicates[0].receivable_id is None
    # The registered invoice itself is an exact match, not its own near-duplicate.
    assert checker.check(registered).near_duplicates == ()
    # Another amount, another due date or another currency is not flagged.
    assert checker.check(make_invoice(number="XYZ-10", amount="48,250.01")).near_duplicates == ()
    other_due = dataclasses.replace(probe, due_date=UnixTime(probe.due_date + 86_400))
    assert checker.check(other_due).near_duplicates == ()


def test_same_document_hash_is_flagged_high(
    registry: RegistryClient,
    creditor: Member,
    other_debtor: Member,
    make_invoice: InvoiceFactory,
    engine: Engine,
) -> None:
    registered = dataclasses.replace(make_invoice(number="DOC-1"), document_hash=document("scan.pdf"))
    registry.register(creditor.account, registered)
    without_document = make_invoice(number="DOC-2", amount="5.00")
    registry.register(creditor.account, without_document)
    index(registry, engine)
    checker = DuplicateChecker(engine)

    probe = dataclasses.replace(
        make_invoice(debtor_id=other_debtor.entity, number="ELSE-1", amount="3.00"), document_hash=document("scan.pdf")
    )
    assert checker.check(probe).near_duplicates == (NearDuplicate(SAME_DOCUMENT, Risk.HIGH),)
    # The zero hash ("no document") never matches.
    assert checker.check(make_invoice(number="ELSE-2", amount="4.00")).near_duplicates == ()


@pytest.mark.parametrize(
    "variant",
    ["INV-2024-0B15", "INV-2024-815", "INV-2024-0851", "INV-2024-00815", "INV-2024-08155", "INV-2024-0815A"],
)
def test_similar_invoice_number_of_the_same_debtor_is_flagged_medium(
    variant: str,
    registry: RegistryClient,
    creditor: Member,
    other_debtor: Member,
    make_invoice: InvoiceFactory,
    engine: Engine,
) -> None:
    registered = make_invoice(number="INV-2024-0815", amount="1,000.00")
    rid = registry.register(creditor.account, registered)
    index(registry, engine)
    checker = DuplicateChecker(engine)

    probe = make_invoice(number=variant, amount="2,000.00")  # another amount: only the number is similar
    result = checker.check(probe)
    assert not result.registered
    assert result.near_duplicates == (NearDuplicate(SIMILAR_NUMBER, Risk.MEDIUM),)
    named = checker.check(probe, viewer_entity=creditor.entity).near_duplicates
    assert named == (NearDuplicate(SIMILAR_NUMBER, Risk.MEDIUM, receivable_id=rid),)
    # The same number for another debtor is another invoice altogether.
    assert checker.check(make_invoice(debtor_id=other_debtor.entity, number=variant)).near_duplicates == ()


def test_sequential_numbers_are_not_similar_unless_digit_substitutions_are_enabled(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory, engine: Engine
) -> None:
    rid = registry.register(creditor.account, make_invoice(number="INV-2024-0815", amount="1,000.00"))
    index(registry, engine)
    next_in_series = make_invoice(number="INV-2024-0816", amount="2,000.00")
    assert DuplicateChecker(engine).check(next_in_series).near_duplicates == ()
    strict = DuplicateChecker(engine, digit_substitutions=True)
    assert strict.check(next_in_series, viewer_entity=creditor.entity).near_duplicates == (
        NearDuplicate(SIMILAR_NUMBER, Risk.MEDIUM, receivable_id=rid),
    )


def test_near_duplicates_ignore_cancelled_registrations_and_count_split_parts_once(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    engine: Engine,
) -> None:
    cancelled = make_invoice(number="GONE-1", amount="700.00")
    registry.cancel(creditor.account, registry.register(creditor.account, cancelled))
    split = dataclasses.replace(make_invoice(number="PARTS-1", amount="900.00"), document_hash=document("parts"))
    rid = registry.register(creditor.account, split)
    registry.confirm(debtor.account, rid, split.fingerprint)
    parts = registry.split(creditor.account, rid, [300_00, 600_00])
    registry.assign(creditor.account, parts[0], factor.entity, 1)
    index(registry, engine)
    checker = DuplicateChecker(engine)

    assert checker.check(renumber(cancelled, "GONE-2")).near_duplicates == ()
    probe = dataclasses.replace(renumber(split, "OTHER-1"), document_hash=document("parts"))
    assert reasons(checker.check(probe)) == {SAME_AMOUNT, SAME_DOCUMENT}
    assert len(checker.check(probe).near_duplicates) == 2  # parent and parts: one flag per reason
    # The factor holding a part is a party to that part only, and sees that part's id.
    seen_by_factor = checker.check(probe, viewer_entity=factor.entity).near_duplicates
    assert NearDuplicate(SAME_DOCUMENT, Risk.HIGH, receivable_id=parts[0]) in seen_by_factor
    assert checker.check(split).near_duplicates == ()  # its own parts are not near-duplicates


# ---------------------------------------------------------------------------------------- bulk


def test_bulk_check_of_two_thousand_invoices_answers_every_line(
    registry: RegistryClient,
    creditor: Member,
    other_creditor: Member,
    debtor: Member,
    other_debtor: Member,
    factor: Member,
    chain_state: ChainState,
    engine: Engine,
) -> None:
    rng = random.Random(20260815)
    now = chain_state.now()

    def invoice(i: int, debtor_id: int) -> Invoice:
        return Invoice.parse(
            debtor=debtor_id,
            invoice_number=f"B-{rng.getrandbits(48):012X}",  # random: no accidental similarity
            face_value=1_000_00 + i,
            currency="CNY",
            issue_date=now - 86_400,
            due_date=now + 30 * 86_400 + i * 60,
        )

    ledger = [invoice(i, (debtor, other_debtor)[i % 2].entity) for i in range(300)]
    outcomes = registry.register_many(creditor.account, ledger[:200], batch_size=100)
    outcomes += registry.register_many(other_creditor.account, ledger[200:], batch_size=100)
    assert all(o.accepted for o in outcomes)
    ids = [ReceivableId(o.id or 0) for o in outcomes]
    for k in range(0, 20):  # 20 cancelled: no longer live
        registry.cancel(creditor.account, ids[k])
    registry.confirm(debtor.account, ids[20], ledger[20].fingerprint)
    registry.assign(creditor.account, ids[20], factor.entity, 1)
    index(registry, engine)

    fresh = [invoice(1_000 + i, debtor.entity) for i in range(1_600)]
    batch: list[Invoice] = [*ledger, *fresh]
    expected_registered = [i >= 20 for i in range(300)] + [False] * 1_600
    expected_duplicate_of: list[int | None] = [None] * 1_900
    for n in range(100):  # 100 lines repeating earlier lines of the batch, some reformatted
        source = rng.randrange(0, 1_900)
        original = batch[source]
        copy = original if n % 2 else renumber(original, original.invoice_number.lower().replace("-", " "))
        assert copy.fingerprint == original.fingerprint
        batch.append(copy)
        expected_registered.append(expected_registered[source])
        expected_duplicate_of.append(
            expected_duplicate_of[source] if expected_duplicate_of[source] is not None else source
        )
    assert len(batch) == 2_000

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    started = time.perf_counter()
    results = DuplicateChecker(engine).check_many(batch, viewer_entity=factor.entity)
    elapsed = time.perf_counter() - started
    event.remove(engine, "before_cursor_execute", count)

    assert len(results) == len(batch)
    for line, (result, registered, duplicate_of) in enumerate(
        zip(results, expected_registered, expected_duplicate_of, strict=True)
    ):
        assert (result.registered, result.duplicate_of_line) == (registered, duplicate_of), line
        source = line if line < 1_900 else (duplicate_of if duplicate_of is not None else line)
        if registered:
            assert result.receivable_id == ids[source], line
            assert result.match is MatchKind.FINGERPRINT
            assert (result.parties is not None) == (source == 20)  # the factor holds receivable 20 only
        assert result.duplicate == (registered or duplicate_of is not None)
        assert result.near_duplicates == (), (line, result.near_duplicates)
    assert (results[20].status, results[20].financed, results[20].parties is not None) == (Status.ASSIGNED, True, True)
    assert results[21].status is Status.REGISTERED and not results[21].financed
    assert len({(r.as_of_block, r.as_of_block_hash) for r in results}) == 1
    # Set-based: a handful of statements for the whole batch, not one per line.
    assert len(statements) <= 20, len(statements)
    print(f"bulk check of {len(batch)} lines: {len(statements)} statements, {elapsed:.2f}s")
    assert elapsed < 30


def test_bulk_check_flags_near_duplicates_within_the_batch_and_against_the_ledger(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory, engine: Engine
) -> None:
    on_ledger = make_invoice(number="L-500", amount="500.00")
    rid = registry.register(creditor.account, on_ledger)
    index(registry, engine)

    a = make_invoice(number="Q-1", amount="10.00")
    b = renumber(a, "Q-2")  # same debtor, amount, due date as line 0
    c = dataclasses.replace(make_invoice(number="Q-30", amount="30.00"), document_hash=document("shared"))
    d = dataclasses.replace(make_invoice(number="Q-40", amount="40.00"), document_hash=document("shared"))
    e = make_invoice(number="Q-5O", amount="50.00")  # OCR: similar to line 5
    f = make_invoice(number="Q-50", amount="51.00")
    g = renumber(on_ledger, "L-5OO")  # similar number and same amount as the ledger's
    results = DuplicateChecker(engine).check_many([a, b, c, d, e, f, g], viewer_entity=creditor.entity)
    assert results[0].near_duplicates == (NearDuplicate(SAME_AMOUNT, Risk.HIGH, batch_line=1),)
    assert results[1].near_duplicates == (NearDuplicate(SAME_AMOUNT, Risk.HIGH, batch_line=0),)
    assert results[2].near_duplicates == (NearDuplicate(SAME_DOCUMENT, Risk.HIGH, batch_line=3),)
    assert results[3].near_duplicates == (NearDuplicate(SAME_DOCUMENT, Risk.HIGH, batch_line=2),)
    assert results[4].near_duplicates == (NearDuplicate(SIMILAR_NUMBER, Risk.MEDIUM, batch_line=5),)
    assert results[5].near_duplicates == (NearDuplicate(SIMILAR_NUMBER, Risk.MEDIUM, batch_line=4),)
    assert results[6].near_duplicates == (
        NearDuplicate(SAME_AMOUNT, Risk.HIGH, receivable_id=rid),
        NearDuplicate(SIMILAR_NUMBER, Risk.MEDIUM, receivable_id=rid),
    )
    assert not any(r.registered or r.duplicate_of_line is not None for r in results)
    assert results[6].reasons == (
        f"SAME_DEBTOR_AMOUNT_DUE_DATE [high risk] (receivable {rid})",
        f"SIMILAR_INVOICE_NUMBER [medium risk] (receivable {rid})",
    )
    assert DuplicateChecker(engine).check_many([]) == []


def test_a_batch_of_look_alikes_names_a_bounded_number_of_other_lines(
    registry: RegistryClient, make_invoice: InvoiceFactory, engine: Engine
) -> None:
    index(registry, engine)
    template = make_invoice(amount="99.00")
    batch = [renumber(template, f"SAME-{i:04d}") for i in range(600)]  # same debtor, amount, due date
    results = DuplicateChecker(engine).check_many(batch, near_duplicates=True)
    for result in results:
        same_amount = [f for f in result.near_duplicates if f.reason is SAME_AMOUNT]
        assert 1 <= len(same_amount) <= 10
        assert all(f.batch_line is not None for f in result.near_duplicates)
    assert not any(r.duplicate for r in results)


# ---------------------------------------------------------------------------------------- freshness and plans


def test_every_answer_says_which_block_it_is_as_of_and_how_stale(
    registry: RegistryClient,
    creditor: Member,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
    engine: Engine,
) -> None:
    migrate(engine)
    with pytest.raises(MirrorNotReady):
        DuplicateChecker(engine).check(make_invoice())

    invoice = make_invoice(number="FRESH-1")
    block = index(registry, engine)
    header = registry.chain.get_block(block)
    timestamp = int(header["timestamp"], 16)
    checker = DuplicateChecker(engine, clock=lambda: timestamp + 12.5)
    answers = [
        checker.check(invoice),
        checker.check(invoice, near_duplicates=False),
        checker.check_key(invoice.key),
        checker.check_fingerprint(invoice.fingerprint),
        *checker.check_many([invoice]),
    ]
    for answer in answers:
        assert (answer.as_of_block, answer.as_of_block_hash, answer.as_of_timestamp) == (
            block,
            header["hash"],
            timestamp,
        )
        assert answer.staleness_seconds == 12.5
        assert not answer.registered

    live = DuplicateChecker(engine).check(invoice)
    assert 0 <= live.staleness_seconds < 24 * 3_600

    # The chain moves on: until the mirror catches up, answers are as of the old block.
    rid = registry.register(creditor.account, invoice)
    assert not checker.check(invoice).registered
    newer = index(registry, engine)
    answer = checker.check(invoice)
    assert (answer.registered, answer.receivable_id, answer.as_of_block) == (True, rid, newer)
    assert newer > block


def test_single_check_is_one_statement_through_the_partial_indexes(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory, engine: Engine
) -> None:
    invoice = make_invoice(number="PLAN-1")
    registry.register(creditor.account, invoice)
    index(registry, engine)

    if engine.dialect.name == "sqlite":
        # The hot path runs on the driver's cursor: trace what SQLite itself executes.
        statements: list[str] = []
        engine.dispose()
        event.listen(engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(statements.append))
        checker = DuplicateChecker(engine)
        assert checker.check(invoice, near_duplicates=False).registered
        assert checker.check_key(invoice.key).registered
        assert checker.check_fingerprint(invoice.fingerprint).registered
        assert len([s for s in statements if not s.startswith("PRAGMA")]) == 3, statements

        plan = "\n".join(checker.query_plan(invoice))
        assert "SEARCH receivables USING INDEX ix_receivables_current_key (invoice_key=?)" in plan
        assert "SEARCH receivables USING INDEX ix_receivables_current_fp (fingerprint=?)" in plan
        assert "ix_assignments_receivable_id" in plan
        assert "SCAN receivables" not in plan
    else:
        # A throwaway database: pad it with synthetic current rows so that the planner has a table
        # worth using indexes on (on a handful of rows a sequential scan is cheapest).
        rng = random.Random(7)
        padding = [
            {
                **{c: 1 for c in ("valid_from", "creditor", "debtor", "holder", "status", "issue_date")},
                "id": 10**9 + i,
                "valid_to": None,
                "recourse": False,
                "face_value": 1 + i,
                "paid": 0,
                "currency": "CNY",
                "due_date": 2,
                "fingerprint": rng.randbytes(32),
                "invoice_key": rng.randbytes(32),
                "number_hash": rng.randbytes(32),
                "document_hash": rng.randbytes(32),
                "parent_id": None,
                "supersedes": None,
                "registered_block": 1,
            }
            for i in range(20_000)
        ]
        with engine.begin() as conn:
            conn.execute(insert(table_of(Receivable)), padding)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE receivables")
        checker = DuplicateChecker(engine)
        plan = "\n".join(checker.query_plan(invoice))
        assert "Bitmap Index Scan on ix_receivables_current_key" in plan, plan
        assert "Bitmap Index Scan on ix_receivables_current_fp" in plan, plan
        assert "Seq Scan on receivables " not in plan, plan
        assert checker.check(invoice).registered


def test_fast_keccak_agrees_with_eth_utils_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from eth_utils.crypto import keccak

    from registry.hashing import keccak256 as _keccak256

    inputs = [bytes([i % 256]) * (i % 200) for i in range(2_000)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(_keccak256, inputs)) == [keccak(data) for data in inputs]
