"""What routes depend on: the services (built once per app) and the calling principal; the hot path's route."""

from __future__ import annotations

import inspect
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, ParamSpec, TypeVar, get_type_hints

from fastapi import Depends, Request, Response, params
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
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


async def authenticate(request: Request, services: Services) -> Principal:
    """The calling principal (:data:`PrincipalDep`, and :class:`DirectRoute` on the hot path): the session
    token's MAC (cached per token) and one indexed statement on the mirror, so that a suspended entity or
    a revoked key is refused at once; then the caller's rate limit. Async, so it runs on the event loop:
    shorter than the hop to a worker thread and back that a sync dependency costs."""
    token = _bearer(request)
    if token is None:
        raise Problem(401, "auth.missing_token", "sign in first: send 'Authorization: Bearer <token>'")
    principal = await services.read(services.auth.authenticate, token)
    wait = services.limiter.take(principal.address)
    if wait > 0:
        raise Problem(429, "rate_limited", f"too many requests from {principal.address}", retry_after=int(wait) + 1)
    request.state.principal = principal
    return principal


async def current_principal(request: Request, services: ServicesDep) -> Principal:
    return await authenticate(request, services)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


class DirectRoute(APIRoute):
    """A route for the API's hot path (``POST /checks``), served without FastAPI's per-request machinery.

    Its endpoint is declared like any other, ``async def f(body: Model, services: ServicesDep, principal:
    PrincipalDep) -> Response``, and FastAPI documents it from that signature as usual (request body,
    responses). At request time the route resolves those three arguments itself, as the dependencies
    would, in fewer steps: the services from the app's state, the principal by :func:`authenticate` (what
    PrincipalDep calls: the same refusals, rate limit and log line), then the body read once and validated
    by pydantic from the JSON bytes. Invalid input raises the same RequestValidationError, located in the
    body, so the same problem document naming the field. (FastAPI's generic path, dependency solving run
    once per dependency and for the body, the body parsed to Python and then validated, the content type
    parsed as an e-mail header, cost more than the double-financing check's SQL.)

    Dependencies given to ``include_router`` and ``app.dependency_overrides`` do not apply to such a
    route: include its router without dependencies, and override ``app.state.services`` in tests.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self.body_model = _direct_body_model(endpoint)  # (before APIRoute's __init__: it builds the handler)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[BaseModel, Services, Principal], Awaitable[Response]] = self.endpoint
        validate = self.body_model.model_validate_json

        async def handle(request: Request) -> Response:
            services: Services = request.app.state.services
            principal = await authenticate(request, services)
            data = await _json_body(request)
            try:
                body = validate(data)
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_context=False, include_input=False)
                raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
            return await endpoint(body, services, principal)

        return handle


def _direct_body_model(endpoint: Callable[..., Any]) -> type[BaseModel]:
    """The body model of a :class:`DirectRoute`'s endpoint; refuses any other signature."""
    names = list(inspect.signature(endpoint).parameters)
    hints = get_type_hints(endpoint, include_extras=True)
    shape = [hints.get(name) for name in names]
    if (
        inspect.iscoroutinefunction(endpoint)
        and len(shape) == 3
        and isinstance(shape[0], type)
        and issubclass(shape[0], BaseModel)
        and [_dependency(hint) for hint in shape[1:]] == [get_services, current_principal]
    ):
        return shape[0]
    raise TypeError(
        f"{getattr(endpoint, '__name__', endpoint)!r}: a DirectRoute serves "
        "`async def f(body: Model, services: ServicesDep, principal: PrincipalDep) -> Response` only"
    )


def _dependency(hint: Any) -> Any:
    """The callable of ``Annotated[T, Depends(f)]``, else None."""
    metadata: tuple[Any, ...] = getattr(hint, "__metadata__", ())
    return metadata[0].dependency if len(metadata) == 1 and isinstance(metadata[0], params.Depends) else None


_NOT_JSON: Final = "must be JSON (Content-Type: application/json)"


async def _json_body(request: Request) -> bytes:
    """The body, if its content type says JSON (``application/json`` or ``application/...+json``, as
    FastAPI takes them); else a validation error of the body."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    if maintype != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise RequestValidationError([{"type": "content_type", "loc": ("body",), "msg": _NOT_JSON}])
    return await request.body()


def new_secret() -> str:
    return secrets.token_hex(32)
