"""Deploys the contracts and reads/writes the deployment file every other component reads.

No address is ever hard-coded: the file records chain id, genesis hash, addresses, ABI hashes and
the deploy block. ``ensure_deployment`` is idempotent: it reuses a deployment that still matches the
chain and the compiled sources, and deploys afresh otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount

from registry.chain.client import ChainClient
from registry.chain.compiler import artifact
from registry.errors import ConfigurationError


@dataclass(frozen=True)
class Deployment:
    """Where the registry lives on which chain."""

    chain_id: int
    genesis_hash: str
    registry: str
    forwarder: str
    deploy_block: int
    registry_abi_hash: str
    forwarder_abi_hash: str
    admin: str
    deployed_at: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except FileNotFoundError:
            raise ConfigurationError(f"no deployment file at {path}: deploy first (`registry chain deploy`)") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigurationError(f"deployment file {path} is malformed: {exc}") from None


def deploy(chain: ChainClient, admin: LocalAccount) -> Deployment:
    """Deploys the forwarder and the registry (admin = ``admin``) and returns the deployment."""
    forwarder_art = artifact("RegistryForwarder")
    registry_art = artifact("ReceivableRegistry")
    fwd = chain.transact(admin, None, bytes.fromhex(forwarder_art.bytecode))
    forwarder = _created_address(chain, fwd.tx_hash)
    ctor = encode(["address", "address"], [admin.address, forwarder])
    reg = chain.transact(admin, None, bytes.fromhex(registry_art.bytecode) + ctor)
    registry = _created_address(chain, reg.tx_hash)
    return Deployment(
        chain_id=chain.chain_id,
        genesis_hash=chain.get_block(0)["hash"],
        registry=registry,
        forwarder=forwarder,
        deploy_block=fwd.block_number,
        registry_abi_hash=registry_art.abi_hash,
        forwarder_abi_hash=forwarder_art.abi_hash,
        admin=admin.address,
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _created_address(chain: ChainClient, tx_hash: str) -> str:
    receipt = chain.rpc.call("eth_getTransactionReceipt", [tx_hash])
    address = receipt.get("contractAddress") if receipt else None
    if not address:
        raise ConfigurationError(f"deployment transaction {tx_hash} created no contract")
    return str(address)


def check_deployment(chain: ChainClient, deployment: Deployment) -> None:
    """Raises :class:`ConfigurationError` naming why the deployment does not fit this chain or build."""
    if deployment.chain_id != chain.chain_id:
        raise ConfigurationError(f"deployment is for chain {deployment.chain_id}, node is chain {chain.chain_id}")
    genesis = chain.get_block(0)["hash"]
    if genesis != deployment.genesis_hash:
        raise ConfigurationError(
            f"the chain was reset (genesis {genesis}, deployment made on {deployment.genesis_hash})"
        )
    if not chain.get_code(deployment.registry):
        raise ConfigurationError(f"no contract code at {deployment.registry}")
    if artifact("ReceivableRegistry").abi_hash != deployment.registry_abi_hash:
        raise ConfigurationError("the deployed registry was built from other sources (ABI hash differs)")


def ensure_deployment(chain: ChainClient, admin: LocalAccount, path: Path) -> tuple[Deployment, bool]:
    """The deployment at ``path`` if it still fits the chain; else a fresh one, saved there.
    Returns (deployment, created)."""
    if path.exists():
        existing = Deployment.load(path)
        try:
            check_deployment(chain, existing)
            return existing, False
        except ConfigurationError:
            pass
    deployment = deploy(chain, admin)
    deployment.save(path)
    return deployment, True
