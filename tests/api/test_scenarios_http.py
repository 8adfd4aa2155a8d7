"""The scenarios a factoring expert tries (DOMAIN.md, 1 to 11), end to end through HTTP only.

Every party signs in with its own key and signs its own requests (EIP-712, ``registry.sign_request``);
the API relays them (``POST /actions/...``), reads come from ``GET`` and double-financing answers from
``/checks`` and ``/checks/bulk``. A refusal is a problem+json document naming the contract's error.
Requests the contract will refuse are signed with an explicit gas limit: ``sign_request`` otherwise
simulates first and would refuse to sign them at all.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from eth_utils.crypto import keccak
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from api.deps import Services
from api.routes.core import ACTIONS
from registry.chain.contract import RegistryClient, SignedRequest
from registry.demo import DAY, Consortium, Member
from registry.domain import DisputeReason, Status
from registry.invoice import Invoice
from registry.settings import Settings
from registry.types import ReceivableId
from tests.api.conftest import Login
from tests.conftest import ChainState

REFUSED_GAS = 1_500_000  # for requests the contract refuses (no simulation before signing)
_serial = iter(range(1, 10**9))


# ---------------------------------------------------------------------------------------- helpers


def body_of(request: SignedRequest) -> dict[str, Any]:
    """The JSON body of ``POST /actions/...`` for a signed request."""
    return {
        "from": request.sender,
        "to": request.to,
        "value": request.value,
        "gas": request.gas,
        "nonce": request.nonce,
        "deadline": request.deadline,
        "data": "0x" + request.data.hex(),
        "signature": "0x" + request.signature.hex(),
    }


@dataclass(frozen=True)
class Paper:
    """An invoice as its holder would type it: the text the API's /checks takes, and its parsed form."""

    debtor: int
    number: str
    amount: str
    issue: str
    due: str
    currency: str = "CNY"

    @property
    def invoice(self) -> Invoice:
        return Invoice.parse(
            debtor=self.debtor,
            invoice_number=self.number,
            face_value=self.amount,
            currency=self.currency,
            issue_date=self.issue,
            due_date=self.due,
        )

    @property
    def fields(self) -> dict[str, Any]:
        return {
            "debtor": self.debtor,
            "invoice_number": self.number,
            "face_value": self.amount,
            "currency": self.currency,
            "issue_date": self.issue,
            "due_date": self.due,
        }


def day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


class Portal:
    """The API as the parties use it: each signs in with its key and signs its own requests."""

    def __init__(self, api: TestClient, login: Login, registry: RegistryClient, chain_state: ChainState) -> None:
        self.api = api
        self.registry = registry
        self.chain_state = chain_state
        self._login = login
        self._sessions: dict[str, dict[str, str]] = {}

    def headers(self, member: Member) -> dict[str, str]:
        if member.address not in self._sessions:
            self._sessions[member.address] = self._login(member.account)
        return self._sessions[member.address]

    def paper(self, debtor: Member, *, amount: str = "100,000.00", due_in_days: int = 60, number: str = "") -> Paper:
        now = self.chain_state.now()
        return Paper(
            debtor=debtor.entity,
            number=number or f"HTTP-{next(_serial):05d}-{time.monotonic_ns() % 10**6}",
            amount=amount,
            issue=day(now - 10 * DAY),
            due=day(now + due_in_days * DAY),
        )

    def sign(self, member: Member, action: str, *args: Any, gas: int | None = None) -> SignedRequest:
        # The forwarder checks the deadline against the chain's clock, the relayer against the wall clock.
        deadline = max(int(time.time()), self.chain_state.now()) + 600
        return self.registry.sign_request(member.account, ACTIONS[action], *args, gas=gas, deadline=deadline)

    def post(self, member: Member, action: str, *args: Any, gas: int | None = None) -> Response:
        request = self.sign(member, action, *args, gas=gas)
        answer: Response = self.api.post(f"/actions/{action}", json=body_of(request), headers=self.headers(member))
        return answer

    def act(self, member: Member, action: str, *args: Any) -> dict[str, Any]:
        """A request the contract accepts: relayed, mined and indexed."""
        answer = self.post(member, action, *args)
        assert answer.status_code == 200, f"{action}: {answer.text}"
        result: dict[str, Any] = answer.json()
        assert result["indexed"] is True
        return result

    def refused(self, member: Member, action: str, *args: Any, status: int, error: str) -> dict[str, Any]:
        """A request the contract refuses: a 4xx problem document naming the contract's error."""
        answer = self.post(member, action, *args, gas=REFUSED_GAS)
        assert answer.status_code == status, f"{action}: expected {status} {error}, got {answer.text}"
        assert answer.headers["content-type"].startswith("application/problem+json")
        problem: dict[str, Any] = answer.json()
        assert problem["code"] == f"contract.{error}" and problem["error"] == error, problem
        return problem

    def get(self, member: Member, path: str, **params: Any) -> dict[str, Any]:
        answer = self.api.get(path, params=params, headers=self.headers(member))
        assert answer.status_code == 200, f"GET {path}: {answer.text}"
        result: dict[str, Any] = answer.json()
        return result

    def check(self, member: Member, paper: Paper) -> dict[str, Any]:
        answer = self.api.post("/checks", json={"invoice": paper.fields}, headers=self.headers(member))
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def receivable(self, member: Member, rid: int) -> dict[str, Any]:
        receivable: dict[str, Any] = self.get(member, f"/receivables/{rid}")["receivable"]
        return receivable

    def wait_mirror(self, block: int | None = None, timeout: float = 20.0) -> None:
        """Until the API's mirror has indexed ``block`` (default: the chain's head)."""
        target = self.registry.chain.block_number() if block is None else block
        deadline = time.monotonic() + timeout
        while (self.api.get("/health").json()["indexed_block"] or 0) < target:
            assert time.monotonic() < deadline, f"the mirror did not reach block {target}"
            time.sleep(0.02)

    # --------------------------------------------------------------- lifecycle steps, each one request

    def register(self, creditor: Member, paper: Paper) -> int:
        result = self.act(creditor, "register", paper.invoice.as_contract_input())
        (registered,) = [e for e in result["events"] if e["name"] == "ReceivableRegistered"]
        return int(registered["args"]["id"])

    def confirmed(self, creditor: Member, debtor: Member, paper: Paper) -> int:
        rid = self.register(creditor, paper)
        self.act(debtor, "confirm", rid, paper.invoice.fingerprint)
        return rid

    def assign(self, holder: Member, rid: int, factor: Member, advance: int, *, recourse: bool = False) -> None:
        self.act(holder, "assign", rid, factor.entity, advance, recourse, keccak(text=f"terms {rid}"))

    def report_payment(self, debtor: Member, rid: int, paid_to: Member, amount: int) -> int:
        result = self.act(debtor, "report-payment", rid, paid_to.entity, amount, keccak(text=f"wire {rid}"))
        (reported,) = [e for e in result["events"] if e["name"] == "PaymentReported"]
        return int(reported["args"]["claimId"])


@pytest.fixture
def portal(api: TestClient, login: Login, registry: RegistryClient, chain_state: ChainState) -> Portal:
    return Portal(api, login, registry, chain_state)


def parties(consortium: Consortium) -> tuple[Member, Member, Member, Member]:
    """creditor, debtor, factor A, factor B."""
    return consortium.creditors[0], consortium.debtors[0], consortium.factors[0], consortium.factors[1]


# ================================================================== 1. the same invoice twice


def test_1_the_same_invoice_registered_again_is_refused_however_it_is_spelled_and_whoever_registers(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, _, _ = parties(consortium)
    other_creditor = consortium.creditors[1]
    original = portal.paper(debtor, number=f"INV-{next(_serial):04d}-77", amount="1,850,600.00")
    rid = portal.register(creditor, original)
    respelled = replace(original, number=original.number.lower().replace("-", " "))
    reformatted = replace(original, amount="1850600")
    other_amount = replace(original, amount="1,850,601.00")
    assert respelled.invoice.key == reformatted.invoice.key == original.invoice.key
    assert reformatted.invoice.fingerprint == original.invoice.fingerprint

    for who, paper in [
        (creditor, original),
        (creditor, respelled),
        (creditor, reformatted),
        (creditor, other_amount),  # the same number with another amount: the key (debtor + number) is taken
        (other_creditor, original),
        (other_creditor, respelled),
    ]:
        problem = portal.refused(
            who, "register", paper.invoice.as_contract_input(), status=409, error="InvoiceKeyTaken"
        )
        assert problem["fields"]["existingId"] == rid
        assert problem["fields"]["invoiceKey"] == "0x" + original.invoice.key.hex()

    # The batch route refuses the same lines the same way, line by line.
    result = portal.act(
        other_creditor, "register-batch", [p.invoice.as_contract_input() for p in (respelled, reformatted)]
    )
    assert [(line["line"], line["error"], line["fields"]["existingId"]) for line in result["line_outcomes"]] == [
        (0, "InvoiceKeyTaken", rid),
        (1, "InvoiceKeyTaken", rid),
    ]
    check = portal.check(consortium.factors[0], respelled)
    assert check["registered"] is True and check["receivable_id"] == rid and check["match"] == "fingerprint"
    auditor = consortium.auditors[0]
    assert portal.get(auditor, "/receivables", debtor=debtor.entity, creditor=other_creditor.entity)["items"] == []


# ================================================================== 2. a second factor


def test_2_factor_b_is_refused_after_factor_a_financed_and_learns_only_that_it_is_financed(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, factor_a, factor_b = parties(consortium)
    paper = portal.paper(debtor)
    rid = portal.confirmed(creditor, debtor, paper)
    before = portal.check(factor_b, paper)
    assert (before["registered"], before["status"], before["financed"]) == (True, "confirmed", False)

    portal.assign(creditor, rid, factor_a, paper.invoice.face_value * 9 // 10)

    seen_by_b = portal.check(
        factor_b, replace(paper, number=paper.number.lower(), amount=paper.amount.replace(",", ""))
    )
    assert seen_by_b["registered"] is True and seen_by_b["financed"] is True
    assert seen_by_b["status"] == "assigned" and seen_by_b["parties"] is None, "B is not told who financed it"
    key_check = portal.api.post(
        "/checks", json={"invoice_key": "0x" + paper.invoice.key.hex()}, headers=portal.headers(factor_b)
    ).json()
    assert key_check["financed"] is True and key_check["parties"] is None
    seen_by_a = portal.check(factor_a, paper)
    assert seen_by_a["financed"] is True and seen_by_a["parties"]["holder"] == factor_a.entity
    assert portal.api.get(f"/receivables/{rid}", headers=portal.headers(factor_b)).status_code == 404

    # Financing by B: the creditor no longer holds it, and it cannot be registered afresh.
    problem = portal.refused(
        creditor, "assign", rid, factor_b.entity, 1, False, bytes(32), status=403, error="NotHolder"
    )
    assert problem["fields"]["holder"] == factor_a.entity
    portal.refused(creditor, "register", paper.invoice.as_contract_input(), status=409, error="InvoiceKeyTaken")
    assert portal.receivable(debtor, rid)["holder"] == factor_a.entity


# ================================================================== 3. assignment in the wrong state


def test_3_assignment_after_settlement_after_cancellation_and_before_confirmation_is_refused(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, factor_a, factor_b = parties(consortium)
    assign_args = (factor_a.entity, 1_000, False, bytes(32))

    unconfirmed = portal.register(creditor, portal.paper(debtor))
    problem = portal.refused(creditor, "assign", unconfirmed, *assign_args, status=409, error="InvalidStatus")
    assert problem["fields"] == {"id": unconfirmed, "status": int(Status.REGISTERED)}

    cancelled = portal.register(creditor, portal.paper(debtor))
    portal.act(creditor, "cancel", cancelled)
    assert portal.receivable(creditor, cancelled)["status"] == "cancelled"
    portal.refused(creditor, "assign", cancelled, *assign_args, status=409, error="InvalidStatus")

    paper = portal.paper(debtor)
    settled = portal.confirmed(creditor, debtor, paper)
    portal.assign(creditor, settled, factor_a, paper.invoice.face_value // 2)
    portal.act(factor_a, "record-payment", settled, paper.invoice.face_value, keccak(text="paid in full"))
    assert portal.receivable(factor_a, settled)["status"] == "settled"
    problem = portal.refused(
        factor_a, "assign", settled, factor_b.entity, 1_000, False, bytes(32), status=409, error="InvalidStatus"
    )
    assert problem["fields"]["status"] == int(Status.SETTLED)


# ================================================================== 4. re-assignment


def test_4_reassignment_moves_the_debtors_payee_of_record_to_the_second_factor(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, factor_a, factor_b = parties(consortium)
    paper = portal.paper(debtor)
    rid = portal.confirmed(creditor, debtor, paper)
    payee = portal.get(debtor, f"/receivables/{rid}/payee")
    assert payee["payee_of_record"] == creditor.entity and payee["chain"] == []

    portal.assign(creditor, rid, factor_a, paper.invoice.face_value * 9 // 10)
    assert portal.get(debtor, f"/receivables/{rid}/payee")["payee_of_record"] == factor_a.entity
    portal.assign(factor_a, rid, factor_b, paper.invoice.face_value * 8 // 10)

    payee = portal.get(debtor, f"/receivables/{rid}/payee")
    assert payee["payee_of_record"] == factor_b.entity
    assert [(a["from_entity"], a["to_entity"]) for a in payee["chain"]] == [
        (creditor.entity, factor_a.entity),
        (factor_a.entity, factor_b.entity),
    ]
    assert all(a["advance"] is None for a in payee["chain"]), "the debtor does not see the factoring terms"
    seen_by_b = portal.get(factor_b, f"/receivables/{rid}/payee")["chain"]
    assert [a["advance"] is not None for a in seen_by_b] == [False, True], "B sees its own terms only"
    assert portal.registry.payee_of_record(ReceivableId(rid)) == factor_b.entity
    assert portal.receivable(factor_b, rid)["holder"] == factor_b.entity


# ================================================================== 5. who the debtor must pay


def test_5_paying_the_original_creditor_discharges_before_notice_and_not_after(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, factor_a, _ = parties(consortium)
    paper = portal.paper(debtor)
    face = paper.invoice.face_value
    rid = portal.confirmed(creditor, debtor, paper)

    # Before notice (no assignment): paying the creditor discharges the debtor for that amount.
    claim = portal.report_payment(debtor, rid, creditor, face // 4)
    portal.act(creditor, "acknowledge-payment", claim)
    paid = portal.receivable(debtor, rid)
    assert (paid["status"], paid["paid"], paid["unpaid"]) == ("partially_paid", face // 4, face - face // 4)

    # Notice: the assignment is registered on the ledger. Paying the creditor now does not discharge.
    portal.assign(creditor, rid, factor_a, face // 2)
    problem = portal.refused(
        debtor, "report-payment", rid, creditor.entity, face // 4, bytes(32), status=422, error="PayeeNotOfRecord"
    )
    assert problem["fields"] == {"id": rid, "paidTo": creditor.entity, "payeeOfRecord": factor_a.entity}
    assert portal.get(debtor, f"/receivables/{rid}/payee")["payee_of_record"] == factor_a.entity

    claim = portal.report_payment(debtor, rid, factor_a, face - face // 4)
    portal.refused(creditor, "acknowledge-payment", claim, status=403, error="NotPayeeOfClaim")
    portal.act(factor_a, "acknowledge-payment", claim)
    detail = portal.get(debtor, f"/receivables/{rid}")
    assert detail["receivable"]["status"] == "settled"
    assert [(p["payee"], p["amount"]) for p in detail["payments"]] == [
        (creditor.entity, face // 4),
        (factor_a.entity, face - face // 4),
    ]


# ================================================================== 6. split


def test_6_a_split_must_add_up_to_the_unpaid_balance_also_after_a_partial_payment(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, factor_a, factor_b = parties(consortium)
    paper = portal.paper(debtor, amount="100,000.00")
    face = paper.invoice.face_value
    rid = portal.confirmed(creditor, debtor, paper)

    problem = portal.refused(creditor, "split", rid, [face // 2, face // 3], status=422, error="SplitDoesNotConserve")
    assert problem["fields"] == {"id": rid, "sumOfParts": face // 2 + face // 3, "unpaid": face}
    portal.refused(creditor, "split", rid, [face // 2, face], status=422, error="SplitDoesNotConserve")

    portal.act(creditor, "record-payment", rid, face // 4, keccak(text="first instalment"))
    unpaid = face - face // 4
    problem = portal.refused(creditor, "split", rid, [face // 2, face // 2], status=422, error="SplitDoesNotConserve")
    assert problem["fields"]["unpaid"] == unpaid

    result = portal.act(creditor, "split", rid, [unpaid // 3, unpaid - unpaid // 3])
    (split,) = [e for e in result["events"] if e["name"] == "ReceivableSplit"]
    part_a, part_b = split["args"]["partIds"]
    detail = portal.get(creditor, f"/receivables/{rid}")
    assert detail["receivable"]["status"] == "split" and detail["parts"] == [part_a, part_b]
    before = portal.get(creditor, f"/receivables/{rid}", block=result["block"] - 1)  # as of the block before
    assert before["receivable"]["status"] == "partially_paid" and before["parts"] == [], before
    # As it stood then: the version then current was still open (its closing at the split is later).
    assert before["receivable"]["valid_to_block"] is None and before["versions"][-1]["valid_to_block"] is None
    assert [v["status"] for v in before["versions"]] == ["registered", "confirmed", "partially_paid"]
    assert portal.get(creditor, f"/receivables/{rid}", block=result["block"])["parts"] == [part_a, part_b]
    parts = [portal.receivable(creditor, p) for p in (part_a, part_b)]
    assert [(p["face_value"], p["status"], p["parent_id"]) for p in parts] == [
        (unpaid // 3, "confirmed", rid),
        (unpaid - unpaid // 3, "confirmed", rid),
    ]
    assert sum(p["face_value"] for p in parts) == unpaid

    # The parts are financed separately, each by its own factor.
    portal.assign(creditor, part_a, factor_a, unpaid // 3)
    portal.assign(creditor, part_b, factor_b, unpaid // 2)
    assert [portal.get(debtor, f"/receivables/{p}/payee")["payee_of_record"] for p in (part_a, part_b)] == [
        factor_a.entity,
        factor_b.entity,
    ]
    assert portal.check(consortium.factors[1], paper)["financed"] is True


# ================================================================== 7. confirmation


def test_7_only_the_debtor_of_record_confirms_and_it_cannot_dispute_after_confirming(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, factor_a, _ = parties(consortium)
    other_debtor = consortium.debtors[1]
    paper = portal.paper(debtor)
    rid = portal.register(creditor, paper)
    fingerprint = paper.invoice.fingerprint

    for impostor in (other_debtor, creditor, factor_a):
        problem = portal.refused(impostor, "confirm", rid, fingerprint, status=403, error="NotDebtorOfRecord")
        assert problem["fields"] == {"id": rid, "caller": impostor.entity}
    assert portal.receivable(creditor, rid)["status"] == "registered"
    portal.refused(debtor, "confirm", rid, keccak(text="other records"), status=422, error="FingerprintMismatch")

    portal.act(debtor, "confirm", rid, fingerprint)
    portal.assign(creditor, rid, factor_a, paper.invoice.face_value * 9 // 10)
    problem = portal.refused(
        debtor, "dispute", rid, int(DisputeReason.QUALITY_DEFECT), status=409, error="InvalidStatus"
    )
    assert problem["fields"]["status"] == int(Status.ASSIGNED)
    assert portal.receivable(factor_a, rid)["status"] == "assigned"


# ================================================================== 8. amounts and dates


def test_8_an_overpayment_and_a_due_date_already_past_are_refused(portal: Portal, consortium: Consortium) -> None:
    creditor, debtor, factor_a, _ = parties(consortium)
    paper = portal.paper(debtor)
    face = paper.invoice.face_value
    rid = portal.confirmed(creditor, debtor, paper)
    portal.assign(creditor, rid, factor_a, face // 2)
    portal.act(factor_a, "record-payment", rid, face // 2, bytes(32))

    problem = portal.refused(
        debtor, "report-payment", rid, factor_a.entity, face, bytes(32), status=422, error="PaymentExceedsBalance"
    )
    assert problem["fields"] == {"id": rid, "amount": face, "unpaid": face - face // 2}
    portal.refused(factor_a, "record-payment", rid, face // 2 + 1, bytes(32), status=422, error="PaymentExceedsBalance")
    assert portal.receivable(debtor, rid)["paid"] == face // 2

    past = portal.paper(debtor, due_in_days=-1)
    problem = portal.refused(creditor, "register", past.invoice.as_contract_input(), status=422, error="DueDateInPast")
    assert problem["fields"]["dueDate"] == past.invoice.due_date
    assert portal.check(creditor, past)["registered"] is False


# ================================================================== 9. maturity


def test_9_after_the_due_date_overdue_buy_back_under_recourse_and_default(
    portal: Portal, consortium: Consortium, chain_state: ChainState
) -> None:
    creditor, debtor, factor_a, _ = parties(consortium)
    with_recourse, without_recourse = portal.paper(debtor, due_in_days=30), portal.paper(debtor, due_in_days=30)
    r1 = portal.confirmed(creditor, debtor, with_recourse)
    r2 = portal.confirmed(creditor, debtor, without_recourse)
    portal.assign(creditor, r1, factor_a, with_recourse.invoice.face_value * 9 // 10, recourse=True)
    portal.assign(creditor, r2, factor_a, without_recourse.invoice.face_value * 9 // 10)

    problem = portal.refused(factor_a, "declare-default", r2, status=422, error="NotYetDue")
    assert problem["fields"]["dueDate"] == without_recourse.invoice.due_date
    assert {r1, r2}.isdisjoint(i["id"] for i in portal.get(factor_a, "/receivables", overdue="true")["items"])

    chain_state.advance(32 * DAY)
    portal.wait_mirror()
    overdue = {i["id"] for i in portal.get(factor_a, "/receivables", overdue="true", limit=200)["items"]}
    assert {r1, r2} <= overdue, "the holder's reminder list shows both"
    assert {r1, r2} <= {i["id"] for i in portal.get(debtor, "/receivables", overdue="true", limit=200)["items"]}

    # Buy-back under recourse: the creditor holds it again and is the payee of record.
    portal.act(factor_a, "buy-back", r1)
    bought = portal.receivable(creditor, r1)
    assert (bought["status"], bought["holder"], bought["recourse"]) == ("confirmed", creditor.entity, False)
    payee = portal.get(debtor, f"/receivables/{r1}/payee")
    assert payee["payee_of_record"] == creditor.entity and "bought back" in payee["because"]
    assert portal.check(factor_a, with_recourse)["financed"] is False

    # Default: by the holder, after the due date; without recourse there is no buy-back.
    portal.act(factor_a, "declare-default", r2)
    assert portal.receivable(factor_a, r2)["status"] == "defaulted"
    portal.refused(factor_a, "buy-back", r2, status=422, error="NoRecourse")
    portal.refused(creditor, "declare-default", r2, status=403, error="NotHolder")
    portal.act(creditor, "declare-default", r1)
    assert portal.receivable(creditor, r1)["status"] == "defaulted"
    assert {r1, r2}.isdisjoint(i["id"] for i in portal.get(factor_a, "/receivables", status="assigned")["items"])


# ================================================================== 10. bulk upload


@dataclass(eq=False)
class Line:
    """One line of the upload and what should become of it."""

    paper: Paper
    kind: str  # fresh; ledger: already registered; batch: a copy of an earlier line; past: due date passed
    ledger_id: int | None = None
    original: Line | None = None


def test_10_a_bulk_upload_of_1000_invoices_with_duplicates_goes_through_and_says_why_per_line(
    portal: Portal, consortium: Consortium
) -> None:
    creditor, debtor, factor_a, _ = parties(consortium)
    rng = random.Random(10)
    other_creditor, other_debtor = consortium.creditors[1], consortium.debtors[1]

    # Already on the ledger: 20 invoices registered by another creditor.
    on_ledger = [
        portal.paper((debtor, other_debtor)[i % 2], amount=f"{5_000 + 17 * i:,}.{i % 100:02d}") for i in range(20)
    ]
    result = portal.act(other_creditor, "register-batch", [p.invoice.as_contract_input() for p in on_ledger])
    ledger_ids = [line["id"] for line in result["line_outcomes"]]

    def respell(p: Paper) -> Paper:  # how the same invoice comes back from another system
        return replace(p, number=p.number.lower().replace("-", " "), amount=p.amount.replace(",", ""))

    lines = [
        Line(portal.paper((debtor, other_debtor)[i % 2], amount=f"{10_000 + 31 * i:,}.{i % 100:02d}"), "fresh")
        for i in range(958)
    ]
    lines += [
        Line(respell(p) if i % 2 else p, "ledger", ledger_id=rid)
        for i, (p, rid) in enumerate(zip(on_ledger, ledger_ids, strict=True))
    ]
    lines += [Line(portal.paper(debtor, due_in_days=-3), "past") for _ in range(2)]
    rng.shuffle(lines)
    # 20 copies of earlier lines, inserted anywhere after their original (in the same request or the next).
    for k, original in enumerate(rng.sample([line for line in lines if line.kind == "fresh"], 20)):
        at = rng.randrange(lines.index(original) + 1, len(lines) + 1)
        lines.insert(at, Line(respell(original.paper) if k % 2 else original.paper, "batch", original=original))
    assert len(lines) == 1000
    copies = [(lines.index(line.original), i) for i, line in enumerate(lines) if line.original is not None]
    assert any(o < 500 <= c for o, c in copies) and any(c < 500 or o >= 500 for o, c in copies)

    # Before uploading: the bulk check flags every duplicate, against the ledger and within the file.
    answer = portal.api.post(
        "/checks/bulk", json={"invoices": [line.paper.fields for line in lines]}, headers=portal.headers(creditor)
    )
    assert answer.status_code == 200, answer.text
    checked = answer.json()
    assert len(checked["results"]) == 1000 and checked["duplicates"] == 40
    for i, (line, result) in enumerate(zip(lines, checked["results"], strict=True)):
        if line.kind == "ledger":
            assert result["registered"] and result["receivable_id"] == line.ledger_id and result["parties"] is None, i
        elif line.original is not None:
            assert not result["registered"] and result["duplicate_of_line"] == lines.index(line.original), i
        else:
            assert not result["registered"] and result["duplicate_of_line"] is None, i

    # The upload: two signed requests of 500 lines; refused lines do not sink the rest.
    outcomes: list[dict[str, Any]] = []
    for start in (0, 500):
        chunk = lines[start : start + 500]
        result = portal.act(creditor, "register-batch", [line.paper.invoice.as_contract_input() for line in chunk])
        assert [o["line"] for o in result["line_outcomes"]] == list(range(len(chunk)))
        outcomes += result["line_outcomes"]
    for i, (line, outcome) in enumerate(zip(lines, outcomes, strict=True)):
        if line.kind == "fresh":
            assert "id" in outcome and "error" not in outcome, (i, outcome)
        elif line.kind == "past":
            assert outcome["error"] == "DueDateInPast", (i, outcome)
        else:
            existing = line.ledger_id if line.original is None else outcomes[lines.index(line.original)]["id"]
            assert outcome["error"] == "InvoiceKeyTaken", (i, outcome)
            assert outcome["fields"]["existingId"] == existing, (i, outcome)
            assert outcome["fields"]["invoiceKey"] == "0x" + line.paper.invoice.key.hex()
    accepted = [o["id"] for o in outcomes if "id" in o]
    assert len(accepted) == 958 == len(set(accepted))

    # Afterwards every line but the two refused for their dates is on the ledger, the fresh ones as uploaded.
    after = portal.api.post(
        "/checks/bulk", json={"invoices": [line.paper.fields for line in lines]}, headers=portal.headers(factor_a)
    ).json()["results"]
    for line, outcome, result in zip(lines, outcomes, after, strict=True):
        assert result["registered"] is (line.kind != "past")
        if "id" in outcome:
            assert result["receivable_id"] == outcome["id"] and result["status"] == "registered"
    mine = portal.get(creditor, "/receivables", creditor=creditor.entity, limit=200)
    assert len(mine["items"]) == 200 and mine["next_cursor"] is not None


# ================================================================== 11. reorganisation


def _compare_mirror_with_chain(portal: Portal, auditor: Member) -> list[dict[str, Any]]:
    """Every receivable the auditor reads through the API equals the contract's state at the head."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = portal.get(auditor, "/receivables", **params)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    registry = portal.registry
    assert [i["id"] for i in items] == list(range(1, registry.receivable_count() + 1))
    for item in items:
        state = registry.get_receivable(ReceivableId(item["id"]))
        assert (item["creditor"], item["debtor"], item["holder"], item["status"], item["recourse"]) == (
            state.creditor,
            state.debtor,
            state.holder,
            state.status.name.lower(),
            state.recourse,
        ), item["id"]
        assert (item["face_value"], item["paid"], item["due_date"]) == (state.face_value, state.paid, state.due_date)
    return items


@pytest.fixture
def anvil_only(settings: Settings) -> None:
    if settings.node != "anvil":
        pytest.skip("reorganisations need Anvil's evm_revert / anvil_reorg")


def _burst(portal: Portal, member: Member, debtor: Member, blocks: int) -> None:
    """``blocks`` registrations sent one by one (automine: a block each), waited for on the chain only:
    the live indexer is still busy with them when the chain reorganises."""
    pending = [
        portal.registry.send(member.account, "register", portal.paper(debtor).invoice.as_contract_input(), gas=700_000)
        for _ in range(blocks)
    ]
    portal.registry.chain.wait_many(pending, timeout=30)


def _resync_nonces(portal: Portal, consortium: Consortium) -> None:
    """After a revert or reorg dropped transactions, both clients (the test's and the API's relayer)
    ask the node for nonces again."""
    services: Services = cast(FastAPI, portal.api.app).state.services
    accounts = [consortium.relayer, consortium.admin, *(m.account for m in consortium.members)]
    for chain in (portal.registry.chain, services.registry.chain):
        for account in accounts:
            chain.nonces.resync(account.address)


def _wait_mirror_on_head(portal: Portal, indexer_errors: list[BaseException], timeout: float = 30.0) -> None:
    """Until the mirror's cursor is the chain's head block: same number and same hash."""
    chain = portal.registry.chain
    deadline = time.monotonic() + timeout
    while True:
        if indexer_errors:
            raise AssertionError(f"the live indexer died: {indexer_errors[0]!r}")
        head = chain.get_block("latest")
        health = portal.api.get("/health").json()
        if health["indexed_block"] == int(head["number"], 16) and health["as_of"]["block_hash"] == head["hash"]:
            return
        assert time.monotonic() < deadline, f"the mirror did not reach the head: {health}"
        time.sleep(0.05)


@pytest.fixture
def indexer_errors() -> Iterator[list[BaseException]]:
    """Exceptions that end a thread (the live indexer's) while the test runs."""
    errors: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            errors.append(args.exc_value)
        previous(args)

    threading.excepthook = hook
    try:
        yield errors
    finally:
        threading.excepthook = previous


@pytest.mark.usefixtures("anvil_only")
@pytest.mark.parametrize("how", ["evm_revert", "anvil_reorg"])
def test_11_a_reorganisation_while_the_mirror_is_being_updated_leaves_the_mirror_equal_to_the_chain(
    portal: Portal, consortium: Consortium, chain_state: ChainState, indexer_errors: list[BaseException], how: str
) -> None:
    creditor, debtor, factor_a, _ = parties(consortium)
    rival, auditor, bystander = consortium.creditors[1], consortium.auditors[0], consortium.creditors[2]
    chain = portal.registry.chain
    _burst(portal, bystander, consortium.debtors[1], 5)
    portal.wait_mirror()
    fork = chain_state.snapshot()
    base = chain.block_number()

    # The doomed branch: through the API, the creditor registers the invoice, the debtor confirms it and
    # the creditor finances it; the mirror shows all of it. Then more blocks, which the mirror is still
    # indexing when the chain changes under it.
    contested = portal.paper(debtor, amount="770,000.00")
    rid = portal.confirmed(creditor, debtor, contested)
    portal.assign(creditor, rid, factor_a, contested.invoice.face_value * 9 // 10)
    assert portal.receivable(auditor, rid)["holder"] == factor_a.entity
    assert portal.check(factor_a, contested)["financed"] is True
    _burst(portal, bystander, consortium.debtors[1], 20)
    doomed_head = chain.block_number()

    if how == "evm_revert":
        chain_state.revert(fork)  # back to `base`; then a different branch, longer than the doomed one
        assert chain.block_number() == base
        _resync_nonces(portal, consortium)
        winner = portal.register(rival, contested)
        _burst(portal, bystander, consortium.debtors[1], doomed_head - base)
        assert chain.block_number() > doomed_head
    else:
        depth = doomed_head - base
        data = portal.registry.abi.encode_call("register", (contested.invoice.as_contract_input(),))
        nonce = int(chain.rpc.call("eth_getTransactionCount", [rival.address, "latest"]), 16)
        raw = "0x" + chain.sign(rival.account, portal.registry.address, data, 700_000, nonce).hex()
        # The last `depth` blocks (the API's and the burst's) replaced by as many blocks holding only the
        # rival's registration of the same invoice: same height, other hashes.
        chain.rpc.call("anvil_reorg", [depth, [[raw, 0]]])
        _resync_nonces(portal, consortium)
        assert chain.block_number() == doomed_head
        winner = portal.registry.receivable_id_by_invoice_key(contested.invoice.key)
    _wait_mirror_on_head(portal, indexer_errors)

    assert winner == rid, "the rival's registration took the same id on the new branch"
    assert portal.registry.get_receivable(ReceivableId(winner)).creditor == rival.entity
    held = portal.receivable(auditor, winner)
    assert (held["creditor"], held["holder"], held["status"]) == (rival.entity, rival.entity, "registered")
    check = portal.check(factor_a, contested)
    assert check["registered"] is True and check["receivable_id"] == winner
    assert check["financed"] is False, "the financing was on the dropped branch"
    assert portal.get(debtor, f"/receivables/{winner}/payee")["chain"] == []
    _compare_mirror_with_chain(portal, auditor)
    status = chain.rpc.call("txpool_status")
    assert (int(status["pending"], 16), int(status["queued"], 16)) == (0, 0), "nothing left to leak into other tests"
