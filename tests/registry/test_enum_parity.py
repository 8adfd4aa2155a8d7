"""The Python mirrors of the contract's enums, roles and functions cannot drift from the Solidity."""

from __future__ import annotations

import re
from enum import IntEnum

import pytest
from eth_utils.crypto import keccak

from registry.chain.compiler import artifact
from registry.chain.contract import RegistryClient
from registry.domain import (
    PARTY_ROLES,
    ClaimStatus,
    DisputeReason,
    DisputeResolution,
    EntityStatus,
    KeyStatus,
    Role,
    Status,
)

MIRRORS: list[tuple[str, type[IntEnum]]] = [
    ("IReceivableRegistry.Status", Status),
    ("IReceivableRegistry.DisputeReason", DisputeReason),
    ("IReceivableRegistry.DisputeResolution", DisputeResolution),
    ("IReceivableRegistry.ClaimStatus", ClaimStatus),
    ("IParticipantRegistry.EntityStatus", EntityStatus),
    ("IParticipantRegistry.KeyStatus", KeyStatus),
]


def _snake_upper(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


@pytest.mark.parametrize(("solidity_name", "python_enum"), MIRRORS, ids=[m[0] for m in MIRRORS])
def test_python_enum_mirrors_solidity_enum_member_for_member(solidity_name: str, python_enum: type[IntEnum]) -> None:
    members = artifact("ReceivableRegistry").enums[solidity_name]
    assert [m.name for m in python_enum] == [_snake_upper(name) for name in members]
    assert [m.value for m in python_enum] == list(range(len(members)))


def test_every_solidity_enum_of_the_registry_has_a_python_mirror() -> None:
    ours = {name for name in artifact("ReceivableRegistry").enums if name.startswith(("IReceivable", "IParticipant"))}
    assert ours == {name for name, _ in MIRRORS}


@pytest.mark.parametrize("role", PARTY_ROLES, ids=lambda r: r.label)
def test_party_role_constants_are_the_keccak_of_their_solidity_names(role: Role) -> None:
    assert bytes(role) == keccak(text=f"{role.label.upper()}_ROLE")


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def test_client_has_one_method_per_contract_function() -> None:
    """Every function of the registry ABI is reachable as a typed client method (constants through
    ``constant(name)``), so a new contract function cannot be forgotten on the Python side."""
    abi = artifact("ReceivableRegistry").abi
    missing = []
    for item in abi:
        if item["type"] != "function":
            continue
        name = item["name"]
        if name.isupper() or name.endswith("_ROLE"):
            continue  # public constants: RegistryClient.constant(name)
        if not hasattr(RegistryClient, _camel_to_snake(name)):
            missing.append(name)
    assert missing == []
