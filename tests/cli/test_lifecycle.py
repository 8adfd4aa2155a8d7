"""A receivable's whole life through the CLI, each party signing with its own keystore, in both modes:
directly (the relayer submits the user's signed request, reads from the mirror) and through the API."""

from __future__ import annotations

from registry.chain.contract import RegistryClient
from registry.demo import Member
from tests.cli.conftest import Run, day, json_out
from tests.conftest import ChainState


def import_key(run: Run, name: str, member: Member) -> str:
    answer = json_out(run("keys", "import", name, "--json", input="0x" + member.account.key.hex() + "\n"))
    assert answer["address"] == member.address
    return str(answer["keystore"])


def test_register_confirm_assign_pay_settles_through_the_cli(
    run: Run,
    mode: list[str],
    registry: RegistryClient,
    chain_state: ChainState,
    creditor: Member,
    debtor: Member,
    factor: Member,
) -> None:
    for name, member in (("supplier", creditor), ("buyer", debtor), ("bank", factor)):
        import_key(run, name, member)
    listed = json_out(run("keys", "list", "--json"))["identities"]
    assert {(i["name"], i["entity"]) for i in listed} == {
        ("supplier", creditor.entity),
        ("buyer", debtor.entity),
        ("bank", factor.entity),
    }

    invoice = [
        "--number", "INV-2026-CLI-1", "--amount", "100,000.00", "--currency", "CNY",
        "--issue-date", day(chain_state, -10), "--due-date", day(chain_state, 60),
    ]  # fmt: skip
    registered = json_out(
        run("invoices", "register", "--as", "supplier", "--debtor", debtor.entity, *invoice, *mode, "--json")
    )
    (event,) = [e for e in registered["events"] if e["name"] == "ReceivableRegistered"]
    rid = int(event["args"]["id"])
    assert registry.get_receivable(rid).status.name == "REGISTERED"

    # The debtor confirms with the fields of its own records (reformatted number: same invoice).
    own_records = ["--number", "inv 2026 cli 1", *invoice[2:]]
    json_out(run("invoices", "confirm", rid, "--as", "buyer", *own_records, *mode, "--json"))
    json_out(
        run("finance", "assign", rid, "--as", "supplier", "--factor", factor.entity, "--advance", "90,000.00",
            "--recourse", *mode, "--json")
    )  # fmt: skip
    payee = json_out(run("finance", "payee", rid, "--as", "buyer", *mode, "--json"))
    assert payee["payee_of_record"] == factor.entity
    paid = json_out(run("pay", "record", rid, "--as", "bank", "--amount", "100,000.00", *mode, "--json"))
    assert paid["indexed"] is True

    state = registry.get_receivable(rid)
    assert (state.status.name, state.paid, state.holder) == ("SETTLED", 10_000_000, factor.entity)
    shown = json_out(run("invoices", "show", rid, "--as", "bank", *mode, "--json"))
    assert shown["receivable"]["status"] == "settled"
    assert [v["status"] for v in shown["versions"]] == ["registered", "confirmed", "assigned", "settled"]
    assert [(a["from_entity"], a["to_entity"]) for a in shown["assignments"]] == [(creditor.entity, factor.entity)]
    listed_rows = json_out(run("invoices", "list", "--as", "bank", "--status", "settled", *mode, "--json"))["items"]
    assert rid in [r["id"] for r in listed_rows]

    # Human output names the state too.
    text = run("invoices", "show", rid, "--as", "bank", *mode)
    assert text.exit_code == 0, text.stderr
    assert f"Receivable {rid}" in text.stdout and "settled" in text.stdout
