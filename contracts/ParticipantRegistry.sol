// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IParticipantRegistry} from "./interfaces/IParticipantRegistry.sol";
import {LedgerHash} from "./LedgerHash.sol";

/// @title Consortium membership: entities, party roles held by entities, and their signing keys.
/// @notice The consortium admin holds `DEFAULT_ADMIN_ROLE` through AccessControl. Party roles
/// (creditor, debtor, factor, auditor) are held by entities, never granted to an address directly:
/// `hasRole(role, key)` answers for the key's entity.
abstract contract ParticipantRegistry is IParticipantRegistry, AccessControl, LedgerHash {
    bytes32 public constant CREDITOR_ROLE = keccak256("CREDITOR_ROLE");
    bytes32 public constant DEBTOR_ROLE = keccak256("DEBTOR_ROLE");
    bytes32 public constant FACTOR_ROLE = keccak256("FACTOR_ROLE");
    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");

    /// @notice Most active keys one entity may hold (bounds the suspension loop).
    uint256 public constant MAX_KEYS_PER_ENTITY = 16;

    struct KeyRecord {
        uint24 entityId;
        KeyStatus status;
        // Mirrors the entity's suspension so that every call reads one slot to know whether the
        // caller may act; kept in step by `_setEntityStatus` and `addKey` only.
        bool entitySuspended;
    }

    struct EntityRecord {
        bytes32 registrationHash;
        EntityStatus status;
    }

    mapping(address key => KeyRecord) private _keys;
    mapping(uint24 entityId => EntityRecord) private _entities;
    mapping(uint24 entityId => address[]) private _entityKeys;
    mapping(uint24 entityId => mapping(bytes32 role => bool)) private _entityRoles;
    mapping(bytes32 registrationHash => uint24) private _entityByRegistrationHash;
    uint24 private _entityCount;

    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ administration

    /// @inheritdoc IParticipantRegistry
    function admitParticipant(bytes32 registrationHash, bytes32[] calldata roles, address firstKey)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
        returns (uint24 entityId)
    {
        if (registrationHash == bytes32(0)) revert EmptyRegistrationHash();
        uint24 existing = _entityByRegistrationHash[registrationHash];
        if (existing != 0) revert RegistrationHashTaken(registrationHash, existing);
        entityId = ++_entityCount;
        _entities[entityId] = EntityRecord({registrationHash: registrationHash, status: EntityStatus.Active});
        _entityByRegistrationHash[registrationHash] = entityId;
        emit ParticipantAdmitted(entityId, registrationHash);
        _fold(ParticipantAdmitted.selector, abi.encode(entityId, registrationHash));
        for (uint256 i = 0; i < roles.length; ++i) {
            _grantEntityRole(entityId, roles[i]);
        }
        _addKey(entityId, firstKey);
    }

    /// @inheritdoc IParticipantRegistry
    function grantEntityRole(uint24 entityId, bytes32 role) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireEntity(entityId);
        _grantEntityRole(entityId, role);
    }

    /// @inheritdoc IParticipantRegistry
    function revokeEntityRole(uint24 entityId, bytes32 role) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireEntity(entityId);
        if (!_isPartyRole(role)) revert NotAPartyRole(role);
        if (_entityRoles[entityId][role]) {
            _entityRoles[entityId][role] = false;
            emit EntityRoleRevoked(entityId, role);
            _fold(EntityRoleRevoked.selector, abi.encode(entityId, role));
        }
    }

    /// @inheritdoc IParticipantRegistry
    function suspendParticipant(uint24 entityId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setEntityStatus(entityId, EntityStatus.Suspended);
        emit ParticipantSuspended(entityId);
        _fold(ParticipantSuspended.selector, abi.encode(entityId));
    }

    /// @inheritdoc IParticipantRegistry
    function reinstateParticipant(uint24 entityId) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setEntityStatus(entityId, EntityStatus.Active);
        emit ParticipantReinstated(entityId);
        _fold(ParticipantReinstated.selector, abi.encode(entityId));
    }

    /// @inheritdoc IParticipantRegistry
    function addKey(uint24 entityId, address key) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _requireEntity(entityId);
        _addKey(entityId, key);
    }

    /// @inheritdoc IParticipantRegistry
    function revokeKey(address key) external onlyRole(DEFAULT_ADMIN_ROLE) {
        KeyRecord storage record = _keys[key];
        if (record.status != KeyStatus.Active) revert KeyUnavailable(key, record.status);
        uint24 entityId = record.entityId;
        address[] storage keys = _entityKeys[entityId];
        if (keys.length == 1) revert LastActiveKey(entityId, key);
        record.status = KeyStatus.Revoked;
        for (uint256 i = 0; i < keys.length; ++i) {
            if (keys[i] == key) {
                keys[i] = keys[keys.length - 1];
                keys.pop();
                break;
            }
        }
        emit KeyRevoked(entityId, key);
        _fold(KeyRevoked.selector, abi.encode(entityId, key));
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IParticipantRegistry
    function entityOfKey(address key) external view returns (uint24 entityId, KeyStatus keyStatus, bool canAct) {
        KeyRecord memory record = _keys[key];
        return (record.entityId, record.status, record.status == KeyStatus.Active && !record.entitySuspended);
    }

    /// @inheritdoc IParticipantRegistry
    function getEntity(uint24 entityId) external view returns (Entity memory) {
        EntityRecord memory record = _entities[entityId];
        return Entity({
            registrationHash: record.registrationHash,
            status: record.status,
            activeKeys: uint32(_entityKeys[entityId].length)
        });
    }

    /// @inheritdoc IParticipantRegistry
    function keysOf(uint24 entityId) external view returns (address[] memory) {
        return _entityKeys[entityId];
    }

    /// @inheritdoc IParticipantRegistry
    function entityHasRole(uint24 entityId, bytes32 role) public view returns (bool) {
        return _entityRoles[entityId][role];
    }

    /// @inheritdoc IParticipantRegistry
    function entityByRegistrationHash(bytes32 registrationHash) external view returns (uint24) {
        return _entityByRegistrationHash[registrationHash];
    }

    /// @inheritdoc IParticipantRegistry
    function entityCount() external view returns (uint24) {
        return _entityCount;
    }

    /// @notice For party roles, whether `account` is an active key of an active entity holding `role`;
    /// for the admin role, AccessControl's answer.
    function hasRole(bytes32 role, address account) public view override returns (bool) {
        if (_isPartyRole(role)) {
            KeyRecord memory record = _keys[account];
            return record.status == KeyStatus.Active && !record.entitySuspended
                && _entityRoles[record.entityId][role];
        }
        return super.hasRole(role, account);
    }

    // ------------------------------------------------------------------ checks used by the lifecycle

    /// @dev The caller's entity, if the caller is an active key of an active entity; reverts otherwise.
    function _requireActor() internal view returns (uint24 entityId) {
        address key = _msgSender();
        KeyRecord storage record = _keys[key];
        (uint24 id, KeyStatus status, bool suspended) = (record.entityId, record.status, record.entitySuspended);
        if (status != KeyStatus.Active) {
            if (status == KeyStatus.None) revert UnknownKey(key);
            revert KeyIsRevoked(key, id);
        }
        if (suspended) revert EntityIsSuspended(id);
        return id;
    }

    /// @dev As `_requireActor`, and the entity must hold `role`.
    function _requireActorWithRole(bytes32 role) internal view returns (uint24 entityId) {
        entityId = _requireActor();
        if (!_entityRoles[entityId][role]) revert EntityMissingRole(entityId, role);
    }

    /// @dev Empty if `entityId` is an active entity holding `role`; else the ABI-encoded custom error.
    function _entityRoleError(uint24 entityId, bytes32 role) internal view returns (bytes memory) {
        EntityStatus status = _entities[entityId].status;
        if (status == EntityStatus.None) return abi.encodeWithSelector(UnknownEntity.selector, entityId);
        if (status == EntityStatus.Suspended) return abi.encodeWithSelector(EntityIsSuspended.selector, entityId);
        if (!_entityRoles[entityId][role]) return abi.encodeWithSelector(EntityMissingRole.selector, entityId, role);
        return "";
    }

    /// @dev Reverts with `err` as returned data (a custom error encoded by the helpers above).
    function _revertWith(bytes memory err) internal pure {
        assembly ("memory-safe") {
            revert(add(err, 32), mload(err))
        }
    }

    // ------------------------------------------------------------------ AccessControl integration

    /// @dev Party roles are held by entities; AccessControl grants only the admin role(s).
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        if (_isPartyRole(role)) revert RoleIsHeldByEntities(role);
        granted = super._grantRole(role, account);
        if (granted) _fold(RoleGranted.selector, abi.encode(role, account, _msgSender()));
    }

    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        // `hasRole` answers for the key's entity, so AccessControl would emit RoleRevoked (and the
        // ledger fold it) while the entity keeps the role: party roles are revoked per entity only.
        if (_isPartyRole(role)) revert RoleIsHeldByEntities(role);
        revoked = super._revokeRole(role, account);
        if (revoked) _fold(RoleRevoked.selector, abi.encode(role, account, _msgSender()));
    }

    // ------------------------------------------------------------------ internals

    function _isPartyRole(bytes32 role) internal pure returns (bool) {
        return role == CREDITOR_ROLE || role == DEBTOR_ROLE || role == FACTOR_ROLE || role == AUDITOR_ROLE;
    }

    function _requireEntity(uint24 entityId) private view {
        if (_entities[entityId].status == EntityStatus.None) revert UnknownEntity(entityId);
    }

    function _grantEntityRole(uint24 entityId, bytes32 role) private {
        if (!_isPartyRole(role)) revert NotAPartyRole(role);
        if (!_entityRoles[entityId][role]) {
            _entityRoles[entityId][role] = true;
            emit EntityRoleGranted(entityId, role);
            _fold(EntityRoleGranted.selector, abi.encode(entityId, role));
        }
    }

    function _addKey(uint24 entityId, address key) private {
        KeyRecord storage record = _keys[key];
        if (key == address(0) || record.status != KeyStatus.None) revert KeyUnavailable(key, record.status);
        address[] storage keys = _entityKeys[entityId];
        if (keys.length >= MAX_KEYS_PER_ENTITY) revert TooManyKeys(entityId, MAX_KEYS_PER_ENTITY);
        record.entityId = entityId;
        record.status = KeyStatus.Active;
        record.entitySuspended = _entities[entityId].status == EntityStatus.Suspended;
        keys.push(key);
        emit KeyAdded(entityId, key);
        _fold(KeyAdded.selector, abi.encode(entityId, key));
    }

    function _setEntityStatus(uint24 entityId, EntityStatus status) private {
        EntityRecord storage entity = _entities[entityId];
        if (entity.status == EntityStatus.None) revert UnknownEntity(entityId);
        if (entity.status == status) revert EntityStatusUnchanged(entityId, status);
        entity.status = status;
        bool suspended = status == EntityStatus.Suspended;
        address[] storage keys = _entityKeys[entityId];
        for (uint256 i = 0; i < keys.length; ++i) {
            _keys[keys[i]].entitySuspended = suspended;
        }
    }
}
