"""The demo consortium: who is in it, its keystores, and a ledger with invoices in every state.

Used by ``make up`` (seeds once; idempotent on restart) and by the test suites, which stand on the
same consortium so that what a newcomer sees is what the tests prove.

:func:`seed_demo` tells a story of :data:`HISTORY_DAYS` days ending "now": about a thousand invoices
registered in batches, confirmed, disputed, assigned and re-assigned, paid (before and after notice),
split, bought back, defaulted and written off, with a few double financings that the registry refuses.
The contract accepts only due dates in the future and a default only after the due date, so the
chain's clock is walked forward day by day while seeding (``evm_setNextBlockTimestamp``). On a node
whose clock starts :data:`HISTORY_DAYS` days or more in the past (Anvil's ``--timestamp``, see
:func:`demo_genesis_timestamp`) the story ends at the wall clock; on any other node it leaves the
node's clock :data:`HISTORY_DAYS` days ahead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from registry.chain import reverts
from registry.chain.client import MAX_SEND_BATCH_BYTES, BlockId, ChainClient, PendingTx
from registry.chain.contract import (
    BATCH_GAS_BASE,
    BATCH_GAS_PER_LINE,
    DEFAULT_BATCH_SIZE,
    ReceivableState,
    RegistryClient,
)
from registry.chain.rpc import RpcError
from registry.directory import DirectoryEntry, merge_directory
from registry.domain import DisputeReason, DisputeResolution, Role, Status
from registry.errors import ChainError
from registry.invoice import Invoice
from registry.keys import KeystoreError, anvil_account, load_keystore, save_keystore, write_atomic
from registry.settings import DEMO_INVOICES
from registry.types import EntityId, ReceivableId

log = logging.getLogger(__name__)

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
    """Registers a few dozen invoices and walks them into most states, one blocking transaction at a
    time, including refused double financings; returns what happened, counted by outcome. The small
    variant for tests that need a varied ledger at the node's current time; ``make up`` seeds with
    :func:`seed_demo`."""
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


def seed_demo(
    client: RegistryClient, invoices: int = DEMO_INVOICES, *, seed: int | None = None
) -> tuple[Consortium, Counter[str] | None]:
    """The consortium, and a seeded ledger (:func:`seed_history`) if the chain held no receivables yet."""
    consortium = admit_consortium(client)
    if client.receivable_count() > 0:
        return consortium, None
    return consortium, seed_history(client, consortium, invoices, seed=DEMO_SEED if seed is None else seed)


def status_counts(client: RegistryClient, block: BlockId = "latest") -> Counter[Status]:
    """Receivables by status, read from the contract."""
    return Counter(r.status for r in receivable_states(client, block))


def receivable_states(client: RegistryClient, block: BlockId = "latest") -> list[ReceivableState]:
    """Every receivable as the contract holds it."""
    return client.get_receivables(range(1, client.receivable_count(block) + 1), block)


# ---------------------------------------------------------------------------------------- keystores

ADMIN_NAME = "Consortium Operator"
IDENTITIES_FILE = "identities.json"
_LEGAL_FORMS = frozenset({"co", "ltd", "llp", "llc", "inc", "corp", "plc"})


def keystore_file_name(role: str, name: str) -> str:
    """``creditor-shenzhen-components.json``: the role, then the name without its legal form."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    while len(words) > 1 and words[-1] in _LEGAL_FORMS:
        words.pop()
    return "-".join([role, *words]) + ".json"


@dataclass(frozen=True)
class Identity:
    """A demo signing identity: the consortium operator, or a member's first key."""

    name: str
    entity: EntityId | None
    roles: tuple[str, ...]
    account: LocalAccount

    @property
    def file_name(self) -> str:
        return keystore_file_name(self.roles[0], self.name)


def demo_identities(consortium: Consortium) -> list[Identity]:
    """The operator (no entity: it governs, it holds no receivables), then every member."""
    return [
        Identity(ADMIN_NAME, None, ("admin",), consortium.admin),
        *(Identity(m.name, m.entity, tuple(r.label for r in m.roles), m.account) for m in consortium.members),
    ]


def write_keystores(consortium: Consortium, keys_dir: Path, password: str) -> dict[str, Path]:
    """One Web3 Secret Storage v3 keystore per demo identity in ``keys_dir``, and ``identities.json``
    listing each identity's name, entity, roles, address and keystore file. Returns name -> keystore.

    Idempotent: a keystore that already decrypts to the identity's address is kept untouched (not
    re-encrypted). One that does not (another key, another password, not a keystore) is never
    overwritten: :class:`KeystoreError` names it and nothing is written."""
    identities = demo_identities(consortium)
    missing: list[tuple[Identity, Path]] = []
    for identity in identities:
        path = keys_dir / identity.file_name
        if not path.exists():
            missing.append((identity, path))
            continue
        try:
            held = load_keystore(path, password)
        except KeystoreError as exc:
            raise KeystoreError(
                f"{exc}; it was kept. Set REGISTRY_DEMO_PASSWORD to its password, or move it away to have "
                "the demo keystore written"
            ) from None
        if held.address != identity.account.address:
            raise KeystoreError(
                f"{path} holds the key of {held.address}, not {identity.name}'s {identity.account.address}; "
                "it was kept. Move it away to have the demo keystore written"
            )
    for identity, path in missing:
        save_keystore(identity.account, path, password)
    index = {
        "about": "Demo identities of the local consortium: Anvil's public test keys, for local use only. "
        "Each keystore is Web3 Secret Storage v3 (scrypt), encrypted with the demo password "
        "(REGISTRY_DEMO_PASSWORD; `registry up` prints it).",
        "identities": [
            {
                "name": i.name,
                "entity": i.entity,
                "roles": list(i.roles),
                "address": i.account.address,
                "file": i.file_name,
            }
            for i in identities
        ],
    }
    text = json.dumps(index, indent=2) + "\n"
    index_path = keys_dir / IDENTITIES_FILE
    if not index_path.exists() or index_path.read_text() != text:
        write_atomic(index_path, text)
    return {i.name: keys_dir / i.file_name for i in identities}


def write_directory(consortium: Consortium, path: Path) -> dict[EntityId, str]:
    """Names the demo members in the participant directory (registry/directory.py) at ``path``: each
    member's name and registration number, for entities the file does not list yet. What the file
    already says is kept (the operator may have edited it); a malformed file is never overwritten
    (:class:`~registry.directory.DirectoryError`). Returns entity id -> name of the whole directory."""
    numbers = {spec.name: spec.registration_number for spec in DEMO_MEMBERS}
    entries = {int(m.entity): DirectoryEntry(m.name, numbers.get(m.name)) for m in consortium.members}
    return {EntityId(e): entry.name for e, entry in merge_directory(path, entries).items()}


# ---------------------------------------------------------------------------------------- the demo ledger

DEMO_SEED = 5
"""The seed of the demo's random choices: the same parties, numbers, amounts and (relative) dates every time."""
HISTORY_DAYS = 210
"""The seeded history spans this many days and ends at "now"."""
OPENING_HOUR = 9 * 3600  # a day's transactions are stamped from 09:00 UTC on
ACTION_GAS = 300_000  # gas limit of one lifecycle call (the costliest, a 3-part split, uses about 180k)
TERMS = (30, 45, 60, 90, 120)  # payment terms in days
TERM_WEIGHTS = (20, 15, 35, 20, 10)
USD_SHARE = 0.15

# Days past due at the end of the history, by ageing bucket (current, 1-30, 31-60, 61-90, >90); kept
# two days clear of each boundary so that a few hours' drift does not move a receivable to the next.
AGEING_RANGES = ((-120, -2), (2, 28), (32, 58), (62, 88), (92, 130))
AGEING_WEIGHTS = (60, 17, 10, 6, 7)


class Fate(StrEnum):
    """Where one invoice's story ends."""

    REGISTERED = "registered"  # awaiting the debtor's confirmation
    DISPUTED = "disputed"
    DISPUTE_WITHDRAWN = "dispute_withdrawn"  # disputed, withdrawn by the debtor, then confirmed
    DISPUTE_UPHELD = "dispute_upheld"  # disputed, upheld by the creditor: cancelled
    CANCELLED = "cancelled"
    CONFIRMED = "confirmed"
    ASSIGNED = "assigned"
    REASSIGNED = "reassigned"
    PARTIALLY_PAID = "partially_paid"
    SETTLED = "settled"  # financed, then paid to the factor
    SETTLED_DIRECT = "settled_direct"  # never financed: the debtor paid the creditor, who acknowledged
    PAID_BEFORE_NOTICE = "paid_before_notice"  # part paid to the creditor, then the balance assigned
    CLAIM_PENDING = "claim_pending"  # the debtor reported a payment the payee has not answered (or rejected)
    SPLIT = "split"  # the balance split into parts, most of them assigned
    BOUGHT_BACK = "bought_back"  # assigned with recourse, bought back by the creditor
    DEFAULTED = "defaulted"
    WRITTEN_OFF = "written_off"


FATE_WEIGHTS: dict[Fate, int] = {
    Fate.REGISTERED: 7,
    Fate.DISPUTED: 3,
    Fate.DISPUTE_WITHDRAWN: 2,
    Fate.DISPUTE_UPHELD: 2,
    Fate.CANCELLED: 3,
    Fate.CONFIRMED: 10,
    Fate.ASSIGNED: 18,
    Fate.REASSIGNED: 5,
    Fate.PARTIALLY_PAID: 7,
    Fate.SETTLED: 20,
    Fate.SETTLED_DIRECT: 5,
    Fate.PAID_BEFORE_NOTICE: 4,
    Fate.CLAIM_PENDING: 4,
    Fate.SPLIT: 3,
    Fate.BOUGHT_BACK: 3,
    Fate.DEFAULTED: 3,
    Fate.WRITTEN_OFF: 1,
}
# Stories that end with an open receivable (confirmed, assigned, partly paid or defaulted): their due
# dates are drawn by ageing bucket so that the ageing chart has every bucket.
OPEN_FATES = frozenset(
    {
        Fate.DISPUTE_WITHDRAWN,
        Fate.CONFIRMED,
        Fate.ASSIGNED,
        Fate.REASSIGNED,
        Fate.PARTIALLY_PAID,
        Fate.PAID_BEFORE_NOTICE,
        Fate.CLAIM_PENDING,
        Fate.SPLIT,
        Fate.BOUGHT_BACK,
        Fate.DEFAULTED,
    }
)
# Stories whose invoice was assigned to a factor and whose registration stays live (it keeps its invoice
# key): the targets of the refused double financings.
FINANCED_FATES = frozenset(
    {
        Fate.ASSIGNED,
        Fate.REASSIGNED,
        Fate.PARTIALLY_PAID,
        Fate.SETTLED,
        Fate.PAID_BEFORE_NOTICE,
        Fate.BOUGHT_BACK,
        Fate.DEFAULTED,
        Fate.WRITTEN_OFF,
    }
)
OPEN_STATUSES = frozenset({Status.CONFIRMED, Status.ASSIGNED, Status.PARTIALLY_PAID, Status.DEFAULTED})


def demo_genesis_timestamp(now: float | None = None) -> int:
    """A genesis time for a fresh local node (``anvil --timestamp``) far enough in the past that
    :func:`seed_demo`'s history ends at the wall clock instead of moving the chain's clock ahead of it."""
    return int(time.time() if now is None else now) - (HISTORY_DAYS + 2) * DAY


@dataclass(frozen=True)
class _Ref:
    """A receivable (or, with ``claim``, a payment claim) of the plan, before the chain numbers it."""

    handle: int
    claim: bool = False


@dataclass(frozen=True)
class _Registration:
    creditor: Member
    invoice: Invoice
    handle: int | None  # None: a double-financing attempt, which the registry must refuse


@dataclass(frozen=True)
class _Action:
    actor: Member
    fn: str
    args: tuple[Any, ...]
    parts: tuple[int, ...] = ()  # handles of the parts a split creates
    claim: int | None = None  # handle of the payment claim a report creates


_Step = _Registration | _Action


@dataclass
class _Receivable:
    """What the plan knows of one receivable while writing its story."""

    handle: int
    creditor: Member
    debtor: Member
    face: int
    due_day: int
    paid: int = 0
    holder: Member | None = None

    @property
    def unpaid(self) -> int:
        return self.face - self.paid


@dataclass
class _Plan:
    start: int  # unix time of day 0 (midnight UTC)
    end: int  # the end of the history: "now"
    days: dict[int, list[_Step]] = field(default_factory=lambda: defaultdict(list))
    expected: Counter[str] = field(default_factory=Counter)


def seed_history(
    client: RegistryClient, consortium: Consortium, invoices: int = DEMO_INVOICES, *, seed: int = DEMO_SEED
) -> Counter[str]:
    """Seeds ``invoices`` invoices with :data:`HISTORY_DAYS` days of history (module docstring) and
    returns what happened. Keys named after a :class:`Status` (``"registered"``, ..., ``"split"``)
    count receivables by their final status, split parts included; the others count stories:
    ``invoices``, ``split_parts``, ``reassigned``, ``bought_back``, ``paid_before_notice``,
    ``payment_claims_pending``, ``payment_claims_rejected``, ``disputes_withdrawn``, ``disputes_upheld``,
    ``overdue`` (open and past due at the end), ``currency_cny``/``currency_usd`` and
    ``double_financing_refused`` (registrations of an already financed invoice, refused on-chain)."""
    if invoices < 0:
        raise ValueError(f"invoices must be 0 or more, not {invoices}")
    chain = client.chain
    began = time.monotonic()
    chain_now = _latest_timestamp(chain)
    wall = int(time.time())
    if wall - chain_now >= (HISTORY_DAYS + 2) * DAY:
        end, catch_up = wall, True  # the node started in the past: end the story today
    else:
        end, catch_up = chain_now + (HISTORY_DAYS + 1) * DAY, False
        log.warning(
            "the node's clock is not %d days behind the wall clock: the demo history moves it %d days ahead "
            "(start a fresh node at demo_genesis_timestamp() to avoid this)",
            HISTORY_DAYS,
            (end - chain_now) // DAY,
        )
    plan = _Planner(consortium, random.Random(seed), end).plan(invoices)
    # One block per day of history rather than one per transaction: on an automining node, mine by hand
    # while seeding (Anvil's cost per block grows with state, DESIGN.md); interval mining is left alone.
    automine = _automine(chain)
    if automine:
        chain.rpc.call("evm_setAutomine", [False])
    try:
        outcome = _execute(client, plan, mine=automine)
    finally:
        if automine:
            chain.rpc.call("evm_setAutomine", [True])
    _set_next_timestamp(chain, max(end, int(time.time())) if catch_up else end)
    chain.rpc.call("evm_mine")
    log.info("seeded %d invoices in %.1f s", invoices, time.monotonic() - began)
    return outcome


class _Planner:
    """Writes every invoice's story as dated steps; deterministic for a given RNG."""

    def __init__(self, consortium: Consortium, rng: random.Random, end: int) -> None:
        if len(consortium.factors) < 2 or not consortium.creditors or not consortium.debtors:
            raise ValueError("the demo ledger needs creditors, debtors and at least two factors")
        self.consortium = consortium
        self.rng = rng
        self.end = end
        self.start = (end - HISTORY_DAYS * DAY) // DAY * DAY
        self.out = _Plan(self.start, end)
        self.handles = 0
        self.serials: Counter[int] = Counter()
        self.open_stories = 0
        self.financed: list[tuple[_Registration, int, int]] = []  # (registration, first assigned, due day)

    # ------------------------------------------------------------------ the whole plan

    def plan(self, invoices: int) -> _Plan:
        fates = list(Fate)[:invoices]  # every fate at least once (when there is room)
        fates += self.rng.choices(list(FATE_WEIGHTS), weights=list(FATE_WEIGHTS.values()), k=invoices - len(fates))
        self.rng.shuffle(fates)
        for fate in fates:
            self._story(fate)
        self._double_financings(min(10, max(5, invoices // 125)) if invoices >= 20 else 0)
        return self.out

    def _add(self, day: int, step: _Step) -> None:
        self.out.days[day].append(step)

    def _handle(self) -> int:
        self.handles += 1
        return self.handles

    def _expect(self, key: str, n: int = 1) -> None:
        self.out.expected[key] += n

    def _final(self, r: _Receivable, status: Status) -> None:
        self._expect(status.name.lower())
        if status in OPEN_STATUSES and r.due_day < HISTORY_DAYS:
            self._expect("overdue")

    # ------------------------------------------------------------------ one invoice

    def _story(self, fate: Fate) -> None:
        rng = self.rng
        creditor = rng.choice(self.consortium.creditors)
        debtor = rng.choice(self.consortium.debtors)
        factor, other_factor = rng.sample(self.consortium.factors, 2)
        currency, face = self._amount()
        bucket = self._bucket(fate)
        for _ in range(1_000):
            due_day = HISTORY_DAYS - self._days_past_due(fate, bucket)
            term = rng.choices(TERMS, weights=TERM_WEIGHTS)[0]
            reg_day = due_day - term + rng.randint(0, 6)
            options: set[str] = set()
            days = self._schedule(fate, reg_day, due_day, options)
            if days is not None and reg_day >= 1:
                break
        else:  # pragma: no cover - the ranges above always leave room; a planner bug otherwise
            raise AssertionError(f"no schedule fits a {fate} story")
        issue_day = due_day - term
        number = self._number(creditor, self.start + issue_day * DAY)
        invoice = Invoice.parse(
            debtor=debtor.entity,
            invoice_number=number,
            face_value=f"{face // 100}.{face % 100:02d}",
            currency=currency,
            issue_date=self.start + issue_day * DAY,
            due_date=self.start + due_day * DAY,
            document_hash=keccak(text=f"{creditor.name}: invoice {number}"),
        )
        r = _Receivable(self._handle(), creditor, debtor, invoice.face_value, due_day, holder=creditor)
        registration = _Registration(creditor, invoice, r.handle)
        self._add(days[0], registration)
        self._expect("invoices")
        self._expect(f"currency_{currency.lower()}")
        self._write(fate, r, invoice, days, options, factor, other_factor)
        if fate in FINANCED_FATES:
            first_assignment = days[4] if fate is Fate.PAID_BEFORE_NOTICE else days[2]
            self.financed.append((registration, first_assignment, due_day))

    def _write(
        self,
        fate: Fate,
        r: _Receivable,
        invoice: Invoice,
        days: list[int],
        options: set[str],
        factor: Member,
        other_factor: Member,
    ) -> None:
        """The steps after registration (on ``days[1:]``), as the contract requires them."""
        rng, rid, c, d = self.rng, _Ref(r.handle), r.creditor, r.debtor
        steps = iter(days[1:])

        def act(actor: Member, fn: str, *args: Any, parts: tuple[int, ...] = (), claim: int | None = None) -> None:
            self._add(next(steps), _Action(actor, fn, args, parts, claim))

        def confirm() -> None:
            act(d, "confirm", rid, invoice.fingerprint)

        def assign(holder: Member, to: Member, recourse: bool | None = None) -> None:
            advance = r.unpaid * rng.randint(75, 90) // 100
            act(
                holder,
                "assign",
                rid,
                to.entity,
                advance,
                rng.random() < 0.5 if recourse is None else recourse,
                bytes(32),
            )
            r.holder = to

        def pay(amount: int) -> None:
            assert r.holder is not None
            act(r.holder, "recordPayment", rid, amount, _payment_ref(r.handle, r.paid))
            r.paid += amount

        def part_of_unpaid(lo: int = 20, hi: int = 70) -> int:
            return max(1, r.unpaid * rng.randint(lo, hi) // 100)

        if fate is Fate.REGISTERED:
            self._final(r, Status.REGISTERED)
        elif fate is Fate.DISPUTED:
            act(d, "dispute", rid, int(rng.choice(list(DisputeReason)[1:])))
            self._final(r, Status.DISPUTED)
        elif fate is Fate.DISPUTE_WITHDRAWN:
            act(d, "dispute", rid, int(DisputeReason.AMOUNT_INCORRECT))
            act(d, "resolveDispute", rid, int(DisputeResolution.WITHDRAWN))
            confirm()
            self._expect("disputes_withdrawn")
            self._final(r, Status.CONFIRMED)
        elif fate is Fate.DISPUTE_UPHELD:
            act(d, "dispute", rid, int(rng.choice([DisputeReason.GOODS_NOT_RECEIVED, DisputeReason.NOT_OUR_INVOICE])))
            act(c, "resolveDispute", rid, int(DisputeResolution.UPHELD))
            self._expect("disputes_upheld")
            self._final(r, Status.CANCELLED)
        elif fate is Fate.CANCELLED:
            act(c, "cancel", rid)
            self._final(r, Status.CANCELLED)
        elif fate is Fate.CONFIRMED:
            confirm()
            self._final(r, Status.CONFIRMED)
        elif fate in (Fate.ASSIGNED, Fate.REASSIGNED):
            confirm()
            assign(c, factor)
            if fate is Fate.REASSIGNED:
                assign(factor, other_factor)
                self._expect("reassigned")
            self._final(r, Status.ASSIGNED)
        elif fate is Fate.PARTIALLY_PAID:
            confirm()
            assign(c, factor)
            pay(part_of_unpaid())
            self._final(r, Status.PARTIALLY_PAID)
        elif fate is Fate.SETTLED:
            confirm()
            assign(c, factor)
            if "two_payments" in options:
                pay(part_of_unpaid(30, 60))
            pay(r.unpaid)
            self._final(r, Status.SETTLED)
        elif fate is Fate.SETTLED_DIRECT:
            confirm()
            claim = self._handle()
            act(d, "reportPayment", rid, c.entity, r.unpaid, _payment_ref(r.handle, 0), claim=claim)
            act(c, "acknowledgePayment", _Ref(claim, claim=True))
            self._final(r, Status.SETTLED)
        elif fate is Fate.PAID_BEFORE_NOTICE:
            confirm()
            claim, amount = self._handle(), part_of_unpaid(20, 50)
            act(d, "reportPayment", rid, c.entity, amount, _payment_ref(r.handle, 0), claim=claim)
            act(c, "acknowledgePayment", _Ref(claim, claim=True))
            r.paid += amount
            assign(c, factor)
            self._expect("paid_before_notice")
            self._final(r, Status.PARTIALLY_PAID)
        elif fate is Fate.CLAIM_PENDING:
            confirm()
            if "assigned" in options:
                assign(c, factor)
            payee = r.holder or c
            claim = self._handle()
            act(d, "reportPayment", rid, payee.entity, part_of_unpaid(), _payment_ref(r.handle, 0), claim=claim)
            if "rejected" in options:
                act(payee, "rejectPayment", _Ref(claim, claim=True))
                self._expect("payment_claims_rejected")
            else:
                self._expect("payment_claims_pending")
            self._final(r, Status.ASSIGNED if "assigned" in options else Status.CONFIRMED)
        elif fate is Fate.SPLIT:
            confirm()
            shares = _split_amounts(r.unpaid, len(days) - 3, rng)  # one day per part after the split
            parts = tuple(self._handle() for _ in shares)
            act(c, "split", rid, list(shares), parts=parts)
            self._final(r, Status.SPLIT)
            for part_handle, share in zip(parts, shares, strict=True):
                self._expect("split_parts")
                part = _Receivable(part_handle, c, d, share, r.due_day, holder=c)
                day = next(steps)
                if rng.random() < 0.7:
                    to = rng.choice(self.consortium.factors)
                    advance = share * rng.randint(80, 90) // 100
                    self._add(day, _Action(c, "assign", (_Ref(part_handle), to.entity, advance, True, bytes(32))))
                    self._final(part, Status.ASSIGNED)
                else:
                    self._final(part, Status.CONFIRMED)
        elif fate is Fate.BOUGHT_BACK:
            confirm()
            assign(c, factor, recourse=True)
            act(factor, "buyBack", rid)
            r.holder = c
            self._expect("bought_back")
            self._final(r, Status.CONFIRMED)
        elif fate in (Fate.DEFAULTED, Fate.WRITTEN_OFF):
            confirm()
            assign(c, factor, recourse=False)
            act(factor, "declareDefault", rid)
            if fate is Fate.WRITTEN_OFF:
                act(factor, "writeOff", rid)
                self._final(r, Status.WRITTEN_OFF)
            else:
                if "recovery" in options:  # a partial recovery: the receivable stays defaulted
                    pay(part_of_unpaid(10, 40))
                self._final(r, Status.DEFAULTED)

    # ------------------------------------------------------------------ dates

    def _bucket(self, fate: Fate) -> int | None:
        """The ageing bucket of an open story: the first ten cycle through all five, the rest are drawn."""
        if fate not in OPEN_FATES:
            return None
        bucket = self.open_stories % len(AGEING_RANGES) if self.open_stories < 10 else None
        self.open_stories += 1
        if bucket is None:
            bucket = self.rng.choices(range(len(AGEING_RANGES)), weights=AGEING_WEIGHTS)[0]
        if fate is Fate.DEFAULTED and bucket == 0:
            bucket = 1  # a default comes after the due date
        return bucket

    def _days_past_due(self, fate: Fate, bucket: int | None) -> int:
        if bucket is not None:
            return self.rng.randint(*AGEING_RANGES[bucket])
        if fate in (Fate.REGISTERED, Fate.DISPUTED):
            return self.rng.randint(-110, -5)
        if fate is Fate.WRITTEN_OFF:
            return self.rng.randint(60, 150)
        return self.rng.randint(-60, 150)

    def _schedule(self, fate: Fate, reg: int, due: int, options: set[str]) -> list[int] | None:
        """The days of a story's steps (registration first), or None if they do not fit the history;
        the story's optional turns are added to ``options``."""
        r = self.rng.randint
        last = HISTORY_DAYS - 1
        days = [reg]

        def then(lo: int, hi: int) -> int:
            days.append(days[-1] + r(lo, hi))
            return days[-1]

        def at(day: int) -> int:
            days.append(max(day, days[-1] + 1))
            return days[-1]

        if fate is Fate.REGISTERED:
            if reg < HISTORY_DAYS - 30:
                return None
        elif fate is Fate.DISPUTED:
            then(1, 6)
            if reg < HISTORY_DAYS - 60:
                return None
        elif fate is Fate.DISPUTE_WITHDRAWN:
            then(1, 4), then(2, 10), then(1, 3)
        elif fate is Fate.DISPUTE_UPHELD:
            then(1, 4), then(2, 12)
        elif fate is Fate.CANCELLED:
            then(1, 10)
        elif fate is Fate.CONFIRMED:
            then(1, 8)
        elif fate in (Fate.ASSIGNED, Fate.REASSIGNED):
            then(1, 8), then(1, 10)
            if fate is Fate.REASSIGNED:
                then(5, 30)
        elif fate is Fate.PARTIALLY_PAID:
            then(1, 8), then(1, 10)
            at(min(due + r(-10, 15), last - r(0, 10)))
        elif fate is Fate.SETTLED:
            then(1, 8), then(1, 10)
            if self.rng.random() < 0.4:
                options.add("two_payments")
                at(due + r(-25, -5))
            at(due + r(-8, 10))
        elif fate is Fate.SETTLED_DIRECT:
            then(1, 8)
            at(due + r(-8, 5)), then(1, 3)
        elif fate is Fate.PAID_BEFORE_NOTICE:
            then(1, 8), then(1, 10), then(1, 3), then(1, 10)
        elif fate is Fate.CLAIM_PENDING:
            then(1, 8)
            if self.rng.random() < 0.5:
                options.add("assigned")
                then(1, 10)
            at(last - r(3, 12))  # reported lately: still pending
            if self.rng.random() < 0.35:
                options.add("rejected")
                then(1, 3)
        elif fate is Fate.SPLIT:
            then(1, 8), then(1, 10)
            split_day = days[-1]
            days.extend(split_day + r(1, 12) for _ in range(self.rng.choice((2, 2, 3))))
            return days if max(days) <= last else None
        elif fate is Fate.BOUGHT_BACK:
            then(1, 8), then(1, 10)
            at(due + r(1, 20) if due + 1 <= last else days[-1] + r(3, 20))
        elif fate in (Fate.DEFAULTED, Fate.WRITTEN_OFF):
            then(1, 8), then(1, 10)
            at(due + r(3, 40))
            if fate is Fate.WRITTEN_OFF:
                then(10, 40)
            elif self.rng.random() < 0.3:
                options.add("recovery")
                then(5, 30)
        if days[-1] > last or any(b <= a for a, b in pairwise(days)):
            return None
        return days

    # ------------------------------------------------------------------ invoices

    def _amount(self) -> tuple[str, int]:
        """A currency and a face value in minor units: log-normal, as invoice amounts are."""
        if self.rng.random() < USD_SHARE:
            currency, median, sigma, lo, hi = "USD", 28_000, 0.85, 1_200, 2_500_000
        else:
            currency, median, sigma, lo, hi = "CNY", 180_000, 0.95, 6_000, 15_000_000
        major = min(hi, max(lo, self.rng.lognormvariate(math.log(median), sigma)))
        if self.rng.random() < 0.3:
            return currency, int(round(major, -2)) * 100  # a round amount
        return currency, round(major * 100)

    def _number(self, creditor: Member, issued: int) -> str:
        """Each creditor numbers its invoices its own way (normalisation makes them comparable)."""
        index = self.consortium.creditors.index(creditor)
        self.serials[index] += 1
        serial = self.serials[index]
        year = datetime.fromtimestamp(issued, UTC).year
        if index % 3 == 0:
            return f"SZC-{year}-{serial:05d}"
        if index % 3 == 1:
            return f"NBT/{year % 100:02d}/{serial:04d}"
        return f"SL{year % 100:02d}{serial:06d}"

    # ------------------------------------------------------------------ refused double financings

    def _double_financings(self, count: int) -> None:
        """Registrations of invoices already financed, each refused on-chain (InvoiceKeyTaken): the
        same invoice by another creditor, its number re-formatted (lower case and spaces, full-width
        characters as on Chinese e-invoices), once with changed terms. They ride in ordinary batches."""
        # A due date in the past would be refused first (DueDateInPast): attempts come before it.
        candidates = [(reg, day, due) for reg, day, due in self.financed if day + 1 < min(due, HISTORY_DAYS)]
        for n, (original, assigned_day, due_day) in enumerate(self.rng.sample(candidates, min(count, len(candidates)))):
            invoice = original.invoice
            others = [m for m in self.consortium.creditors if m is not original.creditor]
            creditor = original.creditor if n % 4 == 2 or not others else self.rng.choice(others)
            number = invoice.invoice_number
            if n % 4 == 1 or n % 4 == 3:
                number = re.sub(r"[-/]", " ", number).lower()
            elif n % 4 == 2:
                number = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in number)
            due = invoice.due_date + (30 * DAY if n % 4 == 3 else 0)
            attempt = Invoice.parse(
                debtor=invoice.debtor,
                invoice_number=number,
                face_value=invoice.face_value,
                currency=invoice.currency,
                issue_date=invoice.issue_date,
                due_date=due,
            )
            assert attempt.key == invoice.key, (number, invoice.invoice_number)
            last = min(due_day, HISTORY_DAYS) - 1
            self._add(self.rng.randint(assigned_day + 1, last), _Registration(creditor, attempt, None))
            self._expect("double_financing_refused")


# ---------------------------------------------------------------------------------------- running the plan


def _execute(client: RegistryClient, plan: _Plan, *, mine: bool) -> Counter[str]:
    """Runs the plan day by day: the chain's clock set to the day, then every step of the day sent
    at once (registrations in batches, one JSON-RPC batch of raw transactions per sender), then all
    receipts awaited together (with ``mine``, after mining the day's block by hand). Steps of one day
    never depend on each other (the planner spaces each receivable's steps a day apart at least), so a
    day needs a few round trips, not one per transaction."""
    chain = client.chain
    ids: dict[int, ReceivableId] = {}
    claims: dict[int, int] = {}
    outcome = Counter({k: v for k, v in plan.expected.items() if k != "double_financing_refused"})

    def resolve(arg: Any) -> Any:
        if isinstance(arg, _Ref):
            return claims[arg.handle] if arg.claim else ids[arg.handle]
        return arg

    for day in sorted(plan.days):
        _set_next_timestamp(chain, plan.start + day * DAY + OPENING_HOUR)
        outbox = _Outbox()
        by_creditor: dict[str, list[_Registration]] = defaultdict(list)
        for step in plan.days[day]:
            if isinstance(step, _Registration):
                by_creditor[step.creditor.address].append(step)
            else:
                args = tuple(resolve(a) for a in step.args)
                outbox.add(step.actor.account, client.abi.encode_call(step.fn, args), ACTION_GAS, step)
        for lines in by_creditor.values():
            for first in range(0, len(lines), DEFAULT_BATCH_SIZE):
                chunk = lines[first : first + DEFAULT_BATCH_SIZE]
                data = client.encode_register_batch([line.invoice.as_contract_input() for line in chunk])
                outbox.add(chunk[0].creditor.account, data, BATCH_GAS_BASE + BATCH_GAS_PER_LINE * len(chunk), chunk)
        sent = outbox.send(chain, client.address)
        txs = [p for _, p in sent]
        receipts = _mine(chain, txs) if mine else chain.wait_receipts(txs)
        for (item, pending), receipt in zip(sent, receipts, strict=True):
            chain.check_receipt(pending, receipt)
            if isinstance(item, list):
                outcome["double_financing_refused"] += _registered(client, item, receipt, ids)
            elif item.parts:
                (event,) = [e for e in chain.decode_logs(receipt["logs"]) if e.name == "ReceivableSplit"]
                ids.update(zip(item.parts, (ReceivableId(p) for p in event.args["partIds"]), strict=True))
            elif item.claim is not None:
                (event,) = [e for e in chain.decode_logs(receipt["logs"]) if e.name == "PaymentReported"]
                claims[item.claim] = int(event.args["claimId"])
    return outcome


_Sendable = _Action | list[_Registration]  # one transaction: a lifecycle call, or a batch of registrations


class _Outbox:
    """One day's transactions of every sender, signed with consecutive nonces per sender and sent in
    as few JSON-RPC batches as Anvil's request limit allows: a day of the demo is a few dozen small
    transactions from up to eight senders, so one round trip for all of them, rather than one
    ``ChainClient.send_many`` (a round trip or more) per sender, halves the time of the whole seed."""

    def __init__(self) -> None:
        self._by_sender: dict[str, tuple[LocalAccount, list[tuple[bytes, int]], list[_Sendable]]] = {}

    def add(self, account: LocalAccount, data: bytes, gas: int, item: _Sendable) -> None:
        entry = self._by_sender.setdefault(account.address, (account, [], []))
        entry[1].append((data, gas))
        entry[2].append(item)

    def send(self, chain: ChainClient, to: str) -> list[tuple[_Sendable, PendingTx]]:
        signed: list[tuple[_Sendable, PendingTx, str]] = []
        for account, calls, items in self._by_sender.values():
            first = chain.nonces.reserve(account.address, len(calls))
            for nonce, ((data, gas), item) in enumerate(zip(calls, items, strict=True), start=first):
                raw = "0x" + chain.sign(account, to, data, gas, nonce).hex()
                signed.append((item, PendingTx("", account.address, to, data, gas), raw))
        answers: list[Any] = []
        chunk: list[str] = []
        for i, (_, _, raw) in enumerate(signed):
            chunk.append(raw)
            if i + 1 == len(signed) or sum(map(len, chunk)) + len(signed[i + 1][2]) > MAX_SEND_BATCH_BYTES:
                answers.extend(chain.rpc.batch([("eth_sendRawTransaction", [r]) for r in chunk]))
                chunk = []
        refused = [a for a in answers if isinstance(a, Exception)]
        if refused:
            for account, _, _ in self._by_sender.values():
                chain.nonces.resync(account.address)
            raise ChainError(f"the node refused {len(refused)} of {len(signed)} demo transactions; first: {refused[0]}")
        return [
            (item, dataclasses.replace(pending, tx_hash=str(tx_hash)))
            for (item, pending, _), tx_hash in zip(signed, answers, strict=True)
        ]


def _registered(
    client: RegistryClient, lines: list[_Registration], receipt: dict[str, Any], ids: dict[int, ReceivableId]
) -> int:
    """Records the ids of one batch's registrations; returns how many double financings it refused.
    Any other outcome (a planned invoice refused, a double financing accepted) is a ChainError."""
    refused = 0
    for line, result in zip(lines, client._line_outcomes(receipt, 0, len(lines)), strict=True):
        if line.handle is not None and result.id is not None:
            ids[line.handle] = result.id
        elif line.handle is None and isinstance(result.error, reverts.error_class("InvoiceKeyTaken")):
            refused += 1
        else:
            raise ChainError(
                f"demo registration of {line.invoice.invoice_number!r} by {line.creditor.name}: expected "
                f"{'acceptance' if line.handle is not None else 'InvoiceKeyTaken'}, got "
                f"{result.error if result.error is not None else f'id {result.id}'}"
            )
    return refused


def _automine(chain: ChainClient) -> bool:
    """Whether the node mines a block per transaction (Anvil's and Hardhat's names for the question)."""
    for method in ("anvil_getAutomine", "hardhat_getAutomine"):
        try:
            return bool(chain.rpc.call(method))
        except RpcError:
            continue
    return False


def _mine(chain: ChainClient, pending: list[PendingTx], rounds: int = 50) -> list[dict[str, Any]]:
    """Mines blocks until every pending transaction is in one (a day that overflows a block's gas
    limit takes two); returns their receipts in order."""
    found: dict[str, dict[str, Any]] = {}
    missing = [p.tx_hash for p in pending]
    for _ in range(rounds):
        chain.rpc.call("evm_mine")
        answers = chain.rpc.batch([("eth_getTransactionReceipt", [h]) for h in missing])
        for tx_hash, answer in zip(missing, answers, strict=True):
            if isinstance(answer, dict):
                found[tx_hash] = answer
        missing = [h for h in missing if h not in found]
        if not missing:
            return [found[p.tx_hash] for p in pending]
    raise ChainError(f"{len(missing)} demo transactions still unmined after {rounds} blocks")


def _latest_timestamp(chain: ChainClient) -> int:
    return int(chain.get_block("latest")["timestamp"], 16)


def _set_next_timestamp(chain: ChainClient, moment: int) -> None:
    """The next block's time: ``moment``, or just after the latest block if that is later already."""
    chain.rpc.call("evm_setNextBlockTimestamp", [max(moment, _latest_timestamp(chain) + 1)])


def _payment_ref(handle: int, paid: int) -> bytes:
    """A bank reference for a demo payment (its hash: the ledger keeps no account numbers)."""
    return keccak(text=f"demo payment {handle}/{paid}")


def _split_amounts(unpaid: int, parts: int, rng: random.Random) -> list[int]:
    """``parts`` positive amounts that add up to ``unpaid`` (the contract checks conservation)."""
    cuts = sorted(rng.sample(range(1, unpaid), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, unpaid], strict=True)]
