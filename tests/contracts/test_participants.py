"""Consortium membership: admission, party roles held by entities, suspension and key rotation."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from registry.chain import reverts
from registry.chain.contract import KeyInfo, RegistryClient
from registry.demo import Consortium, Member, registration_hash
from registry.domain import PARTY_ROLES, EntityStatus, KeyStatus, Role, Status
from registry.types import EntityId
from tests.conftest import InvoiceFactory

ZERO_ADDRESS = "0x" + "00" * 20
NEW_USCC = "91440300MA5NEWENT1"


def _admit(
    registry: RegistryClient, admin: LocalAccount, roles: tuple[Role, ...], number: str = NEW_USCC
) -> tuple[EntityId, LocalAccount]:
    key: LocalAccount = Account.create()
    return registry.admit_participant(admin, registration_hash(number), roles, key.address), key


def _with_extra_keys(registry: RegistryClient, admin: LocalAccount, entity: EntityId, n: int) -> list[LocalAccount]:
    keys: list[LocalAccount] = [Account.create() for _ in range(n)]
    for key in keys:
        registry.add_key(admin, entity, key.address)
    return keys


# ------------------------------------------------------------------ admission


def test_admission_records_the_entity_its_roles_and_its_first_key(
    registry: RegistryClient, admin: LocalAccount
) -> None:
    before = registry.entity_count()
    key: LocalAccount = Account.create()
    reg_hash = registration_hash(NEW_USCC)
    result = registry.transact(
        admin, "admitParticipant", reg_hash, [bytes(Role.CREDITOR), bytes(Role.DEBTOR)], key.address
    )

    entity = result.event("ParticipantAdmitted").args["entityId"]
    assert entity == before + 1 == registry.entity_count()
    assert result.event("ParticipantAdmitted").args["registrationHash"] == reg_hash
    assert [bytes(e.args["role"]) for e in result.events_named("EntityRoleGranted")] == [
        bytes(Role.CREDITOR),
        bytes(Role.DEBTOR),
    ]
    assert result.event("KeyAdded").args["key"].lower() == key.address.lower()
    assert registry.entity_by_registration_hash(reg_hash) == entity
    info = registry.get_entity(entity)
    assert (info.registration_hash, info.status, info.active_keys) == (reg_hash, EntityStatus.ACTIVE, 1)
    assert registry.keys_of(entity) == [key.address]
    assert registry.entity_of_key(key.address) == KeyInfo(entity, KeyStatus.ACTIVE, True)


def test_admitting_a_registration_number_twice_is_refused(
    registry: RegistryClient, admin: LocalAccount, creditor: Member
) -> None:
    with pytest.raises(reverts.RegistrationHashTaken) as raised:
        _admit(registry, admin, (Role.CREDITOR,), number="91440300MA5DCREDA1")  # the creditor's USCC
    assert raised.value.entityId == creditor.entity


def test_registration_number_is_hashed_after_normalising_case_and_spaces(
    registry: RegistryClient, admin: LocalAccount
) -> None:
    with pytest.raises(reverts.RegistrationHashTaken):
        _admit(registry, admin, (Role.CREDITOR,), number="  91440300ma5dcreda1 ")


def test_admission_with_an_empty_registration_hash_is_refused(registry: RegistryClient, admin: LocalAccount) -> None:
    with pytest.raises(reverts.EmptyRegistrationHash):
        registry.admit_participant(admin, bytes(32), (Role.CREDITOR,), Account.create().address)


def test_admission_with_a_key_of_another_entity_is_refused(
    registry: RegistryClient, admin: LocalAccount, creditor: Member
) -> None:
    with pytest.raises(reverts.KeyUnavailable) as raised:
        registry.admit_participant(admin, registration_hash(NEW_USCC), (Role.FACTOR,), creditor.address)
    assert raised.value.status == KeyStatus.ACTIVE
    assert registry.entity_by_registration_hash(registration_hash(NEW_USCC)) == 0


def test_admission_with_the_zero_address_as_key_is_refused(registry: RegistryClient, admin: LocalAccount) -> None:
    with pytest.raises(reverts.KeyUnavailable) as raised:
        registry.admit_participant(admin, registration_hash(NEW_USCC), (Role.FACTOR,), ZERO_ADDRESS)
    assert raised.value.status == KeyStatus.NONE


def test_admission_with_a_role_that_is_not_a_party_role_is_refused(
    registry: RegistryClient, admin: LocalAccount
) -> None:
    with pytest.raises(reverts.NotAPartyRole) as raised:
        _admit(registry, admin, (Role.ADMIN,))
    assert raised.value.role == bytes(Role.ADMIN)


# ------------------------------------------------------------------ keys


def test_an_entity_holds_at_most_the_key_limit_and_a_revocation_frees_a_slot(
    registry: RegistryClient, admin: LocalAccount, auditor: Member
) -> None:
    limit = registry.constant("MAX_KEYS_PER_ENTITY")
    keys = _with_extra_keys(registry, admin, auditor.entity, limit - 1)
    assert registry.get_entity(auditor.entity).active_keys == limit

    with pytest.raises(reverts.TooManyKeys) as raised:
        registry.add_key(admin, auditor.entity, Account.create().address)
    assert (raised.value.entityId, raised.value.limit) == (auditor.entity, limit)

    registry.revoke_key(admin, keys[0].address)
    registry.add_key(admin, auditor.entity, Account.create().address)
    assert registry.get_entity(auditor.entity).active_keys == limit


def test_a_key_can_be_added_to_only_one_entity_and_a_revoked_key_never_comes_back(
    registry: RegistryClient, admin: LocalAccount, creditor: Member, other_creditor: Member
) -> None:
    with pytest.raises(reverts.KeyUnavailable) as raised:
        registry.add_key(admin, other_creditor.entity, creditor.address)
    assert raised.value.status == KeyStatus.ACTIVE

    (second,) = _with_extra_keys(registry, admin, creditor.entity, 1)
    registry.revoke_key(admin, second.address)
    for entity in (creditor.entity, other_creditor.entity):
        with pytest.raises(reverts.KeyUnavailable) as raised:
            registry.add_key(admin, entity, second.address)
        assert raised.value.status == KeyStatus.REVOKED


def test_adding_a_key_to_an_unknown_entity_is_refused(registry: RegistryClient, admin: LocalAccount) -> None:
    unknown = EntityId(registry.entity_count() + 1)
    with pytest.raises(reverts.UnknownEntity) as raised:
        registry.add_key(admin, unknown, Account.create().address)
    assert raised.value.entityId == unknown


def test_revoking_the_last_active_key_of_an_entity_is_refused(
    registry: RegistryClient, admin: LocalAccount, debtor: Member
) -> None:
    with pytest.raises(reverts.LastActiveKey) as raised:
        registry.revoke_key(admin, debtor.address)
    assert (raised.value.entityId, raised.value.key.lower()) == (debtor.entity, debtor.address.lower())
    assert registry.entity_of_key(debtor.address).can_act


def test_revoking_a_key_that_is_not_active_is_refused(
    registry: RegistryClient, admin: LocalAccount, debtor: Member
) -> None:
    with pytest.raises(reverts.KeyUnavailable) as raised:
        registry.revoke_key(admin, Account.create().address)
    assert raised.value.status == KeyStatus.NONE

    (second,) = _with_extra_keys(registry, admin, debtor.entity, 1)
    registry.revoke_key(admin, second.address)
    with pytest.raises(reverts.KeyUnavailable) as raised:
        registry.revoke_key(admin, second.address)
    assert raised.value.status == KeyStatus.REVOKED


def test_key_rotation_keeps_the_entitys_receivables_and_moves_the_right_to_act(
    registry: RegistryClient, admin: LocalAccount, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    invoice = make_invoice()
    rid = registry.register(creditor.account, invoice)  # signed with key 1
    (key2,) = _with_extra_keys(registry, admin, creditor.entity, 1)
    result = registry.revoke_key(admin, creditor.address)
    assert result.event("KeyRevoked").args == {"entityId": creditor.entity, "key": creditor.address}

    assert registry.get_receivable(rid).creditor == creditor.entity
    assert registry.entity_of_key(creditor.address) == KeyInfo(creditor.entity, KeyStatus.REVOKED, False)
    assert registry.keys_of(creditor.entity) == [key2.address]
    with pytest.raises(reverts.KeyIsRevoked):
        registry.cancel(creditor.account, rid)

    registry.confirm(debtor.account, rid, invoice.fingerprint)
    registry.split(key2, rid, [invoice.face_value // 2, invoice.face_value - invoice.face_value // 2])
    assert registry.get_receivable(rid).status is Status.SPLIT
    new_rid = registry.register(key2, make_invoice())
    assert registry.get_receivable(new_rid).creditor == creditor.entity


# ------------------------------------------------------------------ suspension


def test_suspension_stops_every_key_of_the_entity_at_once_and_reinstatement_restores_them(
    registry: RegistryClient, admin: LocalAccount, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    keys = [creditor.account, *_with_extra_keys(registry, admin, creditor.entity, 2)]
    result = registry.suspend_participant(admin, creditor.entity)
    assert result.event("ParticipantSuspended").args == {"entityId": creditor.entity}
    assert registry.get_entity(creditor.entity).status is EntityStatus.SUSPENDED

    for key in keys:
        assert registry.entity_of_key(key.address) == KeyInfo(creditor.entity, KeyStatus.ACTIVE, False)
        assert not registry.has_role(Role.CREDITOR, key.address)
        with pytest.raises(reverts.EntityIsSuspended) as raised:
            registry.register(key, make_invoice())
        assert raised.value.entityId == creditor.entity

    result = registry.reinstate_participant(admin, creditor.entity)
    assert result.event("ParticipantReinstated").args == {"entityId": creditor.entity}
    for key in keys:
        assert registry.entity_of_key(key.address).can_act
        assert registry.has_role(Role.CREDITOR, key.address)
        registry.register(key, make_invoice())


def test_a_key_added_to_a_suspended_entity_is_suspended_too(
    registry: RegistryClient, admin: LocalAccount, creditor: Member, make_invoice: InvoiceFactory
) -> None:
    registry.suspend_participant(admin, creditor.entity)
    (late,) = _with_extra_keys(registry, admin, creditor.entity, 1)
    with pytest.raises(reverts.EntityIsSuspended):
        registry.register(late, make_invoice())
    registry.reinstate_participant(admin, creditor.entity)
    registry.register(late, make_invoice())


def test_a_suspended_debtor_cannot_be_named_on_a_new_registration(
    registry: RegistryClient, admin: LocalAccount, creditor: Member, debtor: Member, make_invoice: InvoiceFactory
) -> None:
    registry.suspend_participant(admin, debtor.entity)
    with pytest.raises(reverts.EntityIsSuspended) as raised:
        registry.register(creditor.account, make_invoice())
    assert raised.value.entityId == debtor.entity


def test_suspending_twice_or_reinstating_an_active_entity_is_refused(
    registry: RegistryClient, admin: LocalAccount, factor: Member
) -> None:
    with pytest.raises(reverts.EntityStatusUnchanged) as raised:
        registry.reinstate_participant(admin, factor.entity)
    assert raised.value.status == EntityStatus.ACTIVE
    registry.suspend_participant(admin, factor.entity)
    with pytest.raises(reverts.EntityStatusUnchanged) as raised:
        registry.suspend_participant(admin, factor.entity)
    assert raised.value.status == EntityStatus.SUSPENDED


def test_suspending_an_unknown_entity_is_refused(registry: RegistryClient, admin: LocalAccount) -> None:
    with pytest.raises(reverts.UnknownEntity):
        registry.suspend_participant(admin, EntityId(registry.entity_count() + 1))


# ------------------------------------------------------------------ party roles and AccessControl


@pytest.mark.parametrize("role", PARTY_ROLES, ids=lambda r: r.label)
def test_party_roles_cannot_be_granted_to_an_address_through_access_control(
    registry: RegistryClient, admin: LocalAccount, stranger: LocalAccount, role: Role
) -> None:
    with pytest.raises(reverts.RoleIsHeldByEntities) as raised:
        registry.grant_role(admin, role, stranger.address)
    assert raised.value.role == bytes(role)
    assert not registry.has_role(role, stranger.address)


@pytest.mark.parametrize("role", PARTY_ROLES, ids=lambda r: r.label)
def test_party_roles_cannot_be_revoked_from_a_key_through_access_control(
    registry: RegistryClient, admin: LocalAccount, consortium: Consortium, role: Role
) -> None:
    holder = consortium.by_role(role)[0]
    with pytest.raises(reverts.RoleIsHeldByEntities):
        registry.revoke_role(admin, role, holder.address)
    assert registry.has_role(role, holder.address)


@pytest.mark.parametrize("role", PARTY_ROLES, ids=lambda r: r.label)
def test_a_key_cannot_renounce_its_entitys_party_role(
    registry: RegistryClient, consortium: Consortium, role: Role
) -> None:
    holder = consortium.by_role(role)[0]
    with pytest.raises(reverts.RoleIsHeldByEntities):
        registry.renounce_role(holder.account, role)
    assert registry.has_role(role, holder.address)


def test_has_role_answers_for_the_entity_behind_a_key(
    registry: RegistryClient,
    admin: LocalAccount,
    creditor: Member,
    factor: Member,
    stranger: LocalAccount,
) -> None:
    assert registry.has_role(Role.CREDITOR, creditor.address)
    assert not registry.has_role(Role.DEBTOR, creditor.address)
    assert not registry.has_role(Role.CREDITOR, stranger.address)
    assert registry.has_role(Role.ADMIN, admin.address)
    assert not registry.has_role(Role.ADMIN, creditor.address)

    (second,) = _with_extra_keys(registry, admin, factor.entity, 1)
    assert registry.has_role(Role.FACTOR, second.address)
    registry.revoke_key(admin, factor.address)
    assert not registry.has_role(Role.FACTOR, factor.address)
    assert registry.has_role(Role.FACTOR, second.address)


def test_granting_and_revoking_an_entity_role_applies_to_all_its_keys_and_emits_events(
    registry: RegistryClient, admin: LocalAccount, auditor: Member, make_invoice: InvoiceFactory
) -> None:
    (second,) = _with_extra_keys(registry, admin, auditor.entity, 1)
    result = registry.grant_entity_role(admin, auditor.entity, Role.CREDITOR)
    assert result.event("EntityRoleGranted").args == {"entityId": auditor.entity, "role": bytes(Role.CREDITOR)}
    assert registry.entity_has_role(auditor.entity, Role.CREDITOR)
    for key in (auditor.account, second):
        assert registry.has_role(Role.CREDITOR, key.address)
    registry.register(second, make_invoice())

    result = registry.revoke_entity_role(admin, auditor.entity, Role.CREDITOR)
    assert result.event("EntityRoleRevoked").args == {"entityId": auditor.entity, "role": bytes(Role.CREDITOR)}
    for key in (auditor.account, second):
        assert not registry.has_role(Role.CREDITOR, key.address)
        with pytest.raises(reverts.EntityMissingRole) as raised:
            registry.register(key, make_invoice())
        assert raised.value.role == bytes(Role.CREDITOR)


def test_granting_a_role_the_entity_already_holds_changes_nothing_and_emits_nothing(
    registry: RegistryClient, admin: LocalAccount, factor: Member
) -> None:
    _, count_before = registry.ledger()
    result = registry.grant_entity_role(admin, factor.entity, Role.FACTOR)
    assert result.events_named("EntityRoleGranted") == []
    assert registry.ledger()[1] == count_before


def test_entity_roles_must_be_party_roles(registry: RegistryClient, admin: LocalAccount, factor: Member) -> None:
    made_up = Role(keccak(text="TREASURER_ROLE"))
    with pytest.raises(reverts.NotAPartyRole):
        registry.grant_entity_role(admin, factor.entity, made_up)
    with pytest.raises(reverts.NotAPartyRole):
        registry.revoke_entity_role(admin, factor.entity, Role.ADMIN)


def test_admin_role_can_be_shared_and_the_new_admin_admits_participants(
    registry: RegistryClient, admin: LocalAccount
) -> None:
    deputy: LocalAccount = Account.create()
    result = registry.grant_role(admin, Role.ADMIN, deputy.address)
    assert result.event("RoleGranted").args["account"].lower() == deputy.address.lower()
    entity, _ = _admit(registry, deputy, (Role.FACTOR,))
    assert registry.entity_has_role(entity, Role.FACTOR)

    registry.revoke_role(admin, Role.ADMIN, deputy.address)
    with pytest.raises(reverts.AccessControlUnauthorizedAccount):
        _admit(registry, deputy, (Role.FACTOR,), number="91440300MA5OTHER02")


def test_participant_administration_is_folded_into_the_ledger_hash(
    registry: RegistryClient, admin: LocalAccount, factor: Member
) -> None:
    head, count = registry.ledger()
    registry.suspend_participant(admin, factor.entity)
    registry.reinstate_participant(admin, factor.entity)
    new_head, new_count = registry.ledger()
    assert new_count == count + 2
    assert new_head != head
