"""Anomaly flags (registry.anomalies): list the flags you may see, clear one with a note.

Visibility is the receivables' own: a party sees the flags of receivables it may read (creditor, debtor,
current or earlier holder), an auditor sees every flag, the consortium admin none. A flag may be cleared
by the receivable's **current holder** (the creditor before assignment, the factor after) or by an
**auditor**, always with a note; not by the debtor, an earlier holder or the admin.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from api.deps import PrincipalDep, ServicesDep
from api.problems import Problem, problem_responses
from api.routes.core import as_of, visibility
from api.schemas import AsOf
from registry import anomalies
from registry.anomalies import FlagNotFound, FlagNotOpen, FlagState, InvalidNote, Kind, NotEntitledToClear
from registry.auth import Principal

router = APIRouter(responses=problem_responses(401, 422, 429, 503))

FLAG_ID = Annotated[int, Path(ge=1, lt=2**63, description="flag id")]


class FlagPublic(BaseModel):
    """One anomaly flag on one receivable."""

    id: int
    kind: str
    receivable_id: int
    severity: str
    score: float
    reason: str
    related_id: int | None = Field(description="the other receivable (near-duplicates), when visible to you")
    state: str
    evidence_block: int
    raised_block: int
    cleared_by: str | None
    clear_note: str | None
    cleared_at: float | None
    retired_block: int | None


class FlagPage(BaseModel):
    items: list[FlagPublic]
    next_cursor: str | None
    as_of: AsOf


class FlagClear(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=anomalies.MAX_NOTE, description="why the flag is cleared")


def _public(row: dict[str, Any], related_visible: bool) -> FlagPublic:
    fields = {name: row[name] for name in FlagPublic.model_fields}
    if not related_visible:
        fields["related_id"] = None
    return FlagPublic(**fields)


def _with_related(conn: Connection, rows: list[dict[str, Any]], principal: Principal) -> list[FlagPublic]:
    """The flags, naming a related receivable only when the caller may read it too (as the checker does)."""
    related = [int(r["related_id"]) for r in rows if r["related_id"] is not None]
    readable = anomalies.readable_ids(conn, related, visibility(principal))
    return [_public(r, r["related_id"] is not None and int(r["related_id"]) in readable) for r in rows]


@router.get("/flags", response_model=FlagPage, tags=["flags"])
def list_flags(
    principal: PrincipalDep,
    services: ServicesDep,
    receivable: Annotated[int | None, Query(ge=1, lt=2**63, description="only this receivable's flags")] = None,
    kind: Annotated[Kind | None, Query(description="only this kind")] = None,
    state: Annotated[
        Literal["open", "cleared", "retired", "all"] | None,
        Query(description="open or cleared (default: both); retired: removed by a reorg; all"),
    ] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> FlagPage:
    """Anomaly flags on receivables you may read, in id order; ``cursor`` pages through them."""
    states = (
        (FlagState.OPEN, FlagState.CLEARED)
        if state is None
        else tuple(FlagState)
        if state == "all"
        else (FlagState(state),)
    )
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        rows = anomalies.list_flags(
            conn,
            visibility(principal),
            receivable_id=receivable,
            kind=kind,
            states=states,
            after_id=int(cursor or 0),
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = _with_related(conn, rows, principal)
    return FlagPage(items=items, next_cursor=str(rows[-1]["id"]) if more and rows else None, as_of=stamp)


@router.post(
    "/flags/{flag_id}/clear",
    response_model=FlagPublic,
    tags=["flags"],
    responses=problem_responses(403, 404, 409),
)
def clear_flag(flag_id: FLAG_ID, body: FlagClear, principal: PrincipalDep, services: ServicesDep) -> FlagPublic:
    """Clears an open flag with a note: the receivable's current holder or an auditor only (403 for another
    party that may read it, 404 for one that may not, 409 when the flag is not open)."""
    try:
        with services.engine.begin() as conn:
            row = anomalies.clear_flag(
                conn,
                flag_id,
                entity=principal.entity,
                auditor=principal.has("auditor"),
                address=principal.address,
                note=body.note,
            )
            public = _with_related(conn, [row], principal)[0]
    except FlagNotFound:
        raise Problem(404, "not_found", f"no flag {flag_id} visible to {principal.label}") from None
    except NotEntitledToClear as exc:
        raise Problem(403, "flags.not_entitled", str(exc)) from None
    except FlagNotOpen as exc:
        raise Problem(409, "flags.not_open", str(exc)) from None
    except InvalidNote as exc:
        raise Problem(422, "validation_error", str(exc)) from None
    return public
