"""The web portal end to end: the API (uvicorn on a free loopback port, in a thread) over the session's
node with a live indexer, demo keystores on disk, and headless Chromium driven by Playwright.

Debian's ``chromium`` is the browser (``.ci/run`` installs it); Playwright's own browser downloads are
never used. Without /usr/bin/chromium these tests are skipped, saying why.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import build_services, create_app
from registry.chain.contract import RegistryClient
from registry.demo import Consortium, write_directory
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.keys import save_keystore
from registry.settings import Settings
from registry.store.db import make_engine

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)
            if not CHROMIUM.exists():
                item.add_marker(
                    pytest.mark.skip(reason=f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
                )


@dataclass(frozen=True)
class Portal:
    url: str
    keystores: dict[str, Path]  # address -> keystore file
    password: str
    settings: Settings  # the API's (its mirror, for workers a test runs by hand)

    def keystore(self, address: str) -> Path:
        return self.keystores[address]


@pytest.fixture
def portal(tmp_path: Path, registry: RegistryClient, consortium: Consortium) -> Iterator[Portal]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    deployment_file = tmp_path / "deployment.json"
    registry.deployment.save(deployment_file)
    settings = Settings(
        data_dir=tmp_path,
        rpc_url=registry.chain.url,
        deployment_file=deployment_file,
        database_url=f"sqlite:///{tmp_path / 'mirror.db'}",
        public_url=url,
        session_secret="e2e-secret",
        poll_interval=0.02,
    )
    write_directory(consortium, settings.directory_file)  # participants' names, as `registry up` writes them
    engine = make_engine(settings.database)
    indexer = Indexer(registry.chain, registry.deployment, engine, IndexerConfig(poll_interval=0.02))
    indexer.start()
    indexer.sync()
    indexing = threading.Thread(target=indexer.run, daemon=True)
    indexing.start()
    services = build_services(settings)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services), log_level="warning", lifespan="off"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    serving.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200

    keys = tmp_path / "keystores"
    accounts = [consortium.admin, *(m.account for m in consortium.members)]
    keystores = {a.address: save_keystore(a, keys / f"{a.address}.json", PASSWORD) for a in accounts}
    try:
        yield Portal(url, keystores, PASSWORD, settings)
    finally:
        server.should_exit = True
        serving.join(10)
        sock.close()
        indexer.stop()
        indexing.join(10)
        indexer.close()
        services.engine.dispose()
        engine.dispose()
