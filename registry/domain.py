"""Python mirrors of the contract's enums and role constants.

Member names and order equal the Solidity enums (tests/registry/test_enum_parity.py checks them
against the compiler's AST); never compare a status with a bare number.
"""

from __future__ import annotations

from enum import IntEnum

from eth_utils.crypto import keccak


class Status(IntEnum):
    """IReceivableRegistry.Status."""

    NONE = 0
    REGISTERED = 1
    CONFIRMED = 2
    DISPUTED = 3
    ASSIGNED = 4
    PARTIALLY_PAID = 5
    SETTLED = 6
    CANCELLED = 7
    DEFAULTED = 8
    WRITTEN_OFF = 9
    SPLIT = 10

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_live(self) -> bool:
        """Whether a registration in this status still holds its invoice key and fingerprint."""
        return self not in (Status.NONE, Status.CANCELLED)


TERMINAL_STATUSES = frozenset({Status.SETTLED, Status.CANCELLED, Status.WRITTEN_OFF, Status.SPLIT})

# Statuses in which a registration that was ever assigned backs (or backed) a financing.
PAID_OR_CLOSED_STATUSES = frozenset({Status.PARTIALLY_PAID, Status.SETTLED, Status.DEFAULTED, Status.WRITTEN_OFF})


def is_financed(status: Status, holder: int, creditor: int, was_assigned: bool, parts_financed: bool = False) -> bool:
    """Whether a registration backs a financing: assigned now; held by someone other than its
    creditor; paid or closed after an assignment; or split with a financed part. A receivable bought
    back under recourse (held by its creditor again, confirmed) is not financed."""
    # (The flags before the set lookup: hashing an enum member runs Python code, and most
    # registrations were never assigned; a bulk check asks this once per line.)
    return (
        status is Status.ASSIGNED
        or holder != creditor
        or (was_assigned and status in PAID_OR_CLOSED_STATUSES)
        or (parts_financed and status is Status.SPLIT)
    )


class DisputeReason(IntEnum):
    """IReceivableRegistry.DisputeReason."""

    NONE = 0
    GOODS_NOT_RECEIVED = 1
    QUALITY_DEFECT = 2
    AMOUNT_INCORRECT = 3
    ALREADY_PAID = 4
    NOT_OUR_INVOICE = 5
    OTHER = 6


class DisputeResolution(IntEnum):
    """IReceivableRegistry.DisputeResolution."""

    NONE = 0
    WITHDRAWN = 1
    UPHELD = 2


class ClaimStatus(IntEnum):
    """IReceivableRegistry.ClaimStatus."""

    NONE = 0
    PENDING = 1
    ACKNOWLEDGED = 2
    REJECTED = 3


class EntityStatus(IntEnum):
    """IParticipantRegistry.EntityStatus."""

    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2


class KeyStatus(IntEnum):
    """IParticipantRegistry.KeyStatus."""

    NONE = 0
    ACTIVE = 1
    REVOKED = 2


class Role(bytes):
    """A role id, as the contract's ``keccak256("X_ROLE")`` constants."""

    ADMIN: Role
    CREDITOR: Role
    DEBTOR: Role
    FACTOR: Role
    AUDITOR: Role

    @property
    def label(self) -> str:
        return ROLE_NAMES.get(bytes(self), "0x" + self.hex())


Role.ADMIN = Role(b"\x00" * 32)  # AccessControl's DEFAULT_ADMIN_ROLE: the consortium operator
Role.CREDITOR = Role(keccak(text="CREDITOR_ROLE"))
Role.DEBTOR = Role(keccak(text="DEBTOR_ROLE"))
Role.FACTOR = Role(keccak(text="FACTOR_ROLE"))
Role.AUDITOR = Role(keccak(text="AUDITOR_ROLE"))

PARTY_ROLES: tuple[Role, ...] = (Role.CREDITOR, Role.DEBTOR, Role.FACTOR, Role.AUDITOR)
ROLE_NAMES: dict[bytes, str] = {
    bytes(Role.ADMIN): "admin",
    bytes(Role.CREDITOR): "creditor",
    bytes(Role.DEBTOR): "debtor",
    bytes(Role.FACTOR): "factor",
    bytes(Role.AUDITOR): "auditor",
}
ROLES_BY_NAME: dict[str, Role] = {name: Role(value) for value, name in ROLE_NAMES.items()}
