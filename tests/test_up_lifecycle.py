"""The proof of issue 5: the real `registry up` stack (what `make up` runs) from a clean data directory,
one receivable's whole life through the role CLI against its API, then a restart that finds the same state.

Runs `registry up` as a child process exactly as a user does (own Anvil with persistent state, deployment,
demo consortium with keystores, indexer, API), with a small demo ledger to keep the test short.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

PASSWORD = "registry-demo"


def up_env(data_dir: Path) -> dict[str, str]:
    """`registry up`'s environment for a test: its own data directory, free ports, a small demo ledger,
    and none of the caller's chain, database or API settings."""
    env = {
        **os.environ,
        "REGISTRY_DATA_DIR": str(data_dir),
        "REGISTRY_RPC_PORT": "0",
        "REGISTRY_API_PORT": "0",
        "REGISTRY_DEMO_INVOICES": "40",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    for name in ("REGISTRY_RPC_URL", "REGISTRY_DATABASE_URL", "REGISTRY_CLI_API"):
        env.pop(name, None)
    return env


@contextmanager
def running_stack(data_dir: Path) -> Iterator[str]:
    """`registry up` in the background until ready; yields the API URL; Ctrl-C (SIGINT) on exit."""
    log = (data_dir / "up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "up"],
        env=up_env(data_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 240
        while url is None:
            assert process.poll() is None, (data_dir / "up.log").read_text()
            assert time.monotonic() < deadline, "registry up did not start in time"
            text = (data_dir / "up.log").read_text()
            found = re.search(r"^api\s+(http://127\.0\.0\.1:\d+)", text, re.M)
            url = found.group(1) if found and "Press Ctrl-C" in text else None
            time.sleep(0.2)
        while httpx.get(f"{url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the stack never became ready"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    assert process.returncode == 0, (data_dir / "up.log").read_text()


def cli(data_dir: Path, api: str | None, *args: str) -> Any:
    """One `registry` command as a script would run it: JSON on stdout, exit code 0 or the test fails."""
    env = {**os.environ, "REGISTRY_DATA_DIR": str(data_dir), "REGISTRY_KEYSTORE_PASSWORD": PASSWORD}
    env.pop("REGISTRY_CLI_API", None)
    if api:
        env["REGISTRY_CLI_API"] = api
    done = subprocess.run(
        [sys.executable, "-m", "registry.cli", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"registry {' '.join(args)}: exit {done.returncode}\n{done.stderr}{done.stdout}"
    return json.loads(done.stdout)


def status_of(answer: dict[str, Any]) -> str:
    return str(answer["receivables"][0]["status"])


def test_make_up_then_a_whole_lifecycle_through_the_cli_then_a_restart_keeps_it(tmp_path: Path) -> None:
    invoice = ["--number", "LIFE-0001", "--amount", "48,000.00", "--currency", "CNY"]
    invoice += ["--issue-date", time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86_400))]
    invoice += ["--due-date", time.strftime("%Y-%m-%d", time.gmtime(time.time() + 90 * 86_400))]
    with running_stack(tmp_path) as api:
        identities = {
            i["file"][: -len(".json")]: i
            for i in json.loads((tmp_path / "keys" / "identities.json").read_text())["identities"]
        }
        creditor, debtor = "creditor-shenzhen-components", "debtor-huaxin-manufacturing-group"
        factor, auditor = "factor-everbright-factoring", "auditor-crescent-audit"
        debtor_entity = str(identities[debtor]["entity"])

        registered = cli(tmp_path, api, "invoices", "register", "--as", creditor, "--debtor", debtor_entity, *invoice)
        rid = str(registered["receivables"][0]["id"])
        assert status_of(registered) == "registered"
        # The debtor confirms from its own records (the number typed its own way).
        own = [*invoice]
        own[1] = "life 0001"
        assert status_of(cli(tmp_path, api, "invoices", "confirm", rid, "--as", debtor, *own)) == "confirmed"
        check = cli(tmp_path, api, "finance", "check", "--as", factor, "--debtor", debtor_entity, *invoice)["results"][
            0
        ]
        assert check["registered"] is True and check["financed"] is False, check
        assigned = cli(
            tmp_path,
            api,
            "finance",
            "assign",
            rid,
            "--as",
            creditor,
            "--factor",
            str(identities[factor]["entity"]),
            "--advance",
            "43,200.00",
        )
        assert status_of(assigned) == "assigned"
        payee = cli(tmp_path, api, "finance", "payee", rid, "--as", debtor)
        assert payee["payee_of_record"] == identities[factor]["entity"], payee
        assert status_of(cli(tmp_path, api, "pay", "record", rid, "--as", factor, "--amount", "48,000.00")) == "settled"
        before = cli(tmp_path, api, "invoices", "show", rid, "--as", auditor)
        assert before["receivable"]["status"] == "settled"
        audit = subprocess.run(
            [sys.executable, "-m", "registry.cli", "audit", "verify", "--json", str(tmp_path / "audit.json")],
            env={**os.environ, "REGISTRY_DATA_DIR": str(tmp_path), "REGISTRY_RPC_URL": _rpc_url(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert json.loads((tmp_path / "audit.json").read_text())["agrees"] is True

    with running_stack(tmp_path) as api:
        started = " ".join((tmp_path / "up.log").read_text().split())
        assert "(reused)" in started and "kept from last run" in started
        after = cli(tmp_path, api, "invoices", "show", rid, "--as", auditor)
        assert after["as_of"]["block"] > before["as_of"]["block"]  # the chain went on (1 s blocks)
        assert {k: v for k, v in after.items() if k != "as_of"} == {k: v for k, v in before.items() if k != "as_of"}


def _rpc_url(data_dir: Path) -> str:
    found = re.search(r"^node\s+anvil at (http://\S+)", (data_dir / "up.log").read_text(), re.M)
    assert found, (data_dir / "up.log").read_text()
    return found.group(1)


def test_a_backgrounded_up_stops_on_sigint_even_while_it_is_starting(tmp_path: Path) -> None:
    """A shell starts a background job with SIGINT ignored; `registry up` must still stop on SIGINT, also
    one that comes while it deploys and seeds (before it waits for Ctrl-C), leaving no node behind."""
    log = (tmp_path / "up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "up"],
        env=up_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a shell's background job
    )
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "deployment.json").exists():  # deployed: the node runs, the seed starts
            assert process.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "registry up did not deploy in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            subprocess.run(["pkill", "-f", str(tmp_path)], check=False)  # its node, orphaned by the kill
        log.close()
    assert "stopped" in (tmp_path / "up.log").read_text()
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False).stdout
    assert not left.strip(), f"processes left behind: {left}"
