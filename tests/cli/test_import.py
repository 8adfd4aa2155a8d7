"""`registry invoices import`: a CSV with good, malformed and duplicate lines; each line's outcome is
reported with its line number, the good ones are registered, and the exit code says some were not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.chain.contract import RegistryClient
from registry.demo import Member
from registry.invoice import Invoice
from tests.cli.conftest import Run, day
from tests.cli.test_lifecycle import import_key
from tests.conftest import ChainState


def test_import_reports_each_line_and_registers_the_good_ones(
    run: Run,
    mode: list[str],
    tmp_path: Path,
    registry: RegistryClient,
    chain_state: ChainState,
    creditor: Member,
    other_creditor: Member,
    debtor: Member,
) -> None:
    import_key(run, "supplier", creditor)
    issue, due = day(chain_state, -5), day(chain_state, 45)
    # Already on the ledger, registered by another creditor: line 6 below is refused by the contract.
    registry.register(
        other_creditor.account,
        Invoice.parse(
            debtor=debtor.entity, invoice_number="LEDGER-1", face_value="10.00", currency="CNY",
            issue_date=issue, due_date=due,
        ),
    )  # fmt: skip
    d = debtor.entity
    csv_text = "\n".join(
        [
            "debtor,invoice_number,face_value,currency,issue_date,due_date",
            f'{d},CSV-001,"1,200.50",CNY,{issue},{due}',  # line 2: good
            f"{d},CSV-002,12.345,CNY,{issue},{due}",  # line 3: CNY has 2 decimals: malformed face_value
            f"{d},CSV-003,800.00,CNY,{issue},{due}",  # line 4: good
            f"{d},csv 001,1200.50,CNY,{issue},{due}",  # line 5: the same invoice as line 2, reformatted
            f"{d},LEDGER-1,10.00,CNY,{issue},{due}",  # line 6: registered already
            f"x,CSV-004,5.00,CNY,{issue},2027-02-30",  # line 7: malformed debtor and due date
            f"{d},CSV-005,5.00,CNY,{issue},{due}",  # line 8: good
        ]
    )
    path = tmp_path / "invoices.csv"
    path.write_text(csv_text + "\n")
    report = tmp_path / "report.json"
    before = registry.receivable_count()

    result = run("invoices", "import", path, "--as", "supplier", "--batch-size", 2, "--report", report, *mode)

    assert result.exit_code == 1, result.stdout + result.stderr
    document = json.loads(report.read_text())
    outcomes = {r["line"]: r for r in document["report"]}
    assert sorted(outcomes) == [2, 3, 4, 5, 6, 7, 8]
    assert [n for n, r in outcomes.items() if r["outcome"] == "registered"] == [2, 4, 8]
    assert outcomes[3]["outcome"] == "malformed" and outcomes[3]["field"] == "face_value"
    assert outcomes[7]["outcome"] == "malformed" and outcomes[7]["field"] == "debtor"
    assert [e["field"] for e in outcomes[7]["errors"]] == ["debtor", "due_date"], outcomes[7]
    assert outcomes[5]["outcome"] == "refused" and outcomes[5]["error"] == "InvoiceKeyTaken"
    assert outcomes[6]["outcome"] == "refused" and outcomes[6]["error"] == "InvoiceKeyTaken"
    assert (document["registered"], document["refused"]) == (3, 4)
    assert registry.receivable_count() == before + 3
    for line in (2, 4, 8):
        state = registry.get_receivable(outcomes[line]["id"])
        assert (state.status.name, state.creditor) == ("REGISTERED", creditor.entity)
    assert registry.get_receivable(outcomes[2]["id"]).face_value == 120_050
    assert "InvoiceKeyTaken" in result.stdout and "3 of 7 lines registered" in result.stdout


def test_import_of_a_clean_file_exits_zero_with_json_report(
    run: Run, tmp_path: Path, live_indexer: object, chain_state: ChainState, creditor: Member, debtor: Member
) -> None:
    import_key(run, "supplier", creditor)
    issue, due = day(chain_state, -5), day(chain_state, 45)
    path = tmp_path / "clean.csv"
    path.write_text(
        "debtor,invoice_number,face_value,currency,issue_date,due_date\n"
        + "".join(f"{debtor.entity},CLEAN-{i},{i}00.00,CNY,{issue},{due}\n" for i in range(1, 6))
    )
    result = run("invoices", "import", path, "--as", "supplier", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["lines"], document["registered"], document["refused"]) == (5, 5, 0)


def test_import_with_a_wrong_header_is_a_usage_error_naming_the_missing_columns(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("debtor,number,amount\n4,X,1.00\n")
    result = run("invoices", "import", path, "--as", "nobody")
    assert result.exit_code == 2
    assert "invoice_number" in result.stderr and "face_value" in result.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"\xa3\x00\xff binary junk\n\x01\x02", "not UTF-8 text"),
        (
            b"debtor,invoice_number,face_value,currency,issue_date,due_date\n4,\xa3,1.00,CNY,2027-01-01,2027-02-01\n",
            "not UTF-8 text",
        ),
        (  # a field past the csv module's limit (128 KiB)
            b"debtor,invoice_number,face_value,currency,issue_date,due_date\n4," + b"x" * 200_000 + b"\n",
            "not a readable CSV file near line",
        ),
        (b"", "the header lacks"),
        (b"debtor,invoice_number,face_value,currency,issue_date,due_date\r\n\r\n", "no invoice lines"),
    ],
)
def test_an_unreadable_file_is_a_usage_error_not_a_traceback(
    run: Run, tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "junk.csv"
    path.write_bytes(content)
    result = run("invoices", "import", path, "--as", "nobody")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr + result.stdout
    folder = run("invoices", "import", tmp_path, "--as", "nobody")
    assert folder.exit_code == 2 and "cannot read" in folder.stderr, folder.stderr
