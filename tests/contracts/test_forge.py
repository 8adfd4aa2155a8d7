"""Foundry's invariant tests of the contracts (contracts/test/*.t.sol) pass.

forge runs offline (foundry.toml: ``offline = true``) with the npm (wasm) compiler behind
hardhat-net/bin/solc and the registry's compiler settings. A handler drives the registry through
its lifecycle at random; the invariants: paid never exceeds face value, an invoice key (and a
fingerprint) is held by at most one live registration, the ledger's event count never goes back
(and its head moves exactly with it), a split conserves value, and refused actions never succeed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORGE = ROOT / "hardhat-net" / "node_modules" / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"


def test_forge_invariant_tests_pass() -> None:
    assert FORGE.exists(), f"forge is not installed at {FORGE}: run `npm ci` in hardhat-net/"
    proc = subprocess.run(
        [str(FORGE), "test", "--root", str(ROOT), "--offline"],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = proc.stdout[-8000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, f"forge test failed:\n{output}"
    assert "[PASS] invariant_" in proc.stdout, f"forge ran no invariant test:\n{output}"
    assert "[FAIL" not in proc.stdout, output
