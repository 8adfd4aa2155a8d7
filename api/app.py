"""The FastAPI application: built by ``create_app(settings)``; nothing connects at import time."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import portal, problems
from api.deps import RateLimiter, Services
from api.routes import actions, audit, core, directory, flags, notices, offers, reports
from registry.auth import AuthService
from registry.chain.client import ChainClient
from registry.chain.contract import RegistryClient
from registry.chain.deployment import Deployment, check_deployment
from registry.checks import DuplicateChecker
from registry.demo import RELAYER_INDEX
from registry.keys import account_from_key, anvil_account
from registry.relay import Relayer
from registry.settings import Settings, get_settings
from registry.store.db import make_engine, migrate

log = logging.getLogger("registry.api")


_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # a caller's own request id: printable ASCII, no spaces


class RequestContext:
    """Request id, body limit, last-resort 500 and one log line per request, as a plain ASGI middleware.

    (It was ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs the app in a task group and
    relays the response through a memory stream, which cost more per request than a /checks lookup.)
    The request id is the caller's ``X-Request-Id`` (printable ASCII, at most 128 characters) or a new
    one; it is in ``request.state.request_id`` for problem documents, in the ``x-request-id`` response
    header and in the log line, which also names the principal the route resolved.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        given = length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        request_id = given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        status = 0
        max_body = self.max_body

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        if length is not None and (not length.isdigit() or int(length) > max_body):
            detail = f"request bodies are limited to {max_body} bytes"
            await self._problem(scope, send_with_id, 413, "body_too_large", detail)
        else:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:  # never a bare 500 page: a problem document with the request id
                log.exception("unhandled error (request %s)", request_id)
                if status:  # the response had begun: nothing can be sent any more
                    raise
                await self._problem(scope, send_with_id, 500, "internal_error", "unexpected error; see the server log")
        if log.isEnabledFor(logging.INFO):
            principal = state.get("principal")
            log.info(
                "%s %s -> %s (request %s, principal %s)",
                scope["method"],
                scope["path"],
                status,
                request_id,
                principal.address if principal is not None else "-",
            )

    @staticmethod
    async def _problem(scope: Scope, send: Send, status: int, code: str, detail: str) -> None:
        response = problems.problem_response(Request(scope), status, code, detail)
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _session_secret(settings: Settings) -> bytes:
    if settings.session_secret:
        return settings.session_secret.encode()
    path: Path = settings.data_dir / "session.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def build_services(settings: Settings) -> Services:
    chain = ChainClient(settings.node_url)
    deployment = Deployment.load(settings.deployment_path)
    check_deployment(chain, deployment)
    registry = RegistryClient(chain, deployment)
    engine = make_engine(settings.database)
    migrate(engine)
    url = settings.api_url
    domain = url.split("://", 1)[-1].split("/", 1)[0]
    relayer = account_from_key(settings.relayer_key) if settings.relayer_key else anvil_account(RELAYER_INDEX)
    return Services(
        settings=settings,
        engine=engine,
        registry=registry,
        auth=AuthService(
            engine,
            chain_id=chain.chain_id,
            domain=domain,
            uri=url,
            secret=_session_secret(settings),
            admins=frozenset({deployment.admin}),
        ),
        checker=DuplicateChecker(engine),
        relayer=Relayer(registry, engine, relayer),
        limiter=RateLimiter(settings.rate_limit_per_minute),
    )


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Offers accepted but not relayed when the service last stopped: relayed now, once (in the background:
        # the API answers meanwhile).
        threading.Thread(target=offers.resume_offers, args=(services,), name="resume-offers", daemon=True).start()
        yield

    app = FastAPI(
        title="Receivables registry",
        version="0.1.0",
        description="Permissioned receivables registry: sign in with your key, read what you are party to, "
        "check for double financing, relay requests you signed.",
        lifespan=lifespan,
    )
    app.state.services = services
    problems.install(app)

    app.add_middleware(RequestContext, max_body=settings.max_body_bytes)

    app.include_router(core.checks)  # first: the hot path, matched before the other routes
    app.include_router(core.router)
    app.include_router(reports.router)
    app.include_router(actions.router)
    app.include_router(audit.router)
    app.include_router(notices.router)
    app.include_router(flags.router)
    app.include_router(offers.router)
    app.include_router(directory.router)
    portal.install(app)

    return app
