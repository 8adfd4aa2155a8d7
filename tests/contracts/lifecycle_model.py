"""The executable spec of a receivable's lifecycle: a small pure-Python model of the registry.

The model knows nothing about the chain. Invoice keys and fingerprints are plain tuples built from the
*canonical* invoice fields the caller says an invoice has (so the model decides what "the same invoice"
is, and the chain, hashing reformatted spellings, must agree). Every operation either returns its result
and changes the model, or raises :class:`Refused` naming the custom error the contract must revert with,
without changing anything. Checks run in the order the contract documents them, so that when several
rules are broken at once the model still predicts the one error a caller sees.

Rules (DOMAIN.md, IReceivableRegistry NatSpec):

- registration: creditor role; face value > 0; due after issue and not yet passed; the debtor is another
  entity that holds the debtor role; the invoice key (debtor + number) and the fingerprint (every
  identifying field) each belong to at most one live registration. A cancelled registration frees both
  and is superseded by the next registration of the same invoice.
- the debtor of record, and no one else, confirms (with its own fingerprint of the invoice) or disputes
  an unconfirmed receivable; the debtor withdraws a dispute, the creditor upholds it (which cancels).
- the creditor cancels an unconfirmed (registered or disputed) receivable.
- the holder (payee of record) assigns to an admitted factor, splits the unpaid balance into parts that
  add up to it exactly, records payments, buys back under recourse, declares default after the due date
  and writes off a defaulted receivable.
- the debtor reports a payment to the payee of record; the payee named in that claim acknowledges
  (counted against the receivable) or rejects it.
- paid never exceeds the face value; paid == face value settles. Settled, Cancelled, WrittenOff and
  Split are terminal.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from registry.domain import ClaimStatus, DisputeReason, DisputeResolution, Status

MAX_BATCH_SIZE = 500
MAX_SPLIT_PARTS = 32

# The roles an entity may hold, by name (the model does not need the on-chain role ids).
CREDITOR, DEBTOR, FACTOR, AUDITOR = "creditor", "debtor", "factor", "auditor"

# Statuses in which the holder may assign, split or declare default.
ACTIVE = frozenset({Status.CONFIRMED, Status.ASSIGNED, Status.PARTIALLY_PAID})
# Statuses in which a payment may still be counted.
PAYABLE = ACTIVE | {Status.DEFAULTED}
# Statuses a holder may sell back from under recourse.
RECOURSE = frozenset({Status.ASSIGNED, Status.PARTIALLY_PAID, Status.DEFAULTED})
UNCONFIRMED = frozenset({Status.REGISTERED, Status.DISPUTED})
TERMINAL = frozenset({Status.SETTLED, Status.CANCELLED, Status.WRITTEN_OFF, Status.SPLIT})


class Refused(Exception):
    """Raised when the model refuses an operation; ``name`` is the contract's custom error."""

    def __init__(self, name: str, **fields: Any) -> None:
        super().__init__(f"{name}({', '.join(f'{k}={v!r}' for k, v in fields.items())})")
        self.name = name
        self.fields = fields


@dataclass(frozen=True)
class InvoiceLine:
    """One invoice as a creditor registers it, by its canonical fields. ``number`` is the normalised
    invoice number (the caller's spelling does not matter to the model)."""

    debtor: int
    number: str
    currency: str
    face_value: int
    issue_date: int
    due_date: int

    @property
    def key(self) -> Hashable:
        """The duplicate key: debtor and invoice number, nothing else."""
        return (self.debtor, self.number)

    @property
    def fingerprint(self) -> Hashable:
        """Every identifying field (not the creditor, not the document)."""
        return (self.debtor, self.number, self.currency, self.face_value, self.issue_date, self.due_date)


@dataclass
class Receivable:
    id: int
    creditor: int
    debtor: int
    holder: int
    status: Status
    recourse: bool
    due_date: int
    face_value: int
    paid: int = 0
    key: Hashable | None = None  # None for a split part (it was never registered)
    fingerprint: Hashable | None = None
    parent: int = 0
    supersedes: int = 0
    payments: list[int] = field(default_factory=list)  # every amount counted against it, in order
    parts: tuple[int, ...] = ()
    unpaid_at_split: int | None = None

    @property
    def unpaid(self) -> int:
        return self.face_value - self.paid

    @property
    def live(self) -> bool:
        """Whether it still holds its invoice key and fingerprint."""
        return self.status is not Status.CANCELLED

    def state(self) -> tuple[int, int, int, Status, bool, int, int, int]:
        """The fields of IReceivableRegistry.Receivable, in declaration order."""
        return (
            self.creditor,
            self.debtor,
            self.holder,
            self.status,
            self.recourse,
            self.due_date,
            self.face_value,
            self.paid,
        )


@dataclass
class Claim:
    id: int
    receivable_id: int
    payee: int
    status: ClaimStatus
    amount: int

    def state(self) -> tuple[int, int, ClaimStatus, int]:
        return (self.receivable_id, self.payee, self.status, self.amount)


class LifecycleModel:
    """The registry's receivables, claims and duplicate indexes, as the spec says they evolve."""

    def __init__(self, roles: Mapping[int, Iterable[str]]) -> None:
        self.roles: dict[int, frozenset[str]] = {e: frozenset(r) for e, r in roles.items()}
        self.receivables: dict[int, Receivable] = {}
        self.claims: dict[int, Claim] = {}
        # Latest registration of each key / fingerprint (possibly a cancelled one, whose hold lapsed).
        self.id_by_key: dict[Hashable, int] = {}
        self.id_by_fingerprint: dict[Hashable, int] = {}

    # ------------------------------------------------------------------ helpers

    @property
    def count(self) -> int:
        return len(self.receivables)

    def _get(self, id: int) -> Receivable:
        r = self.receivables.get(id)
        if r is None:
            raise Refused("UnknownReceivable", id=id)
        return r

    def _require_role(self, entity: int, role: str) -> None:
        """The entity exists and holds ``role`` (the model has no suspensions)."""
        if entity not in self.roles:
            raise Refused("UnknownEntity", entityId=entity)
        if role not in self.roles[entity]:
            raise Refused("EntityMissingRole", entityId=entity)

    def _require_holder(self, r: Receivable, caller: int) -> None:
        if r.holder != caller:
            raise Refused("NotHolder", id=r.id, caller=caller, holder=r.holder)

    @staticmethod
    def _require_status(r: Receivable, allowed: Iterable[Status]) -> None:
        if r.status not in allowed:
            raise Refused("InvalidStatus", id=r.id, status=int(r.status))

    def live_holder_of_key(self, key: Hashable) -> int:
        holder = self.id_by_key.get(key, 0)
        return holder if holder and self.receivables[holder].live else 0

    def live_holder_of_fingerprint(self, fingerprint: Hashable) -> int:
        holder = self.id_by_fingerprint.get(fingerprint, 0)
        return holder if holder and self.receivables[holder].live else 0

    # ------------------------------------------------------------------ registration

    def register(self, caller: int, line: InvoiceLine, now: int) -> int:
        """One registration; returns the new id."""
        self._require_role(caller, CREDITOR)
        return self._register_line(caller, line, now)

    def register_batch(self, caller: int, lines: Sequence[InvoiceLine], now: int) -> list[int | Refused]:
        """A batch: each line is registered as a single registration would be, in order; a refused
        line changes nothing and the rest go on. One outcome per line: the new id or the refusal."""
        self._require_role(caller, CREDITOR)
        if not 0 < len(lines) <= MAX_BATCH_SIZE:
            raise Refused("InvalidBatchSize", size=len(lines), limit=MAX_BATCH_SIZE)
        outcomes: list[int | Refused] = []
        for line in lines:
            try:
                outcomes.append(self._register_line(caller, line, now))
            except Refused as refused:
                outcomes.append(refused)
        return outcomes

    def _register_line(self, creditor: int, line: InvoiceLine, now: int) -> int:
        if line.face_value == 0:
            raise Refused("ZeroAmount")
        if line.due_date <= line.issue_date:
            raise Refused("DueDateNotAfterIssueDate", issueDate=line.issue_date, dueDate=line.due_date)
        if line.due_date <= now:
            raise Refused("DueDateInPast", dueDate=line.due_date)
        if line.debtor == creditor:
            raise Refused("DebtorIsCreditor", entityId=creditor)
        self._require_role(line.debtor, DEBTOR)
        key_holder = self.live_holder_of_key(line.key)
        if key_holder:
            raise Refused("InvoiceKeyTaken", existingId=key_holder)
        fingerprint_holder = self.live_holder_of_fingerprint(line.fingerprint)
        if fingerprint_holder:
            raise Refused("FingerprintTaken", existingId=fingerprint_holder)
        supersedes = self.id_by_key.get(line.key, 0) or self.id_by_fingerprint.get(line.fingerprint, 0)
        id = self.count + 1
        self.receivables[id] = Receivable(
            id=id,
            creditor=creditor,
            debtor=line.debtor,
            holder=creditor,
            status=Status.REGISTERED,
            recourse=False,
            due_date=line.due_date,
            face_value=line.face_value,
            key=line.key,
            fingerprint=line.fingerprint,
            supersedes=supersedes,
        )
        self.id_by_key[line.key] = id
        self.id_by_fingerprint[line.fingerprint] = id
        return id

    # ------------------------------------------------------------------ debtor

    def confirm(self, caller: int, id: int, fingerprint: Hashable) -> None:
        r = self._get(id)
        if r.debtor != caller:
            raise Refused("NotDebtorOfRecord", id=id, caller=caller)
        self._require_status(r, {Status.REGISTERED})
        if fingerprint != r.fingerprint:
            raise Refused("FingerprintMismatch", id=id)
        r.status = Status.CONFIRMED

    def dispute(self, caller: int, id: int, reason: DisputeReason) -> None:
        r = self._get(id)
        if r.debtor != caller:
            raise Refused("NotDebtorOfRecord", id=id, caller=caller)
        # Confirmation is irrevocable: a confirmed (or financed) receivable cannot be disputed.
        self._require_status(r, {Status.REGISTERED})
        if reason is DisputeReason.NONE:
            raise Refused("InvalidDisputeCode", code=int(reason))
        r.status = Status.DISPUTED

    def resolve_dispute(self, caller: int, id: int, resolution: DisputeResolution) -> None:
        r = self._get(id)
        if resolution is DisputeResolution.WITHDRAWN:
            if r.debtor != caller:
                raise Refused("NotDebtorOfRecord", id=id, caller=caller)
        elif resolution is DisputeResolution.UPHELD:
            if r.creditor != caller:
                raise Refused("NotCreditorOfRecord", id=id, caller=caller)
        else:
            raise Refused("InvalidDisputeCode", code=int(resolution))
        self._require_status(r, {Status.DISPUTED})
        r.status = Status.REGISTERED if resolution is DisputeResolution.WITHDRAWN else Status.CANCELLED

    def report_payment(self, caller: int, id: int, paid_to: int, amount: int) -> int:
        """The debtor reports paying ``paid_to``; returns the claim id."""
        r = self._get(id)
        if r.debtor != caller:
            raise Refused("NotDebtorOfRecord", id=id, caller=caller)
        self._require_status(r, PAYABLE)
        # After notice of assignment only a payment to the assignee discharges the debtor.
        if paid_to != r.holder:
            raise Refused("PayeeNotOfRecord", id=id, paidTo=paid_to, payeeOfRecord=r.holder)
        if amount == 0 or amount > r.unpaid:
            raise Refused("PaymentExceedsBalance", id=id, amount=amount, unpaid=r.unpaid)
        claim_id = len(self.claims) + 1
        self.claims[claim_id] = Claim(claim_id, id, paid_to, ClaimStatus.PENDING, amount)
        return claim_id

    # ------------------------------------------------------------------ creditor

    def cancel(self, caller: int, id: int) -> None:
        r = self._get(id)
        if r.creditor != caller:
            raise Refused("NotCreditorOfRecord", id=id, caller=caller)
        self._require_status(r, UNCONFIRMED)
        r.status = Status.CANCELLED

    # ------------------------------------------------------------------ holder

    def assign(self, caller: int, id: int, factor: int, advance: int, recourse: bool) -> None:
        r = self._get(id)
        self._require_holder(r, caller)
        self._require_status(r, ACTIVE)
        if factor in (caller, r.debtor, r.creditor):
            raise Refused("InvalidAssignee", id=id, assignee=factor)
        self._require_role(factor, FACTOR)
        if advance > r.unpaid:
            raise Refused("AdvanceExceedsBalance", id=id, advance=advance, unpaid=r.unpaid)
        r.holder = factor
        r.recourse = recourse
        if r.status is Status.CONFIRMED:
            r.status = Status.ASSIGNED

    def split(self, caller: int, id: int, amounts: Sequence[int]) -> list[int]:
        """Returns the ids of the parts, in the order of ``amounts``."""
        r = self._get(id)
        self._require_holder(r, caller)
        self._require_status(r, ACTIVE)
        if not 2 <= len(amounts) <= MAX_SPLIT_PARTS or any(a == 0 for a in amounts):
            raise Refused("InvalidSplit", id=id, parts=len(amounts))
        if sum(amounts) != r.unpaid:
            raise Refused("SplitDoesNotConserve", id=id, sumOfParts=sum(amounts), unpaid=r.unpaid)
        part_status = Status.CONFIRMED if r.holder == r.creditor else Status.ASSIGNED
        part_ids = []
        for amount in amounts:
            part_id = self.count + 1
            self.receivables[part_id] = Receivable(
                id=part_id,
                creditor=r.creditor,
                debtor=r.debtor,
                holder=r.holder,
                status=part_status,
                recourse=r.recourse,
                due_date=r.due_date,
                face_value=amount,
                parent=id,
            )
            part_ids.append(part_id)
        r.parts = tuple(part_ids)
        r.unpaid_at_split = r.unpaid
        r.status = Status.SPLIT
        return part_ids

    def buy_back(self, caller: int, id: int) -> None:
        r = self._get(id)
        self._require_holder(r, caller)
        self._require_status(r, RECOURSE)
        if not r.recourse:
            raise Refused("NoRecourse", id=id)
        r.holder = r.creditor
        r.recourse = False
        r.status = Status.CONFIRMED if r.paid == 0 else Status.PARTIALLY_PAID

    def declare_default(self, caller: int, id: int, now: int) -> None:
        r = self._get(id)
        self._require_holder(r, caller)
        self._require_status(r, ACTIVE)
        if now <= r.due_date:
            raise Refused("NotYetDue", id=id, dueDate=r.due_date)
        r.status = Status.DEFAULTED

    def write_off(self, caller: int, id: int) -> None:
        r = self._get(id)
        self._require_holder(r, caller)
        self._require_status(r, {Status.DEFAULTED})
        r.status = Status.WRITTEN_OFF

    # ------------------------------------------------------------------ payee

    def record_payment(self, caller: int, id: int, amount: int) -> None:
        r = self._get(id)
        self._require_holder(r, caller)
        self._require_status(r, PAYABLE)
        self._apply_payment(r, amount)

    def acknowledge_payment(self, caller: int, claim_id: int) -> None:
        claim = self._pending_claim(caller, claim_id)
        r = self.receivables[claim.receivable_id]
        # A payment made to the then payee of record discharged the debtor even if the receivable
        # has been assigned since; it still counts against the receivable.
        self._require_status(r, PAYABLE)
        self._apply_payment(r, claim.amount)
        claim.status = ClaimStatus.ACKNOWLEDGED

    def reject_payment(self, caller: int, claim_id: int) -> None:
        self._pending_claim(caller, claim_id).status = ClaimStatus.REJECTED

    def _pending_claim(self, caller: int, claim_id: int) -> Claim:
        claim = self.claims.get(claim_id)
        if claim is None:
            raise Refused("UnknownPaymentClaim", claimId=claim_id)
        if claim.payee != caller:
            raise Refused("NotPayeeOfClaim", claimId=claim_id, caller=caller, payee=claim.payee)
        if claim.status is not ClaimStatus.PENDING:
            raise Refused("ClaimNotPending", claimId=claim_id, status=int(claim.status))
        return claim

    @staticmethod
    def _apply_payment(r: Receivable, amount: int) -> None:
        if amount == 0 or amount > r.unpaid:
            raise Refused("PaymentExceedsBalance", id=r.id, amount=amount, unpaid=r.unpaid)
        r.paid += amount
        r.payments.append(amount)
        if r.paid == r.face_value:
            r.status = Status.SETTLED
        elif r.status is not Status.DEFAULTED:  # a defaulted receivable stays so until fully recovered
            r.status = Status.PARTIALLY_PAID

    # ------------------------------------------------------------------ the model's own invariants

    def check_invariants(self) -> None:
        """What must hold whatever happened; the machine checks the chain against the model separately."""
        live_keys: dict[Hashable, int] = {}
        live_fingerprints: dict[Hashable, int] = {}
        for r in self.receivables.values():
            assert 0 <= r.paid <= r.face_value, r
            assert r.paid == sum(r.payments), r
            assert (r.status is Status.SETTLED) == (r.paid == r.face_value), r
            if r.recourse:
                assert r.holder != r.creditor, r
            if r.key is not None and r.live:
                assert r.key not in live_keys, (r, live_keys[r.key])
                live_keys[r.key] = r.id
                assert self.id_by_key[r.key] == r.id, r
            if r.fingerprint is not None and r.live:
                assert r.fingerprint not in live_fingerprints, (r, live_fingerprints[r.fingerprint])
                live_fingerprints[r.fingerprint] = r.id
                assert self.id_by_fingerprint[r.fingerprint] == r.id, r
            if r.status is Status.SPLIT:
                assert r.unpaid_at_split is not None
                assert sum(self.receivables[p].face_value for p in r.parts) == r.unpaid_at_split, r
                assert r.unpaid_at_split == r.unpaid, r  # a split parent never changes again
            if r.parent:
                assert r.id in self.receivables[r.parent].parts, r
