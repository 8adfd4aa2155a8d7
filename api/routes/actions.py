"""Preparing signed writes: where the registry lives, and the EIP-712 request a user signs for an action.

A client (the portal, the CLI) asks ``/actions/{action}/prepare`` with named arguments, shows the user the
normalised summary, signs ``typed_data`` with the user's own key and posts the message plus the signature
to ``/actions/{action}`` (api/routes/core.py), which relays it exactly once. The server never sees a key;
what it prepares is checked by the signer (the CLI re-encodes it locally) and by the forwarder on-chain.
"""

from __future__ import annotations

from typing import Annotated

from eth_utils.address import to_checksum_address
from fastapi import APIRouter, Path

from api.deps import PrincipalDep, ServicesDep
from api.problems import problem_responses
from api.routes.reports import operator_account
from api.schemas import MetaPublic, PrepareCreate, PreparePublic, TypedDataPublic
from registry.actions import ACTIONS, build_call, forward_request_types, typed_data

router = APIRouter(responses=problem_responses(422, 429, 503))

ACTION_PATTERN = "^(" + "|".join(ACTIONS) + ")$"


@router.get("/meta", response_model=MetaPublic, tags=["actions"])
def meta(services: ServicesDep) -> MetaPublic:
    """Chain, contracts, the EIP-712 domain and types of signed requests, the action table and the ABI."""
    registry = services.registry
    deployment = registry.deployment
    return MetaPublic(
        chain_id=deployment.chain_id,
        registry=to_checksum_address(deployment.registry),
        forwarder=to_checksum_address(deployment.forwarder),
        deploy_block=deployment.deploy_block,
        eip712={
            "domain": registry.forwarder_domain(),
            "types": forward_request_types(),
            "primaryType": "ForwardRequest",
        },
        actions=dict(ACTIONS),
        certificate_issuer=operator_account(services).address,
        registry_abi=registry.abi.abi,
    )


@router.post(
    "/actions/{action}/prepare",
    response_model=PreparePublic,
    tags=["actions"],
    responses=problem_responses(401, 403, 409),
)
def prepare(
    action: Annotated[str, Path(pattern=ACTION_PATTERN, description="the lifecycle action")],
    body: PrepareCreate,
    services: ServicesDep,
    principal: PrincipalDep,
) -> PreparePublic:
    """The request the signed-in user signs for ``action``: arguments checked and normalised, the call
    simulated as the user (a would-be revert is a 4xx naming the contract error and its fields), gas,
    nonce and a 10-minute deadline filled in. Sign ``typed_data`` (EIP-712) and post its ``message``
    with ``signature`` to ``/actions/{action}``."""
    call = build_call(action, body.args)
    document = typed_data(services.registry, principal.address, call)
    return PreparePublic(
        action=action,
        function=call.function,
        summary=call.summary,
        typed_data=TypedDataPublic(**document),
    )
