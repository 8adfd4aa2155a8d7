"""The contract suites pass on Hardhat's node too, not only on Anvil.

Hardhat 3's node (EDR) differs where it matters for portability: it enforces EIP-7825's cap of
16,777,216 gas per transaction (as current mainnet clients and Besu on Osaka do) and has no reorg
RPC. The session's node is chosen once in conftest (``REGISTRY_NODE``), so the suites run again in
a child pytest on Hardhat.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PORTABLE_SUITES = ("tests/contracts/test_smoke.py", "tests/contracts/test_scenarios.py")


def test_contract_suites_pass_on_hardhats_node() -> None:
    suites = [s for s in PORTABLE_SUITES if (ROOT / s).exists()]
    env = {**os.environ, "REGISTRY_NODE": "hardhat"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"on Hardhat's node, {' '.join(suites)} failed:\n{report}"


def test_default_registration_batch_fits_hardhats_transaction_gas_cap() -> None:
    from registry.chain.contract import BATCH_GAS_BASE, BATCH_GAS_PER_LINE, DEFAULT_BATCH_SIZE, TX_GAS_CAP

    assert TX_GAS_CAP == 2**24  # EIP-7825, enforced by Hardhat's node (Osaka)
    assert BATCH_GAS_BASE + BATCH_GAS_PER_LINE * DEFAULT_BATCH_SIZE <= TX_GAS_CAP
