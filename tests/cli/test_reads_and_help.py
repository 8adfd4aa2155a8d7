"""`--json` on reads prints only JSON; `--help` of every group and command works; keys create/list;
participants admin through the CLI; finance check, payee and priority; demo identities by name."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from registry.chain.contract import RegistryClient
from registry.cli import app
from registry.demo import Member
from registry.indexer.indexer import Indexer
from registry.invoice import format_amount
from registry.keys import anvil_account
from tests.cli.conftest import PASSWORD, Run, json_out
from tests.cli.test_lifecycle import import_key
from tests.conftest import InvoiceFactory


def _commands(group: typer.Typer) -> list[list[str]]:
    root = get_command(group)
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return paths


def test_help_of_every_group_and_command() -> None:
    paths = _commands(app)
    groups = {p[0] for p in paths if p}
    assert {"keys", "participants", "invoices", "finance", "pay", "audit", "chain", "demo", "up", "serve"} <= groups
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_keys_create_lists_the_new_identity_with_its_address(run: Run, cli_env: object, tmp_path: Path) -> None:
    created = json_out(run("keys", "create", "treasury", "--json"))
    assert created["keystore"].endswith("treasury.json")
    again = run("keys", "create", "Treasury", "--json")
    assert again.exit_code == 2 and "exists already" in again.stderr
    listed = json_out(run("keys", "list", "--json"))["identities"]
    assert [(i["name"], i["address"], i["entity"]) for i in listed] == [("treasury", created["address"], None)]


def test_demo_identities_index_is_honoured(run: Run, cli_env: object, creditor: Member) -> None:
    from registry.cli._common import keys_dir
    from registry.keys import save_keystore
    from registry.settings import get_settings

    directory = keys_dir(get_settings())
    save_keystore(creditor.account, directory / "creditor-shenzhen-components.json", PASSWORD)
    index = {
        "identities": [
            {"name": creditor.name, "address": creditor.address, "file": "creditor-shenzhen-components.json"}
        ]
    }
    (directory / "identities.json").write_text(json.dumps(index))
    shown = json_out(run("keys", "show", creditor.name, "--json"))
    assert shown["address"] == creditor.address
    assert json_out(run("keys", "show", "creditor-shenzhen-components", "--json"))["label"] == creditor.name


def test_reads_print_only_json(
    run: Run,
    mode: list[str],
    registry: RegistryClient,
    creditor: Member,
    debtor: Member,
    factor: Member,
    make_invoice: InvoiceFactory,
    live_indexer: Indexer,
) -> None:
    import_key(run, "supplier", creditor)
    import_key(run, "bank", factor)
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    result = registry.assign(creditor.account, rid, factor.entity, invoice.face_value // 2)
    wait_indexed(live_indexer, result.block_number)
    fields = [
        "--debtor", invoice.debtor, "--number", invoice.invoice_number.lower(), "--amount",
        format_amount(invoice.face_value, "CNY"), "--currency", "CNY", "--issue-date", _date(invoice.issue_date),
        "--due-date", _date(invoice.due_date),
    ]  # fmt: skip
    checked = json_out(run("finance", "check", *fields, "--as", "bank", *mode, "--json"))["results"][0]
    assert (checked["registered"], checked["financed"], checked["receivable_id"]) == (True, True, rid)
    page = json_out(run("invoices", "list", "--as", "supplier", "--creditor", creditor.entity, *mode, "--json"))
    assert rid in [r["id"] for r in page["items"]]
    priority = json_out(run("finance", "priority", "0x" + invoice.key.hex(), "--as", "bank", *mode, "--json"))
    assert priority["claims"][0]["receivable_id"] == rid
    human = run("finance", "check", *fields, "--as", "bank", *mode)
    assert human.exit_code == 0 and f"already registered as receivable {rid}" in human.stdout


def test_list_filters_by_currency_and_a_due_window_of_days(
    run: Run, mode: list[str], registry: RegistryClient, creditor: Member, make_invoice: InvoiceFactory,
    live_indexer: Indexer,
) -> None:  # fmt: skip
    import_key(run, "supplier", creditor)
    cny = make_invoice(due_in_days=45)
    usd = make_invoice(due_in_days=45, currency="USD")
    later = make_invoice(due_in_days=120)
    ids = [registry.register(creditor.account, inv) for inv in (cny, usd, later)]
    wait_indexed(live_indexer, registry.chain.block_number())
    window = ["--due-from", _date(cny.due_date), "--due-to", _date(cny.due_date)]
    base = ["invoices", "list", "--as", "supplier", "--creditor", creditor.entity, "--limit", "10000", *mode]
    listed = {r["id"] for r in json_out(run(*base, *window, "--json"))["items"]}
    assert listed & set(ids) == {ids[0], ids[1]}
    listed = {r["id"] for r in json_out(run(*base, *window, "--currency", "usd", "--json"))["items"]}
    assert listed & set(ids) == {ids[1]}
    listed = {r["id"] for r in json_out(run(*base, "--due-from", _date(later.due_date), "--json"))["items"]}
    assert ids[2] in listed and not {ids[0], ids[1]} & listed
    # A page short of the matches says there are more, in both modes.
    two = ["invoices", "list", "--as", "supplier", "--creditor", creditor.entity, *mode, *window]
    page = json_out(run(*two, "--limit", "1", "--json"))
    assert len(page["items"]) == 1 and page["next_cursor"] is not None
    assert "more: raise --limit" in run(*two, "--limit", "1").stdout
    for option, value in (("--due-to", "soon"), ("--currency", "XX"), ("--due-from", "20270101")):
        refused = run(*base, option, value)
        assert refused.exit_code == 2 and f"invalid {option}" in refused.stderr, refused.stderr


def _date(unix: int) -> str:
    return datetime.datetime.fromtimestamp(unix, tz=datetime.UTC).date().isoformat()


def wait_indexed(indexer: Indexer, block: int) -> None:
    """Until the live indexer has mirrored ``block`` (it follows the chain on its own thread)."""
    for _ in range(400):
        cursor = indexer.cursor()
        if cursor is not None and cursor.block_number >= block:
            return
        time.sleep(0.025)
    raise AssertionError(f"block {block} not indexed")


@pytest.mark.parametrize("as_json", [True, False])
def test_participants_admin_through_the_cli(
    run: Run, mode: list[str], registry: RegistryClient, admin: object, creditor: Member, as_json: bool
) -> None:
    from registry.cli._common import keys_dir
    from registry.keys import save_keystore
    from registry.settings import get_settings

    save_keystore(admin, keys_dir(get_settings()) / "operator.json", PASSWORD)  # type: ignore[arg-type]
    newcomer = anvil_account(11)
    flag = ["--json"] if as_json else []
    admitted = run(
        "participants", "admit", "91440300MA5NEWCO99", "--roles", "creditor,factor", "--key", newcomer.address,
        "--as", "operator", *mode, *flag,
    )  # fmt: skip
    assert admitted.exit_code == 0, admitted.stderr
    entity = registry.entity_of_key(newcomer.address).entity
    assert entity > 0
    shown = json_out(run("participants", "show", entity, "--json"))
    assert set(shown["roles"]) == {"creditor", "factor"} and shown["keys"] == [newcomer.address]
    assert run("participants", "suspend", entity, "--as", "operator", *mode).exit_code == 0
    assert json_out(run("participants", "show", entity, "--json"))["status"] == "suspended"
    # A member cannot govern: refused by the contract (exit 1, the error named).
    import_key(run, "supplier", creditor)
    refused = run("participants", "reinstate", entity, "--as", "supplier", *mode)
    assert refused.exit_code == 1 and "AccessControlUnauthorizedAccount" in refused.stderr
    assert any(p["entity"] == entity for p in json_out(run("participants", "list", "--json"))["participants"])


def test_finance_check_of_a_file_answers_each_line_in_order(
    run: Run, mode: list[str], registry: RegistryClient, creditor: Member, factor: Member,
    make_invoice: InvoiceFactory, live_indexer: Indexer, tmp_path: Path,
) -> None:  # fmt: skip
    import_key(run, "bank", factor)
    taken = make_invoice()
    rid = registry.register(creditor.account, taken)
    wait_indexed(live_indexer, registry.chain.block_number())
    fresh = make_invoice()

    def line(inv: Any, amount: str | None = None) -> list[str]:
        fields = [str(inv.debtor), inv.invoice_number, amount or format_amount(inv.face_value, "CNY"), "CNY"]
        return [*fields, _date(inv.issue_date), _date(inv.due_date)]

    rows = [line(taken), line(fresh), line(fresh, "1.001")]
    path = tmp_path / "to-check.csv"
    path.write_text("\n".join(",".join(r) for r in [CSV_HEADER, *rows]) + "\n")
    results = json_out(run("finance", "check", "--file", path, "--as", "bank", *mode, "--json"))["results"]
    assert [r["registered"] for r in results] == [True, False, False]
    assert results[0]["receivable_id"] == rid
    assert results[2]["error"]["code"] == "invalid_invoice" and results[2]["error"]["field"] == "face_value"
    as_json = tmp_path / "to-check.json"
    keys = CSV_HEADER
    as_json.write_text(
        json.dumps({"invoices": [dict(zip(keys, r, strict=True)) | {"debtor": int(r[0])} for r in rows]})
    )
    again = json_out(run("finance", "check", "--file", as_json, "--as", "bank", *mode, "--json"))["results"]
    assert [r["registered"] for r in again] == [True, False, False]
    # Unreadable files are usage errors naming what is wrong, never a traceback.
    for name, content, said in (
        ("junk.csv", b"\xa3\x00\xff", "not UTF-8"),
        ("empty.csv", ",".join(CSV_HEADER).encode() + b"\n", "no invoice lines"),
        ("short.csv", b"debtor,invoice_number\n4,A-1\n", "the header lacks"),
        ("empty.json", b"[]", "non-empty list"),
        ("junk.json", b"\xa3\x00", "not UTF-8"),
    ):
        bad = tmp_path / name
        bad.write_bytes(content)
        result = run("finance", "check", "--file", bad, "--as", "bank", *mode)
        assert result.exit_code == 2 and said in result.stderr, (name, result.stderr)


def test_show_as_of_a_block_is_the_receivable_as_it_stood_then(
    run: Run, mode: list[str], registry: RegistryClient, creditor: Member, debtor: Member, factor: Member,
    make_invoice: InvoiceFactory, live_indexer: Indexer,
) -> None:  # fmt: skip
    import_key(run, "supplier", creditor)
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    registered_at = registry.chain.block_number()
    registry.confirm(debtor.account, rid, invoice.fingerprint)
    assigned = registry.assign(creditor.account, rid, factor.entity, invoice.face_value // 2)
    wait_indexed(live_indexer, assigned.block_number)
    show = ["invoices", "show", str(rid), "--as", "supplier", *mode]
    now = json_out(run(*show, "--json"))
    assert now["receivable"]["status"] == "assigned" and len(now["assignments"]) == 1
    then = json_out(run(*show, "--block", str(registered_at), "--json"))
    assert then["receivable"]["status"] == "registered" and then["receivable"]["valid_to_block"] is None
    assert [v["status"] for v in then["versions"]] == ["registered"] and then["assignments"] == []
    assert f"registered (as of block {registered_at})" in run(*show, "--block", str(registered_at)).stdout
    beyond = run(*show, "--block", str(assigned.block_number + 10**6))
    assert beyond.exit_code == 2 and "beyond the mirror" in beyond.stderr, beyond.stderr


CSV_HEADER = ["debtor", "invoice_number", "face_value", "currency", "issue_date", "due_date"]
