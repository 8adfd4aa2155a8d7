"""An API over the session's node: a fresh mirror and a live indexer per test, signed-in clients."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from api.app import build_services, create_app
from registry.chain.contract import RegistryClient
from registry.indexer.indexer import Indexer, IndexerConfig
from registry.settings import Settings

Login = Callable[[LocalAccount], dict[str, str]]


@pytest.fixture
def api_settings(tmp_path: Path, registry: RegistryClient) -> Settings:
    deployment_file = tmp_path / "deployment.json"
    registry.deployment.save(deployment_file)
    return Settings(
        data_dir=tmp_path,
        rpc_url=registry.chain.url,
        deployment_file=deployment_file,
        database_url=f"sqlite:///{tmp_path / 'mirror.db'}",
        public_url="http://testserver",
        session_secret="test-secret",
        poll_interval=0.02,
    )


@pytest.fixture
def live_indexer(api_settings: Settings, registry: RegistryClient) -> Iterator[Indexer]:
    from registry.store.db import make_engine

    engine = make_engine(api_settings.database)
    indexer = Indexer(registry.chain, registry.deployment, engine, IndexerConfig(poll_interval=0.02))
    indexer.start()
    indexer.sync()
    thread = threading.Thread(target=indexer.run, daemon=True)
    thread.start()
    try:
        yield indexer
    finally:
        indexer.stop()
        thread.join(10)
        indexer.close()
        engine.dispose()


@pytest.fixture
def api(api_settings: Settings, live_indexer: Indexer) -> Iterator[TestClient]:
    services = build_services(api_settings)
    with TestClient(create_app(api_settings, services)) as client:
        yield client
    services.engine.dispose()


@pytest.fixture
def login(api: TestClient) -> Login:
    """Signs in with ``account``'s key (EIP-4361) and returns the Authorization header."""

    def sign_in(account: LocalAccount) -> dict[str, str]:
        challenge = api.post("/auth/challenge", json={"address": account.address}).json()
        signature = account.sign_message(encode_defunct(text=challenge["message"])).signature
        answer = api.post(
            "/auth/session", json={"message": challenge["message"], "signature": "0x" + bytes(signature).hex()}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    return sign_in
