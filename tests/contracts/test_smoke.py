"""A receivable's whole happy path, end to end on the node."""

from __future__ import annotations

from registry.chain.contract import RegistryClient
from registry.demo import Member
from registry.domain import Status
from tests.conftest import InvoiceFactory


def test_receivable_goes_from_registration_to_settlement(
    registry: RegistryClient, creditor: Member, debtor: Member, factor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    assert registry.get_receivable(rid).status is Status.REGISTERED
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    registry.assign(creditor.account, rid, factor.entity, invoice.face_value * 9 // 10)
    assert registry.payee_of_record(rid) == factor.entity
    registry.record_payment(factor.account, rid, invoice.face_value)
    state = registry.get_receivable(rid)
    assert state.status is Status.SETTLED
    assert state.paid == state.face_value


def test_ledger_hash_recomputed_from_logs_equals_the_contracts(
    registry: RegistryClient, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    from registry.ledger import replay

    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    registry.register_batch(creditor.account, [make_invoice(), invoice])  # one line refused
    logs = registry.chain.get_logs(registry.address, 0, registry.chain.block_number())
    events = registry.chain.decode_logs(logs)
    head, count = registry.ledger()
    assert replay(events).head == head
    assert replay(events).count == count
