"""Reminders and escalations: a participant's notices, its delivery subscriptions, its dead letters.

Notices are made by the reminder worker (registry/reminders.py); these routes read them and manage
where they go. A participant sees and manages its own entity's; an auditor reads every notice and
every dead letter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, ServicesDep
from api.problems import Problem, problem_responses
from registry import reminders
from registry.auth import Principal
from registry.reminders import NoticeKind

router = APIRouter(prefix="/notices", tags=["notices"], responses=problem_responses(401, 403, 422, 429))

KindName = Literal["due_soon", "due_today", "overdue", "unconfirmed", "payment_unacknowledged"]
SUB_ID = Annotated[int, Path(ge=1, lt=2**31, description="subscription id")]


class NoticePublic(BaseModel):
    seq: int = Field(description="position in the notice list (use as `after`)")
    id: str = Field(description="deterministic notice id, also the delivery idempotency key")
    kind: str
    step: int = Field(description="days before (due_soon) or after (overdue, unconfirmed, ...) the due moment")
    recipient: int
    receivable_id: int
    claim_id: int | None
    due_at: int = Field(description="block time at which the notice fell due")
    as_of_block: int
    as_of_timestamp: int
    state: str = Field(description="active, or withdrawn (its reason vanished, e.g. in a reorg)")
    message: str
    payload: dict[str, Any] = Field(description="the body delivered to webhooks")
    deliveries: dict[str, int] = Field(description="deliveries of this notice by state")


class NoticePage(BaseModel):
    items: list[NoticePublic]
    next_after: int | None = Field(description="pass as `after` for the next page; null at the end")


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["webhook", "email"]
    target: str = Field(min_length=3, max_length=2000, description="webhook URL (http/https) or e-mail address")
    kinds: list[KindName] = Field(default=[], max_length=5, description="notice kinds to receive; empty: all")


class SubscriptionPublic(BaseModel):
    id: int
    entity_id: int
    channel: str
    target: str
    kinds: list[str]
    active: bool
    created_at: float


class DeadLetterPublic(BaseModel):
    id: int = Field(description="delivery id (POST /notices/dead-letters/{id}/retry)")
    notice_id: str
    subscription_id: int
    entity_id: int
    channel: str
    target: str
    kind: str
    receivable_id: int
    attempts: int
    last_error: str | None


class RetryPublic(BaseModel):
    id: int
    state: str


def _entity(principal: Principal) -> int:
    if principal.entity is None:
        raise Problem(403, "forbidden", f"{principal.label} is not a participant: notices belong to participants")
    return principal.entity


def _scope(principal: Principal) -> int | None:
    """Whose notices the caller reads: None (all) for an auditor, else its own entity."""
    return None if principal.has("auditor") else _entity(principal)


@router.get("", response_model=NoticePage)
def list_notices(
    services: ServicesDep,
    principal: PrincipalDep,
    kind: KindName | None = None,
    state: Literal["active", "withdrawn"] | None = None,
    receivable_id: Annotated[int | None, Query(ge=1, lt=2**63)] = None,
    after: Annotated[int, Query(ge=0, lt=2**63)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> NoticePage:
    """Notices addressed to the caller's entity (an auditor: all), oldest first."""
    with services.engine.connect() as conn:
        rows = reminders.list_notices(
            conn, _scope(principal), kind=kind, state=state, receivable_id=receivable_id, after=after, limit=limit
        )
    items = [NoticePublic(**{**r, "message": r["payload"].get("message", "")}) for r in rows]
    return NoticePage(items=items, next_after=items[-1].seq if len(items) == limit else None)


@router.get("/kinds", response_model=list[str])
def kinds() -> list[str]:
    """The notice kinds a subscription may ask for."""
    return [k.value for k in NoticeKind]


@router.get("/subscriptions", response_model=list[SubscriptionPublic])
def list_subscriptions(services: ServicesDep, principal: PrincipalDep) -> list[SubscriptionPublic]:
    """The caller's entity's active subscriptions."""
    with services.engine.connect() as conn:
        return [SubscriptionPublic(**r) for r in reminders.list_subscriptions(conn, _entity(principal))]


@router.post("/subscriptions", response_model=SubscriptionPublic, status_code=201)
def create_subscription(body: SubscriptionCreate, services: ServicesDep, principal: PrincipalDep) -> SubscriptionPublic:
    """Send the caller's entity's notices (of ``kinds``, or all) to a webhook or an e-mail address.
    Webhook bodies are signed: `X-Registry-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">`, and carry
    the notice id in `X-Registry-Notice-Id` (deliveries are at least once: dedup by it)."""
    entity = _entity(principal)
    try:
        with services.engine.begin() as conn:
            row = reminders.create_subscription(conn, entity, body.channel, body.target, body.kinds)
    except reminders.InvalidSubscription as exc:
        raise Problem(422, "validation_error", str(exc), errors=[{"field": str(exc).split(":", 1)[0]}]) from exc
    return SubscriptionPublic(**row)


@router.get("/subscriptions/{sub_id}", response_model=SubscriptionPublic, responses=problem_responses(404))
def get_subscription(sub_id: SUB_ID, services: ServicesDep, principal: PrincipalDep) -> SubscriptionPublic:
    with services.engine.connect() as conn:
        row = reminders.get_subscription(conn, _entity(principal), sub_id)
    if row is None:
        raise Problem(404, "not_found", f"no subscription {sub_id} of {principal.label}")
    return SubscriptionPublic(**row)


@router.put("/subscriptions/{sub_id}", response_model=SubscriptionPublic, responses=problem_responses(404))
def update_subscription(
    sub_id: SUB_ID, body: SubscriptionCreate, services: ServicesDep, principal: PrincipalDep
) -> SubscriptionPublic:
    """Replace a subscription's channel, target and kinds (notices already queued keep their target)."""
    entity = _entity(principal)
    try:
        with services.engine.begin() as conn:
            row = reminders.update_subscription(conn, entity, sub_id, body.channel, body.target, body.kinds)
    except reminders.InvalidSubscription as exc:
        raise Problem(422, "validation_error", str(exc), errors=[{"field": str(exc).split(":", 1)[0]}]) from exc
    if row is None:
        raise Problem(404, "not_found", f"no subscription {sub_id} of {principal.label}")
    return SubscriptionPublic(**row)


@router.delete("/subscriptions/{sub_id}", status_code=204, responses=problem_responses(404))
def delete_subscription(sub_id: SUB_ID, services: ServicesDep, principal: PrincipalDep) -> Response:
    """Stop a subscription; its undelivered notices are not sent (its dead letters stay listed)."""
    with services.engine.begin() as conn:
        found = reminders.delete_subscription(conn, _entity(principal), sub_id)
    if not found:
        raise Problem(404, "not_found", f"no subscription {sub_id} of {principal.label}")
    return Response(status_code=204)


@router.get("/dead-letters", response_model=list[DeadLetterPublic])
def dead_letters(
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[int, Query(ge=0, lt=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DeadLetterPublic]:
    """Deliveries that failed every attempt, to the caller's subscriptions (an auditor: all), with the
    last error."""
    with services.engine.connect() as conn:
        rows = reminders.dead_letters(conn, _scope(principal), after=after, limit=limit)
    return [DeadLetterPublic(**r) for r in rows]


@router.post("/dead-letters/{delivery_id}/retry", response_model=RetryPublic, responses=problem_responses(404))
def retry_dead_letter(
    delivery_id: Annotated[int, Path(ge=1, lt=2**31)], services: ServicesDep, principal: PrincipalDep
) -> RetryPublic:
    """Queue a dead letter of one of the caller's active subscriptions for a fresh round of attempts."""
    entity = _entity(principal)
    with services.engine.begin() as conn:
        found = reminders.retry_dead_letter(conn, delivery_id, entity)
    if not found:
        raise Problem(404, "not_found", f"no dead letter {delivery_id} of {principal.label}")
    return RetryPublic(id=delivery_id, state="pending")
