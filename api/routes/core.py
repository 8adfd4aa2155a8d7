"""Sign-in, health, receivable reads, double-financing checks and relayed writes."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic_core import to_json
from sqlalchemy import Connection

from api.deps import DirectRoute, PrincipalDep, ServicesDep
from api.problems import Problem, jsonable, problem_responses
from api.schemas import (
    AsOf,
    AssignmentPublic,
    BulkCheckCreate,
    BulkCheckPublic,
    ChallengeCreate,
    ChallengePublic,
    CheckCreate,
    CheckPublic,
    EventPublic,
    HealthPublic,
    InvoiceFields,
    PayeePublic,
    PaymentPublic,
    PrincipalPublic,
    PriorityClaim,
    PriorityPublic,
    ReceivableDetail,
    ReceivablePage,
    ReceivablePublic,
    RelayPublic,
    SessionCreate,
    SessionPublic,
    SignedRequestCreate,
)
from registry.actions import ACTIONS
from registry.auth import Forbidden, Principal
from registry.chain.reverts import decode_revert
from registry.checks import CheckResult, DuplicateChecker
from registry.domain import Status
from registry.errors import InvalidInvoice
from registry.invoice import Invoice
from registry.relay import parse_request
from registry.store import queries
from registry.store.queries import ReceivableFilter, Visibility

# Every route may answer these as problem+json: not signed in, invalid input, rate limited, mirror or node
# unavailable; routes add their own below.
router = APIRouter(responses=problem_responses(401, 422, 429, 503))

ID = Annotated[int, Path(ge=1, lt=2**63, description="receivable id")]


# ---------------------------------------------------------------------------------------- helpers


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + bytes(value).hex()


def as_of(conn: Connection) -> AsOf:
    fresh = queries.freshness(conn)
    if fresh is None:
        raise Problem(503, "mirror_not_ready", "the mirror has not indexed any block yet", retry_after=1)
    return AsOf(
        block=fresh.block_number,
        block_hash=fresh.block_hash,
        block_timestamp=fresh.block_timestamp,
        staleness_seconds=round(fresh.staleness_seconds, 3),
    )


def receivable_public(row: dict[str, Any]) -> ReceivablePublic:
    return ReceivablePublic(
        id=row["id"],
        status=Status(row["status"]).name.lower(),
        creditor=row["creditor"],
        debtor=row["debtor"],
        holder=row["holder"],
        recourse=bool(row["recourse"]),
        face_value=row["face_value"],
        paid=row["paid"],
        unpaid=row["face_value"] - row["paid"],
        currency=row["currency"],
        issue_date=row["issue_date"],
        due_date=row["due_date"],
        fingerprint=_hex(row["fingerprint"]),
        invoice_key=_hex(row["invoice_key"]),
        document_hash=_hex(row["document_hash"]),
        parent_id=row["parent_id"],
        supersedes=row["supersedes"],
        registered_block=row["registered_block"],
        valid_from_block=row["valid_from"],
        valid_to_block=row["valid_to"],
    )


def visibility(principal: Principal) -> Visibility:
    """Object-level authorisation: auditors read everything; parties what they are party to; the
    admin manages participants and reads no receivables."""
    if principal.has("auditor"):
        return Visibility(everything=True)
    return Visibility(entity=principal.entity)


def _may_read(principal: Principal, row: dict[str, Any], conn: Connection) -> bool:
    if principal.has("auditor"):
        return True
    e = principal.entity
    if e is None:
        return False
    if e in (row["debtor"], row["creditor"], row["holder"]):
        return True
    return any(a["to_entity"] == e for a in queries.assignments_of(conn, row["id"]))


def _readable(principal: Principal, conn: Connection, receivable_id: int, block: int | None = None) -> dict[str, Any]:
    row = queries.receivable_as_of(conn, receivable_id, block)
    # The same answer for "does not exist" and "not yours": ids of others' receivables leak nothing.
    if row is None or not _may_read(principal, row, conn):
        raise Problem(404, "not_found", f"no receivable {receivable_id} visible to {principal.label}")
    return row


def _assignment_public(a: dict[str, Any], principal: Principal) -> AssignmentPublic:
    party = principal.has("auditor") or principal.entity in (a["from_entity"], a["to_entity"])
    return AssignmentPublic(
        block=a["block_number"],
        from_entity=a["from_entity"],
        to_entity=a["to_entity"],
        advance=a["advance"] if party else None,
        recourse=bool(a["recourse"]),
        terms_hash=_hex(a["terms_hash"]) if party else None,
    )


# ---------------------------------------------------------------------------------------- health


@router.get("/health", response_model=HealthPublic, tags=["health"])
def health(services: ServicesDep) -> HealthPublic:
    """Liveness: the process answers; with what it knows of the chain and the mirror."""
    with services.engine.connect() as conn:
        fresh = queries.freshness(conn)
        stamp = as_of(conn) if fresh else None
    try:
        chain_block: int | None = services.registry.chain.block_number()
    except Exception:  # the node being down is exactly what health reports
        chain_block = None
    indexed = fresh.block_number if fresh else None
    lag = chain_block - indexed if chain_block is not None and indexed is not None else None
    return HealthPublic(status="ok", chain_block=chain_block, indexed_block=indexed, lag_blocks=lag, as_of=stamp)


@router.get(
    "/ready",
    response_model=HealthPublic,
    tags=["health"],
    responses={503: {"model": HealthPublic, "description": "not ready (as JSON, like 200)"}},
)
def ready(services: ServicesDep, response: Response) -> HealthPublic:
    """Ready only when the node answers and the mirror is caught up (within 2 blocks)."""
    report = health(services)
    if report.chain_block is None or report.lag_blocks is None or report.lag_blocks > 2:
        report.status = "not ready"
        response.status_code = 503
    return report


# ---------------------------------------------------------------------------------------- auth


@router.post("/auth/challenge", response_model=ChallengePublic, tags=["auth"])
def challenge(body: ChallengeCreate, services: ServicesDep) -> ChallengePublic:
    """A single-use nonce and the EIP-4361 message to sign with the user's key."""
    from eth_utils.address import is_checksum_address

    if not is_checksum_address(body.address):
        raise Problem(422, "validation_error", "address: must be EIP-55 checksummed", errors=[{"field": "address"}])
    c = services.auth.challenge(body.address)
    return ChallengePublic(nonce=c.nonce, message=c.message, expires_at=c.expires_at)


@router.post("/auth/session", response_model=SessionPublic, tags=["auth"])
def session(body: SessionCreate, services: ServicesDep) -> SessionPublic:
    """Exchange a signed sign-in message for a short-lived session token bound to the address."""
    token, principal = services.auth.login(body.message, bytes.fromhex(body.signature[2:]))
    return SessionPublic(token=token, expires_in=int(services.auth.session_ttl), principal=_principal(principal))


@router.get("/auth/me", response_model=PrincipalPublic, tags=["auth"])
def me(principal: PrincipalDep) -> PrincipalPublic:
    return _principal(principal)


def _principal(p: Principal) -> PrincipalPublic:
    return PrincipalPublic(address=p.address, entity=p.entity, roles=sorted(p.roles), is_admin=p.is_admin)


# ---------------------------------------------------------------------------------------- reads


DUE_BOUND = "a day (2027-01-31, 2027/1/31 or 2027年1月31日) or Unix seconds; inclusive"


@router.get("/receivables", response_model=ReceivablePage, tags=["receivables"])
def list_receivables(
    services: ServicesDep,
    principal: PrincipalDep,
    status: Annotated[str | None, Query(description="registered, confirmed, assigned, ...")] = None,
    debtor: Annotated[int | None, Query(ge=1, lt=2**24)] = None,
    creditor: Annotated[int | None, Query(ge=1, lt=2**24)] = None,
    holder: Annotated[int | None, Query(ge=1, lt=2**24)] = None,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    due_from: Annotated[str | None, Query(max_length=40, description=DUE_BOUND)] = None,
    due_to: Annotated[str | None, Query(max_length=40, description=DUE_BOUND)] = None,
    overdue: Annotated[
        bool, Query(description="open receivables past their due date at the as-of block's time (the chain's clock)")
    ] = False,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> ReceivablePage:
    """Receivables visible to the caller, filtered, in id order; ``cursor`` pages through them."""
    if limit > services.settings.max_page_size:
        raise Problem(422, "page_too_large", f"limit: at most {services.settings.max_page_size}")
    parsed_status = None
    if status is not None:
        try:
            parsed_status = Status[status.upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in Status if s is not Status.NONE)
            raise Problem(422, "validation_error", f"status: one of {names}") from None
    try:
        low, high = queries.due_window(due_from, due_to)
    except InvalidInvoice as exc:
        raise Problem(
            422, "validation_error", str(exc), errors=[{"field": f"query.{exc.field}", "message": exc.message}]
        ) from None
    flt = ReceivableFilter(
        status=parsed_status,
        debtor=debtor,
        creditor=creditor,
        holder=holder,
        currency=currency.upper() if currency else None,
        due_from=low,
        due_to=high,
    )
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        if overdue:
            # The contract's clock (declareDefault's NotYetDue), as /stats/ageing: the answer's block time.
            flt = dataclasses.replace(flt, overdue_at=stamp.block_timestamp)
        rows, next_cursor = queries.receivables_page(
            conn, flt, visibility(principal), after_id=int(cursor or 0), limit=limit
        )
    return ReceivablePage(items=[receivable_public(r) for r in rows], next_cursor=next_cursor, as_of=stamp)


@router.get(
    "/receivables/{receivable_id}",
    response_model=ReceivableDetail,
    tags=["receivables"],
    responses=problem_responses(404),
)
def get_receivable(
    receivable_id: ID,
    services: ServicesDep,
    principal: PrincipalDep,
    block: Annotated[int | None, Query(ge=0, lt=2**63, description="state as of this block")] = None,
) -> ReceivableDetail:
    """One receivable with its history (every version), assignments, payments and lineage."""
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        if block is not None and block > stamp.block:
            raise Problem(422, "block_not_indexed", f"block {block} is beyond the mirror's block {stamp.block}")
        row = _readable(principal, conn, receivable_id, block)
        history = queries.receivable_history(conn, receivable_id, block)
    return ReceivableDetail(
        receivable=receivable_public(row),
        versions=[receivable_public(v) for v in history["versions"]],
        assignments=[_assignment_public(a, principal) for a in history["assignments"]],
        payments=[
            PaymentPublic(
                block=p["block_number"],
                payee=p["payee"],
                amount=p["amount"],
                paid_total=p["paid_total"],
                claim_id=p["claim_id"],
            )
            for p in history["payments"]
        ],
        parent_id=row["parent_id"],
        parts=history["parts"],
        as_of=stamp,
    )


@router.get(
    "/receivables/{receivable_id}/payee",
    response_model=PayeePublic,
    tags=["receivables"],
    responses=problem_responses(404),
)
def payee_of_record(receivable_id: ID, services: ServicesDep, principal: PrincipalDep) -> PayeePublic:
    """Whom the debtor must pay now to be discharged, and why (the chain of assignments = notices)."""
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        row = _readable(principal, conn, receivable_id)
        chain = queries.assignments_of(conn, receivable_id)
    if chain:
        last = chain[-1]
        because = (
            f"assigned to entity {last['to_entity']} by entity {last['from_entity']} in block {last['block_number']}; "
            "the assignment is registered on the ledger, which is notice to the debtor: only a payment to the "
            "assignee of the latest notice discharges the debtor"
        )
        if row["holder"] == row["creditor"]:
            because = "bought back by the creditor under recourse after the assignments below; pay the creditor"
    else:
        because = "never assigned: no notice of assignment has been given, so the debtor pays its creditor"
    return PayeePublic(
        receivable_id=receivable_id,
        payee_of_record=row["holder"],
        because=because,
        chain=[_assignment_public(a, principal) for a in chain],
        as_of=stamp,
    )


@router.get(
    "/priority/{invoice_key}", response_model=PriorityPublic, tags=["receivables"], responses=problem_responses(404)
)
def priority(
    invoice_key: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")], services: ServicesDep, principal: PrincipalDep
) -> PriorityPublic:
    """Competing registrations of one invoice: who ranks first and why (PRC Civil Code art. 768)."""
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        rows = queries.registrations_of_key(conn, bytes.fromhex(invoice_key[2:]))
        visible = [r for r in rows if _may_read(principal, r, conn)]
    if not visible:
        raise Problem(404, "not_found", "no registration of this invoice key visible to you")
    claims = []
    rank = 0
    for r in visible:
        live = Status(r["status"]).is_live
        if live:
            rank += 1
        claims.append(
            PriorityClaim(
                rank=rank if live else 0,
                receivable_id=r["id"],
                status=Status(r["status"]).name.lower(),
                registered_block=r["registered_block"],
                live=live,
                reason=(
                    f"registered in block {r['registered_block']}: every assignment on this ledger is registered, "
                    "so registration order decides priority"
                    if live
                    else "cancelled before confirmation: holds no claim"
                ),
            )
        )
    return PriorityPublic(
        invoice_key=invoice_key,
        claims=claims,
        explanation=(
            "A registered assignment beats an unregistered one, and between registered ones the earlier "
            "registration wins (PRC Civil Code art. 768). The contract admits one live registration per "
            "invoice key, so the live registration ranks first; cancelled ones rank nowhere."
        ),
        as_of=stamp,
    )


# ---------------------------------------------------------------------------------------- checks

# The checks have a router of their own, included first (api/app.py): routes are matched in order, and
# a factor's checks are the API's hot path.
checks = APIRouter(responses=problem_responses(401, 422, 429, 503))


def _invoice(fields: InvoiceFields) -> Invoice:
    return Invoice.parse(
        debtor=fields.debtor,
        invoice_number=fields.invoice_number,
        face_value=fields.face_value,
        currency=fields.currency,
        issue_date=fields.issue_date,
        due_date=fields.due_date,
        document_hash=fields.document_hash,
    )


def _check_answer(result: CheckResult) -> dict[str, Any]:
    """``result`` as the JSON object of :class:`CheckPublic` (its fields, in its order)."""
    p = result.parties
    return {
        "registered": result.registered,
        "status": result.status.name.lower(),
        "financed": result.financed,
        "receivable_id": result.receivable_id,
        "match": None if result.match is None else result.match.value,
        "parties": None
        if p is None
        else {
            "creditor": p.creditor,
            "debtor": p.debtor,
            "holder": p.holder,
            "currency": p.currency,
            "face_value": p.face_value,
            "paid": p.paid,
            "due_date": p.due_date,
        },
        "near_duplicates": [
            {
                "reason": n.reason.value,
                "risk": n.risk.value,
                "receivable_id": n.receivable_id,
                "batch_line": n.batch_line,
            }
            for n in result.near_duplicates
        ],
        "duplicate_of_line": result.duplicate_of_line,
        "error": None,
        "as_of": {
            "block": result.as_of_block,
            "block_hash": result.as_of_block_hash,
            "block_timestamp": result.as_of_timestamp,
            "staleness_seconds": round(result.staleness_seconds, 3),
        },
    }


def check_public(result: CheckResult) -> CheckPublic:
    return CheckPublic.model_validate(_check_answer(result))


def check_json(result: CheckResult) -> bytes:
    """``check_public(result).model_dump_json()``, encoded without building the models (a single check's
    answer: the models' validation cost more than the JSON)."""
    return to_json(_check_answer(result))


def _check_one(checker: DuplicateChecker, body: CheckCreate, viewer: int | None) -> CheckResult:
    if body.invoice is not None:
        return checker.check(_invoice(body.invoice), viewer_entity=viewer)
    if body.invoice_key is not None:
        return checker.check_key(bytes.fromhex(body.invoice_key[2:]), viewer_entity=viewer)
    assert body.fingerprint is not None
    return checker.check_fingerprint(bytes.fromhex(body.fingerprint[2:]), viewer_entity=viewer)


async def check(body: CheckCreate, services: ServicesDep, principal: PrincipalDep) -> Response:
    """Is this invoice already registered, in which state, is it financed? Plus near-duplicate flags.
    Give the invoice's fields, or its invoice key, or its fingerprint."""
    # Served by a DirectRoute (api/deps.py): documented from this signature, its arguments resolved
    # without FastAPI's dependency solving. Async with the read inline on SQLite (a few hundred
    # microseconds: less than a worker-thread hop), in the thread pool otherwise (Services.read). The
    # answer is CheckPublic's JSON, written directly: FastAPI would validate a returned model a second
    # time and encode it again.
    given = [x for x in (body.invoice, body.invoice_key, body.fingerprint) if x is not None]
    if len(given) != 1:
        raise Problem(422, "validation_error", "give exactly one of invoice, invoice_key, fingerprint")
    viewer = None if principal.has("auditor") else principal.entity
    result = await services.read(_check_one, services.checker, body, viewer)
    return Response(check_json(result), media_type="application/json")


checks.add_api_route(
    "/checks",
    check,
    methods=["POST"],
    response_model=CheckPublic,
    tags=["checks"],
    responses=problem_responses(413),
    route_class_override=DirectRoute,
)


@checks.post("/checks/bulk", response_model=BulkCheckPublic, tags=["checks"], responses=problem_responses(413))
def bulk_check(body: BulkCheckCreate, services: ServicesDep, principal: PrincipalDep) -> Response:
    """Thousands of invoices in one call; a malformed line is reported on its own line."""
    # (Serialised here: FastAPI would validate the thousands of CheckPublic a second time.)
    viewer = None if principal.has("auditor") else principal.entity
    parsed: list[Invoice] = []
    positions: list[int] = []
    errors: dict[int, dict[str, Any]] = {}
    for i, fields in enumerate(body.invoices):
        try:
            parsed.append(_invoice(fields))
            positions.append(i)
        except InvalidInvoice as exc:
            errors[i] = {
                "code": "invalid_invoice",
                "field": exc.field,
                "message": str(exc),
                "errors": exc.field_errors(),
            }
    results = services.checker.check_many(parsed, viewer_entity=viewer) if parsed else []
    by_line: dict[int, CheckPublic] = {}
    for position, result in zip(positions, results, strict=True):
        public = check_public(result)
        if public.duplicate_of_line is not None:
            public.duplicate_of_line = positions[public.duplicate_of_line]
        by_line[position] = public
    stamp = next(iter(by_line.values())).as_of if by_line else None
    out: list[CheckPublic] = []
    for i in range(len(body.invoices)):
        if i in by_line:
            out.append(by_line[i])
        else:
            out.append(
                CheckPublic(
                    registered=False,
                    status="none",
                    financed=False,
                    receivable_id=None,
                    match=None,
                    parties=None,
                    near_duplicates=[],
                    error=errors[i],
                    as_of=stamp or AsOf(block=0, block_hash="", block_timestamp=0, staleness_seconds=0),
                )
            )
    answer = BulkCheckPublic(
        results=out,
        duplicates=sum(1 for r in results if r.duplicate),
        suspicious=sum(1 for r in results if r.suspicious),
        as_of=stamp,
    )
    return Response(answer.model_dump_json(), media_type="application/json")


# ---------------------------------------------------------------------------------------- writes

# Each lifecycle action has its endpoint (registry/actions.py's table); all relay a request the user signed
# with its own key.


def relay(action: str, body: SignedRequestCreate, services: ServicesDep, principal: Principal) -> RelayPublic:
    request = parse_request(body.as_json())
    if request.sender.lower() != principal.address.lower():
        raise Forbidden(f"you are signed in as {principal.address}; the request is signed by {request.sender}")
    outcome = services.relayer.submit(request, ACTIONS[action])
    events: list[EventPublic] = []
    lines: list[dict[str, Any]] | None = None
    touched: list[int] = []
    if outcome.result is not None:
        for e in outcome.result.events:
            events.append(
                EventPublic(name=e.name, args={k: jsonable(v) for k, v in e.args.items()}, log_index=e.log_index)
            )
            if "id" in e.args:  # every registry event about a receivable names it (payments, disputes too)
                touched.append(int(e.args["id"]))
            touched.extend(int(p) for p in e.args.get("partIds", ()))
        if outcome.function == "registerBatch":
            rejected = {
                e.args["line"]: decode_revert(e.args["reason"])
                for e in outcome.result.events_named("RegistrationRejected")
            }
            accepted = iter(sorted(e.args["id"] for e in outcome.result.events_named("ReceivableRegistered")))
            count = len(rejected) + len(outcome.result.events_named("ReceivableRegistered"))
            lines = [
                {
                    "line": i,
                    "error": rejected[i].error_name,
                    "fields": {k: jsonable(v) for k, v in rejected[i].fields.items()},
                }
                if i in rejected
                else {"line": i, "id": next(accepted)}
                for i in range(count)
            ]
    indexed = outcome.block_number is not None and services.relayer.wait_indexed(outcome.block_number, 0)
    receivables: list[ReceivablePublic] = []
    if indexed and touched:
        with services.engine.connect() as conn:
            for rid in sorted(set(touched))[:100]:
                row = queries.receivable_as_of(conn, rid)
                if row is not None and _may_read(principal, row, conn):
                    receivables.append(receivable_public(row))
    return RelayPublic(
        function=outcome.function,
        digest="0x" + outcome.digest.hex(),
        tx_hash=outcome.tx_hash,
        block=outcome.block_number,
        duplicate=outcome.duplicate,
        indexed=bool(indexed),
        events=events,
        line_outcomes=lines,
        receivables=receivables,
    )


def _make_action_route(action: str) -> None:
    def endpoint(body: SignedRequestCreate, services: ServicesDep, principal: PrincipalDep) -> RelayPublic:
        return relay(action, body, services, principal)

    endpoint.__name__ = f"relay_{action.replace('-', '_')}"
    endpoint.__doc__ = (
        f"Relay a signed `{ACTIONS[action]}` request: checked (signature, nonce, deadline), simulated "
        "(a would-be revert is a 4xx naming the contract error), submitted once, and answered when mined "
        "and indexed."
    )
    router.add_api_route(
        f"/actions/{action}",
        endpoint,
        methods=["POST"],
        response_model=RelayPublic,
        tags=["actions"],
        responses=problem_responses(403, 409, 413),
    )


for _action in ACTIONS:
    _make_action_route(_action)
