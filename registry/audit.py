"""The auditor's verification: the chain's own events and state against the contract and the mirror.

Needs only a JSON-RPC URL and the deployment file (addresses; the ABI comes from the compiler's
artifacts), and optionally the database URL of a mirror to check:

- **ledger**: every registry log from the deploy block to the audited block (adaptive ``eth_getLogs``
  ranges), decoded with the ABI and folded into the ledger hash chain off-chain, compared with the
  contract's ``ledger()`` at that block;
- **mirror**: the audited block is the mirror's cursor block (its hash must still be the chain's, or
  the mirror sits on a stale fork); every receivable, participant, key and payment claim of the mirror
  as of that block is compared field by field with the contract's state at that block (``eth_call``
  pinned to the block hash, in JSON-RPC batches), rows the chain has but the mirror lacks are listed
  as missing, and the raw event log and the cursor's ledger head are compared with the recomputed
  chain of hashes.

The mirror is only read. Rows are selected "as of the cursor block" (``valid_from <= B`` and
``valid_to`` NULL or above B), which equals the current rows while the indexer stands still and stays
right when it advances during the audit; PostgreSQL reads run in one REPEATABLE READ snapshot.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, or_, select
from sqlalchemy import Table as SqlTable
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from registry.chain.abi import ContractAbi, DecodedEvent
from registry.chain.client import ChainClient
from registry.chain.compiler import artifact
from registry.chain.deployment import Deployment, check_deployment
from registry.chain.rpc import RpcError
from registry.domain import PARTY_ROLES, ROLE_NAMES, ClaimStatus, EntityStatus, KeyStatus, Status
from registry.errors import ConfigurationError, RegistryError
from registry.indexer.reader import LogFetcher
from registry.ledger import GENESIS_HEAD, LedgerState, replay
from registry.settings import Settings
from registry.store.db import make_engine
from registry.store.models import (
    Cursor,
    Participant,
    ParticipantKey,
    PaymentClaimRow,
    RawEvent,
    Receivable,
    table_of,
)

# eth_call requests per JSON-RPC batch (about 300 bytes each: far below a node's request limit).
CALL_BATCH = 1_000
# Fields of a receivable the contract returns (getReceivable), in the struct's order.
RECEIVABLE_FIELDS = ("creditor", "debtor", "holder", "status", "recourse", "due_date", "face_value", "paid")
# Fields fixed at registration (or split), checked against the chain's own events.
REGISTRATION_FIELDS = (
    "currency",
    "issue_date",
    "fingerprint",
    "invoice_key",
    "number_hash",
    "document_hash",
    "supersedes",
    "parent_id",
)
# How each table's status column reads (for the report; comparisons are on the integers).
_ENUMS: dict[tuple[str, str], type[IntEnum]] = {
    ("receivables", "status"): Status,
    ("participants", "status"): EntityStatus,
    ("participant_keys", "status"): KeyStatus,
    ("payment_claims", "status"): ClaimStatus,
}


class AuditError(RegistryError):
    """Raised when the audit cannot complete (the chain or the mirror changed under it)."""


# ---------------------------------------------------------------------------------------- results


def _shown(table: str, column: str, value: Any) -> Any:
    """A value as the report and the JSON show it: bytes as 0x-hex, enums by name."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    enum = _ENUMS.get((table, column))
    if enum is not None and isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum(value).name
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class Divergence:
    """One field of one mirrored row that differs from the chain (``field="exists"``: a row the
    chain does not have; ``field="versions"``: several versions of one row valid at once)."""

    table: str
    id: int | str
    field: str
    mirror: Any
    chain: Any

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "id": self.id,
            "field": self.field,
            "mirror": _shown(self.table, self.field, self.mirror),
            "chain": _shown(self.table, self.field, self.chain),
        }


@dataclass(frozen=True)
class Missing:
    """A row that exists on the chain at the audited block but not in the mirror."""

    table: str
    id: int | str

    def as_json(self) -> dict[str, Any]:
        return {"table": self.table, "id": self.id}


@dataclass(frozen=True)
class LedgerPoint:
    head: bytes
    count: int

    def as_json(self) -> dict[str, Any]:
        return {"head": "0x" + self.head.hex(), "count": self.count}


@dataclass(frozen=True)
class LedgerCheck:
    """The hash chain recomputed from the logs against the contract's (and the mirror's) head."""

    block: int
    block_hash: str
    logs: int
    undecoded: int
    recomputed: LedgerPoint
    contract: LedgerPoint
    mirror: LedgerPoint | None = None

    @property
    def agrees(self) -> bool:
        return self.recomputed == self.contract and self.undecoded == 0

    @property
    def mirror_agrees(self) -> bool:
        return self.mirror is None or self.mirror == self.recomputed

    def as_json(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "block_hash": self.block_hash,
            "logs": self.logs,
            "undecoded_logs": self.undecoded,
            "recomputed": self.recomputed.as_json(),
            "contract": self.contract.as_json(),
            "agrees": self.agrees,
            "mirror": None if self.mirror is None else {**self.mirror.as_json(), "agrees": self.mirror_agrees},
        }


@dataclass
class MirrorCheck:
    """The mirror's rows as of its cursor block against the chain at that block."""

    database: str
    cursor_block: int
    cursor_hash: str
    chain_hash: str | None
    checked: dict[str, int] = field(default_factory=dict)
    divergent: list[Divergence] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)

    @property
    def stale_fork(self) -> bool:
        return self.chain_hash != self.cursor_hash

    @property
    def agrees(self) -> bool:
        return not self.stale_fork and not self.divergent and not self.missing

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "cursor": {"block": self.cursor_block, "hash": self.cursor_hash},
            "chain_hash": self.chain_hash,
            "stale_fork": self.stale_fork,
            "checked": sum(self.checked.values()),
            "checked_by_table": dict(self.checked),
            "divergent": [d.as_json() for d in self.divergent],
            "missing": [m.as_json() for m in self.missing],
            "agrees": self.agrees,
        }


@dataclass(frozen=True)
class AuditResult:
    chain_id: int
    registry: str
    block: int
    block_hash: str
    ledger: LedgerCheck
    mirror: MirrorCheck | None
    seconds: float

    @property
    def agrees(self) -> bool:
        return self.ledger.agrees and (self.mirror is None or self.mirror.agrees)

    def as_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "registry": self.registry,
            "block": self.block,
            "block_hash": self.block_hash,
            "ledger": self.ledger.as_json(),
            "mirror": None if self.mirror is None else self.mirror.as_json(),
            "agrees": self.agrees,
            "seconds": round(self.seconds, 3),
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")


# ---------------------------------------------------------------------------------------- chain reads


_STATIC = re.compile(r"^(uint\d*|bool|address|bytes([1-9]|[12]\d|3[012]))$")
# A function's outputs when every one is a static word or a tuple of static words: the types, with a
# tuple as a list of its component types.
_Layout = list[str | list[str]]


def _static_layout(outputs: list[dict[str, Any]]) -> _Layout | None:
    layout: _Layout = []
    for out in outputs:
        if out["type"] == "tuple":
            parts = [c["type"] for c in out["components"]]
            if not all(_STATIC.match(t) for t in parts):
                return None
            layout.append(parts)
        elif _STATIC.match(out["type"]):
            layout.append(out["type"])
        else:
            return None
    return layout


def _word_value(abi_type: str, word: bytes) -> Any:
    if abi_type.startswith("uint"):
        return int.from_bytes(word, "big")
    if abi_type == "bool":
        return word[31] != 0
    if abi_type == "address":
        return to_checksum_address(word[12:])
    return word[: int(abi_type[5:])]


def _word_arg(abi_type: str, value: Any) -> bytes | None:
    """One static argument as its ABI word, or None when it is not a plain, in-range value."""
    if abi_type.startswith("uint") and isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < 1 << int(abi_type[4:] or 256):
            return value.to_bytes(32, "big")
    elif abi_type == "bytes32" and isinstance(value, bytes) and len(value) == 32:
        return value
    elif abi_type == "address" and isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:]).rjust(32, b"\0")
        except ValueError:
            return None
    return None


class PinnedCalls:
    """View calls to the registry pinned to one block (by hash), many per JSON-RPC batch.

    Calls whose arguments and results are static words are encoded and decoded by slicing (eth-abi
    costs about half a millisecond per call, which thousands of receivables would feel); anything
    else goes through the ABI codec."""

    def __init__(
        self, chain: ChainClient, abi: ContractAbi, address: str, block_hash: str, batch_size: int = CALL_BATCH
    ) -> None:
        self.chain = chain
        self.abi = abi
        self.address = address
        self.block_hash = block_hash
        self.batch_size = batch_size
        self._layouts: dict[str, _Layout | None] = {}

    def one(self, fn: str, *args: Any) -> tuple[Any, ...]:
        return self.many(fn, [args])[0]

    def encode(self, fn: str, args: tuple[Any, ...]) -> bytes:
        types = [i["type"] for i in self.abi.function(fn)["inputs"]]
        if len(types) == len(args):
            words = [_word_arg(t, v) for t, v in zip(types, args, strict=True)]
            if all(w is not None for w in words):
                return self.abi.selector(fn) + b"".join(w for w in words if w is not None)
        return self.abi.encode_call(fn, args)

    def decode(self, fn: str, data: bytes) -> tuple[Any, ...]:
        if fn not in self._layouts:
            self._layouts[fn] = _static_layout(self.abi.function(fn)["outputs"])
        layout = self._layouts[fn]
        size = 0 if layout is None else 32 * sum(len(t) if isinstance(t, list) else 1 for t in layout)
        if layout is None or len(data) != size:
            return self.abi.decode_output(fn, data)
        words = iter(data[i : i + 32] for i in range(0, size, 32))
        return tuple(
            tuple(_word_value(p, next(words)) for p in t) if isinstance(t, list) else _word_value(t, next(words))
            for t in layout
        )

    def many(self, fn: str, args_list: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        pin = {"blockHash": self.block_hash}
        requests = [
            ("eth_call", [{"to": self.address, "data": "0x" + self.encode(fn, args).hex()}, pin]) for args in args_list
        ]
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(requests), self.batch_size):
            answers = self.chain.rpc.batch(requests[i : i + self.batch_size])
            for args, answer in zip(args_list[i : i + self.batch_size], answers, strict=True):
                if isinstance(answer, RpcError):
                    raise AuditError(f"{fn}{tuple(args)} at block {self.block_hash} failed: {answer}")
                out.append(self.decode(fn, bytes.fromhex(answer[2:])))
        return out


def block_hash_at(chain: ChainClient, number: int) -> str | None:
    """The canonical hash of block ``number``, or None if the chain is shorter."""
    block = chain.rpc.call("eth_getBlockByNumber", [hex(number), False])
    return None if block is None else str(block["hash"])


def fetch_events(
    chain: ChainClient, abi: ContractAbi, deployment: Deployment, block: int, max_log_range: int = 50_000
) -> tuple[list[DecodedEvent], int, int]:
    """Every registry log from the deploy block to ``block``, decoded in chain order.
    Returns (events, logs fetched, logs the ABI does not know)."""
    fetcher = LogFetcher(chain, deployment.registry, initial=2_000, maximum=max_log_range)
    logs: list[dict[str, Any]] = []
    start = deployment.deploy_block
    while start <= block:
        chunk, last = fetcher.fetch(start, block)
        logs.extend(chunk)
        start = last + 1
    events = [e for e in (abi.decode_log(entry) for entry in logs) if e is not None]
    events.sort(key=lambda e: (e.block_number, e.log_index))
    return events, len(logs), len(logs) - len(events)


@dataclass(frozen=True)
class FoldedEvent:
    """A registry event with its place in the ledger hash chain (None for events not folded)."""

    event: DecodedEvent
    seq: int | None
    head: bytes | None


def check_ledger(
    chain: ChainClient,
    abi: ContractAbi,
    deployment: Deployment,
    block: int,
    block_hash: str,
    max_log_range: int = 50_000,
) -> tuple[LedgerCheck, list[FoldedEvent]]:
    """Recomputes the ledger hash chain up to ``block`` and compares it with the contract's there.
    Also returns every event with the head after it (to check the mirror's event log)."""
    events, logs, undecoded = fetch_events(chain, abi, deployment, block, max_log_range)
    if block_hash_at(chain, block) != block_hash:
        raise AuditError(f"the chain reorganised at or below block {block} during the audit: run it again")
    recomputed = LedgerState(GENESIS_HEAD, 0)
    folded: list[FoldedEvent] = []
    for event in events:
        after = replay((event,), recomputed)
        if after.count == recomputed.count:
            folded.append(FoldedEvent(event, None, None))
        else:
            folded.append(FoldedEvent(event, after.count, after.head))
        recomputed = after
    head, count = PinnedCalls(chain, abi, deployment.registry, block_hash).one("ledger")
    check = LedgerCheck(
        block=block,
        block_hash=block_hash,
        logs=logs,
        undecoded=undecoded,
        recomputed=LedgerPoint(recomputed.head, recomputed.count),
        contract=LedgerPoint(bytes(head), int(count)),
    )
    return check, folded


# ---------------------------------------------------------------------------------------- mirror reads


@dataclass(frozen=True)
class _CursorRow:
    block_number: int
    block_hash: str
    ledger: LedgerPoint


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only connection; one REPEATABLE READ snapshot on PostgreSQL."""
    conn = engine.connect()
    try:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _read_cursor(conn: Connection, deployment: Deployment, chain_id: int) -> _CursorRow:
    try:
        row = conn.execute(select(table_of(Cursor))).mappings().first()
    except SQLAlchemyError as exc:
        raise ConfigurationError(f"the database is not a registry mirror (no cursor table): {exc.args[0]}") from None
    if row is None:
        raise ConfigurationError("the mirror is empty (no cursor): index first (`registry index --once`)")
    if row["chain_id"] != chain_id or row["genesis_hash"] != deployment.genesis_hash:
        raise ConfigurationError(
            f"the mirror is of chain {row['chain_id']} (genesis {row['genesis_hash']}), the deployment of chain "
            f"{deployment.chain_id} (genesis {deployment.genesis_hash})"
        )
    if row["registry_address"].lower() != deployment.registry.lower():
        raise ConfigurationError(
            f"the mirror is of registry {row['registry_address']}, the deployment names {deployment.registry}"
        )
    return _CursorRow(
        int(row["block_number"]),
        str(row["block_hash"]),
        LedgerPoint(bytes(row["ledger_head"]), int(row["ledger_count"])),
    )


def _rows_as_of(conn: Connection, table: SqlTable, key: str, block: int) -> dict[Any, list[dict[str, Any]]]:
    """Every version of every row valid at ``block``, by business key (normally one each)."""
    stmt = select(table).where(table.c.valid_from <= block, or_(table.c.valid_to.is_(None), table.c.valid_to > block))
    rows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(stmt).mappings():
        rows[row[key]].append(dict(row))
    return rows


def _single(table: str, key: Any, versions: list[dict[str, Any]], divergent: list[Divergence]) -> dict[str, Any]:
    if len(versions) > 1:
        divergent.append(Divergence(table, key, "versions", len(versions), 1))
    return max(versions, key=lambda r: (r["valid_from"], r.get("row_id", 0)))


def _compare(
    table: str, key: int | str, mirror: dict[str, Any], chain: dict[str, Any], divergent: list[Divergence]
) -> None:
    for name, expected in chain.items():
        actual = mirror.get(name)
        if isinstance(actual, memoryview):
            actual = bytes(actual)
        if actual != expected:
            divergent.append(Divergence(table, key, name, actual, expected))


# ---------------------------------------------------------------------------------------- mirror checks


@dataclass
class _MirrorAudit:
    conn: Connection
    calls: PinnedCalls
    block: int
    folded: list[FoldedEvent]
    check: MirrorCheck

    @property
    def events(self) -> Iterator[DecodedEvent]:
        return (f.event for f in self.folded)

    def run(self) -> None:
        self.receivables()
        self.participants()
        self.keys()
        self.claims()
        self.raw_events()

    def _exists_only_in_mirror(self, table: str, key: int | str) -> None:
        self.check.divergent.append(Divergence(table, key, "exists", True, False))

    def receivables(self) -> None:
        name = "receivables"
        rows = _rows_as_of(self.conn, table_of(Receivable), "id", self.block)
        count = int(self.calls.one("receivableCount")[0])
        ids = sorted(i for i in rows if 1 <= i <= count)
        states = dict(zip(ids, self.calls.many("getReceivable", [(i,) for i in ids]), strict=True))
        registration = self._registration_fields()
        for rid in sorted(rows):
            row = _single(name, rid, rows[rid], self.check.divergent)
            if rid not in states:
                self._exists_only_in_mirror(name, rid)
                continue
            ((creditor, debtor, holder, status, recourse, due, face, paid),) = states[rid]
            values = (creditor, debtor, holder, status, bool(recourse), due, face, paid)
            chain = dict(zip(RECEIVABLE_FIELDS, values, strict=True))
            _compare(name, rid, row, chain, self.check.divergent)
            if rid in registration:
                _compare(name, rid, row, registration[rid], self.check.divergent)
        self.check.missing.extend(Missing(name, i) for i in range(1, count + 1) if i not in rows)
        self.check.checked[name] = len(rows)

    def _registration_fields(self) -> dict[int, dict[str, Any]]:
        """What the registration (or split) events fixed for every receivable."""
        fixed: dict[int, dict[str, Any]] = {}
        for e in self.events:
            a = e.args
            if e.name == "ReceivableRegistered":
                fixed[a["id"]] = {
                    "currency": bytes(a["currency"]).decode("ascii", "replace"),
                    "issue_date": a["issueDate"],
                    "fingerprint": a["fingerprint"],
                    "invoice_key": a["invoiceKey"],
                    "number_hash": a["invoiceNumberHash"],
                    "document_hash": a["documentHash"],
                    "supersedes": a["supersedes"] or None,
                    "parent_id": None,
                }
            elif e.name == "ReceivableSplit" and a["id"] in fixed:
                parent = fixed[a["id"]]
                for part in a["partIds"]:
                    fixed[part] = {
                        **parent,
                        "fingerprint": None,
                        "invoice_key": None,
                        "supersedes": None,
                        "parent_id": a["id"],
                    }
        return fixed

    def participants(self) -> None:
        name = "participants"
        rows = _rows_as_of(self.conn, table_of(Participant), "entity_id", self.block)
        count = int(self.calls.one("entityCount")[0])
        ids = sorted(i for i in rows if 1 <= i <= count)
        entities = self.calls.many("getEntity", [(i,) for i in ids])
        role_answers = self.calls.many("entityHasRole", [(i, bytes(r)) for i in ids for r in PARTY_ROLES])
        for n, eid in enumerate(ids):
            ((registration_hash, status, _active_keys),) = entities[n]
            held = role_answers[n * len(PARTY_ROLES) : (n + 1) * len(PARTY_ROLES)]
            roles = ",".join(sorted(ROLE_NAMES[bytes(r)] for r, (has,) in zip(PARTY_ROLES, held, strict=True) if has))
            row = _single(name, eid, rows[eid], self.check.divergent)
            chain = {"registration_hash": bytes(registration_hash), "status": status, "roles": roles}
            _compare(name, eid, row, chain, self.check.divergent)
        for eid in sorted(set(rows) - set(ids)):
            self._exists_only_in_mirror(name, eid)
        self.check.missing.extend(Missing(name, i) for i in range(1, count + 1) if i not in rows)
        self.check.checked[name] = len(rows)

    def keys(self) -> None:
        name = "participant_keys"
        raw = _rows_as_of(self.conn, table_of(ParticipantKey), "address", self.block)
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for address, versions in raw.items():
            rows[to_checksum_address(address)].extend(versions)
        known = {to_checksum_address(e.args["key"]) for e in self.events if e.name == "KeyAdded"}
        entity_count = int(self.calls.one("entityCount")[0])
        for (keys,) in self.calls.many("keysOf", [(i,) for i in range(1, entity_count + 1)]):
            known.update(to_checksum_address(k) for k in keys)
        addresses = sorted(known | set(rows))
        answers = dict(zip(addresses, self.calls.many("entityOfKey", [(a,) for a in addresses]), strict=True))
        for address in addresses:
            entity, status, _can_act = answers[address]
            if address not in rows:
                if status != KeyStatus.NONE:
                    self.check.missing.append(Missing(name, address))
                continue
            row = _single(name, address, rows[address], self.check.divergent)
            if status == KeyStatus.NONE:
                self._exists_only_in_mirror(name, address)
                continue
            _compare(name, address, row, {"entity_id": entity, "status": status}, self.check.divergent)
        self.check.checked[name] = len(rows)

    def claims(self) -> None:
        name = "payment_claims"
        rows = _rows_as_of(self.conn, table_of(PaymentClaimRow), "claim_id", self.block)
        refs = {e.args["claimId"]: e.args["paymentRef"] for e in self.events if e.name == "PaymentReported"}
        ids = sorted(set(refs) | set(rows))
        answers = dict(zip(ids, self.calls.many("getPaymentClaim", [(i,) for i in ids]), strict=True))
        for cid in ids:
            ((receivable_id, payee, status, amount),) = answers[cid]
            if cid not in rows:
                if status != ClaimStatus.NONE:
                    self.check.missing.append(Missing(name, cid))
                continue
            row = _single(name, cid, rows[cid], self.check.divergent)
            if status == ClaimStatus.NONE:
                self._exists_only_in_mirror(name, cid)
                continue
            chain = {"receivable_id": receivable_id, "payee": payee, "amount": amount, "status": status}
            if cid in refs:
                chain["payment_ref"] = refs[cid]
            _compare(name, cid, row, chain, self.check.divergent)
        self.check.checked[name] = len(rows)

    def raw_events(self) -> None:
        """The mirror's event log against the chain's logs, with the running ledger head per event."""
        name = "raw_events"
        table = table_of(RawEvent)
        stored = {
            (r["block_number"], r["log_index"]): dict(r)
            for r in self.conn.execute(select(table).where(table.c.block_number <= self.block)).mappings()
        }
        seen: set[tuple[int, int]] = set()
        for f in self.folded:
            e = f.event
            key = (e.block_number, e.log_index)
            seen.add(key)
            label = f"{e.block_number}:{e.log_index}"
            row = stored.get(key)
            if row is None:
                self.check.missing.append(Missing(name, label))
                continue
            chain = {
                "block_hash": e.block_hash,
                "tx_hash": e.transaction_hash,
                "name": e.name,
                "seq": f.seq,
                "ledger_head": f.head,
            }
            _compare(name, label, row, chain, self.check.divergent)
            self._compare_args(label, row["args"], e.args)
        for key in sorted(set(stored) - seen):
            self._exists_only_in_mirror(name, f"{key[0]}:{key[1]}")
        self.check.checked[name] = len(stored)

    def _compare_args(self, label: str, stored: str, args: dict[str, Any]) -> None:
        try:
            mirror = json.loads(stored)
        except ValueError:
            mirror = None
        if not isinstance(mirror, dict):
            self.check.divergent.append(Divergence("raw_events", label, "args", stored, _json_args(args)))
            return
        expected = _json_args(args)
        for arg in sorted(set(expected) | set(mirror)):
            if mirror.get(arg) != expected.get(arg):
                self.check.divergent.append(
                    Divergence("raw_events", label, f"args.{arg}", mirror.get(arg), expected.get(arg))
                )


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _json_args(args: dict[str, Any]) -> dict[str, Any]:
    """Decoded event fields as the mirror stores them (JSON; bytes as 0x-hex, arrays as lists)."""
    return {k: _json_value(v) for k, v in args.items()}


# ---------------------------------------------------------------------------------------- entry points


def verify(
    chain: ChainClient,
    deployment: Deployment,
    engine: Engine | None = None,
    *,
    block: int | None = None,
    max_log_range: int = 50_000,
    call_batch: int = CALL_BATCH,
) -> AuditResult:
    """Audits the ledger (and, given an engine, the mirror in it) against the chain.

    Without a mirror the audited block is ``block`` (default: the latest); with one it is the
    mirror's cursor block, or the latest when the mirror sits on a stale fork (then its rows are not
    compared: they describe blocks the chain no longer has)."""
    started = time.perf_counter()
    abi = ContractAbi(artifact("ReceivableRegistry").abi)
    if engine is None:
        target = chain.block_number() if block is None else block
        if target < deployment.deploy_block:
            raise ConfigurationError(f"block {target} is before the deployment (block {deployment.deploy_block})")
        target_hash = block_hash_at(chain, target)
        if target_hash is None:
            raise ConfigurationError(f"the chain has no block {target} (head {chain.block_number()})")
        ledger, _ = check_ledger(chain, abi, deployment, target, target_hash, max_log_range)
        return AuditResult(
            chain.chain_id, deployment.registry, target, target_hash, ledger, None, time.perf_counter() - started
        )
    if block is not None:
        raise ConfigurationError("a mirror is audited at its cursor block: --block applies to ledger-only audits")
    with _snapshot(engine) as conn:
        cursor = _read_cursor(conn, deployment, chain.chain_id)
        chain_hash = block_hash_at(chain, cursor.block_number)
        mirror = MirrorCheck(
            database=engine.url.render_as_string(hide_password=True),
            cursor_block=cursor.block_number,
            cursor_hash=cursor.block_hash,
            chain_hash=chain_hash,
        )
        if mirror.stale_fork:
            target = chain.block_number()
            target_hash = block_hash_at(chain, target) or ""
            ledger, _ = check_ledger(chain, abi, deployment, target, target_hash, max_log_range)
            return AuditResult(
                chain.chain_id, deployment.registry, target, target_hash, ledger, mirror, time.perf_counter() - started
            )
        target, target_hash = cursor.block_number, cursor.block_hash
        ledger, folded = check_ledger(chain, abi, deployment, target, target_hash, max_log_range)
        ledger = replace(ledger, mirror=cursor.ledger)
        if cursor.ledger.head != ledger.recomputed.head:
            mirror.divergent.append(Divergence("cursor", 1, "ledger_head", cursor.ledger.head, ledger.recomputed.head))
        if cursor.ledger.count != ledger.recomputed.count:
            mirror.divergent.append(
                Divergence("cursor", 1, "ledger_count", cursor.ledger.count, ledger.recomputed.count)
            )
        calls = PinnedCalls(chain, abi, deployment.registry, target_hash, call_batch)
        try:
            _MirrorAudit(conn, calls, target, folded, mirror).run()
        except SQLAlchemyError as exc:
            raise ConfigurationError(f"the mirror's tables do not have the expected shape: {exc.args[0]}") from None
        after = _read_cursor(conn, deployment, chain.chain_id)
        if after.block_number < target or block_hash_at(chain, target) != target_hash:
            raise AuditError(f"the mirror or the chain rolled back below block {target} during the audit: run it again")
    return AuditResult(
        chain.chain_id, deployment.registry, target, target_hash, ledger, mirror, time.perf_counter() - started
    )


def default_database(settings: Settings) -> str | None:
    """The mirror an audit checks by default: the configured database, or the default SQLite file
    when it exists (``None``: ledger only)."""
    if settings.database_url:
        return settings.database_url
    path = settings.data_dir / "registry.db"
    return settings.database if path.exists() else None


def run_audit(
    rpc_url: str,
    deployment_path: Path,
    database_url: str | None = None,
    *,
    block: int | None = None,
    max_log_range: int = 50_000,
) -> AuditResult:
    """The whole audit from an RPC URL, a deployment file and (optionally) the mirror's URL.
    Setup problems raise :class:`ConfigurationError`."""
    deployment = Deployment.load(deployment_path)
    with ChainClient(rpc_url) as chain:
        check_deployment(chain, deployment)
        if database_url is None:
            return verify(chain, deployment, block=block, max_log_range=max_log_range)
        engine = make_engine(database_url)
        try:
            return verify(chain, deployment, engine, block=block, max_log_range=max_log_range)
        finally:
            engine.dispose()


# ---------------------------------------------------------------------------------------- report


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:12] + "…" + text[-8:]


def render(result: AuditResult, console: Console) -> None:
    """The human report: what was compared, at which block, and every difference."""
    console.rule(f"[bold]Audit of registry {result.registry} on chain {result.chain_id}")
    console.print(f"block {result.block} ({result.block_hash}), {result.seconds:.2f} s")
    ledger = result.ledger
    table = Table(title="Ledger hash chain", title_justify="left")
    for col in ("source", "events", "head", ""):
        table.add_column(col)

    def mark(ok: bool) -> str:
        return "[green]agrees[/]" if ok else "[bold red]differs[/]"

    table.add_row("recomputed from logs", str(ledger.recomputed.count), "0x" + ledger.recomputed.head.hex(), "")
    table.add_row(
        "contract ledger()", str(ledger.contract.count), "0x" + ledger.contract.head.hex(), mark(ledger.agrees)
    )
    if ledger.mirror is not None:
        table.add_row(
            "mirror cursor", str(ledger.mirror.count), "0x" + ledger.mirror.head.hex(), mark(ledger.mirror_agrees)
        )
    console.print(table)
    console.print(f"{ledger.logs} logs fetched from block {result.ledger.block} back to the deploy block", end="")
    console.print(f"; [bold red]{ledger.undecoded} not decodable with the ABI[/]" if ledger.undecoded else "")

    mirror = result.mirror
    if mirror is None:
        console.print("mirror: not checked (ledger only)")
    elif mirror.stale_fork:
        console.print(
            f"[bold red]mirror {mirror.database} is on a stale fork:[/] its cursor block {mirror.cursor_block} is "
            f"{mirror.cursor_hash}, the chain's is {mirror.chain_hash or 'absent'}; rows not compared"
        )
    else:
        checked = ", ".join(f"{n} {t}" for t, n in mirror.checked.items())
        console.print(f"mirror {mirror.database} as of its cursor block {mirror.cursor_block}: checked {checked}")
        if mirror.divergent:
            diffs = Table(title=f"{len(mirror.divergent)} divergent fields", title_justify="left")
            for col in ("table", "id", "field", "mirror", "chain"):
                diffs.add_column(col)
            for d in mirror.divergent:
                shown = d.as_json()
                diffs.add_row(d.table, str(d.id), d.field, _short(shown["mirror"]), _short(shown["chain"]))
            console.print(diffs)
        if mirror.missing:
            by_table: dict[str, list[str]] = defaultdict(list)
            for m in mirror.missing:
                by_table[m.table].append(str(m.id))
            for t, ids in by_table.items():
                console.print(f"[bold red]missing from the mirror[/] ({t}, {len(ids)}): {', '.join(ids)}")
    if result.agrees:
        console.print("[bold green]AGREES[/]: the chain's events, the contract and the mirror tell the same story")
    else:
        problems = []
        if not ledger.agrees:
            problems.append("the recomputed ledger differs from the contract's")
        if mirror is not None and mirror.stale_fork:
            problems.append("the mirror is on a stale fork")
        if mirror is not None and mirror.divergent:
            problems.append(f"{len(mirror.divergent)} divergent fields")
        if mirror is not None and mirror.missing:
            problems.append(f"{len(mirror.missing)} row(s) missing from the mirror")
        console.print(f"[bold red]DIFFERS[/]: {'; '.join(problems)}")
