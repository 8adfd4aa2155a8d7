"""Errors as RFC 9457 problem+json with stable machine codes: the one handler table.

Every exception of the registry's error tree maps to a status and a code here, and nowhere else.
A contract revert becomes a 4xx naming the Solidity error and its fields.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry.auth import AuthError, Forbidden
from registry.chain.reverts import ContractRevert
from registry.chain.rpc import NodeUnavailable
from registry.checks import MirrorNotReady
from registry.errors import ChainError, FieldError, InvalidInvoice, RegistryError
from registry.relay import RelayError

log = logging.getLogger("registry.api")

PROBLEM_JSON = "application/problem+json"
# FastAPI's HTTPException detail when a request body cannot be read as JSON text at all.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


class Problem(Exception):
    """An HTTP problem raised by the API layer itself (not found, rate limited, ...)."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

# Contract errors that mean "the state does not allow it" (409) rather than "your input is wrong" (422).
CONFLICT_ERRORS = frozenset(
    {
        "InvoiceKeyTaken",
        "FingerprintTaken",
        "InvalidStatus",
        "ClaimNotPending",
        "EnforcedPause",
        "ERC2771ForwarderInvalidSigner",
        "InvalidAccountNonce",
    }
)
FORBIDDEN_ERRORS = frozenset(
    {
        "NotDebtorOfRecord",
        "NotCreditorOfRecord",
        "NotHolder",
        "NotPayeeOfClaim",
        "UnknownKey",
        "KeyIsRevoked",
        "EntityIsSuspended",
        "EntityMissingRole",
        "AccessControlUnauthorizedAccount",
    }
)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting ``statuses`` as problem+json bodies (ProblemPublic)."""
    from api.schemas import ProblemPublic

    schema = {"$ref": "#/components/schemas/ProblemPublic"}
    return {
        status: {
            "model": ProblemPublic,
            "description": TITLES.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for status in statuses
    }


def problem_response(
    request: Request, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://errors.receivables-registry.local/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def jsonable(value: Any) -> Any:
    """Decoded ABI values as JSON: bytes as 0x-hex, tuples as lists."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def install(app: FastAPI) -> None:
    """Registers the handler table on ``app``."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        headers = {"Retry-After": str(exc.extra.pop("retry_after"))} if "retry_after" in exc.extra else None
        if exc.status == 401:  # RFC 9110: a 401 names its scheme, as the auth.* refusals below do
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return problem_response(request, exc.status, exc.code, exc.detail, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [  # (an error of the body as a whole, e.g. not JSON, names the body)
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body", "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem_response(
            request, 422, "validation_error", f"{first['field']}: {first['message']}", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            # A body that is not even text (e.g. not UTF-8) is invalid input like malformed JSON: 422.
            errors = [{"field": "body", "message": "not valid JSON (UTF-8)"}]
            return problem_response(request, 422, "validation_error", "body: not valid JSON (UTF-8)", errors=errors)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return problem_response(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        return registry_problem(request, exc)


def registry_problem(request: Request, exc: RegistryError) -> JSONResponse:
    if isinstance(exc, ContractRevert):
        name = exc.error_name
        status = 403 if name in FORBIDDEN_ERRORS else 409 if name in CONFLICT_ERRORS else 422
        return problem_response(
            request,
            status,
            f"contract.{name}",
            str(exc),
            error=name,
            fields={k: jsonable(v) for k, v in exc.fields.items()},
        )
    if isinstance(exc, FieldError):  # InvalidInvoice, ActionError: every bad field named
        code = "invalid_invoice" if isinstance(exc, InvalidInvoice) else "invalid_argument"
        return problem_response(request, 422, code, str(exc), errors=exc.field_errors())
    if isinstance(exc, AuthError):
        return problem_response(request, 401, f"auth.{exc.reason}", str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, Forbidden):
        return problem_response(request, 403, "forbidden", str(exc))
    if isinstance(exc, RelayError):
        status = 409 if exc.reason in ("bad_nonce", "in_flight") else 422
        return problem_response(request, status, f"relay.{exc.reason}", str(exc))
    if isinstance(exc, MirrorNotReady):
        return problem_response(request, 503, "mirror_not_ready", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, (NodeUnavailable, ChainError)):
        log.warning("chain error: %s", exc)
        return problem_response(request, 503, "chain_unavailable", str(exc), headers={"Retry-After": "2"})
    log.exception("unexpected registry error", exc_info=exc)
    return problem_response(request, 500, "internal_error", "unexpected error; see the server log")
