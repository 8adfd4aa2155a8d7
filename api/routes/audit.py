"""Oversight: the auditor runs a verification of ledger and mirror against the chain; auditors and the
consortium operator read the participant registry (entities, roles, keys, suspension)."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, Services, ServicesDep
from api.problems import Problem, problem_responses
from api.routes.core import as_of
from api.schemas import AsOf
from registry.audit import run_audit
from registry.auth import Forbidden, Principal
from registry.errors import RegistryError
from registry.store.participants import list_participants, mirror_ledger

router = APIRouter(responses=problem_responses(401, 403, 429, 503))

RUNS_KEPT = 20


# ---------------------------------------------------------------------------------------- schemas


class AuditRunPublic(BaseModel):
    id: str
    status: Literal["running", "done", "failed"]
    requested_by: str
    started_at: float
    finished_at: float | None
    agrees: bool | None = Field(description="null while running or when the audit could not be completed")
    error: str | None = Field(description="why the audit could not be completed (setup or rollback)")
    result: dict[str, Any] | None = Field(
        description="the full result, as `registry audit verify --json` writes it: block, ledger, mirror, agrees"
    )


class LedgerPublic(BaseModel):
    block: int
    head: str
    count: int


class AuditStatusPublic(BaseModel):
    chain_block: int | None = Field(description="the node's latest block (null: the node does not answer)")
    chain_ledger: LedgerPublic | None = Field(description="the contract's ledger hash at the latest block")
    mirror_ledger: LedgerPublic | None = Field(description="the ledger hash the mirror folded up to its block")
    last_run: AuditRunPublic | None
    as_of: AsOf


class KeyPublic(BaseModel):
    address: str
    status: str
    since_block: int


class ParticipantPublic(BaseModel):
    entity: int
    registration_hash: str
    status: str = Field(description="active or suspended")
    roles: list[str]
    since_block: int
    keys: list[KeyPublic]


class ParticipantsPublic(BaseModel):
    participants: list[ParticipantPublic]
    as_of: AsOf


# ---------------------------------------------------------------------------------------- runs


@dataclass
class _Run:
    id: str
    requested_by: str
    started_at: float
    status: Literal["running", "done", "failed"] = "running"
    finished_at: float | None = None
    agrees: bool | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    def public(self) -> AuditRunPublic:
        return AuditRunPublic(**dataclasses.asdict(self))


@dataclass
class AuditRuns:
    """This replica's audit runs (newest last); one runs at a time."""

    runs: list[_Run] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latest(self) -> _Run | None:
        with self.lock:
            return self.runs[-1] if self.runs else None


def _runs(services: Services) -> AuditRuns:
    runs = services.extra.get("audit_runs")
    if not isinstance(runs, AuditRuns):
        runs = AuditRuns()
        services.extra["audit_runs"] = runs
    return runs


def _auditor(principal: Principal) -> None:
    if not principal.has("auditor"):
        raise Forbidden(f"{principal.label} is not an auditor: only auditors run verifications")


def _execute(services: Services, run: _Run) -> None:
    settings = services.settings
    try:
        result = run_audit(
            settings.node_url,
            settings.deployment_path,
            settings.database,
            max_log_range=settings.max_log_range,
        )
        outcome: dict[str, Any] = {"status": "done", "agrees": result.agrees, "result": result.as_json()}
    except RegistryError as exc:
        outcome = {"status": "failed", "error": f"audit not completed: {exc}"}
    except Exception as exc:  # a thread has no handler above it: record, never lose the run
        outcome = {"status": "failed", "error": f"audit not completed: unexpected {type(exc).__name__}: {exc}"}
    runs = _runs(services)
    with runs.lock:
        for key, value in outcome.items():
            setattr(run, key, value)
        run.finished_at = time.time()


@router.post(
    "/audit/runs",
    response_model=AuditRunPublic,
    status_code=202,
    tags=["audit"],
    responses={200: {"model": AuditRunPublic, "description": "a run already in progress"}},
)
def start_audit(services: ServicesDep, principal: PrincipalDep, response: Response) -> AuditRunPublic:
    """Start a verification, as `registry audit verify` does: recompute the ledger hash chain from the
    chain's own events and compare every mirrored row with the contract's state at the mirror's block.
    Runs in the background (poll `GET /audit/runs/latest`); while one runs, this answers that one (200)."""
    _auditor(principal)
    runs = _runs(services)
    with runs.lock:
        if runs.runs and runs.runs[-1].status == "running":
            response.status_code = 200
            return runs.runs[-1].public()
        run = _Run(id=uuid.uuid4().hex[:16], requested_by=principal.address, started_at=time.time())
        runs.runs.append(run)
        del runs.runs[:-RUNS_KEPT]
    threading.Thread(target=_execute, args=(services, run), name=f"audit-{run.id}", daemon=True).start()
    return run.public()


@router.get("/audit/runs/latest", response_model=AuditRunPublic, tags=["audit"], responses=problem_responses(404))
def latest_audit(services: ServicesDep, principal: PrincipalDep) -> AuditRunPublic:
    """The most recent verification on this API replica (running, done or failed)."""
    _auditor(principal)
    run = _runs(services).latest()
    if run is None:
        raise Problem(404, "not_found", "no verification has been run yet: POST /audit/runs")
    return run.public()


@router.get("/audit/status", response_model=AuditStatusPublic, tags=["audit"])
def audit_status(services: ServicesDep, principal: PrincipalDep) -> AuditStatusPublic:
    """Verification status at a glance: the chain's ledger head, the mirror's, and the last run."""
    _auditor(principal)
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        mirrored = mirror_ledger(conn)
    chain_block: int | None
    chain_ledger: LedgerPublic | None
    try:
        chain_block = services.registry.chain.block_number()
        head, count = services.registry.ledger(chain_block)
        chain_ledger = LedgerPublic(block=chain_block, head="0x" + bytes(head).hex(), count=count)
    except RegistryError:  # the node being down is part of the status
        chain_block, chain_ledger = None, None
    last = _runs(services).latest()
    return AuditStatusPublic(
        chain_block=chain_block,
        chain_ledger=chain_ledger,
        mirror_ledger=LedgerPublic(**dataclasses.asdict(mirrored)) if mirrored else None,
        last_run=last.public() if last else None,
        as_of=stamp,
    )


# ---------------------------------------------------------------------------------------- participants


@router.get("/participants", response_model=ParticipantsPublic, tags=["audit"])
def participants(services: ServicesDep, principal: PrincipalDep) -> ParticipantsPublic:
    """The participant registry as mirrored: each entity's registration hash, roles, status and keys.
    For the consortium operator and auditors only (who belongs to the network is not public)."""
    if not (principal.is_admin or principal.has("auditor")):
        raise Forbidden(f"{principal.label} may not list participants: operator and auditors only")
    with services.engine.connect() as conn:
        stamp = as_of(conn)
        rows = list_participants(conn)
    return ParticipantsPublic(
        participants=[
            ParticipantPublic(
                entity=p.entity,
                registration_hash=p.registration_hash,
                status=p.status,
                roles=p.roles,
                since_block=p.since_block,
                keys=[KeyPublic(address=k.address, status=k.status, since_block=k.since_block) for k in p.keys],
            )
            for p in rows
        ],
        as_of=stamp,
    )
