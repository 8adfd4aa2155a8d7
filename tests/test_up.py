"""`registry up` (what `make up` runs) starts the stack, seeds once, and resumes after a restart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def _up(data_dir: Path) -> str:
    env = {**os.environ, "REGISTRY_DATA_DIR": str(data_dir), "REGISTRY_RPC_PORT": "0", "REGISTRY_API_PORT": "0"}
    env["COLUMNS"] = "200"
    env.pop("REGISTRY_RPC_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "registry.cli", "up", "--exit-after-seed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_up_deploys_seeds_and_indexes_once_then_resumes_on_restart(tmp_path: Path) -> None:
    first = _up(tmp_path)
    assert "deployed now" in first
    assert "seeded now" in first
    deployment = json.loads((tmp_path / "deployment.json").read_text())
    assert (tmp_path / "node" / "anvil-state.json").exists()
    assert (tmp_path / "registry.db").exists()
    printed = " ".join(first.split())
    assert re.search(r"portal http://127\.0\.0\.1:\d+/", printed), "the portal's URL is printed"
    assert "password 'registry-demo'" in printed, "the demo keystores' password is printed"
    keystores = sorted(p.name for p in (tmp_path / "keys").glob("*.json") if p.name != "identities.json")
    assert len(keystores) == 9, keystores  # operator, 3 creditors, 2 debtors, 2 factors, auditor
    assert all(name.removesuffix(".json") in printed for name in keystores), "each identity is printed"

    second = _up(tmp_path)
    assert "reused" in second
    assert "kept from last run" in second
    assert json.loads((tmp_path / "deployment.json").read_text()) == deployment
    count = next(line for line in second.splitlines() if line.startswith("ledger"))
    assert count.split()[1] == next(line for line in first.splitlines() if line.startswith("ledger")).split()[1]
