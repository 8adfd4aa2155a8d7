"""Who may call what: a role x function matrix generated from one table.

Every state-changing function of the registry has a row in ``ROWS``: how to bring a receivable,
claim or participant into the state where the function is allowed, who is entitled to call it, how
the contract refuses everyone else (``Guard``), and the event the allowed call emits. The cells
are generated from the rows and the caller kinds below, so that each (function, caller) pair is its
own test, and ``test_matrix_has_a_row_for_every_state_changing_function`` fails as soon as a
function is added to the ABI without a row.

Caller kinds: the nine identities of the demo consortium (the parties of record, their
competitors, the auditor, the consortium admin and a key nobody admitted), plus two that are
derived from the entitled caller: its entity suspended, and its original key revoked after a
second key was added. For admin-only functions the derived kind is a former admin (granted the
admin role, then revoked); suspension does not apply there, as the admin is not an entity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from registry.chain import reverts
from registry.chain.client import TxResult
from registry.chain.contract import ZERO32, RegistryClient
from registry.chain.reverts import ContractRevert
from registry.demo import DAY, Member
from registry.domain import DisputeReason, DisputeResolution, Role
from registry.invoice import Invoice
from registry.types import EntityId, ReceivableId
from tests.conftest import ChainState, InvoiceFactory

NAMED_KINDS = (
    "creditor",
    "other_creditor",
    "debtor",
    "other_debtor",
    "factor",
    "other_factor",
    "auditor",
    "admin",
    "stranger",
)
SUSPENDED = "suspended_entity"
REVOKED = "revoked_key"
CALLER_KINDS = (*NAMED_KINDS, SUSPENDED, REVOKED)


class Guard(Enum):
    """How the contract tells the entitled caller from everyone else."""

    CREDITOR_ROLE = "any active creditor entity"
    DEBTOR_OF_RECORD = "the debtor of the receivable"
    CREDITOR_OF_RECORD = "the creditor of the receivable"
    HOLDER = "the holder (payee of record) of the receivable"
    PAYEE_OF_CLAIM = "the payee named in the payment claim"
    ADMIN = "an account holding DEFAULT_ADMIN_ROLE"
    SELF = "the account renouncing its own role"

    @property
    def is_party(self) -> bool:
        return self not in (Guard.ADMIN, Guard.SELF)


@dataclass(frozen=True)
class Actor:
    account: LocalAccount
    entity: EntityId | None  # None for keys that belong to no entity (admin, stranger)
    roles: tuple[Role, ...] = ()


class World:
    """The demo consortium and the steps that bring a receivable into each state."""

    def __init__(
        self,
        registry: RegistryClient,
        actors: dict[str, Actor],
        chain_state: ChainState,
        make_invoice: InvoiceFactory,
    ) -> None:
        self.registry = registry
        self.actors = actors
        self.chain_state = chain_state
        self.make_invoice = make_invoice
        self.admin = actors["admin"].account

    def member(self, kind: str) -> Actor:
        return self.actors[kind]

    def entity(self, kind: str) -> EntityId:
        entity = self.actors[kind].entity
        assert entity is not None
        return entity

    def account(self, kind: str) -> LocalAccount:
        return self.actors[kind].account

    # ------------------------------------------------------------------ receivable states

    def registered(self, **invoice_fields: Any) -> tuple[ReceivableId, Invoice]:
        invoice = self.make_invoice(**invoice_fields)
        return self.registry.register(self.account("creditor"), invoice), invoice

    def disputed(self) -> ReceivableId:
        rid, _ = self.registered()
        self.registry.dispute(self.account("debtor"), rid, DisputeReason.QUALITY_DEFECT)
        return rid

    def confirmed(self, **invoice_fields: Any) -> tuple[ReceivableId, Invoice]:
        rid, invoice = self.registered(**invoice_fields)
        self.registry.confirm(self.account("debtor"), rid, invoice.fingerprint)
        return rid, invoice

    def assigned(self, *, recourse: bool = False, **invoice_fields: Any) -> tuple[ReceivableId, Invoice]:
        rid, invoice = self.confirmed(**invoice_fields)
        advance = invoice.face_value * 9 // 10
        self.registry.assign(self.account("creditor"), rid, self.entity("factor"), advance, recourse)
        return rid, invoice

    def overdue(self) -> ReceivableId:
        rid, _ = self.assigned(due_in_days=1)
        self.chain_state.advance(2 * DAY)
        return rid

    def defaulted(self) -> ReceivableId:
        rid = self.overdue()
        self.registry.declare_default(self.account("factor"), rid)
        return rid

    def claim(self) -> int:
        """A payment the debtor reports to the factor (payee of record), awaiting the factor."""
        rid, invoice = self.assigned()
        return self.registry.report_payment(self.account("debtor"), rid, self.entity("factor"), invoice.face_value // 4)

    # ------------------------------------------------------------------ participant states

    def fresh_key(self) -> str:
        return str(Account.create().address)

    def auditor_with_second_key(self) -> str:
        """Gives the auditor's entity a second key and returns the original one (now revocable)."""
        self.registry.add_key(self.admin, self.entity("auditor"), self.fresh_key())
        return self.account("auditor").address

    def suspended_other_factor(self) -> EntityId:
        self.registry.suspend_participant(self.admin, self.entity("other_factor"))
        return self.entity("other_factor")

    def deputy_admin(self) -> str:
        deputy = self.fresh_key()
        self.registry.grant_role(self.admin, Role.ADMIN, deputy)
        return deputy


Prepare = Callable[[World], tuple[Any, ...]]


@dataclass(frozen=True)
class Row:
    """One state-changing function, or one way of calling it (resolveDispute has two parties)."""

    id: str
    function: str
    entitled: str
    guard: Guard
    prepare: Prepare  # brings the state about; returns the call's arguments
    emits: str


def _two_fresh_invoices(w: World) -> tuple[Any, ...]:
    return ([w.make_invoice().as_contract_input(), w.make_invoice().as_contract_input()],)


def _confirmation(w: World) -> tuple[Any, ...]:
    rid, invoice = w.registered()
    return (rid, invoice.fingerprint)


def _split_in_two(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    half = invoice.face_value // 2
    return (rid, [half, invoice.face_value - half])


def _reassignment(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    return (rid, w.entity("other_factor"), invoice.face_value * 8 // 10, False, ZERO32)


def _first_assignment(w: World) -> tuple[Any, ...]:
    rid, invoice = w.confirmed()
    return (rid, w.entity("factor"), invoice.face_value * 9 // 10, True, keccak(text="terms"))


def _payment_report(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    return (rid, w.entity("factor"), invoice.face_value // 2, keccak(text="bank ref 1"))


def _payment_record(w: World) -> tuple[Any, ...]:
    rid, invoice = w.assigned()
    return (rid, invoice.face_value // 2, keccak(text="bank ref 2"))


def _revoke_second_admin(w: World) -> tuple[Any, ...]:
    return (bytes(Role.ADMIN), w.deputy_admin())


def _pause_first(w: World) -> tuple[Any, ...]:
    w.registry.pause(w.admin)
    return ()


ROWS: tuple[Row, ...] = (
    # ---------------------------------------------------------------- registration
    Row("register", "register", "creditor", Guard.CREDITOR_ROLE,
        lambda w: (w.make_invoice().as_contract_input(),), "ReceivableRegistered"),
    Row("registerBatch", "registerBatch", "creditor", Guard.CREDITOR_ROLE,
        _two_fresh_invoices, "ReceivableRegistered"),
    # ---------------------------------------------------------------- debtor of record
    Row("confirm", "confirm", "debtor", Guard.DEBTOR_OF_RECORD,
        _confirmation, "ReceivableConfirmed"),
    Row("dispute", "dispute", "debtor", Guard.DEBTOR_OF_RECORD,
        lambda w: (w.registered()[0], int(DisputeReason.GOODS_NOT_RECEIVED)), "ReceivableDisputed"),
    Row("resolveDispute-withdrawn-by-debtor", "resolveDispute", "debtor", Guard.DEBTOR_OF_RECORD,
        lambda w: (w.disputed(), int(DisputeResolution.WITHDRAWN)), "DisputeResolved"),
    Row("reportPayment", "reportPayment", "debtor", Guard.DEBTOR_OF_RECORD,
        _payment_report, "PaymentReported"),
    # ---------------------------------------------------------------- creditor of record
    Row("resolveDispute-upheld-by-creditor", "resolveDispute", "creditor", Guard.CREDITOR_OF_RECORD,
        lambda w: (w.disputed(), int(DisputeResolution.UPHELD)), "ReceivableCancelled"),
    Row("cancel", "cancel", "creditor", Guard.CREDITOR_OF_RECORD,
        lambda w: (w.registered()[0],), "ReceivableCancelled"),
    # ---------------------------------------------------------------- holder
    Row("assign-by-creditor-holder", "assign", "creditor", Guard.HOLDER,
        _first_assignment, "ReceivableAssigned"),
    Row("assign-by-factor-holder", "assign", "factor", Guard.HOLDER,
        _reassignment, "ReceivableAssigned"),
    Row("split", "split", "factor", Guard.HOLDER, _split_in_two, "ReceivableSplit"),
    Row("recordPayment", "recordPayment", "factor", Guard.HOLDER, _payment_record, "PaymentRecorded"),
    Row("buyBack", "buyBack", "factor", Guard.HOLDER,
        lambda w: (w.assigned(recourse=True)[0],), "ReceivableBoughtBack"),
    Row("declareDefault", "declareDefault", "factor", Guard.HOLDER,
        lambda w: (w.overdue(),), "ReceivableDefaulted"),
    Row("writeOff", "writeOff", "factor", Guard.HOLDER, lambda w: (w.defaulted(),), "ReceivableWrittenOff"),
    # ---------------------------------------------------------------- payee named in a claim
    Row("acknowledgePayment", "acknowledgePayment", "factor", Guard.PAYEE_OF_CLAIM,
        lambda w: (w.claim(),), "PaymentRecorded"),
    Row("rejectPayment", "rejectPayment", "factor", Guard.PAYEE_OF_CLAIM,
        lambda w: (w.claim(),), "PaymentRejected"),
    # ---------------------------------------------------------------- consortium admin
    Row("admitParticipant", "admitParticipant", "admin", Guard.ADMIN,
        lambda w: (keccak(text="91440300MA5NEWCO99"), [bytes(Role.CREDITOR)], w.fresh_key()),
        "ParticipantAdmitted"),
    Row("grantEntityRole", "grantEntityRole", "admin", Guard.ADMIN,
        lambda w: (w.entity("auditor"), bytes(Role.FACTOR)), "EntityRoleGranted"),
    Row("revokeEntityRole", "revokeEntityRole", "admin", Guard.ADMIN,
        lambda w: (w.entity("other_factor"), bytes(Role.FACTOR)), "EntityRoleRevoked"),
    Row("suspendParticipant", "suspendParticipant", "admin", Guard.ADMIN,
        lambda w: (w.entity("other_factor"),), "ParticipantSuspended"),
    Row("reinstateParticipant", "reinstateParticipant", "admin", Guard.ADMIN,
        lambda w: (w.suspended_other_factor(),), "ParticipantReinstated"),
    Row("addKey", "addKey", "admin", Guard.ADMIN, lambda w: (w.entity("auditor"), w.fresh_key()), "KeyAdded"),
    Row("revokeKey", "revokeKey", "admin", Guard.ADMIN, lambda w: (w.auditor_with_second_key(),), "KeyRevoked"),
    Row("grantRole", "grantRole", "admin", Guard.ADMIN, lambda w: (bytes(Role.ADMIN), w.fresh_key()), "RoleGranted"),
    Row("revokeRole", "revokeRole", "admin", Guard.ADMIN, _revoke_second_admin, "RoleRevoked"),
    Row("renounceRole", "renounceRole", "admin", Guard.SELF,
        lambda w: (bytes(Role.ADMIN), w.admin.address), "RoleRevoked"),
    Row("pause", "pause", "admin", Guard.ADMIN, lambda w: (), "Paused"),
    Row("unpause", "unpause", "admin", Guard.ADMIN, _pause_first, "Unpaused"),
)  # fmt: skip


# ------------------------------------------------------------------ the expected outcome of a cell


@dataclass(frozen=True)
class Refusal:
    error: type[ContractRevert]
    fields: dict[str, Any]


def expected_outcome(row: Row, kind: str, world: World, caller: LocalAccount) -> Refusal | None:
    """None if ``kind`` may make the call; otherwise the error and the fields it must carry."""
    if kind == row.entitled:
        return None
    if not row.guard.is_party:
        # The admin is an account, not an entity: everyone else, a former admin included, is refused.
        if row.guard is Guard.SELF:
            return Refusal(reverts.AccessControlBadConfirmation, {})
        return Refusal(reverts.AccessControlUnauthorizedAccount, {"account": caller.address, "neededRole": ZERO32})

    entitled = world.entity(row.entitled)
    if kind == SUSPENDED:
        return Refusal(reverts.EntityIsSuspended, {"entityId": entitled})
    if kind == REVOKED:
        return Refusal(reverts.KeyIsRevoked, {"key": caller.address, "entityId": entitled})
    actor = world.member(kind)
    if actor.entity is None:  # the admin and the stranger hold no participant key
        return Refusal(reverts.UnknownKey, {"key": caller.address})
    if row.guard is Guard.CREDITOR_ROLE:
        if Role.CREDITOR in actor.roles:
            return None  # registration is open to every creditor; there is no record yet
        return Refusal(reverts.EntityMissingRole, {"entityId": actor.entity, "role": bytes(Role.CREDITOR)})
    if row.guard is Guard.DEBTOR_OF_RECORD:
        return Refusal(reverts.NotDebtorOfRecord, {"caller": actor.entity})
    if row.guard is Guard.CREDITOR_OF_RECORD:
        return Refusal(reverts.NotCreditorOfRecord, {"caller": actor.entity})
    if row.guard is Guard.HOLDER:
        return Refusal(reverts.NotHolder, {"caller": actor.entity, "holder": entitled})
    assert row.guard is Guard.PAYEE_OF_CLAIM
    return Refusal(reverts.NotPayeeOfClaim, {"caller": actor.entity, "payee": entitled})


def _applies(row: Row, kind: str) -> bool:
    # The admin is not an entity, so it cannot be suspended; every other cell exists.
    return not (kind == SUSPENDED and not row.guard.is_party)


def _entitled_everywhere(row: Row, kind: str) -> bool:
    return kind == row.entitled or (row.guard is Guard.CREDITOR_ROLE and kind == "other_creditor")


CELLS = [(row, kind) for row in ROWS for kind in CALLER_KINDS if _applies(row, kind)]
ALLOWED = [pytest.param(row, kind, id=f"{row.id}-{kind}") for row, kind in CELLS if _entitled_everywhere(row, kind)]
REFUSED = [pytest.param(row, kind, id=f"{row.id}-{kind}") for row, kind in CELLS if not _entitled_everywhere(row, kind)]


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def actors(
    creditor: Member,
    other_creditor: Member,
    debtor: Member,
    other_debtor: Member,
    factor: Member,
    other_factor: Member,
    auditor: Member,
    admin: LocalAccount,
    stranger: LocalAccount,
) -> dict[str, Actor]:
    members = {
        "creditor": creditor,
        "other_creditor": other_creditor,
        "debtor": debtor,
        "other_debtor": other_debtor,
        "factor": factor,
        "other_factor": other_factor,
        "auditor": auditor,
    }
    actors = {kind: Actor(m.account, m.entity, m.roles) for kind, m in members.items()}
    actors["admin"] = Actor(admin, None)
    actors["stranger"] = Actor(stranger, None)
    return actors


@pytest.fixture
def world(
    registry: RegistryClient, actors: dict[str, Actor], chain_state: ChainState, make_invoice: InvoiceFactory
) -> World:
    return World(registry, actors, chain_state, make_invoice)


def caller_for(row: Row, kind: str, world: World) -> LocalAccount:
    """The key that makes the call; for the derived kinds, first changes the entitled party."""
    registry, admin = world.registry, world.admin
    if kind == SUSPENDED:
        registry.suspend_participant(admin, world.entity(row.entitled))
        return world.account(row.entitled)
    if kind == REVOKED:
        if not row.guard.is_party:
            former_admin: LocalAccount = Account.create()
            registry.grant_role(admin, Role.ADMIN, former_admin.address)
            registry.revoke_role(admin, Role.ADMIN, former_admin.address)
            return former_admin
        original = world.account(row.entitled)
        registry.add_key(admin, world.entity(row.entitled), Account.create().address)
        registry.revoke_key(admin, original.address)
        return original
    return world.account(kind)


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return actual.lower() == expected.lower()
    return bool(actual == expected)


# ------------------------------------------------------------------ the tests


def test_matrix_has_a_row_for_every_state_changing_function(registry: RegistryClient) -> None:
    state_changing = {name for name, item in registry.abi.functions.items() if item["stateMutability"] == "nonpayable"}
    in_matrix = {row.function for row in ROWS}
    assert state_changing - in_matrix == set(), "functions without a row in the access matrix"
    assert in_matrix - state_changing == set(), "matrix rows for functions the ABI does not have"


def test_matrix_rows_have_unique_ids_and_name_real_events(registry: RegistryClient) -> None:
    assert len({row.id for row in ROWS}) == len(ROWS)
    assert {row.emits for row in ROWS} <= set(registry.abi.event_topics)


@pytest.mark.parametrize(("row", "kind"), ALLOWED)
def test_entitled_caller_succeeds(row: Row, kind: str, world: World) -> None:
    args = row.prepare(world)
    caller = caller_for(row, kind, world)
    assert expected_outcome(row, kind, world, caller) is None
    result: TxResult = world.registry.transact(caller, row.function, *args)
    assert result.events_named(row.emits), f"{row.function} by {kind} emitted no {row.emits}"


@pytest.mark.parametrize(("row", "kind"), REFUSED)
def test_everyone_else_is_refused_with_the_right_error(row: Row, kind: str, world: World) -> None:
    args = row.prepare(world)
    caller = caller_for(row, kind, world)
    refusal = expected_outcome(row, kind, world, caller)
    assert refusal is not None
    with pytest.raises(ContractRevert) as raised:
        world.registry.transact(caller, row.function, *args)
    assert type(raised.value) is refusal.error, f"expected {refusal.error.error_name}, got {raised.value}"
    for name, value in refusal.fields.items():
        assert _same(raised.value.fields[name], value), f"{name}: {raised.value}"
