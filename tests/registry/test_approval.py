"""Auto-approval within limits (registry/approval.py): the rules one by one, and the offer desk on a live
chain and mirror (SQLite and PostgreSQL): accepted offers are assigned on-chain without a person,
others are queued with their reasons, every decision is recorded, and two simultaneous offers cannot
together exceed a limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_utils.crypto import keccak
from sqlalchemy import insert, select

from registry.approval import (
    RULES,
    Facts,
    OfferDesk,
    OfferedAssignment,
    OfferError,
    Policy,
    evaluate,
)
from registry.chain.contract import ZERO32, RegistryClient, SignedRequest
from registry.chain.reverts import ContractRevert
from registry.checks import DuplicateChecker
from registry.demo import DAY, Consortium, Member
from registry.domain import Status
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.invoice import Invoice
from registry.relay import Relayer, RelayError
from registry.store.db import make_engine
from registry.store.models import AnomalyFlag, Offer, OfferDecision, table_of
from tests.conftest import ChainState

# ---------------------------------------------------------------------------------------- the rules, pure

NOW = 1_800_000_000
OFFER = OfferedAssignment(
    receivable_id=7,
    factor=6,
    advance=80_000_00,
    recourse=False,
    terms_hash=ZERO32,
    signer="0x" + "11" * 20,
    deadline=NOW + 600,
    digest=b"\x01" * 32,
)
FACTS = Facts(
    status=Status.CONFIRMED,
    creditor=2,
    debtor=4,
    holder=2,
    face_value=100_000_00,
    paid=0,
    currency="CNY",
    due_date=NOW + 60 * DAY,
    now=NOW,
    debtor_exposure=0,
    total_exposure=0,
)
GENEROUS = {
    "enabled": True,
    "currencies": ["CNY"],
    "confirmed_only": True,
    "max_amount": {"CNY": "1,000,000.00"},
    "max_tenor_days": 90,
    "min_advance_rate": "0.5",
    "max_advance_rate": 0.9,
    "debtor_limit": {"CNY": "500,000.00"},
    "total_limit": {"CNY": "2,000,000.00"},
}


def _policy(**changes: Any) -> Policy:
    return Policy.parse(6, {**GENEROUS, **changes}, version=1)


def _failed(decision: Any) -> set[str]:
    return {r.rule for r in decision.rules if not r.ok}


def test_an_offer_within_every_limit_is_accepted_and_every_rule_is_reported() -> None:
    decision = evaluate(OFFER, _policy(), FACTS)
    assert decision.accepted and decision.rule == "all_rules_met"
    assert [r.rule for r in decision.rules] == list(RULES)
    assert all(r.ok and r.detail for r in decision.rules)


@pytest.mark.parametrize(
    ("changes", "facts", "rule"),
    [
        ({"enabled": False}, {}, "policy_enabled"),
        ({"currencies": ["USD"]}, {}, "currency"),
        ({}, {"status": Status.ASSIGNED, "holder": 5}, "confirmed_only"),
        ({}, {"paid": 1}, "confirmed_only"),
        ({"max_amount": {"CNY": "99,999.99"}}, {}, "max_amount"),
        ({"max_amount": {"USD": "1,000,000.00"}}, {}, "max_amount"),  # no limit agreed for CNY
        ({"max_tenor_days": 59}, {}, "max_tenor"),
        ({"min_advance_rate": "0.81"}, {}, "advance_rate"),
        ({"max_advance_rate": "0.79"}, {}, "advance_rate"),
        ({}, {"debtor_exposure": 400_000_01}, "debtor_exposure"),
        ({"debtor_limits": {"4": {"CNY": "99,999.99"}}}, {}, "debtor_exposure"),  # a per-debtor override
        ({}, {"total_exposure": 1_900_000_01}, "total_exposure"),
        ({}, {"anomaly_flags": ("AMOUNT_OUTLIER (high): far above the debtor's history",)}, "no_anomaly_flag"),
        ({}, {"near_duplicates": ("SAME_DEBTOR_AMOUNT_DUE_DATE (high): receivable(s) 3",)}, "no_near_duplicate"),
    ],
)
def test_each_rule_alone_queues_the_offer_and_names_itself(
    changes: dict[str, Any], facts: dict[str, Any], rule: str
) -> None:
    decision = evaluate(OFFER, _policy(**changes), replace(FACTS, **facts))
    assert not decision.accepted
    assert _failed(decision) == {rule} and decision.rule == rule
    assert decision.reasons and decision.reasons[0].startswith(rule)


def test_limits_are_inclusive_and_exposure_counts_the_offer_itself() -> None:
    # 400,000.00 held + 100,000.00 offered = exactly the 500,000.00 limit: accepted; one fen more is not.
    assert evaluate(OFFER, _policy(), replace(FACTS, debtor_exposure=400_000_00)).accepted
    assert not evaluate(OFFER, _policy(), replace(FACTS, debtor_exposure=400_000_01)).accepted
    # 80% advance against bounds of exactly 80%.
    assert evaluate(OFFER, _policy(min_advance_rate="0.8", max_advance_rate="0.8"), FACTS).accepted


def test_no_policy_or_optional_rules_off() -> None:
    decision = evaluate(OFFER, None, FACTS)
    assert not decision.accepted and decision.rule == "policy_enabled"
    relaxed = Policy.parse(6, {"enabled": True, "confirmed_only": False}, version=1)
    assert evaluate(OFFER, relaxed, replace(FACTS, status=Status.PARTIALLY_PAID, paid=5)).accepted


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"enabeld": True}, "enabeld"),
        ({"enabled": "yes"}, "enabled"),
        ({"currencies": ["XXY"]}, "currencies.0"),
        ({"max_amount": {"CNY": 1.5}}, "max_amount.CNY"),
        ({"max_amount": {"CNY": "1.001"}}, "max_amount.CNY"),  # finer than the fen
        ({"max_amount": ["CNY", 1]}, "max_amount"),
        ({"max_tenor_days": 0}, "max_tenor_days"),
        ({"min_advance_rate": "1.5"}, "min_advance_rate"),
        ({"min_advance_rate": "0.12345"}, "min_advance_rate"),
        ({"min_advance_rate": "0.9", "max_advance_rate": "0.8"}, "min_advance_rate"),
        ({"debtor_limits": {"debtor four": {"CNY": 1}}}, "debtor_limits.debtor four"),
    ],
)
def test_a_bad_policy_field_is_named(body: dict[str, Any], field: str) -> None:
    with pytest.raises(OfferError) as caught:
        Policy.parse(6, body)
    assert caught.value.field == field and caught.value.status == 422


def test_policy_json_round_trip() -> None:
    policy = _policy(debtor_limits={"4": {"cny": "10.00"}})
    assert policy.max_amount == {"CNY": 1_000_000_00} and policy.debtor_limits == {4: {"CNY": 10_00}}
    assert policy.min_advance_bps == 5_000 and policy.max_advance_bps == 9_000
    again = Policy.parse(6, policy.to_json(), version=1)
    assert again == policy
    assert policy.to_json()["min_advance_rate"] == "0.5"


# ---------------------------------------------------------------------------------------- the desk, live


@dataclass
class Desk:
    desk: OfferDesk
    registry: RegistryClient
    consortium: Consortium
    chain_state: ChainState
    indexer: Indexer

    def confirmed(
        self, creditor: Member, debtor: Member, amount: str = "100,000.00", due_in_days: int = 60, currency: str = "CNY"
    ) -> tuple[int, Invoice]:
        now = self.chain_state.now()
        invoice = Invoice.parse(
            debtor=debtor.entity,
            invoice_number=f"AUTO-{time.monotonic_ns()}",
            face_value=amount,
            currency=currency,
            issue_date=now - DAY,
            due_date=now + due_in_days * DAY,
        )
        rid = self.registry.register(creditor.account, invoice)
        self.registry.confirm(debtor.account, rid, invoice.fingerprint)
        return rid, invoice

    def offer(self, holder: Member, rid: int, factor: Member, advance: int, nonce: int | None = None) -> SignedRequest:
        deadline = max(int(time.time()), self.chain_state.now()) + 600
        return self.registry.sign_request(
            holder.account,
            "assign",
            rid,
            factor.entity,
            advance,
            False,
            keccak(text=f"terms {rid}"),
            deadline=deadline,
            nonce=nonce,
        )

    def set_policy(self, factor: Member, **changes: Any) -> Policy:
        return self.desk.set_policy(factor.entity, {**GENEROUS, **changes}, factor.address)


@pytest.fixture
def desk(
    registry: RegistryClient, consortium: Consortium, chain_state: ChainState, database_url: str
) -> Iterator[Desk]:
    engine = make_engine(database_url)
    indexer = Indexer(registry.chain, registry.deployment, engine, IndexerConfig(poll_interval=0.02))
    indexer.start()  # migrates
    indexer.sync()
    thread = threading.Thread(target=indexer.run, daemon=True)
    thread.start()
    relayer = Relayer(registry, engine, consortium.relayer)
    try:
        yield Desk(
            OfferDesk(registry, engine, relayer, DuplicateChecker(engine)), registry, consortium, chain_state, indexer
        )
    finally:
        indexer.stop()
        thread.join(10)
        indexer.close()
        engine.dispose()


def _decisions(desk: OfferDesk, offer_id: int) -> list[dict[str, Any]]:
    t = table_of(OfferDecision)
    with desk.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).where(t.c.offer_id == offer_id).order_by(t.c.id)).mappings()]


def test_an_eligible_offer_is_assigned_on_chain_without_a_person(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    view = desk.desk.submit(desk.offer(creditor, rid, factor, invoice.face_value * 8 // 10))
    assert view.state == "assigned", view
    assert view.rule == "all_rules_met" and all(r["ok"] for r in view.rules)
    assert view.tx_hash and view.block_number
    state = desk.registry.get_receivable(rid)
    assert state.holder == factor.entity and state.status is Status.ASSIGNED
    outcomes = [(d["actor"], d["outcome"], d["rule"]) for d in view.decisions]
    assert outcomes == [("policy", "accepted", "all_rules_met"), ("relayer", "assigned", "relay")]
    assert view.holder == creditor.entity and view.amount == invoice.face_value


def test_resubmitting_the_same_signed_offer_returns_the_same_offer(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    request = desk.offer(creditor, rid, factor, invoice.face_value * 6 // 10)
    first = desk.desk.submit(request)
    second = desk.desk.submit(request)
    assert first.id == second.id and second.state == "assigned"
    assert len(_decisions(desk.desk, first.id)) == 2


def test_an_offer_outside_the_policy_is_queued_with_reasons_then_accepted_by_hand(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor, max_amount={"CNY": "50,000.00"}, max_tenor_days=30)
    rid, invoice = desk.confirmed(creditor, debtor)
    view = desk.desk.submit(desk.offer(creditor, rid, factor, invoice.face_value * 8 // 10))
    assert view.state == "queued" and view.rule == "max_amount"
    assert {r["rule"] for r in view.rules if not r["ok"]} == {"max_amount", "max_tenor"}
    assert desk.registry.get_receivable(rid).holder == creditor.entity  # nothing relayed
    # Only the factor it was offered to decides it.
    with pytest.raises(OfferError) as caught:
        desk.desk.accept(view.id, desk.consortium.factors[1].entity, desk.consortium.factors[1].address)
    assert caught.value.status == 404
    accepted = desk.desk.accept(view.id, factor.entity, factor.address)
    assert accepted.state == "assigned" and accepted.rule == "manual"
    assert desk.registry.get_receivable(rid).holder == factor.entity
    manual = accepted.decisions[1]
    assert manual["actor"] == factor.address and manual["rule"] == "manual" and "max_amount" in manual["detail"]
    with pytest.raises(OfferError) as twice:
        desk.desk.accept(view.id, factor.entity, factor.address)
    assert twice.value.code == "offer.not_queued"


def test_a_queued_offer_can_be_declined_and_stays_unrelayed(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    rid, _ = desk.confirmed(creditor, debtor)  # no policy: queued
    view = desk.desk.submit(desk.offer(creditor, rid, factor, 1))
    assert view.state == "queued" and view.rule == "policy_enabled"
    declined = desk.desk.decline(view.id, factor.entity, factor.address, "terms not agreed")
    assert declined.state == "declined" and declined.decisions[-1]["detail"] == "terms not agreed"
    assert desk.registry.get_receivable(rid).holder == creditor.entity


def test_a_queued_offer_whose_nonce_the_holder_spent_fails_on_acceptance_and_says_why(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    rid, invoice = desk.confirmed(creditor, debtor)
    view = desk.desk.submit(desk.offer(creditor, rid, factor, 1))
    # The creditor signs something else, which is relayed first: the offer's nonce is spent.
    other = desk.registry.register(
        creditor.account,
        Invoice.parse(
            debtor=debtor.entity,
            invoice_number=f"N-{time.monotonic_ns()}",
            face_value="1.00",
            currency="CNY",
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
        ),
    )
    desk.registry.relay(desk.consortium.relayer, desk.registry.sign_request(creditor.account, "cancel", other))
    with pytest.raises(RelayError):
        desk.desk.accept(view.id, factor.entity, factor.address)
    failed = desk.desk.get(view.id)
    assert failed.state == "failed" and failed.error and failed.decisions[-1]["outcome"] == "failed"


def test_offers_that_are_not_the_holders_assign_are_refused_and_nothing_is_stored(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    rid, _ = desk.confirmed(creditor, debtor)
    with pytest.raises(OfferError) as not_assign:
        desk.desk.submit(desk.registry.sign_request(creditor.account, "cancel", rid, gas=200_000))
    assert not_assign.value.code == "offer.not_assign"
    other = desk.consortium.creditors[1]
    with pytest.raises(ContractRevert) as not_holder:  # the contract's own check, by simulation
        desk.desk.submit(
            desk.registry.sign_request(other.account, "assign", rid, factor.entity, 1, False, ZERO32, gas=300_000)
        )
    assert not_holder.value.error_name == "NotHolder"
    with desk.desk.engine.connect() as conn:
        assert conn.execute(select(table_of(Offer).c.id)).first() is None


def test_near_duplicates_and_anomaly_flags_queue_the_offer(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    twin = Invoice.parse(
        debtor=debtor.entity,
        invoice_number="TWIN-" + invoice.invoice_number,
        face_value=invoice.face_value,
        currency="CNY",
        issue_date=invoice.issue_date,
        due_date=invoice.due_date,
    )
    desk.registry.register(desk.consortium.creditors[1].account, twin)
    view = desk.desk.submit(desk.offer(creditor, rid, factor, invoice.face_value * 8 // 10))
    assert view.state == "queued" and view.rule == "no_near_duplicate", view.rules

    rid2, invoice2 = desk.confirmed(creditor, debtor, amount="123,456.78")
    with desk.desk.engine.begin() as conn:
        conn.execute(
            insert(table_of(AnomalyFlag)).values(
                kind="amount_outlier",
                receivable_id=rid2,
                severity="high",
                score=9.0,
                reason="far above history",
                evidence_block=1,
                raised_block=1,
                state="open",
                raised_at=time.time(),
            )
        )
    flagged = desk.desk.submit(desk.offer(creditor, rid2, factor, invoice2.face_value * 8 // 10))
    assert flagged.state == "queued" and flagged.rule == "no_anomaly_flag"
    assert "far above history" in next(r["detail"] for r in flagged.rules if r["rule"] == "no_anomaly_flag")


def test_exposure_counts_what_the_factor_already_holds(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor, debtor_limit={"CNY": "150,000.00"})
    first, _ = desk.confirmed(creditor, debtor)
    assert desk.desk.submit(desk.offer(creditor, first, factor, 80_000_00)).state == "assigned"
    second, _ = desk.confirmed(creditor, debtor, amount="60,000.00")
    view = desk.desk.submit(desk.offer(creditor, second, factor, 50_000_00))
    assert view.state == "queued" and view.rule == "debtor_exposure"
    detail = next(r["detail"] for r in view.rules if r["rule"] == "debtor_exposure")
    assert "160000.00 CNY" in detail and "150000.00 CNY" in detail
    # Another debtor is a separate limit.
    third, _ = desk.confirmed(creditor, desk.consortium.debtors[1], amount="60,000.00")
    assert desk.desk.submit(desk.offer(creditor, third, factor, 50_000_00)).state == "assigned"


TRIALS = 5


def test_two_simultaneous_offers_cannot_together_exceed_a_limit(desk: Desk) -> None:
    """Two holders offer to one factor at the same instant; each offer fits the limit alone, both do not.
    Exactly one is assigned, the other queued on the exposure rule, every trial."""
    creditors, debtor, factor = desk.consortium.creditors[:2], desk.consortium.debtors[0], desk.consortium.factors[0]
    outcomes: list[tuple[str, str]] = []
    with ThreadPoolExecutor(2) as pool:
        for trial in range(TRIALS):
            held = (trial * 2) * 100_000_00  # what earlier trials assigned
            desk.set_policy(factor, debtor_limit={"CNY": f"{(held + 150_000_00) // 100}.00"})
            offers = []
            for i, creditor in enumerate(creditors):  # due dates differ: not near-duplicates of each other
                rid, invoice = desk.confirmed(creditor, debtor, due_in_days=60 + 2 * trial + i)
                offers.append(desk.offer(creditor, rid, factor, invoice.face_value * 7 // 10))
            barrier = threading.Barrier(2)

            def go(request: SignedRequest, barrier: threading.Barrier = barrier) -> Any:
                barrier.wait()
                return desk.desk.submit(request)

            views = list(pool.map(go, offers))
            states = sorted(v.state for v in views)
            assert states == ["assigned", "queued"], (trial, [[r for r in v.rules if not r["ok"]] for v in views])
            queued = next(v for v in views if v.state == "queued")
            assert queued.rule == "debtor_exposure"
            outcomes.append((views[0].state, views[1].state))
            # Let the next trial's limit count both: the queued one is accepted by hand (over the limit).
            desk.desk.accept(queued.id, factor.entity, factor.address)
    assert len(outcomes) == TRIALS


def test_the_same_offer_submitted_twice_at_once_is_one_offer_and_one_transaction(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    request = desk.offer(creditor, rid, factor, invoice.face_value * 8 // 10)
    barrier = threading.Barrier(2)

    def go(_: int) -> Any:
        barrier.wait()
        return desk.desk.submit(request)

    with ThreadPoolExecutor(2) as pool:
        views = list(pool.map(go, range(2)))
    assert views[0].id == views[1].id
    final = desk.desk.get(views[0].id)
    assert final.state == "assigned"
    assert [d["outcome"] for d in final.decisions] == ["accepted", "assigned"]
    with desk.desk.engine.connect() as conn:
        assert len(conn.execute(select(table_of(Offer).c.id)).all()) == 1


def test_an_offer_submitted_again_while_its_twin_was_relayed_is_that_offer(desk: Desk) -> None:
    """The race behind the test above, made certain: the second submission finds no offer with its digest,
    then the first is decided, relayed and indexed (nonce used, the factor the holder now) before the
    second checks the request; that check fails, and the second submission is the first offer."""
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    request = desk.offer(creditor, rid, factor, invoice.face_value * 8 // 10)
    first = desk.desk.submit(request)
    assert first.state == "assigned"
    lookup = desk.desk._offer_by_digest
    calls: list[int] = []

    def not_yet_the_first_time(*args: Any) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else lookup(*args)

    desk.desk._offer_by_digest = not_yet_the_first_time  # type: ignore[method-assign]
    again = desk.desk.submit(request)
    assert again.id == first.id and again.state == "assigned" and len(calls) >= 2
    with desk.desk.engine.connect() as conn:
        assert len(conn.execute(select(table_of(Offer).c.id)).all()) == 1


def test_an_offer_accepted_but_not_relayed_before_a_crash_is_relayed_on_resume(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    view = desk.desk.submit(desk.offer(creditor, rid, factor, invoice.face_value // 2), relay=False)
    assert view.state == "accepted" and view.tx_hash is None  # the process "died" here
    assert desk.desk.resume() == [], "a just-decided offer is left to the request relaying it"
    [resumed] = desk.desk.resume(settle_seconds=0)
    assert resumed.id == view.id and resumed.state == "assigned" and resumed.tx_hash
    assert desk.registry.get_receivable(rid).holder == factor.entity
    assert desk.desk.resume(settle_seconds=0) == [], "nothing left to resume"


def test_an_offer_relayed_just_before_a_crash_is_recognised_not_sent_again(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    request = desk.offer(creditor, rid, factor, invoice.face_value // 2)
    view = desk.desk.submit(request, relay=False)
    sent = desk.desk.relayer.submit(request, "assign", wait_indexed=0)  # relayed; the offer row never heard
    [resumed] = desk.desk.resume(settle_seconds=0)
    assert resumed.id == view.id and resumed.state == "assigned"
    assert resumed.tx_hash == sent.tx_hash, "the same transaction, not a second one"


def test_an_accepted_offer_past_its_deadline_expires_on_resume(desk: Desk) -> None:
    creditor, debtor, factor = desk.consortium.creditors[0], desk.consortium.debtors[0], desk.consortium.factors[0]
    desk.set_policy(factor)
    rid, invoice = desk.confirmed(creditor, debtor)
    request = desk.offer(creditor, rid, factor, invoice.face_value // 2)
    view = desk.desk.submit(request, relay=False)
    [resumed] = desk.desk.resume(settle_seconds=0, now=request.deadline + 1)
    assert resumed.id == view.id and resumed.state == "expired"
    assert [d["outcome"] for d in resumed.decisions][-1] == "expired"
    assert desk.registry.get_receivable(rid).holder == creditor.entity, "nothing was relayed"
