"""schemathesis against the app's own OpenAPI spec, signed in: no 5xx for any input, every response
(200 bodies and problem+json errors alike) matches the schema, and every status code is documented.

In process (ASGI), one signed-in session per principal; every operation gets a few valid and a few
invalid (negative) examples, so the whole run stays within a couple of minutes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from registry.demo import Consortium
from registry.settings import Settings
from tests.api.conftest import Login

EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture
def api_settings(api_settings: Settings) -> Settings:
    """As the suite's, with a rate limit that a fuzzer's burst does not reach (429 is documented anyway)."""
    return api_settings.model_copy(update={"rate_limit_per_minute": 1_000_000})


def _describe(exc: BaseException) -> str:
    """The failure and, for an exception group (schemathesis, hypothesis' flaky report), its members."""
    parts = [str(exc)]
    for inner in getattr(exc, "exceptions", ()):
        parts.append(f"  - {type(inner).__name__}: {inner}")
    return "\n".join(parts)


@pytest.mark.parametrize("role", ["auditor", "creditor"])
def test_every_operation_answers_within_its_schema(
    api: TestClient, login: Login, consortium: Consortium, role: str
) -> None:
    member = consortium.auditors[0] if role == "auditor" else consortium.creditors[0]
    headers = login(member.account)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the spec has an invalid operation: {result.err()}")
            continue
        operation = result.ok()
        operations += 1
        for mode, examples in EXAMPLES.items():

            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            started = time.monotonic()
            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong: no inputs
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
                failures.append(f"{operation.label} ({mode.value}): {_describe(exc)}"[:4000])
            print(f"{operation.label} {mode.value}: {time.monotonic() - started:.1f}s")
    assert operations >= 30, f"only {operations} operations in the spec"
    assert not failures, "\n\n".join(failures)
