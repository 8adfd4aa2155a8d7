"""Financing offers and factors' auto-approval policies (registry/approval.py).

A holder prepares an ``assign`` request (``POST /actions/assign/prepare`` with ``{id, factor, advance,
recourse, terms_hash}``), signs it with its own key and, instead of relaying it, offers it to the factor:
``POST /offers {"request": <the signed request>}``. The factor's policy decides at once: an offer within
every limit is relayed and answered ``assigned`` with its transaction; another is ``queued`` with the
reasons, for the factor to accept (which relays it) or decline. Every decision names the rule that made it.

Object-level authorisation: a factor sets and reads only its own policy; an offer is visible to the factor
it was made to, the holder that made it and auditors (to anyone else it does not exist), and only the
factor decides it.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, Services, ServicesDep
from api.problems import Problem, problem_responses
from api.schemas import InvoiceFields, SignedRequestCreate, Strict
from registry.approval import STATES, OfferDesk, OfferError, OfferView, Policy
from registry.auth import Forbidden, Principal
from registry.invoice import Invoice
from registry.relay import parse_request

log = logging.getLogger("registry.api")

router = APIRouter(responses=problem_responses(401, 422, 429, 503))

OFFER_ID = Annotated[int, Path(ge=1, lt=2**31, description="offer id")]


# ---------------------------------------------------------------------------------------- bodies


class PolicyPublic(BaseModel):
    factor: int
    version: int = Field(description="0: no policy set yet (offers are queued for a person)")
    policy: dict[str, Any] = Field(description="amounts in minor units per currency; rates as decimal text")


class OfferCreate(Strict):
    request: SignedRequestCreate = Field(description="the holder's signed assign request, as /actions/assign takes it")
    invoice: InvoiceFields | None = Field(
        default=None, description="optional: the invoice's fields, so that near-duplicate numbers are checked too"
    )


class DeclineCreate(Strict):
    note: str = Field(default="", max_length=2000)


class RulePublic(BaseModel):
    rule: str
    ok: bool
    detail: str


class DecisionPublic(BaseModel):
    at: float
    actor: str = Field(description="policy, relayer, or the deciding key's address")
    outcome: str
    rule: str = Field(description="the rule that made the decision")
    detail: str
    rules: list[RulePublic]


class OfferPublic(BaseModel):
    id: int
    state: str = Field(description="queued, accepted, assigned, declined, failed or expired")
    rule: str = Field(description="the rule that made the latest decision (all_rules_met, manual, or the rule not met)")
    reasons: list[str] = Field(description="the rules not met, in words")
    factor: int
    holder: int
    signer: str
    receivable_id: int
    debtor: int
    currency: str
    face_value: int
    amount: int = Field(description="the unpaid balance at the offer: the exposure it adds")
    advance: int
    recourse: bool
    terms_hash: str
    deadline: int
    rules: list[RulePublic]
    decisions: list[DecisionPublic]
    tx_hash: str | None
    block: int | None
    error: str | None
    created_at: float
    decided_at: float


class OfferPage(BaseModel):
    items: list[OfferPublic]
    next_cursor: str | None


# ---------------------------------------------------------------------------------------- helpers


def desk(services: ServicesDep) -> OfferDesk:
    """The offer desk of this API (built on first use over the app's engine, relayer and checker)."""
    found = services.extra.get("offer_desk")
    if not isinstance(found, OfferDesk):
        found = OfferDesk(services.registry, services.engine, services.relayer, services.checker)
        services.extra["offer_desk"] = found
    return found


def resume_offers(services: Services) -> None:
    """Relays offers accepted but never relayed (the service stopped in between); see OfferDesk.resume."""
    try:
        for view in desk(services).resume():
            log.info("resumed offer %s: %s", view.id, view.state)
    except Exception:  # never fatal to the API: logged, and tried again at the next start
        log.exception("resuming accepted offers failed")


def _problem(exc: OfferError) -> Problem:
    extra: dict[str, Any] = {}
    if exc.field is not None:
        extra["errors"] = [{"field": exc.field, "message": exc.message}]
    return Problem(exc.status, exc.code, exc.message, **extra)


def _factor(principal: Principal) -> int:
    if principal.entity is None or not principal.has("factor"):
        raise Forbidden(f"{principal.label} is not a factor: only factors have auto-approval policies")
    return principal.entity


def _public(view: OfferView) -> OfferPublic:
    return OfferPublic(
        id=view.id,
        state=view.state,
        rule=view.rule,
        reasons=[f"{r['rule']}: {r['detail']}" for r in view.rules if not r["ok"]],
        factor=view.factor,
        holder=view.holder,
        signer=view.signer,
        receivable_id=view.receivable_id,
        debtor=view.debtor,
        currency=view.currency,
        face_value=view.face_value,
        amount=view.amount,
        advance=view.advance,
        recourse=view.recourse,
        terms_hash=view.terms_hash,
        deadline=view.deadline,
        rules=[RulePublic(**r) for r in view.rules],
        decisions=[DecisionPublic(**{**d, "rules": [RulePublic(**r) for r in d["rules"]]}) for d in view.decisions],
        tx_hash=view.tx_hash,
        block=view.block_number,
        error=view.error,
        created_at=view.created_at,
        decided_at=view.decided_at,
    )


def _may_read(principal: Principal, view: OfferView) -> bool:
    if principal.has("auditor"):
        return True
    return principal.entity is not None and principal.entity in (view.factor, view.holder)


def _readable(services: ServicesDep, principal: Principal, offer_id: int) -> OfferView:
    try:
        view = desk(services).get(offer_id)
    except OfferError:
        view = None
    # "Not yours" and "does not exist" are one answer: offer ids leak nothing.
    if view is None or not _may_read(principal, view):
        raise Problem(404, "not_found", f"no offer {offer_id} visible to {principal.label}")
    return view


def _decidable(services: ServicesDep, principal: Principal, offer_id: int) -> OfferView:
    view = _readable(services, principal, offer_id)
    if principal.entity != view.factor or not principal.has("factor"):
        raise Forbidden(f"only the factor the offer was made to (entity {view.factor}) decides it")
    return view


# ---------------------------------------------------------------------------------------- policies


@router.get("/policies/me", response_model=PolicyPublic, tags=["offers"], responses=problem_responses(403))
def get_policy(services: ServicesDep, principal: PrincipalDep) -> PolicyPublic:
    """The signed-in factor's auto-approval policy (version 0 and disabled when none is set)."""
    factor = _factor(principal)
    policy = desk(services).policy(factor) or Policy(factor=factor)
    return PolicyPublic(factor=factor, version=policy.version, policy=policy.to_json())


@router.put("/policies/me", response_model=PolicyPublic, tags=["offers"], responses=problem_responses(403))
def put_policy(body: dict[str, Any], services: ServicesDep, principal: PrincipalDep) -> PolicyPublic:
    """Replaces the signed-in factor's policy. Fields (all optional): ``enabled``, ``currencies``,
    ``confirmed_only``, ``max_amount`` / ``debtor_limit`` / ``total_limit`` (``{"CNY": "1,000,000.00"}``:
    text in major units or an integer of minor units), ``debtor_limits`` (``{"<debtor id>": {...}}``),
    ``max_tenor_days``, ``min_advance_rate`` / ``max_advance_rate`` (``"0.8"``), ``no_anomaly_flag``,
    ``no_near_duplicate``. A bad field is a 422 naming it, and nothing changes."""
    factor = _factor(principal)
    try:
        policy = desk(services).set_policy(factor, body, principal.address)
    except OfferError as exc:
        raise _problem(exc) from None
    return PolicyPublic(factor=factor, version=policy.version, policy=policy.to_json())


# ---------------------------------------------------------------------------------------- offers


@router.post("/offers", response_model=OfferPublic, tags=["offers"], responses=problem_responses(403, 404, 409))
def submit_offer(body: OfferCreate, services: ServicesDep, principal: PrincipalDep) -> OfferPublic:
    """Offer a signed ``assign`` request to its factor. Checked as a relay would be (signature, nonce,
    deadline, the contract's own checks by simulation; the signer must be the holder of record), then
    decided by the factor's policy: ``assigned`` (relayed, with its transaction) or ``queued`` with the
    reasons. The same signed request offered again returns the same offer."""
    request = parse_request(body.request.as_json())
    if request.sender.lower() != principal.address.lower():
        raise Forbidden(f"you are signed in as {principal.address}; the request is signed by {request.sender}")
    invoice = None
    if body.invoice is not None:
        f = body.invoice
        invoice = Invoice.parse(
            debtor=f.debtor,
            invoice_number=f.invoice_number,
            face_value=f.face_value,
            currency=f.currency,
            issue_date=f.issue_date,
            due_date=f.due_date,
            document_hash=f.document_hash,
        )
    try:
        return _public(desk(services).submit(request, invoice=invoice))
    except OfferError as exc:
        raise _problem(exc) from None


@router.get("/offers", response_model=OfferPage, tags=["offers"])
def list_offers(
    services: ServicesDep,
    principal: PrincipalDep,
    state: Annotated[str | None, Query(description=", ".join(STATES))] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,9}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> OfferPage:
    """Offers visible to the caller, oldest first: a factor's offers made to it, a holder's own offers
    (an entity that is both sees both); an auditor sees every offer."""
    if state is not None and state not in STATES:
        raise Problem(422, "validation_error", f"state: one of {', '.join(STATES)}", errors=[{"field": "state"}])
    if principal.has("auditor"):
        views = desk(services).offers(state=state, after_id=int(cursor or 0), limit=limit + 1)
    elif principal.entity is None:
        views = []
    else:
        e = principal.entity
        views = desk(services).offers(factor=e, holder=e, state=state, after_id=int(cursor or 0), limit=limit + 1)
    more = len(views) > limit
    views = views[:limit]
    return OfferPage(items=[_public(v) for v in views], next_cursor=str(views[-1].id) if more and views else None)


@router.get("/offers/{offer_id}", response_model=OfferPublic, tags=["offers"], responses=problem_responses(404))
def get_offer(offer_id: OFFER_ID, services: ServicesDep, principal: PrincipalDep) -> OfferPublic:
    """One offer with every rule's result and every decision (who, when, by which rule)."""
    return _public(_readable(services, principal, offer_id))


@router.post(
    "/offers/{offer_id}/accept",
    response_model=OfferPublic,
    tags=["offers"],
    responses=problem_responses(403, 404, 409),
)
def accept_offer(offer_id: OFFER_ID, services: ServicesDep, principal: PrincipalDep) -> OfferPublic:
    """The factor accepts a queued offer by hand: recorded with the policy's verdict, then relayed. An
    offer whose request can no longer be relayed (deadline passed, the holder's nonce spent) is marked
    failed or expired and answered 409."""
    _decidable(services, principal, offer_id)
    assert principal.entity is not None
    try:
        return _public(desk(services).accept(offer_id, principal.entity, principal.address))
    except OfferError as exc:
        raise _problem(exc) from None


@router.post(
    "/offers/{offer_id}/decline",
    response_model=OfferPublic,
    tags=["offers"],
    responses=problem_responses(403, 404, 409),
)
def decline_offer(
    offer_id: OFFER_ID, services: ServicesDep, principal: PrincipalDep, body: DeclineCreate | None = None
) -> OfferPublic:
    """The factor declines a queued offer (with an optional note); nothing is relayed."""
    _decidable(services, principal, offer_id)
    assert principal.entity is not None
    try:
        return _public(desk(services).decline(offer_id, principal.entity, principal.address, body.note if body else ""))
    except OfferError as exc:
        raise _problem(exc) from None
