"""The demo consortium: who is in it, and a ledger with invoices in every state.

Used by ``make up`` (seeds once; idempotent on restart) and by the test suites, which stand on the
same consortium so that what a newcomer sees is what the tests prove.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from registry.chain import reverts
from registry.chain.contract import RegistryClient
from registry.domain import DisputeReason, Role, Status
from registry.invoice import Invoice
from registry.keys import anvil_account
from registry.types import EntityId, ReceivableId

DAY = 86_400


@dataclass(frozen=True)
class MemberSpec:
    name: str
    registration_number: str  # a Unified Social Credit Code; only its hash goes on-chain
    roles: tuple[Role, ...]
    account_index: int  # Anvil test key index (public keys: local chains only)


# Anvil keys 0 and 1 are the consortium admin and the relayer; members use 2..10.
DEMO_MEMBERS: tuple[MemberSpec, ...] = (
    MemberSpec("Shenzhen Components Co.", "91440300MA5DCREDA1", (Role.CREDITOR,), 2),
    MemberSpec("Ningbo Textiles Ltd.", "91330200MA2CREDB22", (Role.CREDITOR,), 3),
    MemberSpec("Suzhou Logistics Co.", "91320500MA1CREDC33", (Role.CREDITOR,), 4),
    MemberSpec("Huaxin Manufacturing Group", "91110000MA0DEBTA44", (Role.DEBTOR,), 5),
    MemberSpec("Pacific Retail Holdings", "91310000MA0DEBTB55", (Role.DEBTOR,), 6),
    MemberSpec("Everbright Factoring", "91440300MA5FACTA66", (Role.FACTOR,), 7),
    MemberSpec("Harbor Trade Finance", "91120000MA0FACTB77", (Role.FACTOR,), 8),
    MemberSpec("Crescent Audit LLP", "91110000MA0AUDIT88", (Role.AUDITOR,), 9),
)
ADMIN_INDEX = 0
RELAYER_INDEX = 1
STRANGER_INDEX = 10  # a key that belongs to no participant


def registration_hash(registration_number: str) -> bytes:
    """What goes on-chain for an entity's registration number (USCC, LEI): its keccak256."""
    return keccak(text=registration_number.strip().upper())


@dataclass(frozen=True)
class Member:
    name: str
    entity: EntityId
    roles: tuple[Role, ...]
    account: LocalAccount

    @property
    def address(self) -> str:
        return self.account.address


@dataclass
class Consortium:
    admin: LocalAccount
    relayer: LocalAccount
    members: list[Member] = field(default_factory=list)

    def by_role(self, role: Role) -> list[Member]:
        return [m for m in self.members if role in m.roles]

    @property
    def creditors(self) -> list[Member]:
        return self.by_role(Role.CREDITOR)

    @property
    def debtors(self) -> list[Member]:
        return self.by_role(Role.DEBTOR)

    @property
    def factors(self) -> list[Member]:
        return self.by_role(Role.FACTOR)

    @property
    def auditors(self) -> list[Member]:
        return self.by_role(Role.AUDITOR)

    def member(self, entity: EntityId) -> Member:
        for m in self.members:
            if m.entity == entity:
                return m
        raise KeyError(entity)


def admit_consortium(client: RegistryClient, admin: LocalAccount | None = None) -> Consortium:
    """Admits the demo members (skipping those already admitted) and returns the consortium."""
    admin = admin or anvil_account(ADMIN_INDEX)
    consortium = Consortium(admin=admin, relayer=anvil_account(RELAYER_INDEX))
    for spec in DEMO_MEMBERS:
        reg_hash = registration_hash(spec.registration_number)
        account = anvil_account(spec.account_index)
        entity = client.entity_by_registration_hash(reg_hash)
        if entity == 0:
            entity = client.admit_participant(admin, reg_hash, spec.roles, account.address)
        consortium.members.append(Member(spec.name, entity, spec.roles, account))
    return consortium


def demo_invoice(debtor: EntityId, number: str, amount: str, now: int, *, due_in_days: int = 60) -> Invoice:
    return Invoice.parse(
        debtor=debtor,
        invoice_number=number,
        face_value=amount,
        currency="CNY",
        issue_date=now - 10 * DAY,
        due_date=now + due_in_days * DAY,
        document_hash=keccak(text=f"document of {number}"),
    )


def seed_ledger(client: RegistryClient, consortium: Consortium, per_state: int = 4) -> Counter[str]:
    """Registers a few dozen invoices and walks them into every reachable state, including refused
    double financings. Returns what happened, counted by outcome."""
    now = int(client.chain.get_block("latest")["timestamp"], 16)
    outcome: Counter[str] = Counter()
    creditors, debtors, factors = consortium.creditors, consortium.debtors, consortium.factors
    serial = 0

    def fresh(creditor: Member, debtor: Member, amount: str = "125,000.00") -> tuple[ReceivableId, Invoice]:
        nonlocal serial
        serial += 1
        invoice = demo_invoice(debtor.entity, f"HX-2026-{serial:04d}", amount, now)
        return client.register(creditor.account, invoice), invoice

    for i in range(per_state):
        c, d = creditors[i % len(creditors)], debtors[i % len(debtors)]
        f, g = factors[i % len(factors)], factors[(i + 1) % len(factors)]
        amount = f"{(i + 1) * 48_250}.00"

        fresh(c, d, amount)  # stays Registered
        outcome["registered"] += 1

        rid, inv = fresh(c, d, amount)
        client.confirm(d.account, rid, inv.fingerprint)
        outcome["confirmed"] += 1

        rid, inv = fresh(c, d, amount)
        client.confirm(d.account, rid, inv.fingerprint)
        client.assign(c.account, rid, f.entity, inv.face_value * 9 // 10, recourse=True)
        outcome["assigned"] += 1
        # A second financing of the same invoice, by another creditor: refused on-chain.
        try:
            client.register(creditors[(i + 1) % len(creditors)].account, inv)
        except reverts.error_class("InvoiceKeyTaken"):
            outcome["double_financing_refused"] += 1

        rid, inv = fresh(c, d, amount)
        client.confirm(d.account, rid, inv.fingerprint)
        client.assign(c.account, rid, f.entity, inv.face_value * 8 // 10)
        client.assign(f.account, rid, g.entity, inv.face_value * 8 // 10)
        client.record_payment(g.account, rid, inv.face_value // 4)
        outcome["reassigned_partially_paid"] += 1

        rid, inv = fresh(c, d, amount)
        client.confirm(d.account, rid, inv.fingerprint)
        client.assign(c.account, rid, f.entity, inv.face_value * 9 // 10)
        client.record_payment(f.account, rid, inv.face_value)
        outcome["settled"] += 1

        rid, inv = fresh(c, d, amount)
        client.dispute(d.account, rid, DisputeReason.QUALITY_DEFECT)
        outcome["disputed"] += 1

        rid, inv = fresh(c, d, amount)
        client.cancel(c.account, rid)
        outcome["cancelled"] += 1

        rid, inv = fresh(c, d, amount)
        client.confirm(d.account, rid, inv.fingerprint)
        client.split(c.account, rid, [inv.face_value // 2, inv.face_value - inv.face_value // 2])
        outcome["split"] += 1

        rid, inv = fresh(c, d, amount)
        client.confirm(d.account, rid, inv.fingerprint)
        claim = client.report_payment(d.account, rid, c.entity, inv.face_value // 2)
        client.acknowledge_payment(c.account, claim)
        outcome["paid_before_notice"] += 1
    return outcome


def seed_demo(client: RegistryClient) -> tuple[Consortium, Counter[str] | None]:
    """The consortium, and a seeded ledger if the chain held no receivables yet."""
    consortium = admit_consortium(client)
    if client.receivable_count() > 0:
        return consortium, None
    return consortium, seed_ledger(client, consortium)


def status_counts(client: RegistryClient) -> Counter[Status]:
    counts: Counter[Status] = Counter()
    for rid in range(1, client.receivable_count() + 1):
        counts[client.get_receivable(rid).status] += 1  # type: ignore[arg-type]
    return counts
