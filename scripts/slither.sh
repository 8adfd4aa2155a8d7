#!/usr/bin/env bash
# Static analysis of the contracts with slither, in a virtualenv of its own (slither pins web3 7;
# the project uses web3 8). Creates .venv-slither on first use from PyPI, pinned; needs no solc
# download: the compiler is the npm (wasm) solc behind hardhat-net/bin/solc.
#
#   scripts/slither.sh                       # human-readable report; exit 0 = no medium/high finding
#   scripts/slither.sh --json out.json       # also the machine-readable report (must not exist yet)
#
# Settings (what is excluded and why) live in slither.config.json: OpenZeppelin under node_modules
# is filtered out, informational/optimization/low findings are not reported, and the run fails on
# medium or high. A false positive is suppressed where it occurs with a justified
# `// slither-disable-next-line DETECTOR` comment.
#
# Exit codes: 0 clean; 255 findings (slither's own); 3 PyPI unreachable (venv cannot be created);
# 2 any other setup failure.
set -euo pipefail

SLITHER_VERSION="0.11.6"
CRYTIC_COMPILE_VERSION="0.4.2"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SLITHER_VENV:-$ROOT/.venv-slither}"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"

die() { echo "slither.sh: $2" >&2; exit "$1"; }

[[ -d hardhat-net/node_modules/solc && -d hardhat-net/node_modules/@openzeppelin/contracts ]] \
  || die 2 "the compiler and OpenZeppelin are not installed: run \`npm ci\` in hardhat-net/"

installed_version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("slither-analyzer"))' 2>/dev/null || true; }

if [[ "$(installed_version)" != "$SLITHER_VERSION" ]]; then
  echo "slither.sh: installing slither-analyzer $SLITHER_VERSION into $VENV" >&2
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" || die 2 "cannot create a virtualenv with $PYTHON"
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "slither-analyzer==$SLITHER_VERSION" "crytic-compile==$CRYTIC_COMPILE_VERSION"; then
    if ! "$VENV/bin/python" -m pip index versions slither-analyzer >/dev/null 2>&1; then
      die 3 "cannot install slither-analyzer: PyPI is unreachable"
    fi
    die 2 "pip could not install slither-analyzer==$SLITHER_VERSION"
  fi
fi

# Slither reads one solc standard-JSON input naming every source outside contracts/test/ (Foundry's
# tests). Given the contracts/ directory instead, crytic-compile would run `forge build --force`. It
# still notices foundry.toml above the input and reads `forge config --json` for the compiler, the
# remappings and the optimizer/EVM settings (the same as --solc/--solc-remaps below and as the
# registry build's), so forge must be on PATH.
export PATH="$ROOT/hardhat-net/node_modules/@foundry-rs/forge-linux-amd64/bin:$PATH"
mkdir -p build
INPUT="$(mktemp build/slither-input.XXXXXX.json)"
trap 'rm -f "$INPUT"' EXIT
"$VENV/bin/python" - "$INPUT" <<'PY'
import json
import sys
from pathlib import Path

sources = {
    p.as_posix(): {"urls": [p.as_posix()]}
    for p in sorted(Path("contracts").rglob("*.sol"))
    if p.relative_to("contracts").parts[0] != "test"
}
settings = {"optimizer": {"enabled": True, "runs": 200}, "evmVersion": "cancun"}
Path(sys.argv[1]).write_text(json.dumps({"language": "Solidity", "sources": sources, "settings": settings}))
PY

# The config file holds the rest (the compiler and remaps are repeated here so that the command says it).
status=0
"$VENV/bin/slither" "$INPUT" \
  --config-file slither.config.json \
  --compile-force-framework solc-json \
  --solc hardhat-net/bin/solc \
  --solc-remaps "@openzeppelin=hardhat-net/node_modules/@openzeppelin" \
  --disable-color \
  "$@" || status=$?
exit "$status"
