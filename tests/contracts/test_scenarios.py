"""The scenarios a factoring expert tries first (DOMAIN.md, scenarios 1 to 9), on the contract.

Each section names its scenario. Double financing, payee of record, split conservation,
confirmation, registration checks and maturity are shown as a domain expert would walk them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from registry.chain import reverts
from registry.chain.contract import RegistryClient
from registry.demo import DAY, Member, registration_hash
from registry.domain import ClaimStatus, DisputeReason, DisputeResolution, Role, Status
from registry.invoice import Invoice
from registry.types import ReceivableId
from tests.conftest import ChainState, InvoiceFactory

TRADER_USCC = "91440300MA5TRADER1"  # an entity that both sells and buys


def _confirmed(registry: RegistryClient, creditor: Member, debtor: Member, invoice: Invoice) -> ReceivableId:
    rid = registry.register(creditor.account, invoice)
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    return rid


def _financed(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    invoice: Invoice,
    *,
    recourse: bool = False,
) -> ReceivableId:
    rid = _confirmed(registry, creditor, debtor, invoice)
    registry.assign(creditor.account, rid, factor.entity, invoice.face_value * 9 // 10, recourse, keccak(text="terms"))
    return rid


def _with_changed_input(invoice: Invoice, **changes: object) -> tuple[object, ...]:
    """The contract input of ``invoice`` with raw fields replaced (bypassing Python-side checks)."""
    names = ("debtor", "invoiceNumberHash", "currency", "faceValue", "issueDate", "dueDate", "documentHash")
    values = dict(zip(names, invoice.as_contract_input(), strict=True))
    values.update(changes)
    return tuple(values[n] for n in names)


# ================================================================== 1. the same invoice twice


def test_same_invoice_registered_twice_by_the_same_creditor_is_refused(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    with pytest.raises(reverts.InvoiceKeyTaken) as raised:
        registry.register(creditor.account, invoice)
    assert (raised.value.invoiceKey, raised.value.existingId) == (invoice.key, rid)


def test_same_invoice_registered_by_a_different_creditor_is_refused(
    registry: RegistryClient, creditor: Member, other_creditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    with pytest.raises(reverts.InvoiceKeyTaken) as raised:
        registry.register(other_creditor.account, invoice)
    assert raised.value.existingId == rid


@pytest.mark.parametrize(
    "respelled", ["inv 001", "ＩＮＶ－００１", "ＩＮＶ　００１", "Inv_001", "#INV.001", " inv—001 "]
)
def test_same_invoice_with_a_reformatted_number_is_refused(
    registry: RegistryClient,
    creditor: Member,
    other_creditor: Member,
    make_invoice: InvoiceFactory,
    respelled: str,
) -> None:
    rid = registry.register(creditor.account, make_invoice(number="INV-001"))
    with pytest.raises(reverts.InvoiceKeyTaken) as raised:
        registry.register(other_creditor.account, make_invoice(number=respelled))
    assert raised.value.existingId == rid


def test_same_invoice_with_a_reformatted_amount_is_refused_and_has_the_same_fingerprint(
    registry: RegistryClient, creditor: Member, other_creditor: Member, make_invoice: InvoiceFactory
) -> None:
    original = make_invoice(number="HX-2026-0420", amount="1,850,600.00")
    reformatted = make_invoice(number="hx 2026 0420", amount="1850600")
    assert reformatted.fingerprint == original.fingerprint
    rid = registry.register(creditor.account, original)
    assert registry.receivable_id_by_fingerprint(reformatted.fingerprint) == rid
    with pytest.raises(reverts.InvoiceKeyTaken) as raised:
        registry.register(other_creditor.account, reformatted)
    assert raised.value.existingId == rid


def test_same_invoice_number_with_another_amount_or_dates_is_still_refused(
    registry: RegistryClient, creditor: Member, other_creditor: Member, make_invoice: InvoiceFactory
) -> None:
    """The key is debtor + invoice number: changing the amount or dates does not bypass it."""
    rid = registry.register(creditor.account, make_invoice(number="HX-77", amount="100,000.00"))
    with pytest.raises(reverts.InvoiceKeyTaken) as raised:
        registry.register(other_creditor.account, make_invoice(number="HX-77", amount="99,999.00", due_in_days=90))
    assert raised.value.existingId == rid


def test_same_invoice_number_for_another_debtor_is_a_different_invoice(
    registry: RegistryClient, creditor: Member, other_debtor: Member, make_invoice: InvoiceFactory
) -> None:
    registry.register(creditor.account, make_invoice(number="HX-78"))
    registry.register(creditor.account, make_invoice(number="HX-78", debtor_id=other_debtor.entity))


def test_same_invoice_through_a_batch_is_refused_against_the_ledger_and_within_the_batch(
    registry: RegistryClient, creditor: Member, other_creditor: Member, make_invoice: InvoiceFactory
) -> None:
    on_ledger = make_invoice(number="INV-500")
    rid = registry.register(creditor.account, on_ledger)
    fresh = make_invoice(number="INV-501")
    outcomes = registry.register_batch(
        other_creditor.account,
        [make_invoice(number="inv 500"), fresh, make_invoice(number="ＩＮＶ－５０１")],
    )
    assert isinstance(outcomes[0].error, reverts.InvoiceKeyTaken)
    assert outcomes[0].error.existingId == rid
    assert outcomes[1].accepted
    assert isinstance(outcomes[2].error, reverts.InvoiceKeyTaken)
    assert outcomes[2].error.existingId == outcomes[1].id


# ================================================================== 2. a second factor tries


def test_second_factor_cannot_finance_an_assigned_receivable_and_sees_that_it_is_financed(
    registry: RegistryClient,
    creditor: Member,
    other_creditor: Member,
    debtor: Member,
    factor: Member,
    other_factor: Member,
    make_invoice: InvoiceFactory,
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice)

    # The creditor offers the same receivable to factor B: it no longer holds it.
    with pytest.raises(reverts.NotHolder) as raised:
        registry.assign(creditor.account, rid, other_factor.entity, invoice.face_value // 2)
    assert (raised.value.caller, raised.value.holder) == (creditor.entity, factor.entity)
    # B cannot take it either, nor can anyone get it registered again for B.
    with pytest.raises(reverts.NotHolder):
        registry.assign(other_factor.account, rid, other_factor.entity, invoice.face_value // 2)
    with pytest.raises(reverts.InvoiceKeyTaken):
        registry.register(other_creditor.account, invoice)

    # B's check before lending: the invoice it was shown is on the ledger, and already financed.
    seen_id = registry.receivable_id_by_invoice_key(invoice.key)
    assert seen_id == rid
    assert registry.get_receivable(seen_id).status is Status.ASSIGNED
    # What B reads carries no financing terms: the receivable's state has no advance and no terms
    # (the assignment event carries only a hash of the terms agreed off-chain).
    (state_abi,) = registry.abi.function("getReceivable")["outputs"]
    assert {c["name"] for c in state_abi["components"]} == {
        "creditor",
        "debtor",
        "holder",
        "status",
        "recourse",
        "dueDate",
        "faceValue",
        "paid",
    }


# ================================================================== 3. assignment in the wrong state


def test_assignment_before_confirmation_is_refused(
    registry: RegistryClient, creditor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    rid = registry.register(creditor.account, make_invoice())
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.assign(creditor.account, rid, factor.entity, 1)
    assert raised.value.status == Status.REGISTERED


def test_assignment_after_cancellation_is_refused(
    registry: RegistryClient, creditor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    rid = registry.register(creditor.account, make_invoice())
    registry.cancel(creditor.account, rid)
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.assign(creditor.account, rid, factor.entity, 1)
    assert raised.value.status == Status.CANCELLED


def test_assignment_after_settlement_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    registry.record_payment(creditor.account, rid, invoice.face_value)
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.assign(creditor.account, rid, factor.entity, 1)
    assert raised.value.status == Status.SETTLED


def test_reassignment_after_settlement_is_refused(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    other_factor: Member,
    make_invoice: InvoiceFactory,
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice)
    registry.record_payment(factor.account, rid, invoice.face_value)
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.assign(factor.account, rid, other_factor.entity, 1)
    assert raised.value.status == Status.SETTLED


def test_assignment_while_disputed_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    rid = registry.register(creditor.account, make_invoice())
    registry.dispute(debtor.account, rid, DisputeReason.NOT_OUR_INVOICE)
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.assign(creditor.account, rid, factor.entity, 1)
    assert raised.value.status == Status.DISPUTED


def test_assignment_to_a_party_that_is_not_a_factor_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, auditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    with pytest.raises(reverts.EntityMissingRole) as raised:
        registry.assign(creditor.account, rid, auditor.entity, 1)
    assert (raised.value.entityId, raised.value.role) == (auditor.entity, bytes(Role.FACTOR))
    with pytest.raises(reverts.InvalidAssignee):
        registry.assign(creditor.account, rid, debtor.entity, 1)


def test_an_advance_larger_than_the_unpaid_balance_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    with pytest.raises(reverts.AdvanceExceedsBalance) as raised:
        registry.assign(creditor.account, rid, factor.entity, invoice.face_value + 1)
    assert raised.value.unpaid == invoice.face_value


# ================================================================== 4. re-assignment


def test_reassignment_moves_the_payee_of_record_to_the_second_factor(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    other_factor: Member,
    make_invoice: InvoiceFactory,
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice)
    assert registry.payee_of_record(rid) == factor.entity

    result = registry.assign(factor.account, rid, other_factor.entity, invoice.face_value * 8 // 10)
    assigned = result.event("ReceivableAssigned").args
    assert (assigned["from"], assigned["to"]) == (factor.entity, other_factor.entity)
    assert registry.payee_of_record(rid) == other_factor.entity
    state = registry.get_receivable(rid)
    assert (state.holder, state.status, state.creditor) == (other_factor.entity, Status.ASSIGNED, creditor.entity)

    # The first factor is out: it can neither collect nor be paid with discharge.
    with pytest.raises(reverts.NotHolder):
        registry.record_payment(factor.account, rid, 1)
    with pytest.raises(reverts.PayeeNotOfRecord) as raised:
        registry.report_payment(debtor.account, rid, factor.entity, 1)
    assert raised.value.payeeOfRecord == other_factor.entity
    registry.report_payment(debtor.account, rid, other_factor.entity, invoice.face_value)


# ================================================================== 5. paying the original creditor


def test_debtor_paying_the_creditor_before_assignment_is_discharged(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    claim = registry.report_payment(debtor.account, rid, creditor.entity, invoice.face_value // 4)
    assert registry.get_payment_claim(claim).status is ClaimStatus.PENDING

    registry.acknowledge_payment(creditor.account, claim)
    assert registry.get_payment_claim(claim).status is ClaimStatus.ACKNOWLEDGED
    state = registry.get_receivable(rid)
    assert (state.paid, state.status) == (invoice.face_value // 4, Status.PARTIALLY_PAID)


def test_payment_made_to_the_creditor_before_notice_still_counts_after_a_later_assignment(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    claim = registry.report_payment(debtor.account, rid, creditor.entity, invoice.face_value // 4)
    registry.assign(creditor.account, rid, factor.entity, invoice.face_value // 2)

    registry.acknowledge_payment(creditor.account, claim)
    assert registry.get_receivable(rid).unpaid == invoice.face_value - invoice.face_value // 4
    assert registry.payee_of_record(rid) == factor.entity


def test_debtor_paying_the_creditor_after_assignment_is_not_discharged(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice)
    with pytest.raises(reverts.PayeeNotOfRecord) as raised:
        registry.report_payment(debtor.account, rid, creditor.entity, invoice.face_value)
    assert (raised.value.paidTo, raised.value.payeeOfRecord) == (creditor.entity, factor.entity)
    assert registry.get_receivable(rid).paid == 0


def test_a_payee_can_reject_a_payment_it_did_not_receive_and_nothing_is_counted(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice)
    claim = registry.report_payment(debtor.account, rid, factor.entity, invoice.face_value)
    registry.reject_payment(factor.account, claim)
    assert registry.get_payment_claim(claim).status is ClaimStatus.REJECTED
    assert registry.get_receivable(rid).paid == 0
    with pytest.raises(reverts.ClaimNotPending):
        registry.acknowledge_payment(factor.account, claim)


# ================================================================== 6. split


@pytest.mark.parametrize("delta", [-1, +1], ids=["parts-short", "parts-over"])
def test_split_whose_parts_do_not_add_up_to_the_unpaid_balance_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory, delta: int
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    half = invoice.face_value // 2
    with pytest.raises(reverts.SplitDoesNotConserve) as raised:
        registry.split(creditor.account, rid, [half, invoice.face_value - half + delta])
    assert (raised.value.sumOfParts, raised.value.unpaid) == (invoice.face_value + delta, invoice.face_value)


@pytest.mark.parametrize("amounts", [[100_000], [0, 10_000_000]], ids=["one-part", "zero-part"])
def test_split_into_one_part_or_with_a_zero_part_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory, amounts: list[int]
) -> None:
    invoice = make_invoice(amount="100,000.00")
    rid = _confirmed(registry, creditor, debtor, invoice)
    with pytest.raises(reverts.InvalidSplit):
        registry.split(creditor.account, rid, amounts)


def test_split_after_a_partial_payment_divides_the_unpaid_balance(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice(amount="100,000.00")
    rid = _financed(registry, creditor, debtor, factor, invoice)
    registry.record_payment(factor.account, rid, 3_000_000)
    unpaid = invoice.face_value - 3_000_000

    with pytest.raises(reverts.SplitDoesNotConserve):
        registry.split(factor.account, rid, [invoice.face_value // 2, invoice.face_value // 2])
    parts = registry.split(factor.account, rid, [2_000_000, 5_000_000 - 2_000_000, unpaid - 5_000_000])

    assert registry.get_receivable(rid).status is Status.SPLIT
    states = [registry.get_receivable(p) for p in parts]
    assert sum(s.face_value for s in states) == unpaid
    for state in states:
        assert (state.holder, state.debtor, state.creditor) == (factor.entity, debtor.entity, creditor.entity)
        assert (state.status, state.paid, state.due_date) == (Status.ASSIGNED, 0, invoice.due_date)
        assert registry.parent_of(state.id) == rid
    assert registry.parent_of(rid) == 0


def test_split_parts_are_assigned_separately(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    other_factor: Member,
    make_invoice: InvoiceFactory,
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    half = invoice.face_value // 2
    first, second = registry.split(creditor.account, rid, [half, invoice.face_value - half])
    assert registry.get_receivable(first).status is Status.CONFIRMED

    registry.assign(creditor.account, first, factor.entity, half * 9 // 10)
    registry.assign(creditor.account, second, other_factor.entity, half * 8 // 10)
    assert (registry.payee_of_record(first), registry.payee_of_record(second)) == (factor.entity, other_factor.entity)
    # The parent is spent: it cannot be assigned or paid any more.
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.assign(creditor.account, rid, factor.entity, 1)
    assert raised.value.status == Status.SPLIT
    with pytest.raises(reverts.InvalidStatus):
        registry.record_payment(creditor.account, rid, 1)


# ================================================================== 7. confirmation


def test_someone_other_than_the_debtor_of_record_cannot_confirm(
    registry: RegistryClient,
    creditor: Member,
    other_debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    for impostor in (other_debtor, creditor, factor):
        with pytest.raises(reverts.NotDebtorOfRecord) as raised:
            registry.confirm(impostor.account, rid, invoice.fingerprint)
        assert raised.value.caller == impostor.entity
    assert registry.get_receivable(rid).status is Status.REGISTERED


def test_debtor_confirming_with_a_fingerprint_from_different_records_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice(number="HX-900", amount="100,000.00")
    rid = registry.register(creditor.account, invoice)
    debtors_view = make_invoice(number="HX-900", amount="10,000.00")  # the debtor's books say less
    with pytest.raises(reverts.FingerprintMismatch) as raised:
        registry.confirm(debtor.account, rid, debtors_view.fingerprint)
    assert raised.value.supplied == debtors_view.fingerprint
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    assert registry.get_receivable(rid).status is Status.CONFIRMED


def test_confirmation_is_irrevocable_the_debtor_cannot_dispute_after_financing(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    result = registry.confirm(debtor.account, rid, invoice.fingerprint)
    assert result.event("ReceivableConfirmed").args == {"id": rid, "debtor": debtor.entity}
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.dispute(debtor.account, rid, DisputeReason.QUALITY_DEFECT)
    assert raised.value.status == Status.CONFIRMED

    registry.assign(creditor.account, rid, factor.entity, invoice.face_value // 2)
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.dispute(debtor.account, rid, DisputeReason.ALREADY_PAID)
    assert raised.value.status == Status.ASSIGNED
    with pytest.raises(reverts.InvalidStatus):
        registry.confirm(debtor.account, rid, invoice.fingerprint)


def test_a_disputed_invoice_is_confirmed_only_after_the_debtor_withdraws_the_dispute(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    result = registry.dispute(debtor.account, rid, DisputeReason.GOODS_NOT_RECEIVED)
    assert result.event("ReceivableDisputed").args["reason"] == DisputeReason.GOODS_NOT_RECEIVED
    with pytest.raises(reverts.InvalidStatus):
        registry.confirm(debtor.account, rid, invoice.fingerprint)
    registry.resolve_dispute(debtor.account, rid, DisputeResolution.WITHDRAWN)
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    assert registry.get_receivable(rid).status is Status.CONFIRMED


def test_a_dispute_without_a_reason_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    rid = registry.register(creditor.account, make_invoice())
    with pytest.raises(reverts.InvalidDisputeCode):
        registry.dispute(debtor.account, rid, DisputeReason.NONE)


# ================================================================== 8. amounts and dates


def test_a_payment_larger_than_the_unpaid_balance_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice)
    registry.record_payment(factor.account, rid, invoice.face_value // 2)
    unpaid = invoice.face_value - invoice.face_value // 2
    with pytest.raises(reverts.PaymentExceedsBalance) as raised:
        registry.record_payment(factor.account, rid, unpaid + 1)
    assert (raised.value.amount, raised.value.unpaid) == (unpaid + 1, unpaid)
    with pytest.raises(reverts.PaymentExceedsBalance):
        registry.report_payment(debtor.account, rid, factor.entity, unpaid + 1)
    with pytest.raises(reverts.PaymentExceedsBalance):
        registry.record_payment(factor.account, rid, 0)
    registry.record_payment(factor.account, rid, unpaid)
    assert registry.get_receivable(rid).status is Status.SETTLED


def test_acknowledging_claims_that_together_exceed_the_unpaid_balance_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice)
    three_quarters = invoice.face_value * 3 // 4
    first = registry.report_payment(debtor.account, rid, factor.entity, three_quarters)
    second = registry.report_payment(debtor.account, rid, factor.entity, three_quarters)
    registry.acknowledge_payment(factor.account, first)
    with pytest.raises(reverts.PaymentExceedsBalance) as raised:
        registry.acknowledge_payment(factor.account, second)
    assert raised.value.unpaid == invoice.face_value - three_quarters
    assert registry.get_payment_claim(second).status is ClaimStatus.PENDING
    assert registry.get_receivable(rid).paid == three_quarters


def test_a_due_date_already_past_at_registration_is_refused(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory, chain_state: ChainState
) -> None:
    invoice = make_invoice(issue_in_days=-40, due_in_days=-1)
    with pytest.raises(reverts.DueDateInPast) as raised:
        registry.register(creditor.account, invoice)
    assert raised.value.dueDate == invoice.due_date
    assert raised.value.nowTimestamp >= chain_state.now()


def test_a_zero_amount_is_refused(registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory) -> None:
    with pytest.raises(reverts.ZeroAmount):
        registry.transact(creditor.account, "register", _with_changed_input(make_invoice(), faceValue=0))


def test_a_due_date_not_after_the_issue_date_is_refused(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice(issue_in_days=5, due_in_days=30)
    line = _with_changed_input(invoice, issueDate=invoice.due_date)
    with pytest.raises(reverts.DueDateNotAfterIssueDate) as raised:
        registry.transact(creditor.account, "register", line)
    assert (raised.value.issueDate, raised.value.dueDate) == (invoice.due_date, invoice.due_date)


def test_an_invalid_currency_or_an_empty_invoice_number_is_refused(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    with pytest.raises(reverts.InvalidCurrency):
        registry.transact(creditor.account, "register", _with_changed_input(make_invoice(), currency=b"cny"))
    with pytest.raises(reverts.EmptyInvoiceNumber):
        registry.transact(
            creditor.account, "register", _with_changed_input(make_invoice(), invoiceNumberHash=bytes(32))
        )


def test_an_entity_cannot_register_an_invoice_against_itself(
    registry: RegistryClient, admin: LocalAccount, make_invoice: InvoiceFactory
) -> None:
    trader_key: LocalAccount = Account.create()
    trader = registry.admit_participant(
        admin, registration_hash(TRADER_USCC), (Role.CREDITOR, Role.DEBTOR), trader_key.address
    )
    with pytest.raises(reverts.DebtorIsCreditor) as raised:
        registry.register(trader_key, make_invoice(debtor_id=trader))
    assert raised.value.entityId == trader


def test_the_debtor_must_be_an_admitted_debtor(
    registry: RegistryClient, creditor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    with pytest.raises(reverts.EntityMissingRole) as raised:
        registry.register(creditor.account, make_invoice(debtor_id=factor.entity))
    assert (raised.value.entityId, raised.value.role) == (factor.entity, bytes(Role.DEBTOR))
    unknown = registry.entity_count() + 1
    with pytest.raises(reverts.UnknownEntity) as raised:
        registry.register(creditor.account, make_invoice(debtor_id=unknown))
    assert raised.value.entityId == unknown


# ================================================================== 9. maturity


def test_default_can_be_declared_only_after_the_due_date(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
) -> None:
    invoice = make_invoice(due_in_days=30)
    rid = _financed(registry, creditor, debtor, factor, invoice)
    with pytest.raises(reverts.NotYetDue) as raised:
        registry.declare_default(factor.account, rid)
    assert raised.value.dueDate == invoice.due_date

    chain_state.advance(31 * DAY)
    result = registry.declare_default(factor.account, rid)
    assert result.event("ReceivableDefaulted").args == {"id": rid, "holder": factor.entity}
    assert registry.get_receivable(rid).status is Status.DEFAULTED


def test_a_defaulted_receivable_can_still_be_recovered_by_payment(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
) -> None:
    invoice = make_invoice(due_in_days=1)
    rid = _financed(registry, creditor, debtor, factor, invoice)
    chain_state.advance(2 * DAY)
    registry.declare_default(factor.account, rid)
    registry.record_payment(factor.account, rid, invoice.face_value // 2)
    assert registry.get_receivable(rid).status is Status.DEFAULTED
    registry.record_payment(factor.account, rid, invoice.face_value - invoice.face_value // 2)
    assert registry.get_receivable(rid).status is Status.SETTLED


def test_buy_back_under_recourse_returns_the_receivable_to_the_creditor(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _financed(registry, creditor, debtor, factor, invoice, recourse=True)
    result = registry.buy_back(factor.account, rid)
    assert result.event("ReceivableBoughtBack").args == {
        "id": rid,
        "fromHolder": factor.entity,
        "creditor": creditor.entity,
    }
    state = registry.get_receivable(rid)
    assert (state.holder, state.status, state.recourse) == (creditor.entity, Status.CONFIRMED, False)
    assert registry.payee_of_record(rid) == creditor.entity


def test_buy_back_of_a_defaulted_receivable_under_recourse_returns_it_to_the_creditor(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
) -> None:
    invoice = make_invoice(due_in_days=1)
    rid = _financed(registry, creditor, debtor, factor, invoice, recourse=True)
    registry.record_payment(factor.account, rid, 1_000)
    chain_state.advance(2 * DAY)
    registry.declare_default(factor.account, rid)
    registry.buy_back(factor.account, rid)
    state = registry.get_receivable(rid)
    assert (state.holder, state.status, state.paid) == (creditor.entity, Status.PARTIALLY_PAID, 1_000)


def test_buy_back_without_recourse_is_refused(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    rid = _financed(registry, creditor, debtor, factor, make_invoice(), recourse=False)
    with pytest.raises(reverts.NoRecourse) as raised:
        registry.buy_back(factor.account, rid)
    assert raised.value.id == rid
    assert registry.payee_of_record(rid) == factor.entity


def test_write_off_only_after_default_and_then_terminal(
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    chain_state: ChainState,
) -> None:
    invoice = make_invoice(due_in_days=1)
    rid = _financed(registry, creditor, debtor, factor, invoice)
    with pytest.raises(reverts.InvalidStatus) as raised:
        registry.write_off(factor.account, rid)
    assert raised.value.status == Status.ASSIGNED
    chain_state.advance(2 * DAY)
    registry.declare_default(factor.account, rid)
    registry.write_off(factor.account, rid)
    assert registry.get_receivable(rid).status is Status.WRITTEN_OFF
    with pytest.raises(reverts.InvalidStatus):
        registry.record_payment(factor.account, rid, 1)
    with pytest.raises(reverts.InvalidStatus):
        registry.assign(factor.account, rid, creditor.entity, 0)


# ================================================================== cancellation and supersession


def test_a_cancelled_registration_frees_its_key_and_fingerprint_for_a_superseding_one(
    registry: RegistryClient, creditor: Member, other_creditor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    old = registry.register(creditor.account, invoice)
    result = registry.cancel(creditor.account, old)
    assert result.event("ReceivableCancelled").args == {"id": old, "creditor": creditor.entity}

    registered = registry.transact(other_creditor.account, "register", invoice.as_contract_input())
    event = registered.event("ReceivableRegistered").args
    assert event["supersedes"] == old
    assert registry.receivable_id_by_invoice_key(invoice.key) == event["id"]
    assert registry.receivable_id_by_fingerprint(invoice.fingerprint) == event["id"]


def test_a_corrected_re_registration_after_an_upheld_dispute_supersedes_the_old_one(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    wrong = make_invoice(number="HX-321", amount="120,000.00")
    old = registry.register(creditor.account, wrong)
    registry.dispute(debtor.account, old, DisputeReason.AMOUNT_INCORRECT)
    registry.resolve_dispute(creditor.account, old, DisputeResolution.UPHELD)
    assert registry.get_receivable(old).status is Status.CANCELLED

    corrected = make_invoice(number="HX-321", amount="102,000.00")
    event = registry.transact(creditor.account, "register", corrected.as_contract_input()).event("ReceivableRegistered")
    assert event.args["supersedes"] == old
    assert event.args["fingerprint"] != wrong.fingerprint


def test_a_confirmed_receivables_key_is_never_freed(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = _confirmed(registry, creditor, debtor, invoice)
    with pytest.raises(reverts.InvalidStatus):
        registry.cancel(creditor.account, rid)
    with pytest.raises(reverts.InvalidStatus):
        registry.resolve_dispute(creditor.account, rid, DisputeResolution.UPHELD)
    with pytest.raises(reverts.InvoiceKeyTaken) as raised:
        registry.register(creditor.account, invoice)
    assert raised.value.existingId == rid


def test_a_first_registration_supersedes_nothing(
    registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    event = registry.transact(creditor.account, "register", make_invoice().as_contract_input()).event(
        "ReceivableRegistered"
    )
    assert event.args["supersedes"] == 0


# ================================================================== emergency pause


def test_a_paused_registry_refuses_lifecycle_calls_until_the_admin_unpauses(
    registry: RegistryClient,
    admin: LocalAccount,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
) -> None:
    invoice = make_invoice()
    registered = registry.register(creditor.account, invoice)
    financed = _financed(registry, creditor, debtor, factor, make_invoice())
    registry.pause(admin)
    assert registry.paused()

    refused: list[Callable[[], object]] = [
        lambda: registry.register(creditor.account, make_invoice()),
        lambda: registry.register_batch(creditor.account, [make_invoice()]),
        lambda: registry.confirm(debtor.account, registered, invoice.fingerprint),
        lambda: registry.cancel(creditor.account, registered),
        lambda: registry.record_payment(factor.account, financed, 1),
        lambda: registry.report_payment(debtor.account, financed, factor.entity, 1),
    ]
    for call in refused:
        with pytest.raises(reverts.EnforcedPause):
            call()
    with pytest.raises(reverts.EnforcedPause):
        registry.pause(admin)

    # Participant administration goes on during a pause.
    registry.suspend_participant(admin, factor.entity)
    registry.reinstate_participant(admin, factor.entity)

    registry.unpause(admin)
    assert not registry.paused()
    registry.confirm(debtor.account, registered, invoice.fingerprint)
    with pytest.raises(reverts.ExpectedPause):
        registry.unpause(admin)
