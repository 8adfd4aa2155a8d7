"""Double financing by racing the API: 100 parallel assignments of one receivable, exactly one wins.

The creditor of a confirmed receivable signs 100 different ``assign`` requests (alternating between
the two factors, each with its own terms) against the same forwarder nonce and posts them all at
once. Exactly one is relayed and answered 200; every other one is refused with 409 relay.bad_nonce
before anything is submitted (the relayer pays for exactly one transaction), never a 5xx; the chain
shows exactly one ReceivableAssigned and the winner's factor as the holder, and so does the mirror.
20 trials, on SQLite and on PostgreSQL (``database_url``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak
from fastapi.testclient import TestClient

from api.deps import Services
from registry.chain.contract import RegistryClient
from registry.demo import Consortium
from registry.invoice import Invoice
from registry.types import ReceivableId
from tests.api.test_authz_matrix import request_body, running_api
from tests.conftest import ChainState

TRIALS = 20
REQUESTS = 100
# The relayer checks and submits one signer's requests one at a time, so every loser finds the nonce
# spent by the winner before anything is submitted (no reverted transaction at the relayer's expense).
LOSING_ANSWERS = {(409, "relay.bad_nonce")}


@pytest.fixture
def race_api(registry: RegistryClient, database_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Services]]:
    """The API over a mirror on SQLite or PostgreSQL, with its live indexer."""
    with running_api(registry, tmp_path, database_url) as pair:
        yield pair


def _sign_in(api: TestClient, account: Any) -> dict[str, str]:
    message = api.post("/auth/challenge", json={"address": account.address}).json()["message"]
    signature = bytes(account.sign_message(encode_defunct(text=message)).signature)
    answer = api.post("/auth/session", json={"message": message, "signature": "0x" + signature.hex()})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def _confirmed(
    registry: RegistryClient, consortium: Consortium, chain_state: ChainState
) -> tuple[ReceivableId, Invoice]:
    now = chain_state.now()
    invoice = Invoice.parse(
        debtor=consortium.debtors[0].entity,
        invoice_number=f"RACE-{time.monotonic_ns()}",
        face_value="500,000.00",
        currency="CNY",
        issue_date=now - 86_400,
        due_date=now + 90 * 86_400,
    )
    rid = registry.register(consortium.creditors[0].account, invoice)
    registry.confirm(consortium.debtors[0].account, rid, invoice.fingerprint)
    return rid, invoice


def _assigned_events(registry: RegistryClient, rid: int, from_block: int) -> list[Any]:
    logs = registry.chain.get_logs(registry.address, from_block, registry.chain.block_number())
    return [e for e in registry.chain.decode_logs(logs) if e.name == "ReceivableAssigned" and e.args["id"] == rid]


def test_exactly_one_of_100_parallel_assignments_of_one_receivable_wins(
    race_api: tuple[TestClient, Services], registry: RegistryClient, consortium: Consortium, chain_state: ChainState
) -> None:
    api, services = race_api
    creditor, factors = consortium.creditors[0], consortium.factors[:2]
    headers = _sign_in(api, creditor.account)
    losing: Counter[tuple[int, str]] = Counter()
    relayer = services.relayer.relayer.address
    relayer_txs = int(registry.chain.rpc.call("eth_getTransactionCount", [relayer, "latest"]), 16)
    failures: list[str] = []
    started = time.monotonic()
    with ThreadPoolExecutor(REQUESTS) as pool:
        for trial in range(TRIALS):
            rid, invoice = _confirmed(registry, consortium, chain_state)
            first_block = registry.chain.block_number()
            nonce = registry.forwarder_nonce(creditor.address)
            deadline = max(int(time.time()), chain_state.now()) + 600
            gas = registry.chain.estimate_gas(
                creditor.address,
                registry.address,
                registry.abi.encode_call("assign", (rid, factors[0].entity, 1, False, bytes(32))),
            )
            bodies = [
                request_body(
                    registry.sign_request(
                        creditor.account,
                        "assign",
                        rid,
                        factors[i % 2].entity,
                        invoice.face_value * 9 // 10 - i,  # every request differs (no two share a digest)
                        i % 3 == 0,
                        keccak(text=f"terms {trial}/{i}"),
                        gas=gas + 30_000,
                        nonce=nonce,
                        deadline=deadline,
                    )
                )
                for i in range(REQUESTS)
            ]
            start = threading.Barrier(REQUESTS)

            def post(body: dict[str, Any], start: threading.Barrier = start) -> Any:
                start.wait()
                return api.post("/actions/assign", json=body, headers=headers)

            answers = list(pool.map(post, bodies))
            statuses = Counter(a.status_code for a in answers)
            winners = [(i, a) for i, a in enumerate(answers) if a.status_code == 200]
            losers = [(a.status_code, a.json().get("code")) for a in answers if a.status_code != 200]
            losing.update(losers)
            events = _assigned_events(registry, rid, first_block)
            state = registry.get_receivable(rid)
            if len(winners) != 1 or len(events) != 1 or set(losers) - LOSING_ANSWERS:
                failures.append(
                    f"trial {trial}: statuses {dict(statuses)}, {len(events)} assignments, {Counter(losers)}"
                )
                continue
            index, winner = winners[0]
            assert winner.json()["duplicate"] is False
            assert events[0].args["to"] == factors[index % 2].entity == state.holder, (trial, events[0].args)
            assert events[0].args["advance"] == invoice.face_value * 9 // 10 - index
            assert registry.forwarder_nonce(creditor.address) == nonce + 1
            mirrored = api.get(f"/receivables/{rid}", headers=headers).json()
            assert mirrored["receivable"]["holder"] == state.holder and mirrored["receivable"]["status"] == "assigned"
            assert len(mirrored["assignments"]) == 1
    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures)
    assert set(losing) <= LOSING_ANSWERS and sum(losing.values()) == TRIALS * (REQUESTS - 1)
    dialect = services.engine.dialect.name
    relayer_txs = int(registry.chain.rpc.call("eth_getTransactionCount", [relayer, "latest"]), 16) - relayer_txs
    assert relayer_txs == TRIALS, f"the relayer paid for {relayer_txs - TRIALS} transactions that reverted"
    print(
        f"\n{TRIALS} trials x {REQUESTS} requests on {dialect}: {elapsed:.1f}s; losers {dict(losing)}; "
        f"{relayer_txs} relayer transactions mined for {TRIALS} winners"
    )
