"""The participant directory: entity id -> display name, for every signed-in principal.

Names are the consortium operator's off-chain record (registry/directory.py; the file ``directory_file``),
re-read when the operator edits it. The names of a permissioned consortium's members are not secret
among its members, so any signed-in participant (and the operator) reads them all; registration numbers
stay in the file and are never served.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, ServicesDep
from api.problems import Problem, problem_responses
from registry.directory import DirectoryError, DirectoryFile

log = logging.getLogger("registry.api")

router = APIRouter(tags=["directory"], responses=problem_responses(401, 429, 503))


class DirectoryPublic(BaseModel):
    entities: dict[int, str] = Field(description="entity id -> display name; entities not listed have none")


def directory_file(services: ServicesDep) -> DirectoryFile:
    """This API's reader of the directory file (built on first use)."""
    found = services.extra.get("directory")
    path = services.settings.directory_file
    if not isinstance(found, DirectoryFile) or found.path != path:
        found = DirectoryFile(path)
        services.extra["directory"] = found
    return found


@router.get("/directory", response_model=DirectoryPublic)
def get_directory(services: ServicesDep, principal: PrincipalDep) -> DirectoryPublic:
    """Display names of the consortium's participants, by entity id (as the operator keeps them)."""
    del principal  # signed in is enough: every member may know who the others are
    reader = directory_file(services)
    try:
        names = reader.names()
    except DirectoryError as exc:
        log.error("participant directory: %s", exc)
        said = str(exc).replace(str(reader.path), reader.path.name)  # the file's name, not the server's layout
        raise Problem(503, "directory_unavailable", f"the participant directory is unreadable: {said}") from None
    return DirectoryPublic(entities=names)
