"""Batch registration: refused lines say why, the rest of the batch goes through."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount

from registry.chain import reverts
from registry.chain.contract import RegistryClient
from registry.chain.reverts import ContractRevert
from registry.demo import Member
from registry.domain import Role, Status
from registry.invoice import Invoice
from registry.types import EntityId, ReceivableId
from tests.conftest import InvoiceFactory

BATCH_LINES = 120


@dataclass(frozen=True)
class Line:
    invoice: Invoice
    refusal: type[ContractRevert] | None = None
    duplicate_of: int | None = None  # the line of this batch it repeats (for InvoiceKeyTaken)
    duplicate_of_ledger: int | None = None  # the receivable id already on the ledger


def _mixed_batch(
    make_invoice: InvoiceFactory,
    creditor: Member,
    other_debtor: Member,
    factor: Member,
    on_ledger: list[tuple[ReceivableId, Invoice]],
) -> list[Line]:
    """120 lines: fresh invoices, interleaved with duplicates within the batch, duplicates of
    invoices already on the ledger (in another spelling), and lines that break a registration rule."""
    lines: list[Line] = []
    fresh: list[int] = []  # line numbers of accepted fresh invoices, to duplicate later
    ledger = iter(on_ledger)
    while len(lines) < BATCH_LINES:
        n = len(lines)
        if n % 10 == 3 and fresh:
            original = lines[fresh[-1]].invoice
            respelled = make_invoice(
                debtor_id=original.debtor, number=original.invoice_number.lower().replace("-", " "), amount="1.00"
            )
            lines.append(Line(respelled, reverts.InvoiceKeyTaken, duplicate_of=fresh[-1]))
        elif n % 10 == 5:
            rid, invoice = next(ledger)
            lines.append(Line(invoice, reverts.InvoiceKeyTaken, duplicate_of_ledger=rid))
        elif n % 20 == 7:
            lines.append(Line(make_invoice(issue_in_days=-90, due_in_days=-30), reverts.DueDateInPast))
        elif n % 20 == 17:
            lines.append(Line(make_invoice(debtor_id=factor.entity), reverts.EntityMissingRole))
        elif n % 40 == 9:
            lines.append(Line(make_invoice(debtor_id=creditor.entity), reverts.DebtorIsCreditor))
        elif n % 40 == 29:
            lines.append(Line(make_invoice(debtor_id=EntityId(4_000_000)), reverts.UnknownEntity))
        else:
            debtor_id = other_debtor.entity if n % 2 else None
            lines.append(Line(make_invoice(debtor_id=debtor_id, number=f"BATCH-{n:04d}")))
            fresh.append(n)
    return lines


@pytest.fixture
def on_ledger(
    registry: RegistryClient, other_creditor: Member, make_invoice: InvoiceFactory
) -> list[tuple[ReceivableId, Invoice]]:
    """Invoices another creditor already registered."""
    out = []
    for i in range(BATCH_LINES // 10):
        invoice = make_invoice(number=f"LEDGER-{i:03d}")
        out.append((registry.register(other_creditor.account, invoice), invoice))
    return out


def test_a_batch_with_duplicates_and_invalid_lines_registers_the_rest_and_says_why_for_each_refusal(
    registry: RegistryClient,
    creditor: Member,
    other_debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    on_ledger: list[tuple[ReceivableId, Invoice]],
) -> None:
    lines = _mixed_batch(make_invoice, creditor, other_debtor, factor, on_ledger)
    assert len(lines) == BATCH_LINES
    expected_refusals = sum(1 for line in lines if line.refusal)
    assert {line.refusal for line in lines if line.refusal} == {
        reverts.InvoiceKeyTaken,
        reverts.DueDateInPast,
        reverts.EntityMissingRole,
        reverts.DebtorIsCreditor,
        reverts.UnknownEntity,
    }
    assert any(line.duplicate_of is not None for line in lines)
    assert any(line.duplicate_of_ledger is not None for line in lines)
    assert expected_refusals < BATCH_LINES // 2
    count_before = registry.receivable_count()
    _, events_before = registry.ledger()

    outcomes = registry.register_batch(creditor.account, [line.invoice for line in lines])

    assert [o.line for o in outcomes] == list(range(BATCH_LINES))
    for outcome, line in zip(outcomes, lines, strict=True):
        if line.refusal is None:
            assert outcome.accepted and outcome.error is None, f"line {outcome.line}: {outcome.error}"
            assert outcome.id is not None
            state = registry.get_receivable(outcome.id)
            assert (state.creditor, state.debtor, state.status) == (
                creditor.entity,
                line.invoice.debtor,
                Status.REGISTERED,
            )
            assert state.face_value == line.invoice.face_value
            assert registry.receivable_id_by_invoice_key(line.invoice.key) == outcome.id
            continue
        assert not outcome.accepted and outcome.id is None
        assert type(outcome.error) is line.refusal, f"line {outcome.line}: {outcome.error}"
        if line.duplicate_of is not None:
            assert outcome.error.existingId == outcomes[line.duplicate_of].id
        if line.duplicate_of_ledger is not None:
            assert outcome.error.existingId == line.duplicate_of_ledger

    accepted = [o.id for o in outcomes if o.accepted]
    assert len(accepted) == BATCH_LINES - expected_refusals
    assert accepted == list(range(count_before + 1, count_before + 1 + len(accepted)))  # in line order
    assert registry.receivable_count() == count_before + len(accepted)
    assert registry.ledger()[1] == events_before + len(accepted)  # refused lines change nothing


def test_each_refused_line_carries_the_error_a_single_registration_would_raise(
    registry: RegistryClient, creditor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    bad = make_invoice(debtor_id=factor.entity)
    (outcome,) = registry.register_batch(creditor.account, [bad])
    with pytest.raises(ContractRevert) as single:
        registry.register(creditor.account, bad)
    assert outcome.error is not None
    assert type(outcome.error) is type(single.value) is reverts.EntityMissingRole
    assert outcome.error.fields == single.value.fields == {"entityId": factor.entity, "role": bytes(Role.DEBTOR)}


def test_a_batch_whose_every_line_is_refused_still_succeeds_and_registers_nothing(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    count = registry.receivable_count()
    outcomes = registry.register_batch(creditor.account, [invoice, invoice])
    assert [type(o.error) for o in outcomes] == [reverts.InvoiceKeyTaken, reverts.InvoiceKeyTaken]
    assert {o.error.existingId for o in outcomes if o.error} == {rid}
    assert registry.receivable_count() == count


def test_a_batch_can_re_register_a_cancelled_invoice(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    old = registry.register(creditor.account, invoice)
    registry.cancel(creditor.account, old)
    result = registry.transact(creditor.account, "registerBatch", [invoice.as_contract_input()])
    assert result.event("ReceivableRegistered").args["supersedes"] == old


def test_an_empty_batch_is_refused(registry: RegistryClient, creditor: Member) -> None:
    with pytest.raises(reverts.InvalidBatchSize) as raised:
        registry.transact(creditor.account, "registerBatch", [])
    assert (raised.value.size, raised.value.limit) == (0, registry.constant("MAX_BATCH_SIZE"))


def test_a_batch_over_the_limit_is_refused(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    limit = registry.constant("MAX_BATCH_SIZE")
    assert limit == 500
    line = make_invoice().as_contract_input()
    with pytest.raises(reverts.InvalidBatchSize) as raised:
        registry.transact(creditor.account, "registerBatch", [line] * (limit + 1))
    assert (raised.value.size, raised.value.limit) == (limit + 1, limit)


def test_a_batch_of_exactly_the_limit_is_accepted(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    limit = registry.constant("MAX_BATCH_SIZE")
    outcomes = registry.register_batch(creditor.account, [make_invoice() for _ in range(limit)])
    assert len(outcomes) == limit
    assert all(o.accepted for o in outcomes)


def test_only_a_creditor_may_upload_a_batch(
    registry: RegistryClient, debtor: Member, stranger: LocalAccount, make_invoice: InvoiceFactory
) -> None:
    line = [make_invoice().as_contract_input()]
    with pytest.raises(reverts.EntityMissingRole):
        registry.transact(debtor.account, "registerBatch", line)
    with pytest.raises(reverts.UnknownKey):
        registry.transact(stranger, "registerBatch", line)


def test_register_many_splits_a_large_upload_into_batches_and_numbers_lines_across_them(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoices = [make_invoice() for _ in range(25)]
    invoices[17] = invoices[4]  # a duplicate in the third batch of the first one's line
    outcomes = registry.register_many(creditor.account, invoices, batch_size=8)
    assert [o.line for o in outcomes] == list(range(25))
    assert isinstance(outcomes[17].error, reverts.InvoiceKeyTaken)
    assert outcomes[17].error.existingId == outcomes[4].id
    assert sum(o.accepted for o in outcomes) == 24
