"""The participant directory: display names of the consortium's legal entities, kept off-chain.

Only a hash of each entity's registration number is on the ledger; who is behind "entity 4" is the
consortium operator's knowledge. The operator keeps it in one JSON file (setting ``directory_file``,
default ``data_dir/directory.json``) and may edit it at any time; readers notice the change by its
modification time::

    {"entities": {"4": {"name": "Huaxin Manufacturing Group", "registration_number": "91110000MA0DEBTA44"}}}

Entity ids are the on-chain uint24 ids, as JSON keys. ``name`` is required (1-200 characters, no control
characters); ``registration_number`` is the operator's own record and is never served; any other field
(notes, contacts) is kept and ignored. A file that breaks these rules is refused whole with
:class:`DirectoryError` naming the file and the offending entry: nothing half-read is ever shown.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import ConfigurationError
from registry.keys import write_atomic

MAX_NAME = 200
MAX_ENTITY = 2**24 - 1


class DirectoryError(ConfigurationError):
    """Raised when the participant directory file cannot be read or breaks its format."""


@dataclass(frozen=True)
class DirectoryEntry:
    name: str
    registration_number: str | None = None


def parse_directory(document: Any, source: str = "directory") -> dict[int, DirectoryEntry]:
    """Entity id -> entry from the file's JSON document; :class:`DirectoryError` names the first fault."""
    if not isinstance(document, Mapping) or not isinstance(document.get("entities"), Mapping):
        raise DirectoryError(f'{source}: expected {{"entities": {{"<entity id>": {{"name": "..."}}}}}}')
    out: dict[int, DirectoryEntry] = {}
    for key, value in document["entities"].items():
        where = f"{source}: entities.{key}"
        text = str(key).strip()
        if not text.isdigit() or not 0 < int(text) <= MAX_ENTITY:
            raise DirectoryError(f"{where}: keys must be entity ids (1 to {MAX_ENTITY})")
        if not isinstance(value, Mapping):
            raise DirectoryError(f'{where}: expected {{"name": "...", "registration_number": "..."}}')
        name = value.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DirectoryError(f"{where}.name: a non-empty text is required")
        name = " ".join(name.split())
        if len(name) > MAX_NAME or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
            raise DirectoryError(f"{where}.name: at most {MAX_NAME} printable characters")
        number = value.get("registration_number")
        if number is not None and not isinstance(number, str):
            raise DirectoryError(f"{where}.registration_number: must be text")
        if int(text) in out:
            raise DirectoryError(f"{where}: entity {int(text)} is listed twice")
        out[int(text)] = DirectoryEntry(name, number)
    return out


def read_directory(path: Path) -> dict[int, DirectoryEntry]:
    """The directory in ``path``; an absent file is an empty directory (nobody named yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectoryError(f"{path}: cannot be read ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DirectoryError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    return parse_directory(document, str(path))


def merge_directory(path: Path, entries: Mapping[int, DirectoryEntry]) -> dict[int, DirectoryEntry]:
    """Adds ``entries`` for entities the file does not list yet; what the file already says wins (the
    operator's edits are kept, as are its other fields). Writes only when something was added, whole or
    not at all; a file that breaks the format is never overwritten (:class:`DirectoryError`)."""
    current = read_directory(path)
    missing = {e: entry for e, entry in entries.items() if e not in current}
    if not missing and path.exists():
        return current
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    listed: dict[str, Any] = dict(document.get("entities") or {})
    for entity, entry in missing.items():
        record: dict[str, str] = {"name": entry.name}
        if entry.registration_number is not None:
            record["registration_number"] = entry.registration_number
        listed[str(entity)] = record
    document["entities"] = dict(sorted(listed.items(), key=lambda item: int(str(item[0]).strip())))
    write_atomic(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return read_directory(path)


class DirectoryFile:
    """The directory file as readers see it: re-read when its modification time or size changes, so that
    an operator's edit shows without a restart. Thread-safe; a broken edit raises until it is fixed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[int, DirectoryEntry] = {}

    def entries(self) -> dict[int, DirectoryEntry]:
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp is None:
                self._stamp, self._entries = None, {}
            elif stamp != self._stamp:
                self._entries = read_directory(self.path)
                self._stamp = stamp
            return dict(self._entries)

    def names(self) -> dict[int, str]:
        return {entity: entry.name for entity, entry in sorted(self.entries().items())}
