"""Search certificates, dashboard statistics and the live event stream (Server-Sent Events)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import anyio
from eth_account.signers.local import LocalAccount
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import PrincipalDep, Services, ServicesDep
from api.problems import Problem
from api.routes.core import as_of, visibility
from api.schemas import (
    AgeingBucketPublic,
    AgeingPublic,
    CertificateCreate,
    CertificatePublic,
    ExposurePublic,
    ExposurePublicRow,
    VolumePeriodPublic,
    VolumesPublic,
)
from registry import stats
from registry.certificates import CertificateQuery, canonical_json, issue_certificate
from registry.keys import account_from_key, anvil_account
from registry.store.queries import Visibility

router = APIRouter()

HEARTBEAT_SECONDS: Final = 15.0
STREAM_POLL_SECONDS: Final = 0.25


# ---------------------------------------------------------------------------------------- certificates


def operator_account(services: Services) -> LocalAccount:
    """The registry operator's signing key: ``operator_key``, else the admin key, else Anvil key 0."""
    cached = services.extra.get("operator")
    if isinstance(cached, LocalAccount):
        return cached
    settings = services.settings
    key = settings.operator_key or settings.admin_key
    account = account_from_key(key) if key else anvil_account(0)
    services.extra["operator"] = account
    return account


@router.post(
    "/certificates",
    response_model=None,
    tags=["reports"],
    responses={
        200: {"model": CertificatePublic, "description": "the signed certificate, as canonical JSON"},
        503: {"description": "the mirror has not indexed any block yet"},
    },
)
def certificate(body: CertificateCreate, services: ServicesDep, principal: PrincipalDep) -> Response:
    """A search certificate: everything registered against an invoice key or fingerprint (cancelled
    registrations included) as of the mirror's block, with the block hash and ledger head, signed by the
    registry operator's key. Parties are named only where the caller may read the registration.
    Save the body and verify it offline: `registry audit certificate verify FILE --issuer ADDRESS`."""
    if (body.invoice_key is None) == (body.fingerprint is None):
        raise Problem(422, "validation_error", "give exactly one of invoice_key, fingerprint")
    query = CertificateQuery(
        invoice_key=bytes.fromhex(body.invoice_key[2:]) if body.invoice_key else None,
        fingerprint=bytes.fromhex(body.fingerprint[2:]) if body.fingerprint else None,
    )
    with services.engine.connect() as conn:
        document = issue_certificate(conn, query, principal, operator_account(services))
    # The exact bytes that were hashed (plus the envelope), so a saved response verifies as is.
    return Response(canonical_json(document), media_type="application/json")


# ---------------------------------------------------------------------------------------- statistics


@router.get("/stats/ageing", response_model=AgeingPublic, tags=["stats"])
def ageing(services: ServicesDep, principal: PrincipalDep) -> AgeingPublic:
    """Open receivables by days overdue (current, 1-30, 31-60, 61-90, >90) at the as-of block's time:
    count and unpaid amount per currency, over the receivables the caller may read."""
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        rows = stats.ageing(conn, visibility(principal), now=stamp.block_timestamp)
    return AgeingPublic(
        at=stamp.block_timestamp,
        buckets=[
            AgeingBucketPublic(currency=b.currency, bucket=b.bucket, count=b.count, unpaid=b.unpaid) for b in rows
        ],
        as_of=stamp,
    )


def _exposure_rows(rows: list[stats.Exposure]) -> list[ExposurePublicRow]:
    return [ExposurePublicRow(entity=r.entity, currency=r.currency, count=r.count, unpaid=r.unpaid) for r in rows]


@router.get("/stats/exposure", response_model=ExposurePublic, tags=["stats"])
def exposure(services: ServicesDep, principal: PrincipalDep) -> ExposurePublic:
    """Unpaid amount of open receivables by debtor (owed) and by factor (held), per currency, over the
    receivables the caller may read."""
    scope = visibility(principal)
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        by_debtor = stats.exposure_by_debtor(conn, scope)
        by_factor = stats.exposure_by_factor(conn, scope)
    return ExposurePublic(by_debtor=_exposure_rows(by_debtor), by_factor=_exposure_rows(by_factor), as_of=stamp)


def block_clock(services: Services) -> stats.BlockClock:
    """One clock per app: block timestamps read from the node, cached below the finality depth."""
    cached = services.extra.get("block_clock")
    if isinstance(cached, stats.BlockClock):
        return cached
    chain = services.registry.chain
    clock = stats.BlockClock(
        lambda n: int(chain.get_block(n)["timestamp"], 16), finality_depth=services.settings.finality_depth
    )
    services.extra["block_clock"] = clock
    return clock


@router.get("/stats/volumes", response_model=VolumesPublic, tags=["stats"])
def volumes(
    services: ServicesDep,
    principal: PrincipalDep,
    period: Literal["day", "week"] = "day",
    periods: Annotated[int, Query(ge=1, le=366, description="how many periods, ending with the current one")] = 30,
) -> VolumesPublic:
    """Status transitions per UTC day or ISO week (registrations are transitions into `registered`),
    over the receivables the caller may read."""
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        rows = stats.volumes(conn, visibility(principal), block_clock(services), period=period, periods=periods)
    return VolumesPublic(
        period=period,
        periods=[
            VolumePeriodPublic(
                start=datetime.fromtimestamp(p.start, UTC).date().isoformat(),
                start_timestamp=p.start,
                first_block=p.first_block,
                counts=p.counts,
                total=sum(p.counts.values()),
            )
            for p in rows
        ],
        as_of=stamp,
    )


# ---------------------------------------------------------------------------------------- events


def _sse(event: stats.StreamEvent) -> str:
    data = {
        "name": event.name,
        "block": event.block,
        "log_index": event.log_index,
        "tx_hash": event.tx_hash,
        "args": event.args,
    }
    return f"id: {event.position}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


# An endless text/event-stream can be neither described by OpenAPI nor fuzzed through it: documented here.
@router.get("/events/stream", include_in_schema=False, tags=["events"])
async def event_stream(
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=40, description="resume after BLOCK:LOG_INDEX")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000, description="close after this many events")] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """Server-Sent Events of the registry's events as they are indexed: `id: BLOCK:LOG_INDEX`, `data:`
    JSON {name, block, log_index, tx_hash, args}. Resumes after the `Last-Event-ID` header (what
    browsers send on reconnect) or `?after=BLOCK:LOG_INDEX` (`?after=0` replays from the start);
    without either, starts with the next event. Auditors see every event; the admin the administration
    events (participants, keys, roles, pausing); a party the events of receivables it may read and its
    own refused batch lines. A `: heartbeat` comment every 15 s keeps proxies from closing the stream."""
    cursor = last_event_id or after
    start: tuple[int, int] | None = None
    if cursor is not None:
        start = stats.parse_position(cursor)
        if start is None:
            raise Problem(422, "validation_error", "after: BLOCK:LOG_INDEX, e.g. 1234:0", errors=[{"field": "after"}])
    scope: Visibility = visibility(principal)
    reader = stats.EventReader(scope, administration=principal.is_admin)
    engine = services.engine

    def fetch(position: tuple[int, int]) -> tuple[list[stats.StreamEvent], tuple[int, int]]:
        with engine.connect() as conn:
            return stats.events_after(conn, reader, position)

    def latest() -> tuple[int, int]:
        with engine.connect() as conn:
            return stats.latest_position(conn)

    position = start if start is not None else await anyio.to_thread.run_sync(latest)

    async def events() -> AsyncIterator[str]:
        nonlocal position
        sent = 0
        beat = time.monotonic()
        yield "retry: 3000\n\n"
        while not await request.is_disconnected():
            batch, scanned = await anyio.to_thread.run_sync(fetch, position)
            moved = scanned != position
            position = scanned
            for event in batch:
                yield _sse(event)
                sent += 1
                if limit is not None and sent >= limit:
                    return
            if batch:
                beat = time.monotonic()
            elif time.monotonic() - beat >= HEARTBEAT_SECONDS:
                yield ": heartbeat\n\n"
                beat = time.monotonic()
            if not moved:
                await anyio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
