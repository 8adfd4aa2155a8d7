"""The auditor's verification names every difference between the chain, the contract and the mirror.

The mirror is edited behind the indexer's back (plain SQL) and the audit must name the table, the
row, the field and both values; the CLI must exit non-zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from registry.audit import AuditResult, Divergence, Missing, verify
from registry.chain.contract import RegistryClient
from registry.cli import app
from registry.demo import Consortium, seed_ledger
from registry.indexer.indexer import Indexer
from registry.settings import get_settings
from registry.store.db import make_engine
from tests.conftest import ChainState, InvoiceFactory


@pytest.fixture
def mirrored(registry: RegistryClient, consortium: Consortium, database_url: str) -> Iterator[Engine]:
    """The demo ledger, indexed into the test's database."""
    seed_ledger(registry, consortium, per_state=2)
    engine = make_engine(database_url)
    with Indexer(registry.chain, registry.deployment, engine) as indexer:
        indexer.sync()
    yield engine
    engine.dispose()


def audit(registry: RegistryClient, engine: Engine | None = None) -> AuditResult:
    return verify(registry.chain, registry.deployment, engine)


def paid_receivable(engine: Engine) -> tuple[int, int]:
    """(id, paid) of a current receivable with payments."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT id, paid FROM receivables WHERE valid_to IS NULL AND paid > 0 ORDER BY id LIMIT 1")
        ).one()
    return int(row.id), int(row.paid)


def execute(engine: Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        assert conn.execute(text(sql), params).rowcount >= 1


def test_audit_of_a_faithful_mirror_agrees(registry: RegistryClient, mirrored: Engine) -> None:
    result = audit(registry, mirrored)

    assert result.agrees, result.as_json()
    head, count = registry.ledger(block=result.block)
    assert result.ledger.mirror is not None
    assert result.ledger.recomputed.head == result.ledger.contract.head == result.ledger.mirror.head == head
    assert result.ledger.recomputed.count == count > 0
    assert result.mirror is not None
    assert result.mirror.checked["receivables"] == registry.receivable_count() > 0
    assert result.mirror.checked["participants"] == registry.entity_count()
    assert result.mirror.checked["participant_keys"] >= registry.entity_count()
    assert result.mirror.checked["payment_claims"] > 0
    assert result.mirror.checked["raw_events"] >= count
    doc = result.as_json()
    assert doc["agrees"] is doc["ledger"]["agrees"] is doc["mirror"]["agrees"] is True
    assert doc["mirror"]["divergent"] == doc["mirror"]["missing"] == []


def test_audit_names_a_receivable_edited_behind_the_indexers_back(registry: RegistryClient, mirrored: Engine) -> None:
    rid, paid = paid_receivable(mirrored)
    execute(mirrored, "UPDATE receivables SET paid = paid + 1 WHERE id = :id AND valid_to IS NULL", id=rid)

    result = audit(registry, mirrored)

    assert not result.agrees
    assert result.ledger.agrees and result.ledger.mirror_agrees  # the events are intact; one row is not
    assert result.mirror is not None
    assert result.mirror.divergent == [Divergence("receivables", rid, "paid", paid + 1, paid)]
    assert result.mirror.missing == []
    assert result.as_json()["mirror"]["divergent"] == [
        {"table": "receivables", "id": rid, "field": "paid", "mirror": paid + 1, "chain": paid}
    ]


def test_audit_reports_a_deleted_row_as_missing(registry: RegistryClient, mirrored: Engine) -> None:
    rid, _ = paid_receivable(mirrored)
    execute(mirrored, "DELETE FROM receivables WHERE id = :id AND valid_to IS NULL", id=rid)
    execute(mirrored, "DELETE FROM participants WHERE entity_id = 1 AND valid_to IS NULL")

    result = audit(registry, mirrored)

    assert not result.agrees
    assert result.mirror is not None
    assert result.mirror.missing == [Missing("receivables", rid), Missing("participants", 1)]
    assert result.mirror.divergent == []


def test_audit_reports_tampered_ledger_heads_and_raw_events(registry: RegistryClient, mirrored: Engine) -> None:
    with mirrored.connect() as conn:
        true_head = bytes(conn.execute(text("SELECT ledger_head FROM cursor")).scalar_one())
        amount = conn.execute(
            text("SELECT block_number, log_index, args FROM raw_events WHERE name = 'PaymentRecorded' LIMIT 1")
        ).one()
    forged = b"\x01" * 32
    execute(mirrored, "UPDATE cursor SET ledger_head = :h", h=forged)
    args = json.loads(amount.args)
    execute(
        mirrored,
        "UPDATE raw_events SET args = :a WHERE block_number = :b AND log_index = :i",
        a=json.dumps({**args, "amount": args["amount"] + 5}),
        b=amount.block_number,
        i=amount.log_index,
    )
    execute(mirrored, "UPDATE raw_events SET ledger_head = :h WHERE seq = 3", h=forged)

    result = audit(registry, mirrored)

    assert result.ledger.agrees  # the chain's own events still fold to the contract's head
    assert not result.ledger.mirror_agrees and not result.agrees
    assert result.as_json()["ledger"]["mirror"]["agrees"] is False
    assert result.mirror is not None
    divergent = {(d.table, d.field): d for d in result.mirror.divergent}
    assert divergent[("cursor", "ledger_head")] == Divergence("cursor", 1, "ledger_head", forged, true_head)
    label = f"{amount.block_number}:{amount.log_index}"
    assert divergent[("raw_events", "args.amount")] == Divergence(
        "raw_events", label, "args.amount", args["amount"] + 5, args["amount"]
    )
    assert divergent[("raw_events", "ledger_head")].mirror == forged
    assert len(result.mirror.divergent) == 3


def test_audit_names_tampered_participants_and_keys(registry: RegistryClient, mirrored: Engine) -> None:
    with mirrored.connect() as conn:
        roles = conn.execute(text("SELECT roles FROM participants WHERE entity_id = 2 AND valid_to IS NULL")).scalar()
        key = conn.execute(text("SELECT address FROM participant_keys WHERE valid_to IS NULL LIMIT 1")).scalar()
    execute(mirrored, "UPDATE participants SET roles = 'factor' WHERE entity_id = 2 AND valid_to IS NULL")
    execute(mirrored, "UPDATE participant_keys SET status = 2 WHERE address = :a AND valid_to IS NULL", a=key)

    result = audit(registry, mirrored)

    assert result.mirror is not None
    assert sorted(d.as_json()["field"] for d in result.mirror.divergent) == ["roles", "status"]
    assert Divergence("participants", 2, "roles", "factor", roles) in result.mirror.divergent
    assert {"table": "participant_keys", "id": key, "field": "status", "mirror": "REVOKED", "chain": "ACTIVE"} in [
        d.as_json() for d in result.mirror.divergent
    ]


def test_audit_reports_a_mirror_on_a_stale_fork(
    registry: RegistryClient,
    consortium: Consortium,
    chain_state: ChainState,
    make_invoice: InvoiceFactory,
    sqlite_url: str,
) -> None:
    creditor = consortium.creditors[0]
    fork_point = chain_state.snapshot()
    registry.register(creditor.account, make_invoice())
    engine = make_engine(sqlite_url)
    with Indexer(registry.chain, registry.deployment, engine) as indexer:
        indexer.sync()
    chain_state.revert(fork_point)
    registry.register(creditor.account, make_invoice())  # a rival block at the same height

    result = audit(registry, engine)

    assert result.mirror is not None and result.mirror.stale_fork and not result.agrees
    assert result.mirror.chain_hash != result.mirror.cursor_hash
    assert result.ledger.agrees  # the chain itself is consistent
    engine.dispose()


def test_ledger_only_audit_needs_no_database(
    registry: RegistryClient, consortium: Consortium, make_invoice: InvoiceFactory
) -> None:
    seed_ledger(registry, consortium, per_state=1)
    earlier = registry.chain.block_number()
    registry.register(consortium.creditors[0].account, make_invoice())

    latest = audit(registry)
    past = verify(registry.chain, registry.deployment, block=earlier)

    assert latest.agrees and latest.mirror is None and latest.as_json()["mirror"] is None
    assert latest.ledger.contract.count == registry.ledger()[1]
    assert past.agrees and past.block == earlier
    assert past.ledger.recomputed.count == registry.ledger(block=earlier)[1] < latest.ledger.recomputed.count


# ---------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(registry: RegistryClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Environment for `registry audit verify` against the test chain; returns the JSON output path."""
    deployment_file = tmp_path / "deployment.json"
    registry.deployment.save(deployment_file)
    monkeypatch.setenv("REGISTRY_RPC_URL", registry.chain.url)
    monkeypatch.setenv("REGISTRY_DEPLOYMENT_FILE", str(deployment_file))
    monkeypatch.setenv("REGISTRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield tmp_path / "audit.json"
    get_settings.cache_clear()


def test_cli_audit_exits_non_zero_naming_the_edited_row(
    registry: RegistryClient,
    consortium: Consortium,
    sqlite_url: str,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_ledger(registry, consortium, per_state=2)
    engine = make_engine(sqlite_url)
    with Indexer(registry.chain, registry.deployment, engine) as indexer:
        indexer.sync()
    monkeypatch.setenv("REGISTRY_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    runner = CliRunner()

    clean = runner.invoke(app, ["audit", "verify", "--json", str(cli_env)])
    assert clean.exit_code == 0, clean.output
    assert "AGREES" in clean.output
    assert json.loads(cli_env.read_text())["agrees"] is True

    rid, paid = paid_receivable(engine)
    execute(engine, "UPDATE receivables SET paid = paid + 1 WHERE id = :id AND valid_to IS NULL", id=rid)
    tampered = runner.invoke(app, ["audit", "verify", "--json", str(cli_env)])

    assert tampered.exit_code == 1, tampered.output
    assert "DIFFERS" in tampered.output
    line = next(ln for ln in tampered.output.splitlines() if " paid " in ln)
    assert [cell.strip() for cell in line.split("│") if cell.strip()] == [
        "receivables",
        str(rid),
        "paid",
        str(paid + 1),
        str(paid),
    ]
    doc = json.loads(cli_env.read_text())
    assert doc["agrees"] is False and doc["ledger"]["agrees"] is True
    assert doc["block"] == doc["mirror"]["cursor"]["block"]
    assert doc["mirror"]["divergent"] == [
        {"table": "receivables", "id": rid, "field": "paid", "mirror": paid + 1, "chain": paid}
    ]
    engine.dispose()


def test_cli_ledger_only_audit_and_setup_errors(cli_env: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    ledger_only = runner.invoke(app, ["audit", "verify", "--ledger-only", "--json", str(cli_env)])
    assert ledger_only.exit_code == 0, ledger_only.output
    assert json.loads(cli_env.read_text())["mirror"] is None

    no_deployment = runner.invoke(app, ["audit", "verify", "--deployment", str(tmp_path / "none.json")])
    assert no_deployment.exit_code == 2
    assert "no deployment file" in no_deployment.output

    empty = runner.invoke(app, ["audit", "verify", "--database", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert empty.exit_code == 2
    assert "not a registry mirror" in empty.output
