"""Model-based test: hypothesis drives the contract on the local node and the lifecycle model
(tests/contracts/lifecycle_model.py) side by side, and compares them after every step.

Each rule asks the model what must happen (the result, or the custom error the contract must revert
with), performs the same call on the chain, and asserts the same outcome. After every step the chain's
whole state is read back (in one JSON-RPC batch) and checked against the model and against invariants
that hold whatever the model says: one live registration per invoice key and fingerprint, paid equal to
the recorded payments and never above the face value, split parts adding up to the parent's unpaid
balance, terminal states frozen, and the ledger hash recomputed from the logs equal to the contract's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from registry.chain.contract import LineOutcome, RegistryClient
from registry.chain.reverts import ContractRevert
from registry.demo import DAY, Consortium
from registry.domain import ClaimStatus, DisputeReason, DisputeResolution, Role, Status
from registry.invoice import Invoice
from registry.ledger import LedgerState, replay
from tests.conftest import ChainState
from tests.contracts.lifecycle_model import (
    ACTIVE,
    AUDITOR,
    CREDITOR,
    DEBTOR,
    FACTOR,
    PAYABLE,
    RECOURSE,
    TERMINAL,
    UNCONFIRMED,
    InvoiceLine,
    LifecycleModel,
    Refused,
)

T = TypeVar("T")

HOUR = 3_600
# Time-dependent checks (due date passed or not) are never exercised within this much of the boundary:
# the block that runs a transaction is a few seconds younger than the clock read before sending it.
TIME_MARGIN = 10 * 60
UNKNOWN_ENTITY = 99
ROLE_NAMES = {Role.CREDITOR: CREDITOR, Role.DEBTOR: DEBTOR, Role.FACTOR: FACTOR, Role.AUDITOR: AUDITOR}


@dataclass(frozen=True)
class PoolInvoice:
    """A real-world invoice that creditors may (try to) register, in several spellings."""

    number: str  # canonical: what the model calls this invoice
    spellings: tuple[str, ...]  # how people type it; all must hash to the same invoice
    currency_spellings: tuple[str, ...]
    currency: str
    face_value: int  # minor units
    amount_spellings: tuple[str | int, ...]  # major-unit text (or minor-unit int) of face_value
    issue_in_days: int
    due_in_days: int


# A SMALL pool, so that the same invoice comes back often, reformatted. "INV-01" is a different invoice
# from "INV-001": leading zeros are kept.
POOL: tuple[PoolInvoice, ...] = (
    PoolInvoice(
        "INV001",
        ("INV-001", "inv 001", "INV001", "ｉｎｖ－００１", "Inv_001", "inv.001", "INV\u00a0001"),
        ("CNY", "cny", " CNY "),
        "CNY",
        185_060_000,
        ("1,850,600.00", "1850600", "1850600.00", "1 850 600", "18,50,600", 185_060_000),
        -10,
        30,
    ),
    PoolInvoice(
        "INV01",
        ("INV-01", "inv 01", "ＩＮＶ０１"),
        ("CNY",),
        "CNY",
        4_825_000,
        ("48,250.00", "48250", 4_825_000),
        -5,
        3,
    ),
    PoolInvoice(
        "HX2026007",
        ("HX-2026-007", "hx 2026 007", "HX/2026/007", "HX—2026—007", "hx#2026#007"),
        ("USD", "usd"),
        "USD",
        99_999,
        ("999.99", "999.990", 99_999),
        -30,
        60,
    ),
)


def pick(data: st.DataObject, preferred: Sequence[T], fallback: Sequence[T], label: str) -> T:
    """Four times in five one of ``preferred`` (if any), else any of ``fallback``; shrinks towards
    ``preferred``."""
    if preferred and not data.draw(st.sampled_from([False, False, False, False, True]), label=f"any {label}"):
        return data.draw(st.sampled_from(list(preferred)), label=label)
    return data.draw(st.sampled_from(list(fallback)), label=label)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(
        self, registry: RegistryClient, consortium: Consortium, chain_state: ChainState, outcomes: Counter[str]
    ) -> None:
        super().__init__()
        self.outcomes = outcomes  # "op: ok" / "op: ErrorName", over the whole run
        self.registry = registry
        self.chain = registry.chain
        self.chain_state = chain_state
        self.snapshot = chain_state.snapshot()

        self.accounts: dict[int, LocalAccount] = {m.entity: m.account for m in consortium.members}
        self.entities = sorted(self.accounts)
        self.creditors = [m.entity for m in consortium.creditors]
        self.debtors = [m.entity for m in consortium.debtors]
        self.factors = [m.entity for m in consortium.factors]
        self.model = LifecycleModel({m.entity: {ROLE_NAMES[r] for r in m.roles} for m in consortium.members})
        self.start = chain_state.now()

        # The model's keys and fingerprints (tuples) <-> the chain's (bytes). Must be a bijection: two
        # spellings of one invoice hash alike, two invoices never do.
        self.key_bytes: dict[Hashable, bytes] = {}
        self.fingerprint_bytes: dict[Hashable, bytes] = {}
        self.model_of_bytes: dict[bytes, Hashable] = {}

        # What the logs say, folded incrementally.
        self.last_block = self.chain.block_number()
        head, count = registry.ledger()
        self.ledger_state = replay(self.chain.decode_logs(self.chain.get_logs(registry.address, 0, self.last_block)))
        assert (self.ledger_state.head, self.ledger_state.count) == (head, count)
        self.paid_in_logs: dict[int, int] = defaultdict(int)
        self.splits_in_logs: dict[int, tuple[list[int], list[int]]] = {}
        self.registered_in_logs: dict[int, tuple[bytes, bytes, int]] = {}  # id -> key, fingerprint, supersedes
        self.frozen: dict[int, tuple[Any, ...]] = {}  # terminal receivables as first seen

    def teardown(self) -> None:
        self.chain_state.revert(self.snapshot)

    # ------------------------------------------------------------------ plumbing

    def now_clear_of(self, *due_dates: int) -> int:
        """The chain's clock, moved on first if it is too close to any of these due dates to tell."""
        now = self.chain_state.now()
        while any(abs(due - now) < TIME_MARGIN for due in due_dates):
            self.chain_state.advance(2 * TIME_MARGIN)
            now = self.chain_state.now()
        return now

    def expect(self, op: str, model_call: Callable[[], T], chain_call: Callable[[], Any]) -> tuple[T | None, Any]:
        """Runs the model, then the chain; asserts the same outcome (success, or the same error)."""
        try:
            expected: T | None = model_call()
            refused = None
        except Refused as exc:
            expected, refused = None, exc
        try:
            actual = chain_call()
            error = None
        except ContractRevert as exc:
            actual, error = None, exc
        label = f"{op}: {refused.name if refused else 'ok'}"
        event(label)
        self.outcomes[label] += 1
        if refused is None:
            assert error is None, f"model: success; chain reverted with {error}"
        else:
            assert error is not None, f"model: {refused}; chain accepted"
            assert_same_refusal(refused, error)
        return expected, actual

    # ------------------------------------------------------------------ operations: model, then chain

    def op_register(self, caller: int, invoice: Invoice, line: InvoiceLine) -> None:
        now = self.now_clear_of(line.due_date)
        expected, actual = self.expect(
            "register",
            lambda: self.model.register(caller, line, now),
            lambda: self.registry.register(self.accounts[caller], invoice),
        )
        assert expected == actual, f"new id: model {expected}, chain {actual}"

    def op_register_batch(self, caller: int, drawn: Sequence[tuple[Invoice, InvoiceLine]]) -> None:
        invoices = [invoice for invoice, _ in drawn]
        lines = [line for _, line in drawn]
        now = self.now_clear_of(*(line.due_date for line in lines))
        expected, actual = self.expect(
            "register_batch",
            lambda: self.model.register_batch(caller, lines, now),
            lambda: self.registry.register_batch(self.accounts[caller], invoices),
        )
        if expected is None:
            return
        assert len(actual) == len(expected)
        for outcome, model_outcome in zip(actual, expected, strict=True):
            assert isinstance(outcome, LineOutcome)
            if isinstance(model_outcome, Refused):
                assert outcome.error is not None, f"line {outcome.line}: model {model_outcome}; chain accepted"
                assert_same_refusal(model_outcome, outcome.error)
            else:
                assert outcome.error is None, f"line {outcome.line}: model accepted; chain {outcome.error}"
                assert outcome.id == model_outcome, f"line {outcome.line}: id {outcome.id} vs model {model_outcome}"
            event(f"register_batch line: {outcome.error.error_name if outcome.error else 'ok'}")

    def op_confirm(self, caller: int, id: int, fingerprint: Hashable) -> None:
        supplied = self.fingerprint_bytes.get(fingerprint, keccak(text=f"not a fingerprint: {fingerprint}"))
        self.expect(
            "confirm",
            lambda: self.model.confirm(caller, id, fingerprint),
            lambda: self.registry.confirm(self.accounts[caller], id, supplied),
        )

    def op_dispute(self, caller: int, id: int, reason: DisputeReason) -> None:
        self.expect(
            "dispute",
            lambda: self.model.dispute(caller, id, reason),
            lambda: self.registry.dispute(self.accounts[caller], id, reason),
        )

    def op_resolve_dispute(self, caller: int, id: int, resolution: DisputeResolution) -> None:
        self.expect(
            f"resolve_dispute {resolution.name}",
            lambda: self.model.resolve_dispute(caller, id, resolution),
            lambda: self.registry.resolve_dispute(self.accounts[caller], id, resolution),
        )

    def op_report_payment(self, caller: int, id: int, paid_to: int, amount: int) -> None:
        expected, actual = self.expect(
            "report_payment",
            lambda: self.model.report_payment(caller, id, paid_to, amount),
            lambda: self.registry.report_payment(self.accounts[caller], id, paid_to, amount),
        )
        assert expected == actual, f"claim id: model {expected}, chain {actual}"

    def op_cancel(self, caller: int, id: int) -> None:
        self.expect(
            "cancel",
            lambda: self.model.cancel(caller, id),
            lambda: self.registry.cancel(self.accounts[caller], id),
        )

    def op_assign(self, caller: int, id: int, factor: int, advance: int, recourse: bool) -> None:
        self.expect(
            "assign",
            lambda: self.model.assign(caller, id, factor, advance, recourse),
            lambda: self.registry.assign(self.accounts[caller], id, factor, advance, recourse),
        )

    def op_split(self, caller: int, id: int, amounts: list[int]) -> None:
        expected, actual = self.expect(
            "split",
            lambda: self.model.split(caller, id, amounts),
            lambda: self.registry.split(self.accounts[caller], id, amounts),
        )
        assert expected == actual, f"part ids: model {expected}, chain {actual}"

    def op_record_payment(self, caller: int, id: int, amount: int) -> None:
        self.expect(
            "record_payment",
            lambda: self.model.record_payment(caller, id, amount),
            lambda: self.registry.record_payment(self.accounts[caller], id, amount),
        )

    def op_buy_back(self, caller: int, id: int) -> None:
        self.expect(
            "buy_back",
            lambda: self.model.buy_back(caller, id),
            lambda: self.registry.buy_back(self.accounts[caller], id),
        )

    def op_declare_default(self, caller: int, id: int, let_due_date_pass: bool) -> None:
        r = self.model.receivables.get(id)
        if r is not None and let_due_date_pass:
            now = self.chain_state.now()
            if r.due_date >= now:
                self.chain_state.advance(r.due_date - now + HOUR)
        now = self.now_clear_of(r.due_date) if r is not None else self.chain_state.now()
        self.expect(
            "declare_default",
            lambda: self.model.declare_default(caller, id, now),
            lambda: self.registry.declare_default(self.accounts[caller], id),
        )

    def op_write_off(self, caller: int, id: int) -> None:
        self.expect(
            "write_off",
            lambda: self.model.write_off(caller, id),
            lambda: self.registry.write_off(self.accounts[caller], id),
        )

    def op_acknowledge_payment(self, caller: int, claim_id: int) -> None:
        self.expect(
            "acknowledge_payment",
            lambda: self.model.acknowledge_payment(caller, claim_id),
            lambda: self.registry.acknowledge_payment(self.accounts[caller], claim_id),
        )

    def op_reject_payment(self, caller: int, claim_id: int) -> None:
        self.expect(
            "reject_payment",
            lambda: self.model.reject_payment(caller, claim_id),
            lambda: self.registry.reject_payment(self.accounts[caller], claim_id),
        )

    # ------------------------------------------------------------------ rules: anyone tries anything

    @rule(data=st.data())
    def register(self, data: st.DataObject) -> None:
        caller = pick(data, self.creditors, self.entities, "creditor")
        self.op_register(caller, *self.invoice(data))

    @rule(data=st.data())
    def register_batch(self, data: st.DataObject) -> None:
        caller = pick(data, self.creditors, self.entities, "creditor")
        drawn = [self.invoice(data) for _ in range(data.draw(st.integers(1, 4), label="lines"))]
        if data.draw(st.booleans(), label="repeat a line"):
            drawn.append(data.draw(st.sampled_from(drawn), label="repeated line"))
        self.op_register_batch(caller, drawn)

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, {Status.REGISTERED})
        r = self.model.receivables.get(id)
        caller = self.caller(data, r and r.debtor)
        own = [r.fingerprint] if r and r.fingerprint is not None else []
        fingerprint = pick(data, own, [*self.fingerprint_bytes, ("random",)], "fingerprint")
        self.op_confirm(caller, id, fingerprint)

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def dispute(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, {Status.REGISTERED})
        r = self.model.receivables.get(id)
        caller = self.caller(data, r and r.debtor)
        self.op_dispute(caller, id, pick(data, list(DisputeReason)[1:], list(DisputeReason), "reason"))

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def resolve_dispute(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, {Status.DISPUTED})
        r = self.model.receivables.get(id)
        resolution = pick(data, list(DisputeResolution)[1:], list(DisputeResolution), "resolution")
        caller = self.caller(data, r and (r.debtor if resolution is DisputeResolution.WITHDRAWN else r.creditor))
        self.op_resolve_dispute(caller, id, resolution)

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def report_payment(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, PAYABLE)
        r = self.model.receivables.get(id)
        caller = self.caller(data, r and r.debtor)
        paid_to = pick(data, [r.holder, r.creditor] if r else [], self.entities, "paid to")
        self.op_report_payment(caller, id, paid_to, self.amount(data, r.unpaid if r else 1))

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, UNCONFIRMED)
        r = self.model.receivables.get(id)
        self.op_cancel(self.caller(data, r and r.creditor), id)

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def assign(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, ACTIVE)
        r = self.model.receivables.get(id)
        caller = self.caller(data, r and r.holder)
        factors = [f for f in self.factors if not r or f != r.holder]
        factor = pick(data, factors, [*self.entities, UNKNOWN_ENTITY], "factor")
        unpaid = r.unpaid if r else 1
        advance = pick(data, [unpaid * 9 // 10, unpaid, 0], [unpaid + 1], "advance")
        self.op_assign(caller, id, factor, advance, data.draw(st.booleans(), label="recourse"))

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def split(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, ACTIVE)
        r = self.model.receivables.get(id)
        caller = self.caller(data, r and r.holder)
        self.op_split(caller, id, self.split_amounts(data, r.unpaid if r else 10))

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def record_payment(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, PAYABLE)
        r = self.model.receivables.get(id)
        caller = self.caller(data, r and r.holder)
        self.op_record_payment(caller, id, self.amount(data, r.unpaid if r else 1))

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def buy_back(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, RECOURSE)
        r = self.model.receivables.get(id)
        self.op_buy_back(self.caller(data, r and r.holder), id)

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def declare_default(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, ACTIVE)
        r = self.model.receivables.get(id)
        caller = self.caller(data, r and r.holder)
        self.op_declare_default(caller, id, data.draw(st.booleans(), label="let the due date pass"))

    @precondition(lambda self: self.model.receivables)
    @rule(data=st.data())
    def write_off(self, data: st.DataObject) -> None:
        id = self.receivable_id(data, {Status.DEFAULTED})
        r = self.model.receivables.get(id)
        self.op_write_off(self.caller(data, r and r.holder), id)

    @precondition(lambda self: self.model.claims)
    @rule(data=st.data())
    def acknowledge_payment(self, data: st.DataObject) -> None:
        claim_id = self.claim_id(data)
        claim = self.model.claims.get(claim_id)
        self.op_acknowledge_payment(self.caller(data, claim and claim.payee), claim_id)

    @precondition(lambda self: self.model.claims)
    @rule(data=st.data())
    def reject_payment(self, data: st.DataObject) -> None:
        claim_id = self.claim_id(data)
        claim = self.model.claims.get(claim_id)
        self.op_reject_payment(self.caller(data, claim and claim.payee), claim_id)

    @rule(days=st.sampled_from([1, 4, 31, 61]))
    def time_passes(self, days: int) -> None:
        self.chain_state.advance(days * DAY + 7 * HOUR)

    # ------------------------------------------------------------------ rule: the entitled party moves on

    @precondition(lambda self: any(r.status not in TERMINAL for r in self.model.receivables.values()))
    @rule(data=st.data())
    def progress(self, data: st.DataObject) -> None:
        """A receivable takes a few of its next steps, each by the party entitled to it with sensible
        arguments (after a split, one of its parts goes on): the random rules above rarely line up
        long enough to reach the deep states."""
        live = [i for i, r in self.model.receivables.items() if r.status not in TERMINAL]
        id = data.draw(st.sampled_from(live), label="id")
        for _ in range(data.draw(st.integers(1, 6), label="steps")):
            r = self.model.receivables[id]
            if r.status is Status.SPLIT:
                id = data.draw(st.sampled_from(r.parts), label="part")
            elif r.status in TERMINAL:
                return
            self.next_step(data, id)

    def next_step(self, data: st.DataObject, id: int) -> None:
        r = self.model.receivables[id]
        pending = [
            c.id for c in self.model.claims.values() if c.receivable_id == id and c.status is ClaimStatus.PENDING
        ]
        steps = {
            Status.REGISTERED: ["confirm", "confirm", "confirm", "confirm from other records", "dispute"],
            Status.DISPUTED: ["withdraw", "uphold"],
            Status.CONFIRMED: ["assign", "assign", "pay", "report", "split", "default"],
            Status.ASSIGNED: ["assign", "pay", "pay", "report", "split", "default"],
            Status.PARTIALLY_PAID: ["pay", "report", "split", "assign", "default"],
            Status.DEFAULTED: ["write off", "pay", "pay"],
        }[r.status]
        steps += ["buy back", "buy back"] if r.recourse else []
        steps += ["acknowledge"] if pending else []
        step = data.draw(st.sampled_from(steps), label="step")
        part_of_unpaid = data.draw(st.sampled_from([1, 2, 3]), label="1/n of the unpaid balance")
        amount = max(r.unpaid // part_of_unpaid, 1)
        if step == "confirm":
            self.act(data, self.op_confirm, r.debtor, id, r.fingerprint)
        elif step == "confirm from other records":
            others = [fp for fp in self.fingerprint_bytes if fp != r.fingerprint] or [("random",)]
            self.act(data, self.op_confirm, r.debtor, id, data.draw(st.sampled_from(others), label="fingerprint"))
        elif step == "dispute":
            reason = data.draw(st.sampled_from(list(DisputeReason)[1:]), label="reason")
            self.act(data, self.op_dispute, r.debtor, id, reason)
        elif step == "withdraw":
            self.act(data, self.op_resolve_dispute, r.debtor, id, DisputeResolution.WITHDRAWN)
        elif step == "uphold":
            self.act(data, self.op_resolve_dispute, r.creditor, id, DisputeResolution.UPHELD)
        elif step == "assign":
            factor = data.draw(st.sampled_from([f for f in self.factors if f != r.holder]), label="factor")
            recourse = data.draw(st.booleans(), label="recourse")
            self.act(data, self.op_assign, r.holder, id, factor, r.unpaid * 9 // 10, recourse)
        elif step == "pay":
            self.act(data, self.op_record_payment, r.holder, id, amount)
        elif step == "report":
            claim_id = len(self.model.claims) + 1
            self.act(data, self.op_report_payment, r.debtor, id, r.holder, amount)
            if data.draw(st.booleans(), label="acknowledged at once"):
                self.act(data, self.op_acknowledge_payment, r.holder, claim_id)
        elif step == "acknowledge":
            claim_id = data.draw(st.sampled_from(pending), label="claim")
            self.act(data, self.op_acknowledge_payment, self.model.claims[claim_id].payee, claim_id)
        elif step == "split":
            parts = data.draw(st.integers(2, 3), label="parts")
            amounts = [r.unpaid // parts] * (parts - 1)
            self.act(data, self.op_split, r.holder, id, [*amounts, r.unpaid - sum(amounts)])
        elif step == "default":
            self.act(data, self.op_declare_default, r.holder, id, True)
        elif step == "buy back":
            self.act(data, self.op_buy_back, r.holder, id)
        elif step == "write off":
            self.act(data, self.op_write_off, r.holder, id)

    def act(self, data: st.DataObject, op: Callable[..., None], entitled: int, *args: Any) -> None:
        """``entitled`` performs ``op``; sometimes another participant tries the very same call first
        (and must be refused: every transition by the party entitled to it, and by no one else)."""
        if data.draw(st.sampled_from([False, False, False, True]), label="someone else tries first"):
            op(data.draw(st.sampled_from([e for e in self.entities if e != entitled]), label="intruder"), *args)
        op(entitled, *args)

    # ------------------------------------------------------------------ argument strategies

    def invoice(self, data: st.DataObject) -> tuple[Invoice, InvoiceLine]:
        """An invoice from the small pool, in one of its spellings, sometimes altered or already due."""
        entry = data.draw(st.sampled_from(POOL), label="invoice")
        debtor = pick(data, self.debtors, [*self.entities, UNKNOWN_ENTITY], "debtor")
        face_value = entry.face_value
        amount: str | int = data.draw(st.sampled_from(entry.amount_spellings), label="amount")
        due = self.start + entry.due_in_days * DAY
        variant = pick(data, ["as issued"], ["other amount", "already due"], "variant")
        if variant == "other amount":
            face_value = amount = entry.face_value + 100
        elif variant == "already due":
            due = self.start - DAY  # fixed, so that drawing it twice names one fingerprint
        invoice = Invoice.parse(
            debtor=debtor,
            invoice_number=data.draw(st.sampled_from(entry.spellings), label="spelling"),
            face_value=amount,
            currency=data.draw(st.sampled_from(entry.currency_spellings), label="currency"),
            issue_date=self.start + entry.issue_in_days * DAY,
            due_date=due,
            document_hash=keccak(text=f"document {data.draw(st.integers(0, 3), label='document')}"),
        )
        line = InvoiceLine(debtor, entry.number, entry.currency, face_value, invoice.issue_date, due)
        self.learn(line.key, invoice.key, self.key_bytes)
        self.learn(line.fingerprint, invoice.fingerprint, self.fingerprint_bytes)
        return invoice, line

    def learn(self, model_value: Hashable, chain_value: bytes, table: dict[Hashable, bytes]) -> None:
        """Records the model's and the chain's name of one key or fingerprint: the spec's notion of
        "the same invoice" and the normalised hashes must coincide, both ways."""
        known = table.setdefault(model_value, chain_value)
        assert known == chain_value, f"two spellings of {model_value} hash differently"
        owner = self.model_of_bytes.setdefault(chain_value, model_value)
        assert owner == model_value, f"{owner} and {model_value} hash alike"

    def receivable_id(self, data: st.DataObject, statuses: frozenset[Status] | set[Status]) -> int:
        """Mostly a receivable in one of ``statuses``; else any, or one that does not exist."""
        ids = sorted(self.model.receivables)
        suitable = [i for i in ids if self.model.receivables[i].status in statuses]
        return pick(data, suitable, [*ids, 0, self.model.count + 1], "id")

    def claim_id(self, data: st.DataObject) -> int:
        ids = sorted(self.model.claims)
        pending = [i for i in ids if self.model.claims[i].status is ClaimStatus.PENDING]
        return pick(data, pending, [*ids, 0, len(ids) + 1], "claim")

    def caller(self, data: st.DataObject, right: int | None) -> int:
        """Mostly the party entitled to act; else anyone."""
        return pick(data, [right] if right else [], self.entities, "caller")

    def amount(self, data: st.DataObject, unpaid: int) -> int:
        """Mostly a payable amount; else zero or more than the unpaid balance."""
        payable = [unpaid, max(unpaid // 2, 1), 1, data.draw(st.integers(1, max(unpaid, 1)), label="any amount")]
        return pick(data, payable, [0, unpaid + 1], "amount")

    def split_amounts(self, data: st.DataObject, unpaid: int) -> list[int]:
        """Mostly parts that add up to ``unpaid``; else one too many or too few, a single part, a zero
        part, or more parts than allowed."""
        kind = pick(data, ["exact"], ["one more", "one less", "single", "zero part", "too many"], "split")
        if kind == "single":
            return [unpaid]
        if kind == "zero part":
            return [0, unpaid]
        if kind == "too many":
            return [1] * 32 + [max(unpaid - 32, 1)]
        parts = data.draw(st.integers(2, 4), label="parts")
        if unpaid < parts:
            return [unpaid, 0]
        cuts = sorted(data.draw(st.sets(st.integers(1, unpaid - 1), min_size=parts - 1, max_size=parts - 1)))
        amounts = [b - a for a, b in zip([0, *cuts], [*cuts, unpaid], strict=True)]
        if kind == "one more":
            amounts[-1] += 1
        elif kind == "one less":
            amounts[-1] -= 1
        return amounts

    # ------------------------------------------------------------------ start, and the invariants

    @initialize(data=st.data())
    def start_with_some_invoices(self, data: st.DataObject) -> None:
        """A few registrations up front, so that the steps go deeper into the lifecycle."""
        assert self.registry.receivable_count() == 0, "the machine expects a registry without receivables"
        for _ in range(data.draw(st.integers(0, 3), label="initial registrations")):
            caller = pick(data, self.creditors, self.entities, "creditor")
            self.op_register(caller, *self.invoice(data))

    @invariant()
    def chain_agrees_with_model(self) -> None:
        self.model.check_invariants()
        self.fold_new_logs()
        state = self.read_chain()
        self.check_receivables(state)
        self.check_duplicate_indexes(state)
        self.check_payments_and_splits(state)
        self.check_terminal_states_frozen(state)

    def fold_new_logs(self) -> None:
        """The ledger hash recomputed from the logs (only those new since the last step) equals the
        contract's; and what the logs say about registrations, payments and splits is remembered."""
        block = self.chain.block_number()
        if block > self.last_block:
            events = self.chain.decode_logs(self.chain.get_logs(self.registry.address, self.last_block + 1, block))
            self.ledger_state = replay(events, start=LedgerState(self.ledger_state.head, self.ledger_state.count))
            self.last_block = block
            for e in events:
                if e.name == "ReceivableRegistered":
                    self.registered_in_logs[e.args["id"]] = (
                        e.args["invoiceKey"],
                        e.args["fingerprint"],
                        e.args["supersedes"],
                    )
                elif e.name == "PaymentRecorded":
                    self.paid_in_logs[e.args["id"]] += e.args["amount"]
                    assert e.args["paidTotal"] == self.paid_in_logs[e.args["id"]], e
                elif e.name == "ReceivableSplit":
                    self.splits_in_logs[e.args["id"]] = (list(e.args["partIds"]), list(e.args["amounts"]))
        head, count = self.registry.ledger()
        assert (self.ledger_state.head, self.ledger_state.count) == (head, count), "ledger hash != replay of logs"

    def read_chain(self) -> ChainView:
        """Every receivable, claim and duplicate-index entry the test knows of, in one RPC batch."""
        ids = sorted(self.model.receivables)
        claim_ids = sorted(self.model.claims)
        keys = sorted(set(self.key_bytes.values()) | {k for k, _, _ in self.registered_in_logs.values()})
        fingerprints = sorted(
            set(self.fingerprint_bytes.values()) | {f for _, f, _ in self.registered_in_logs.values()}
        )
        calls: list[tuple[str, tuple[Any, ...]]] = [("receivableCount", ())]
        calls += [("getReceivable", (i,)) for i in ids]
        calls += [("payeeOfRecord", (i,)) for i in ids]
        calls += [("parentOf", (i,)) for i in ids]
        calls += [("getPaymentClaim", (c,)) for c in claim_ids]
        calls += [("receivableIdByInvoiceKey", (k,)) for k in keys]
        calls += [("receivableIdByFingerprint", (f,)) for f in fingerprints]
        answers = iter(self.call_many(calls))
        count = next(answers)[0]
        receivables = {i: next(answers)[0] for i in ids}
        payees = {i: next(answers)[0] for i in ids}
        parents = {i: next(answers)[0] for i in ids}
        claims = {c: next(answers)[0] for c in claim_ids}
        by_key = {k: next(answers)[0] for k in keys}
        by_fingerprint = {f: next(answers)[0] for f in fingerprints}
        return ChainView(count, receivables, payees, parents, claims, by_key, by_fingerprint)

    def call_many(self, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
        abi, to = self.registry.abi, self.registry.address
        requests = [
            ("eth_call", [{"to": to, "data": "0x" + abi.encode_call(fn, args).hex()}, "latest"]) for fn, args in calls
        ]
        answers = self.chain.rpc.batch(requests)
        out = []
        for (fn, _), answer in zip(calls, answers, strict=True):
            if isinstance(answer, Exception):
                raise answer
            out.append(abi.decode_output(fn, bytes.fromhex(answer[2:])))
        return out

    def check_receivables(self, chain: ChainView) -> None:
        assert chain.count == self.model.count, "receivableCount"
        for id, r in self.model.receivables.items():
            creditor, debtor, holder, status, recourse, due, face, paid = chain.receivables[id]
            actual = (creditor, debtor, holder, Status(status), bool(recourse), due, face, paid)
            assert actual == r.state(), f"receivable {id}: chain {actual} != model {r.state()}"
            assert chain.payees[id] == holder, f"receivable {id}: payee of record is not the holder"
            assert chain.parents[id] == r.parent, f"receivable {id}: parent"
        for claim_id, claim in self.model.claims.items():
            receivable_id, payee, status, amount = chain.claims[claim_id]
            actual_claim = (receivable_id, payee, ClaimStatus(status), amount)
            assert actual_claim == claim.state(), f"claim {claim_id}: chain {actual_claim} != model {claim.state()}"

    def check_duplicate_indexes(self, chain: ChainView) -> None:
        """No invoice key or fingerprint is held by two live registrations, on the chain (from its own
        logs) or in the model; and the chain's indexes name the registration the model names."""
        for model_key, key in self.key_bytes.items():
            assert chain.by_key[key] == self.model.id_by_key.get(model_key, 0), f"index of key {model_key}"
        for model_fp, fp in self.fingerprint_bytes.items():
            assert chain.by_fingerprint[fp] == self.model.id_by_fingerprint.get(model_fp, 0), f"index of {model_fp}"
        live_by_key: dict[bytes, list[int]] = defaultdict(list)
        live_by_fingerprint: dict[bytes, list[int]] = defaultdict(list)
        for id, (key, fingerprint, supersedes) in self.registered_in_logs.items():
            assert supersedes == self.model.receivables[id].supersedes, f"receivable {id}: supersedes"
            if Status(chain.receivables[id][3]) is not Status.CANCELLED:
                live_by_key[key].append(id)
                live_by_fingerprint[fingerprint].append(id)
        for key, holders in live_by_key.items():
            assert len(holders) == 1, f"invoice key 0x{key.hex()} held by live registrations {holders}"
            assert chain.by_key[key] == holders[0]
        for fingerprint, holders in live_by_fingerprint.items():
            assert len(holders) == 1, f"fingerprint 0x{fingerprint.hex()} held by live registrations {holders}"
            assert chain.by_fingerprint[fingerprint] == holders[0]

    def check_payments_and_splits(self, chain: ChainView) -> None:
        for id, (*_, face, paid) in chain.receivables.items():
            assert paid <= face, f"receivable {id}: paid {paid} > face value {face}"
            assert paid == self.paid_in_logs.get(id, 0), f"receivable {id}: paid != sum of PaymentRecorded"
        for parent, (part_ids, amounts) in self.splits_in_logs.items():
            *_, face, paid = chain.receivables[parent]
            assert sum(amounts) == face - paid == self.model.receivables[parent].unpaid_at_split, f"split of {parent}"
            for part, amount in zip(part_ids, amounts, strict=True):
                assert chain.receivables[part][6] == amount and chain.parents[part] == parent, f"part {part}"

    def check_terminal_states_frozen(self, chain: ChainView) -> None:
        for id, state in chain.receivables.items():
            if id in self.frozen:
                assert state == self.frozen[id], f"terminal receivable {id} changed: {self.frozen[id]} -> {state}"
            elif Status(state[3]) in TERMINAL:
                self.frozen[id] = state


@dataclass(frozen=True)
class ChainView:
    count: int
    receivables: dict[int, tuple[Any, ...]]
    payees: dict[int, int]
    parents: dict[int, int]
    claims: dict[int, tuple[Any, ...]]
    by_key: dict[bytes, int]
    by_fingerprint: dict[bytes, int]


def assert_same_refusal(refused: Refused, error: ContractRevert) -> None:
    assert error.error_name == refused.name, f"model: {refused}; chain: {error}"
    for field, value in refused.fields.items():
        assert error.fields.get(field) == value, f"model: {refused}; chain: {error} ({field})"


CORE_OPERATIONS = ("register", "confirm", "assign", "split", "record_payment", "declare_default")

LIFECYCLE_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    # The same 40 runs every time: whether random runs get deep enough for the coverage check below is
    # chance (a fresh-clone run on 2026-11-30 saw a single confirmation succeed, so no assignment, split or
    # default), and a red CI run must mean a broken contract or model, not an unlucky seed.
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_contract_follows_the_lifecycle_model(
    registry: RegistryClient, consortium: Consortium, chain_state: ChainState
) -> None:
    outcomes: Counter[str] = Counter()
    run_state_machine_as_test(
        lambda: LifecycleMachine(registry, consortium, chain_state, outcomes), settings=LIFECYCLE_SETTINGS
    )
    # Model and chain agreeing that everything reverts would pass vacuously: the run must have got deep.
    missing = {f"{op}: ok" for op in CORE_OPERATIONS} - outcomes.keys()
    assert not missing, f"the run never succeeded at {sorted(missing)}; outcomes: {dict(outcomes)}"
