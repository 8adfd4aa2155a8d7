"""Compiles the Solidity sources with the npm (wasm) compiler through py-solc-x.

The compiler version is pinned by ``hardhat-net/package.json``; the optimizer and EVM version are set
here and nowhere else. Artifacts are cached under ``build/`` by a hash of the sources, the compiler
version and these settings, so a second run does not recompile (a wasm compile costs seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from registry.errors import ToolchainError

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = ROOT / "contracts"
NODE_PROJECT = ROOT / "hardhat-net"
SOLC_SCRIPT = NODE_PROJECT / "bin" / "solc"
BUILD_DIR = ROOT / "build"

EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200
COMPILER_SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
    "evmVersion": EVM_VERSION,
    "outputSelection": {
        "*": {
            "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "storageLayout"],
            "": ["ast"],
        }
    },
}

DEPLOYABLE = ("ReceivableRegistry", "RegistryForwarder")


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: its ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    storage_layout: dict[str, Any]
    enums: dict[str, list[str]]
    """Enum members in declaration order, by the enum's qualified name (``IReceivableRegistry.Status``)."""

    @property
    def abi_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.abi, sort_keys=True).encode()).hexdigest()


def _sources() -> dict[str, str]:
    # contracts/test/ holds Foundry's Solidity tests (forge compiles them, the registry build does not).
    files = sorted(p for p in CONTRACTS_DIR.rglob("*.sol") if p.relative_to(CONTRACTS_DIR).parts[0] != "test")
    if not files:
        raise ToolchainError(f"no Solidity sources under {CONTRACTS_DIR}")
    return {f"contracts/{p.relative_to(CONTRACTS_DIR).as_posix()}": p.read_text() for p in files}


@cache
def compiler_version() -> str:
    """The version string the pinned npm compiler reports (e.g. ``0.8.30+commit.73712a01``)."""
    _require_toolchain()
    out = subprocess.run([str(SOLC_SCRIPT), "--version"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ToolchainError(f"solc script failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1].removeprefix("Version: ")


@cache
def compiler_package_version() -> str:
    """The pinned npm compiler's package version, read from its package.json: enough for the cache
    key, and free (asking the wasm compiler itself costs seconds of Node start-up)."""
    _require_toolchain()
    package = json.loads((NODE_PROJECT / "node_modules" / "solc" / "package.json").read_text())
    return str(package["version"])


def _require_toolchain() -> None:
    if not (NODE_PROJECT / "node_modules" / "solc").is_dir():
        raise ToolchainError("the Solidity compiler is not installed: run `npm ci` in hardhat-net/ (make bootstrap)")


def source_hash() -> str:
    """Hash of every source file, the compiler version and the settings: the cache key."""
    h = hashlib.sha256()
    h.update(compiler_package_version().encode())
    h.update(json.dumps(COMPILER_SETTINGS, sort_keys=True).encode())
    for name, text in _sources().items():
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def standard_json_input() -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in _sources().items()},
        "settings": COMPILER_SETTINGS,
    }


def compile_all(force: bool = False) -> dict[str, Artifact]:
    """Every contract of the project by name, from the cache when the sources are unchanged."""
    key = source_hash()
    cached = BUILD_DIR / f"contracts-{key[:16]}.json"
    if cached.exists() and not force:
        data = json.loads(cached.read_text())
    else:
        data = _compile()
        BUILD_DIR.mkdir(exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, cached)
    return {name: Artifact(name=name, **fields) for name, fields in data.items()}


def _compile() -> dict[str, dict[str, Any]]:
    import solcx  # imported here: only a compile needs it

    _require_toolchain()
    try:
        output = solcx.compile_standard(
            standard_json_input(), solc_binary=str(SOLC_SCRIPT), base_path=str(ROOT), allow_paths=str(ROOT)
        )
    except solcx.exceptions.SolcError as exc:
        raise ToolchainError(f"compilation failed:\n{exc}") from exc
    enums: dict[str, list[str]] = {}
    for source in output["sources"].values():
        for node in source["ast"]["nodes"]:
            for child in node.get("nodes", []):
                if child.get("nodeType") == "EnumDefinition":
                    enums[f"{node['name']}.{child['name']}"] = [m["name"] for m in child["members"]]
    result: dict[str, dict[str, Any]] = {}
    for source, contracts in output["contracts"].items():
        if not source.startswith("contracts/"):
            continue
        for name, c in contracts.items():
            result[name] = {
                "abi": c["abi"],
                "bytecode": c["evm"]["bytecode"]["object"],
                "deployed_bytecode": c["evm"]["deployedBytecode"]["object"],
                "storage_layout": c.get("storageLayout", {}),
                "enums": enums,
            }
    return result


def artifact(name: str) -> Artifact:
    """One compiled contract by name."""
    artifacts = compile_all()
    if name not in artifacts:
        raise ToolchainError(f"no contract named {name!r}; compiled: {sorted(artifacts)}")
    return artifacts[name]


def registry_error_abi() -> list[dict[str, Any]]:
    """Every custom error of the registry and the forwarder (for decoding reverts of either)."""
    seen: dict[str, dict[str, Any]] = {}
    for name in DEPLOYABLE:
        for item in artifact(name).abi:
            if item["type"] == "error":
                seen.setdefault(item["name"], item)
    return list(seen.values())
