"""The CLI over the session's node: a fresh mirror with a live indexer per test (the API suite's fixtures),
keystores in a temporary keys directory, and the API on a real port for API mode."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from registry.cli import _ApiServer, _common, app
from registry.settings import Settings, get_settings
from tests.api.conftest import api_settings, live_indexer  # noqa: F401  (fixtures reused)
from tests.conftest import ChainState

PASSWORD = "correct horse battery staple"

Run = Callable[..., Result]


@pytest.fixture
def cli_env(api_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:  # noqa: F811
    """The CLI's settings come from the environment, as for a user: point them at the test stack."""
    assert api_settings.deployment_file is not None and api_settings.rpc_url is not None
    env = {
        "REGISTRY_DATA_DIR": str(api_settings.data_dir),
        "REGISTRY_RPC_URL": api_settings.rpc_url,
        "REGISTRY_DEPLOYMENT_FILE": str(api_settings.deployment_file),
        "REGISTRY_DATABASE_URL": api_settings.database,
        "REGISTRY_KEYSTORE_PASSWORD": PASSWORD,
        "COLUMNS": "200",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Rich reads COLUMNS when a console is made, and the CLI's consoles were made at import (before this
    # fixture, in whichever test imported the CLI first): without this, tables wrap at 80 columns or 200
    # depending on how tests were spread over workers.
    for shown in (_common.console, _common.err_console):
        monkeypatch.setattr(shown, "width", 200)
    monkeypatch.delenv("REGISTRY_CLI_API", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def run(cli_env: Settings) -> Run:
    """Runs ``registry ARGS...``; stdout and stderr apart."""

    def invoke(*args: Any, input: str | None = None) -> Result:
        return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def api_server(api_settings: Settings, live_indexer: Any) -> Iterator[str]:  # noqa: F811
    """The API on a free loopback port over the test mirror; its URL."""
    assert api_settings.rpc_url is not None
    server = _ApiServer.start(api_settings.model_copy(update={"public_url": None, "api_port": 0}), api_settings.rpc_url)
    assert server.url, server.error
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["direct", "api"])
def mode(request: pytest.FixtureRequest, live_indexer: Any) -> list[str]:  # noqa: F811
    """Extra options selecting the backend: none (chain and mirror directly) or --api URL."""
    if request.param == "direct":
        return []
    return ["--api", str(request.getfixturevalue("api_server"))]


def day(chain_state: ChainState, days: int) -> str:
    """A date ``days`` from now on the chain's clock, as YYYY-MM-DD."""
    moment = datetime.datetime.fromtimestamp(chain_state.now() + days * 86_400, tz=datetime.UTC)
    return moment.date().isoformat()


def json_out(result: Result) -> Any:
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)
