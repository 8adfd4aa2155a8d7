"""The demo consortium that `make up` seeds: keystores for every identity, and a ledger with a story.

The ledger is seeded once for this module (120 invoices, a snapshot reverted afterwards); every claim
about it is checked against the contract's own state and events, not against the seeder's plan.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from registry.chain.abi import DecodedEvent
from registry.chain.contract import RegistryClient
from registry.chain.deployment import deploy
from registry.chain.node import LocalNode
from registry.chain.reverts import decode_revert, error_class
from registry.demo import (
    ADMIN_NAME,
    DAY,
    DEMO_SEED,
    IDENTITIES_FILE,
    Consortium,
    _Planner,
    demo_genesis_timestamp,
    keystore_file_name,
    receivable_states,
    seed_demo,
    status_counts,
    write_keystores,
)
from registry.domain import ClaimStatus, Status
from registry.keys import KeystoreError, anvil_account, load_keystore, save_keystore
from registry.settings import Settings
from tests.conftest import ChainState

PASSWORD = "correct horse battery staple"
SEEDED_INVOICES = 120
AGEING_BUCKETS = ("current", "1-30", "31-60", "61-90", ">90")

# ---------------------------------------------------------------------------------------- keystores


def _identities(consortium: Consortium) -> dict[str, str]:
    """Name -> address of every demo identity: the operator and each member."""
    return {ADMIN_NAME: consortium.admin.address, **{m.name: m.address for m in consortium.members}}


def test_keystores_are_standard_v3_files_that_decrypt_to_each_identity(tmp_path: Path, consortium: Consortium) -> None:
    keys_dir = tmp_path / "keys"
    written = write_keystores(consortium, keys_dir, PASSWORD)

    expected = _identities(consortium)
    assert set(written) == set(expected)
    assert len(written) == 9  # operator, 3 creditors, 2 debtors, 2 factors, an auditor
    assert written["Shenzhen Components Co."].name == "creditor-shenzhen-components.json"
    assert written[ADMIN_NAME].name == "admin-consortium-operator.json"
    for name, path in written.items():
        assert path.parent == keys_dir
        data = json.loads(path.read_text())
        assert data["version"] == 3
        assert data["crypto"]["kdf"] == "scrypt"
        assert data["crypto"]["cipher"] == "aes-128-ctr"
        assert {"n", "r", "p", "dklen", "salt"} <= set(data["crypto"]["kdfparams"])
        assert "0x" + data["address"].lower() == expected[name].lower()
        assert path.stat().st_mode & 0o777 == 0o600
        assert load_keystore(path, PASSWORD).address == expected[name]
        # Any v3 implementation reads it, not only ours.
        assert Account.from_key(Account.decrypt(data, PASSWORD)).address == expected[name]


def test_a_keystore_refuses_another_password(tmp_path: Path, consortium: Consortium) -> None:
    path = write_keystores(consortium, tmp_path, PASSWORD)[consortium.factors[0].name]
    with pytest.raises(KeystoreError, match="wrong password"):
        load_keystore(path, PASSWORD + "!")


def test_identities_index_lists_name_entity_roles_address_and_file(tmp_path: Path, consortium: Consortium) -> None:
    written = write_keystores(consortium, tmp_path, PASSWORD)
    index = json.loads((tmp_path / IDENTITIES_FILE).read_text())
    rows = {row["name"]: row for row in index["identities"]}
    assert set(rows) == set(written)
    assert rows[ADMIN_NAME]["entity"] is None
    assert rows[ADMIN_NAME]["roles"] == ["admin"]
    for member in consortium.members:
        row = rows[member.name]
        assert row["entity"] == member.entity
        assert row["roles"] == [r.label for r in member.roles]
        assert row["address"] == member.address
        assert tmp_path / row["file"] == written[member.name]
    assert PASSWORD not in (tmp_path / IDENTITIES_FILE).read_text()


def test_rewriting_keystores_keeps_the_existing_files_untouched(tmp_path: Path, consortium: Consortium) -> None:
    first = write_keystores(consortium, tmp_path, PASSWORD)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in [*first.values(), tmp_path / IDENTITIES_FILE]}
    second = write_keystores(consortium, tmp_path, PASSWORD)
    assert second == first
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before  # not re-encrypted


def test_a_missing_keystore_is_written_again_beside_the_kept_ones(tmp_path: Path, consortium: Consortium) -> None:
    written = write_keystores(consortium, tmp_path, PASSWORD)
    auditor = written[consortium.auditors[0].name]
    kept = written[consortium.creditors[0].name].read_bytes()
    auditor.unlink()
    write_keystores(consortium, tmp_path, PASSWORD)
    assert load_keystore(auditor, PASSWORD).address == consortium.auditors[0].address
    assert written[consortium.creditors[0].name].read_bytes() == kept


def test_a_keystore_of_another_key_is_refused_and_kept(tmp_path: Path, consortium: Consortium) -> None:
    debtor = consortium.debtors[0]
    foreign = tmp_path / keystore_file_name("debtor", debtor.name)
    save_keystore(anvil_account(15), foreign, PASSWORD)
    content = foreign.read_bytes()
    with pytest.raises(KeystoreError, match=rf"{foreign.name}.*not {debtor.name}'s"):
        write_keystores(consortium, tmp_path, PASSWORD)
    assert foreign.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name]  # nothing else written either


def test_keystores_under_another_password_are_refused_and_kept(tmp_path: Path, consortium: Consortium) -> None:
    written = write_keystores(consortium, tmp_path, PASSWORD)
    before = {p: p.read_bytes() for p in written.values()}
    with pytest.raises(KeystoreError, match="REGISTRY_DEMO_PASSWORD"):
        write_keystores(consortium, tmp_path, "another password")
    assert {p: p.read_bytes() for p in written.values()} == before


def test_a_file_that_is_not_a_keystore_is_refused_and_kept(tmp_path: Path, consortium: Consortium) -> None:
    path = tmp_path / keystore_file_name("auditor", consortium.auditors[0].name)
    path.write_text('{"hello": "world"}')
    with pytest.raises(KeystoreError, match="not a Web3 Secret Storage v3 keystore"):
        write_keystores(consortium, tmp_path, PASSWORD)
    assert path.read_text() == '{"hello": "world"}'


def test_keystore_file_names_are_role_and_name_without_legal_form() -> None:
    assert keystore_file_name("creditor", "Shenzhen Components Co.") == "creditor-shenzhen-components.json"
    assert keystore_file_name("auditor", "Crescent Audit LLP") == "auditor-crescent-audit.json"
    assert keystore_file_name("debtor", "Pacific Retail Holdings") == "debtor-pacific-retail-holdings.json"


def test_settings_put_keys_under_the_data_dir_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(data_dir=tmp_path).keys_dir == tmp_path / "keys"
    assert Settings(data_dir=tmp_path, keys_dir=tmp_path / "k").keys_dir == tmp_path / "k"
    monkeypatch.setenv("REGISTRY_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("REGISTRY_DEMO_INVOICES", "120")
    settings = Settings()
    assert settings.keys_dir == tmp_path / "d" / "keys"
    assert settings.demo_invoices == 120
    assert settings.demo_password  # a demo default, documented as such


# ---------------------------------------------------------------------------------------- the seeded ledger


@dataclass(frozen=True)
class Seeded:
    client: RegistryClient
    consortium: Consortium
    outcome: Counter[str]
    first_block: int
    events: list[DecodedEvent]

    def named(self, name: str) -> list[DecodedEvent]:
        return [e for e in self.events if e.name == name]


@pytest.fixture(scope="module")
def seeded(_base_registry: tuple[RegistryClient, Consortium], chain_state: ChainState) -> Iterator[Seeded]:
    client, consortium = _base_registry
    snapshot = chain_state.snapshot()
    try:
        assert client.receivable_count() == 0, "the base registry should hold no receivables"
        first_block = client.chain.block_number() + 1
        _, outcome = seed_demo(client, invoices=SEEDED_INVOICES)
        assert outcome is not None
        logs = client.chain.get_logs(client.address, first_block, client.chain.block_number())
        yield Seeded(client, consortium, outcome, first_block, client.chain.decode_logs(logs))
    finally:
        chain_state.revert(snapshot)


def test_seeded_ledger_has_every_status_of_the_lifecycle(seeded: Seeded) -> None:
    counts = status_counts(seeded.client)
    assert set(counts) == set(Status) - {Status.NONE}


def test_outcome_counts_match_the_chain(seeded: Seeded) -> None:
    counts = status_counts(seeded.client)
    for status in Status:
        if status is not Status.NONE:
            assert seeded.outcome[status.name.lower()] == counts[status], status
    assert seeded.outcome["invoices"] == SEEDED_INVOICES == len(seeded.named("ReceivableRegistered"))
    assert seeded.client.receivable_count() == SEEDED_INVOICES + seeded.outcome["split_parts"]
    assert seeded.outcome["split_parts"] == sum(len(e.args["partIds"]) for e in seeded.named("ReceivableSplit"))


def test_refused_double_financings_are_counted_and_recorded_on_chain(seeded: Seeded) -> None:
    refusals = [decode_revert(e.args["reason"]) for e in seeded.named("RegistrationRejected")]
    assert all(isinstance(r, error_class("InvoiceKeyTaken")) for r in refusals)
    assert 5 <= seeded.outcome["double_financing_refused"] == len(refusals) <= 10
    # Each one names a live registration of the same debtor's invoice, made earlier by block order.
    registered = {e.args["invoiceKey"]: e for e in seeded.named("ReceivableRegistered")}
    for event, refusal in zip(seeded.named("RegistrationRejected"), refusals, strict=True):
        original = registered[refusal.invoiceKey]
        assert original.block_number < event.block_number
        assert seeded.client.get_receivable(refusal.existingId).status.is_live
    # Some came from another creditor than the original's: a different registering party is no way round.
    originals = [registered[r.invoiceKey].args["creditor"] for r in refusals]
    assert any(e.args["creditor"] != c for e, c in zip(seeded.named("RegistrationRejected"), originals, strict=True))


def test_seeded_ledger_has_both_currencies_mostly_cny(seeded: Seeded) -> None:
    currencies = Counter(bytes(e.args["currency"]).decode() for e in seeded.named("ReceivableRegistered"))
    assert set(currencies) == {"CNY", "USD"}
    assert currencies["CNY"] > currencies["USD"]
    assert currencies == {"CNY": seeded.outcome["currency_cny"], "USD": seeded.outcome["currency_usd"]}


def test_open_receivables_fill_every_ageing_bucket(seeded: Seeded) -> None:
    now = int(seeded.client.chain.get_block("latest")["timestamp"], 16)
    buckets: Counter[str] = Counter()
    for r in receivable_states(seeded.client):
        if r.status in (Status.CONFIRMED, Status.ASSIGNED, Status.PARTIALLY_PAID, Status.DEFAULTED):
            late = now - r.due_date
            index = 0 if late <= 0 else min(4, 1 + (late - 1) // (30 * DAY))
            buckets[AGEING_BUCKETS[index]] += 1
    assert set(buckets) == set(AGEING_BUCKETS)
    assert seeded.outcome["overdue"] == sum(buckets.values()) - buckets["current"]


def test_every_creditor_debtor_and_factor_takes_part(seeded: Seeded) -> None:
    states = receivable_states(seeded.client)
    members = seeded.consortium
    assert {r.creditor for r in states} == {m.entity for m in members.creditors}
    assert {r.debtor for r in states} == {m.entity for m in members.debtors}
    assigned_to = {e.args["to"] for e in seeded.named("ReceivableAssigned")}
    assert {m.entity for m in members.factors} <= assigned_to


def test_story_events_happened_on_chain(seeded: Seeded) -> None:
    """Re-assignments, buy-backs, payments before notice, claims and dispute outcomes, as counted."""
    client, outcome = seeded.client, seeded.outcome
    factors = {m.entity for m in seeded.consortium.factors}
    assert outcome["reassigned"] == sum(1 for e in seeded.named("ReceivableAssigned") if e.args["from"] in factors)
    assert outcome["bought_back"] == len(seeded.named("ReceivableBoughtBack"))
    claims = Counter(client.get_payment_claim(e.args["claimId"]).status for e in seeded.named("PaymentReported"))
    assert claims[ClaimStatus.PENDING] == outcome["payment_claims_pending"] > 0
    assert claims[ClaimStatus.REJECTED] == outcome["payment_claims_rejected"]
    resolved = Counter(e.args["resolution"] for e in seeded.named("DisputeResolved"))
    assert sorted(resolved.values()) == sorted([outcome["disputes_withdrawn"], outcome["disputes_upheld"]])
    # Paid before notice: a payment acknowledged by the creditor, then the rest assigned to a factor.
    acknowledged_before_assignment = 0
    for e in seeded.named("PaymentRecorded"):
        if e.args["claimId"] and e.args["payee"] in {m.entity for m in seeded.consortium.creditors}:
            later = [a for a in seeded.named("ReceivableAssigned") if a.args["id"] == e.args["id"]]
            acknowledged_before_assignment += any(a.block_number > e.block_number for a in later)
    assert acknowledged_before_assignment == outcome["paid_before_notice"] > 0


def test_block_times_never_decrease_while_seeding(seeded: Seeded) -> None:
    rpc = seeded.client.chain.rpc
    head = seeded.client.chain.block_number()
    blocks = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(seeded.first_block - 1, head + 1)])
    times = [int(b["timestamp"], 16) for b in blocks]
    assert times == sorted(times)
    assert times[-1] - times[0] > 200 * DAY  # the history spans months


def test_seed_demo_leaves_a_seeded_ledger_alone(seeded: Seeded) -> None:
    count = seeded.client.receivable_count()
    _, outcome = seed_demo(seeded.client, invoices=SEEDED_INVOICES)
    assert outcome is None
    assert seeded.client.receivable_count() == count


# ---------------------------------------------------------------------------------------- determinism, clock


def _plan_fingerprint(consortium: Consortium, seed: int) -> list[tuple[object, ...]]:
    plan = _Planner(consortium, random.Random(seed), 1_800_000_000).plan(SEEDED_INVOICES)
    return [
        (day, type(step).__name__, getattr(step, "fn", None), getattr(step, "invoice", None))
        for day in sorted(plan.days)
        for step in plan.days[day]
    ]


def test_the_demo_ledger_is_the_same_every_time(consortium: Consortium) -> None:
    assert _plan_fingerprint(consortium, DEMO_SEED) == _plan_fingerprint(consortium, DEMO_SEED)
    assert _plan_fingerprint(consortium, DEMO_SEED) != _plan_fingerprint(consortium, DEMO_SEED + 1)


def test_a_node_started_in_the_past_ends_the_history_at_the_wall_clock(settings: Settings) -> None:
    """What `registry up` gets when it starts a fresh node at demo_genesis_timestamp()."""
    if settings.node != "anvil":
        pytest.skip("genesis time is an Anvil option here")
    with LocalNode(port=0, block_time=0, extra_args=["--timestamp", str(demo_genesis_timestamp())]) as node:
        from registry.chain.client import ChainClient

        with ChainClient(node.url) as chain:
            client = RegistryClient(chain, deploy(chain, anvil_account(0)))
            _, outcome = seed_demo(client, invoices=30)
            assert outcome is not None and outcome["invoices"] == 30
            assert abs(int(chain.get_block("latest")["timestamp"], 16) - time.time()) < 120
            assert chain.rpc.call("anvil_getAutomine") is True  # left as it was found
