// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Participants of the consortium: legal entities, their roles and their signing keys.
/// @notice A participant is a legal entity, identified on-chain by a sequential `entityId` and by the
/// keccak256 hash of its registration number (Unified Social Credit Code, LEI, ...); the number itself
/// never goes on-chain. An entity holds party roles (creditor, debtor, factor, auditor) and one or more
/// signing keys. Keys can be added and revoked, and the entity suspended and reinstated, by the
/// consortium admin without losing the entity's history: receivables name entities, not keys.
interface IParticipantRegistry {
    /// @notice Lifecycle of an entity.
    enum EntityStatus {
        None, // 0: no such entity
        Active, // 1: may act according to its roles
        Suspended // 2: every action by any of its keys is refused until reinstated
    }

    /// @notice Lifecycle of a signing key.
    enum KeyStatus {
        None, // 0: never registered
        Active, // 1: signs for its entity
        Revoked // 2: permanently retired; can never be registered again
    }

    /// @notice Public view of an entity.
    struct Entity {
        bytes32 registrationHash;
        EntityStatus status;
        uint32 activeKeys;
    }

    /// @notice Raised when a key that is not registered to any entity tries to act as a participant.
    error UnknownKey(address key);
    /// @notice Raised when a revoked key tries to act.
    error KeyIsRevoked(address key, uint24 entityId);
    /// @notice Raised when a key of a suspended entity tries to act.
    error EntityIsSuspended(uint24 entityId);
    /// @notice Raised when an entity id does not exist.
    error UnknownEntity(uint24 entityId);
    /// @notice Raised when an entity lacks the party role an action needs.
    error EntityMissingRole(uint24 entityId, bytes32 role);
    /// @notice Raised when a role that is held by entities is granted to, revoked from or renounced by an address
    /// through AccessControl.
    error RoleIsHeldByEntities(bytes32 role);
    /// @notice Raised when `role` is not one of the party roles.
    error NotAPartyRole(bytes32 role);
    /// @notice Raised when a registration hash is already used by another entity.
    error RegistrationHashTaken(bytes32 registrationHash, uint24 entityId);
    /// @notice Raised when the registration hash is zero.
    error EmptyRegistrationHash();
    /// @notice Raised when a key is already registered (active or revoked) or is the zero address.
    error KeyUnavailable(address key, KeyStatus status);
    /// @notice Raised when an entity already has the maximum number of active keys.
    error TooManyKeys(uint24 entityId, uint256 limit);
    /// @notice Raised when revoking the last active key of an entity would leave it unable to act.
    error LastActiveKey(uint24 entityId, address key);
    /// @notice Raised when a status change does not apply to the entity's current status.
    error EntityStatusUnchanged(uint24 entityId, EntityStatus status);

    /// @notice An entity was admitted to the consortium.
    event ParticipantAdmitted(uint24 indexed entityId, bytes32 registrationHash);
    /// @notice A party role was granted to an entity.
    event EntityRoleGranted(uint24 indexed entityId, bytes32 indexed role);
    /// @notice A party role was revoked from an entity.
    event EntityRoleRevoked(uint24 indexed entityId, bytes32 indexed role);
    /// @notice An entity was suspended; none of its keys can act.
    event ParticipantSuspended(uint24 indexed entityId);
    /// @notice A suspended entity was reinstated.
    event ParticipantReinstated(uint24 indexed entityId);
    /// @notice A signing key was added to an entity.
    event KeyAdded(uint24 indexed entityId, address indexed key);
    /// @notice A signing key was permanently revoked.
    event KeyRevoked(uint24 indexed entityId, address indexed key);

    /// @notice Admits a legal entity with its party roles and first signing key. Admin only.
    /// @return entityId the new entity's id (sequential from 1)
    function admitParticipant(bytes32 registrationHash, bytes32[] calldata roles, address firstKey)
        external
        returns (uint24 entityId);

    /// @notice Grants a party role to an entity. Admin only.
    function grantEntityRole(uint24 entityId, bytes32 role) external;

    /// @notice Revokes a party role from an entity. Admin only.
    function revokeEntityRole(uint24 entityId, bytes32 role) external;

    /// @notice Suspends an entity: every key of it is refused until reinstated. Admin only.
    function suspendParticipant(uint24 entityId) external;

    /// @notice Reinstates a suspended entity. Admin only.
    function reinstateParticipant(uint24 entityId) external;

    /// @notice Adds a signing key to an entity. Admin only.
    function addKey(uint24 entityId, address key) external;

    /// @notice Permanently revokes a signing key. Admin only.
    function revokeKey(address key) external;

    /// @notice The entity behind `key`, and whether the key may act now (active key of an active entity).
    function entityOfKey(address key) external view returns (uint24 entityId, KeyStatus keyStatus, bool canAct);

    /// @notice An entity's registration hash, status and number of active keys.
    function getEntity(uint24 entityId) external view returns (Entity memory);

    /// @notice The active keys of an entity.
    function keysOf(uint24 entityId) external view returns (address[] memory);

    /// @notice Whether an entity holds a party role.
    function entityHasRole(uint24 entityId, bytes32 role) external view returns (bool);

    /// @notice The entity registered under a registration hash (0 if none).
    function entityByRegistrationHash(bytes32 registrationHash) external view returns (uint24);

    /// @notice Number of entities ever admitted; ids run from 1 to this number.
    function entityCount() external view returns (uint24);
}
