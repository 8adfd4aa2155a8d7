"""GET /directory: the operator's participant names, for every signed-in principal and no one else."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry.demo import DEMO_MEMBERS, Consortium, write_directory
from registry.directory import DirectoryError, read_directory
from registry.settings import Settings
from tests.api.conftest import Login


def _touch_later(path: Path) -> None:
    """Moves the file's modification time on, as an edit a moment later would (coarse clocks)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_signing_in_is_required(api: TestClient, consortium: Consortium, api_settings: Settings) -> None:
    write_directory(consortium, api_settings.directory_file)
    answer = api.get("/directory")
    assert answer.status_code == 401
    assert answer.json()["code"] == "auth.missing_token"
    assert api.get("/directory", headers={"Authorization": "Bearer forged.token"}).status_code == 401


def test_every_role_reads_every_members_name_and_no_registration_number(
    api: TestClient, login: Login, consortium: Consortium, api_settings: Settings
) -> None:
    write_directory(consortium, api_settings.directory_file)
    expected = {str(m.entity): m.name for m in consortium.members}
    assert expected[str(consortium.debtors[0].entity)] == "Huaxin Manufacturing Group"
    principals = [consortium.admin, *(m.account for m in consortium.members)]
    for account in principals:
        answer = api.get("/directory", headers=login(account))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"entities": expected}
        for spec in DEMO_MEMBERS:
            assert spec.registration_number not in answer.text
    # The file itself keeps the operator's registration numbers.
    stored = json.loads(api_settings.directory_file.read_text())["entities"]
    assert stored[str(consortium.debtors[0].entity)]["registration_number"] == "91110000MA0DEBTA44"


def test_no_file_is_an_empty_directory_and_an_edit_shows_without_a_restart(
    api: TestClient, login: Login, consortium: Consortium, api_settings: Settings
) -> None:
    headers = login(consortium.debtors[0].account)
    assert api.get("/directory", headers=headers).json() == {"entities": {}}
    path = api_settings.directory_file
    write_directory(consortium, path)
    debtor = str(consortium.debtors[0].entity)
    assert api.get("/directory", headers=headers).json()["entities"][debtor] == "Huaxin Manufacturing Group"

    document = json.loads(path.read_text())
    document["entities"][debtor]["name"] = "Huaxin Manufacturing Group (Beijing)"
    path.write_text(json.dumps(document))
    _touch_later(path)
    assert api.get("/directory", headers=headers).json()["entities"][debtor] == "Huaxin Manufacturing Group (Beijing)"
    # The demo seeding on the next `registry up` keeps the operator's edit.
    write_directory(consortium, path)
    assert read_directory(path)[consortium.debtors[0].entity].name == "Huaxin Manufacturing Group (Beijing)"


def test_a_broken_file_is_a_clear_503_and_is_never_overwritten(
    api: TestClient, login: Login, consortium: Consortium, api_settings: Settings
) -> None:
    headers = login(consortium.factors[0].account)
    path = api_settings.directory_file
    broken = '{"entities": {"4": {"name": ""}}}'
    path.write_text(broken)
    answer = api.get("/directory", headers=headers)
    assert answer.status_code == 503
    assert answer.json()["code"] == "directory_unavailable"
    assert "entities.4.name" in answer.json()["detail"] and str(path.parent) not in answer.json()["detail"]
    with pytest.raises(DirectoryError, match=re.escape("entities.4.name")):
        write_directory(consortium, path)
    assert path.read_text() == broken

    path.write_text("{not json")
    _touch_later(path)
    answer = api.get("/directory", headers=headers)
    assert answer.status_code == 503 and "not JSON" in answer.json()["detail"]

    path.unlink()
    write_directory(consortium, path)
    assert api.get("/directory", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("document", "fault"),
    [
        ([], "expected"),
        ({"entities": {"0": {"name": "Zero"}}}, "entities.0: keys must be entity ids"),
        ({"entities": {"x": {"name": "X"}}}, "entities.x: keys must be entity ids"),
        ({"entities": {"16777216": {"name": "Too big"}}}, "keys must be entity ids"),
        ({"entities": {"4": "Huaxin"}}, "entities.4: expected"),
        ({"entities": {"4": {"name": 4}}}, "entities.4.name"),
        ({"entities": {"4": {"name": "a\u0007b"}}}, "printable"),
        ({"entities": {"4": {"name": "x" * 201}}}, "printable"),
        ({"entities": {"4": {"name": "A", "registration_number": 7}}}, "registration_number"),
        ({"entities": {"4": {"name": "A"}, "04": {"name": "B"}}}, "listed twice"),
    ],
)
def test_the_file_format_is_checked_entry_by_entry(tmp_path: Path, document: object, fault: str) -> None:
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DirectoryError, match=re.escape(fault)):
        read_directory(path)


def test_names_are_tidied_and_other_fields_kept(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    path.write_text(json.dumps({"entities": {" 7 ": {"name": "  Harbor   Trade\tFinance ", "contact": "ops@harbor"}}}))
    assert read_directory(path)[7].name == "Harbor Trade Finance"
