"""What routes depend on: the services (built once per app) and the calling principal."""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from api.problems import Problem
from registry.auth import AuthService, Principal
from registry.chain.contract import RegistryClient
from registry.checks import DuplicateChecker
from registry.relay import Relayer
from registry.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")


class RateLimiter:
    """A token bucket per principal (per API replica): ``per_minute`` requests, bursts up to that."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = defaultdict(lambda: (self.capacity, time.monotonic()))
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed, else the seconds to wait."""
        with self._lock:
            tokens, stamp = self._buckets[key]
            now = time.monotonic()
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


@dataclass
class Services:
    settings: Settings
    engine: Engine
    registry: RegistryClient
    auth: AuthService
    checker: DuplicateChecker
    relayer: Relayer
    limiter: RateLimiter
    extra: dict[str, object] = field(default_factory=dict)
    inline_reads: bool = field(init=False)
    """Short mirror reads run on the event loop (SQLite: in-process, microseconds) rather than in a worker
    thread; over a network (PostgreSQL) they keep the thread hop, so a slow round trip blocks no one."""

    def __post_init__(self) -> None:
        self.inline_reads = self.engine.dialect.name == "sqlite"

    async def read(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args)``, a short read of the mirror: inline or in the thread pool (see ``inline_reads``)."""
        if self.inline_reads:
            return work(*args, **kwargs)
        return await run_in_threadpool(work, *args, **kwargs)


async def get_services(request: Request) -> Services:
    """An attribute read: async, so that FastAPI runs it on the event loop rather than in a worker thread
    (a thread hop per request on every route, measured on the /checks hot path)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get("registry_session")


async def current_principal(request: Request, services: ServicesDep) -> Principal:
    """Async, so it runs on the event loop: a MAC check (cached per token) and one indexed statement on
    the mirror, shorter than the hop to a worker thread and back that a sync dependency costs."""
    token = _bearer(request)
    if token is None:
        raise Problem(401, "auth.missing_token", "sign in first: send 'Authorization: Bearer <token>'")
    principal = await services.read(services.auth.authenticate, token)
    wait = services.limiter.take(principal.address)
    if wait > 0:
        raise Problem(429, "rate_limited", f"too many requests from {principal.address}", retry_after=int(wait) + 1)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def new_secret() -> str:
    return secrets.token_hex(32)
