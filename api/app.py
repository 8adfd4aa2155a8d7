"""The FastAPI application: built by ``create_app(settings)``; nothing connects at import time."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response

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
    chain = ChainClient(settings.rpc_url or f"http://{settings.rpc_host}:{settings.rpc_port}")
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
    app = FastAPI(
        title="Receivables registry",
        version="0.1.0",
        description="Permissioned receivables registry: sign in with your key, read what you are party to, "
        "check for double financing, relay requests you signed.",
    )
    app.state.services = services or build_services(settings)
    problems.install(app)
    max_body = settings.max_body_bytes

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return problems.problem_response(
                request, 413, "body_too_large", f"request bodies are limited to {max_body} bytes"
            )
        try:
            response = await call_next(request)
        except Exception:  # never a bare 500 page: a problem document with the request id
            log.exception("unhandled error (request %s)", request.state.request_id)
            response = problems.problem_response(request, 500, "internal_error", "unexpected error; see the server log")
        response.headers["x-request-id"] = request.state.request_id
        principal = getattr(request.state, "principal", None)
        log.info(
            "%s %s -> %s (request %s, principal %s)",
            request.method,
            request.url.path,
            response.status_code,
            request.state.request_id,
            principal.address if principal else "-",
        )
        return response

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
