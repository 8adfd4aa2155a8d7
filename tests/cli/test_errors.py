"""Errors a script can trust: a wrong password or unknown identity is a setup error (2) and sends
nothing; a contract refusal is 1 and names the Solidity error; a malformed argument is 2 and names it;
the CLI refuses to sign a request the API prepared differently from what was asked."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from registry.chain.contract import RegistryClient
from registry.demo import Member
from registry.invoice import Invoice
from tests.cli.conftest import Run, day
from tests.cli.test_lifecycle import import_key
from tests.conftest import ChainState, InvoiceFactory


def _register_args(chain_state: ChainState, debtor: Member, number: str) -> list[str]:
    return [
        "invoices", "register", "--debtor", str(debtor.entity), "--number", number, "--amount", "5,000.00",
        "--currency", "CNY", "--issue-date", day(chain_state, -3), "--due-date", day(chain_state, 30),
    ]  # fmt: skip


def test_wrong_password_is_a_setup_error_and_sends_nothing(
    run: Run,
    mode: list[str],
    registry: RegistryClient,
    chain_state: ChainState,
    creditor: Member,
    debtor: Member,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import_key(run, "supplier", creditor)
    count, nonce = registry.receivable_count(), registry.forwarder_nonce(creditor.address)
    monkeypatch.setenv("REGISTRY_KEYSTORE_PASSWORD", "not the password")
    result = run(*_register_args(chain_state, debtor, "PW-1"), "--as", "supplier", *mode)
    assert result.exit_code == 2
    assert "wrong password" in result.stderr and "REGISTRY_KEYSTORE_PASSWORD" in result.stderr
    assert "not the password" not in result.stdout + result.stderr
    assert (registry.receivable_count(), registry.forwarder_nonce(creditor.address)) == (count, nonce)


def test_password_from_a_file(run: Run, tmp_path: Any, registry: RegistryClient, creditor: Member) -> None:
    import_key(run, "supplier", creditor)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope\n")
    assert run("invoices", "cancel", "1", "--as", "supplier", "--password-file", wrong).exit_code == 2


def test_unknown_identity_is_a_setup_error_with_what_to_do(run: Run) -> None:
    result = run("invoices", "cancel", "1", "--as", "nobody")
    assert result.exit_code == 2
    assert "no identity 'nobody'" in result.stderr and "registry keys import" in result.stderr


def test_duplicate_registration_is_refused_with_the_contract_error_and_a_hint(
    run: Run,
    mode: list[str],
    registry: RegistryClient,
    chain_state: ChainState,
    creditor: Member,
    other_creditor: Member,
    debtor: Member,
) -> None:
    import_key(run, "supplier", creditor)
    args = _register_args(chain_state, debtor, "DUP-1")
    first = registry.register(
        other_creditor.account,
        Invoice.parse(
            debtor=debtor.entity, invoice_number="DUP-1", face_value="5000", currency="CNY",
            issue_date=args[args.index("--issue-date") + 1], due_date=args[args.index("--due-date") + 1],
        ),
    )  # fmt: skip
    result = run(*args, "--as", "supplier", *mode)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "InvoiceKeyTaken" in result.stderr
    assert f"already registered as receivable {first}" in result.stderr and "finance check" in result.stderr


def test_confirm_by_someone_other_than_the_debtor_names_the_error(
    run: Run,
    mode: list[str],
    registry: RegistryClient,
    creditor: Member,
    make_invoice: InvoiceFactory,
) -> None:
    import_key(run, "supplier", creditor)
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)
    fp = "0x" + invoice.fingerprint.hex()
    result = run("invoices", "confirm", rid, "--fingerprint", fp, "--as", "supplier", *mode)
    assert result.exit_code == 1
    assert "NotDebtorOfRecord" in result.stderr and "debtor" in result.stderr
    assert registry.get_receivable(rid).status.name == "REGISTERED"


def test_malformed_argument_is_a_usage_error_naming_the_field(
    run: Run, mode: list[str], chain_state: ChainState, creditor: Member, debtor: Member
) -> None:
    import_key(run, "supplier", creditor)
    args = _register_args(chain_state, debtor, "BAD-1")
    args[args.index("--amount") + 1] = "12.345"
    result = run(*args, "--as", "supplier", *mode)
    assert result.exit_code == 2
    assert "face_value" in result.stderr
    bad_reason = run("invoices", "dispute", "1", "--reason", "BORED", "--as", "supplier", *mode)
    assert bad_reason.exit_code == 2 and "reason" in bad_reason.stderr


@pytest.mark.parametrize("command", [["invoices", "register"], ["finance", "check"]])
def test_every_bad_invoice_option_is_named_at_once_before_anything_is_sent(
    run: Run, mode: list[str], registry: RegistryClient, chain_state: ChainState, creditor: Member, debtor: Member,
    command: list[str],
) -> None:  # fmt: skip
    import_key(run, "supplier", creditor)
    args = [*command, *_register_args(chain_state, debtor, "BAD-2")[2:]]
    args[args.index("--amount") + 1] = "12.345"
    args[args.index("--currency") + 1] = "CNY"
    args[args.index("--due-date") + 1] = "2027-02-30"
    args[args.index("--number") + 1] = "::"
    before = registry.receivable_count()
    result = run(*args, "--as", "supplier", *mode)
    assert result.exit_code == 2, result.stdout + result.stderr
    for said in ("--number (invoice_number)", "--amount (face_value)", "--due-date (due_date)"):
        assert said in result.stderr, result.stderr
    assert registry.receivable_count() == before
    missing = run(*command, "--debtor", str(debtor.entity), "--currency", "CNY", "--as", "supplier", *mode)
    assert missing.exit_code == 2 and "missing --number, --amount, --issue-date, --due-date" in missing.stderr


def test_unreachable_api_is_a_setup_error(run: Run, creditor: Member) -> None:
    import_key(run, "supplier", creditor)
    result = run("invoices", "list", "--as", "supplier", "--api", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "cannot reach the API" in result.stderr


def test_cli_refuses_to_sign_a_request_the_api_altered(
    run: Run,
    api_server: str,
    registry: RegistryClient,
    creditor: Member,
    make_invoice: InvoiceFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compromised API prepares a call to another receivable: the CLI checks the calldata and stops."""
    import registry.cli._api as api_mode

    import_key(run, "supplier", creditor)
    mine = registry.register(creditor.account, make_invoice())
    other = registry.register(creditor.account, make_invoice())
    real = httpx.HTTPTransport()

    class Tampering(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = real.handle_request(request)
            if not request.url.path.endswith("/prepare"):
                return response
            body = json.loads(response.read())
            prepared = registry.abi.encode_call("cancel", (other,))
            body["typed_data"]["message"]["data"] = "0x" + prepared.hex()
            return httpx.Response(response.status_code, json=body)

    monkeypatch.setattr(api_mode, "http_client", lambda url: httpx.Client(base_url=url, transport=Tampering()))
    nonce = registry.forwarder_nonce(creditor.address)
    result = run("invoices", "cancel", mine, "--as", "supplier", "--api", api_server)
    assert result.exit_code == 1
    assert "refusing to sign" in result.stderr and "calldata differs" in result.stderr
    assert registry.forwarder_nonce(creditor.address) == nonce
    assert registry.get_receivable(other).status.name == "REGISTERED"
