"""Double-financing checks over the SQL mirror (issue 3, "Double-financing checks over the mirror").

A factor about to finance an invoice asks: is this invoice already registered, in which state, and is
it already financed? :class:`DuplicateChecker` answers from the mirror (``registry.store``), never
from the chain, through the partial indexes on the current rows of ``receivables``.

Exact matches
    An invoice matches a registration when its invoice key (debtor + normalised invoice number) *or*
    its fingerprint (every economic field) equals that of a **live** registration: any status but
    ``CANCELLED`` (the contract frees the key and fingerprint of a cancelled registration, so the
    invoice may be registered again). A settled, defaulted, written-off or split registration still
    holds its invoice: it is reported as registered. ``match`` says which hash matched: ``FINGERPRINT``
    (the same invoice with the same amount, currency and dates) or ``INVOICE_KEY`` (the same debtor and
    invoice number, other fields differ: the invoice presented is not the one registered).

    ``financed`` is true when the registration backs a financing: status ``ASSIGNED``; or held by
    someone other than its creditor; or ``PARTIALLY_PAID``/``SETTLED``/``DEFAULTED``/``WRITTEN_OFF``
    with an assignment in its history; or ``SPLIT`` with a part (at any depth) that is financed by
    the same rule. A receivable bought back under recourse is ``CONFIRMED`` and held by its creditor
    again: not financed.

    One statement per single check: the cursor row (primary key) left-joined with the match, whose
    ``invoice_key = ? AND valid_to IS NULL`` / ``fingerprint = ? AND valid_to IS NULL`` terms each
    imply the partial index's predicate (SQLite's multi-index OR, PostgreSQL's BitmapOr), plus a
    correlated ``EXISTS`` probe of ``ix_assignments_receivable_id`` for the financing history. It is
    compiled once and run on the driver's cursor (SQLAlchemy's per-execution work would cost more than
    the lookup). Only a ``SPLIT`` match needs a second statement (its parts share its debtor and
    number hash), run with the first in one snapshot; kept out of the hot statement because a
    correlated subquery over the parts weighs on every plan (PostgreSQL hashes it and turns on JIT).

Near-duplicates ("suspiciously similar", MonetaGo-style risk classes)
    ``SAME_DEBTOR_AMOUNT_DUE_DATE`` (high)
        another live registration for the same debtor with the same currency, face value and due
        date (index ``ix_receivables_current_debtor_amount``).
    ``SAME_DOCUMENT_HASH`` (high)
        another live registration with the same (non-zero) document hash (``ix_receivables_current_doc``).
    ``SIMILAR_INVOICE_NUMBER`` (medium)
        a live registration for the same debtor whose normalised invoice number is within a small edit
        distance of the queried one.

    The chain, and so the mirror, stores only ``number_hash = keccak256(normalised number)``: plaintext
    invoice numbers are never stored, and similarity cannot be computed against them. Instead the
    checker generates the plausible variants of the *queried* number (which the caller knows anyway),
    hashes each, and looks the (debtor, number hash) pairs up in the partial index
    ``ix_receivables_current_debtor_number`` (one keccak per variant: deriving each variant's invoice key
    for ``ix_receivables_current_key`` took a second one, and hashing was most of a check's cost).
    Privacy-preserving: nothing but hashes is stored or compared, and the checker learns nothing about
    numbers it was not given. Variants of a normalised number (see :func:`number_variants`):

    - distance 1: deletion of any one character; transposition of two adjacent characters; one
      OCR-style substitution among the confusable pairs O/0, I/1, S/5, B/8; a doubled character; a
      ``0`` inserted into a run of digits;
    - distance 2: two OCR-style substitutions; zero padding of a digit run changed by two ("INV-1"
      against "INV-001").

    Substituting an arbitrary digit for another is *off* by default (``digit_substitutions=True``
    turns it on): a supplier invoicing the same debtor numbers its invoices in sequence, and INV-1001
    against INV-1002 would flag every invoice of a series, which drowns the signal; a changed number
    with the same amount and due date is caught by ``SAME_DEBTOR_AMOUNT_DUE_DATE`` anyway. An
    insertion of an arbitrary character is not generated (it would cost one hash per character of the
    alphabet per position); its mirror image, a deletion, is.

    Registrations of the queried invoice itself (same debtor and number hash: the match and its split
    parts) are never reported as near-duplicates of it.

Privacy
    Competitors share the mirror. Everyone who asks learns whether the invoice is registered, its
    status, whether it is financed and its receivable id (the caller has proved knowledge of the
    invoice by presenting its key or fingerprint). The parties and amounts (``parties``) are revealed
    only to a viewer who is the creditor, the debtor or the current holder of the match. A near-duplicate
    carries the matched receivable id only when the viewer is a party to that receivable; otherwise it
    is an anonymous flag, one per reason however many receivables matched.

Bulk (:meth:`DuplicateChecker.check_many`)
    Set-based: exact matches by chunked ``IN`` lists of the lines' keys over the key index (a
    registration holding a line's fingerprint holds its key too: the fingerprint is compared in
    Python), near-duplicates by one ``UNION ALL`` statement per chunk (``VALUES`` CTEs
    joined to the debtor/amount/due-date and debtor/number-hash indexes, an ``IN`` list over the
    document-hash index), never a query per invoice. Lines are also checked against each other: a line whose key or
    fingerprint equals an earlier line's is a duplicate of that line (``duplicate_of_line``), and
    near-duplicate rules between lines give flags naming the other line (``batch_line``).

Indexes
    Everything above runs on the partial indexes of ``registry.store.models`` (current rows only):
    the parts of a ``SPLIT`` registration and similar numbers are found by (debtor, number hash) on
    ``ix_receivables_current_debtor_number``.

Freshness
    Every result says which block the mirror is at (``as_of_block``, ``as_of_block_hash``, the block's
    time ``as_of_timestamp``) and ``staleness_seconds`` = now - block time, read in the same snapshot as
    the answer: one statement for a single check (the near-duplicate rules' rows are a ``UNION ALL`` of
    the exact lookup's); otherwise (a bulk check, a split match and its parts) one read transaction
    (PostgreSQL ``REPEATABLE READ READ ONLY``; SQLite an explicit ``BEGIN``, since the driver opens no
    transaction before a ``SELECT``).
"""

from __future__ import annotations

import dataclasses
import struct
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from itertools import combinations, islice
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from sqlalchemy import (
    CompoundSelect,
    Engine,
    Integer,
    LargeBinary,
    Select,
    TypeDecorator,
    and_,
    bindparam,
    column,
    literal,
    null,
    or_,
    select,
    union_all,
    values,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import NullType

from registry.domain import PAID_OR_CLOSED_STATUSES, Status, is_financed
from registry.errors import RegistryError
from registry.hashing import keccak256, keccak256_many
from registry.invoice import FINGERPRINT_TYPEHASH, INVOICE_KEY_TYPEHASH, ZERO_HASH, Invoice
from registry.memory import paused_gc
from registry.store.models import Assignment, Cursor, Receivable, table_of
from registry.types import EntityId, MinorUnits, ReceivableId, UnixTime

__all__ = [
    "OCR_CONFUSIONS",
    "CheckResult",
    "DuplicateChecker",
    "MatchKind",
    "MirrorNotReady",
    "NearDuplicate",
    "NearDuplicateReason",
    "Parties",
    "Risk",
    "number_variants",
]


class MirrorNotReady(RegistryError):
    """Raised when the mirror has not indexed any block yet, so "not registered" would be a guess."""


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


class MatchKind(StrEnum):
    """Which hash of the queried invoice equals the live registration's."""

    FINGERPRINT = "fingerprint"
    """Same debtor, invoice number, currency, amount and dates."""
    INVOICE_KEY = "invoice_key"
    """Same debtor and invoice number (as far as the query says: other fields differ or were not given)."""


class Risk(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"


class NearDuplicateReason(StrEnum):
    SAME_DEBTOR_AMOUNT_DUE_DATE = "SAME_DEBTOR_AMOUNT_DUE_DATE"
    SAME_DOCUMENT_HASH = "SAME_DOCUMENT_HASH"
    SIMILAR_INVOICE_NUMBER = "SIMILAR_INVOICE_NUMBER"

    @property
    def risk(self) -> Risk:
        return Risk.MEDIUM if self is NearDuplicateReason.SIMILAR_INVOICE_NUMBER else Risk.HIGH


_REASON_CODES: Final = {reason: code for code, reason in enumerate(NearDuplicateReason, start=1)}
_REASONS_BY_CODE: Final = {code: reason for reason, code in _REASON_CODES.items()}


@dataclass(frozen=True, slots=True)
class NearDuplicate:
    """A "suspiciously similar" flag: a live registration, or another line of the same bulk check."""

    reason: NearDuplicateReason
    risk: Risk
    receivable_id: ReceivableId | None = None
    """The similar receivable, only when the viewer is its creditor, debtor or holder."""
    batch_line: int | None = None
    """The similar line of the same :meth:`DuplicateChecker.check_many` call."""


@dataclass(frozen=True, slots=True)
class Parties:
    """Who is party to the matching registration and for how much: for entitled viewers only."""

    creditor: EntityId
    debtor: EntityId
    holder: EntityId
    currency: str
    face_value: MinorUnits
    paid: MinorUnits
    due_date: UnixTime


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The answer for one invoice (or key, or fingerprint), as of one block of the mirror."""

    registered: bool
    """A live (not cancelled) registration holds this invoice's key or fingerprint."""
    status: Status
    """The live registration's status; ``Status.NONE`` when not registered."""
    financed: bool
    receivable_id: ReceivableId | None
    match: MatchKind | None
    parties: Parties | None
    """Only when the viewer is the creditor, debtor or holder of the match."""
    near_duplicates: tuple[NearDuplicate, ...]
    duplicate_of_line: int | None
    """In a bulk check: the earlier line with the same key or fingerprint."""
    as_of_block: int
    as_of_block_hash: str
    as_of_timestamp: int
    """The block's timestamp (Unix seconds)."""
    staleness_seconds: float
    """Seconds between the block's timestamp and the moment of the answer (never negative)."""

    @property
    def duplicate(self) -> bool:
        """Whether registering or financing this invoice must be refused (exact duplicate)."""
        return self.registered or self.duplicate_of_line is not None

    @property
    def suspicious(self) -> bool:
        return bool(self.near_duplicates)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the line is refused or flagged, in words (empty when clean)."""
        out: list[str] = []
        if self.registered:
            what = "financed" if self.financed else "not financed"
            out.append(f"already registered as receivable {self.receivable_id} ({self.status.name}, {what})")
        if self.duplicate_of_line is not None:
            out.append(f"duplicate of line {self.duplicate_of_line} of this batch")
        for flag in self.near_duplicates:
            where = (
                f" (line {flag.batch_line})"
                if flag.batch_line is not None
                else f" (receivable {flag.receivable_id})"
                if flag.receivable_id is not None
                else ""
            )
            out.append(f"{flag.reason.value} [{flag.risk.value} risk]{where}")
        return tuple(out)


# ---------------------------------------------------------------------------------------------
# Invoice-number variants
# ---------------------------------------------------------------------------------------------

OCR_CONFUSIONS: Final[Mapping[str, str]] = MappingProxyType(
    {"O": "0", "0": "O", "I": "1", "1": "I", "S": "5", "5": "S", "B": "8", "8": "B"}
)
"""Characters that OCR and hurried typists confuse, both ways (numbers are upper case once normalised)."""
_DIGITS: Final = "0123456789"
_DIGIT_SET: Final = frozenset(_DIGITS)
_OCR: Final[dict[str, str]] = dict(OCR_CONFUSIONS)  # (a plain dict: a mapping proxy's lookups cost more)
MAX_VARIANTS: Final = 512
"""At most this many variants per number (distance-1 variants come first)."""


def number_variants(normalized: str, *, digit_substitutions: bool = False) -> list[str]:
    """The invoice numbers "similar" to ``normalized`` (a normalised number), itself excluded.

    Distance 1: one deletion, one adjacent transposition, one OCR substitution (:data:`OCR_CONFUSIONS`),
    one doubled character, one ``0`` inserted before a digit (and, with ``digit_substitutions``, one
    digit replaced by another). Distance 2: two OCR substitutions; a digit run's zero padding changed by
    two. Deterministic order, distance 1 first, at most :data:`MAX_VARIANTS`.
    """
    # One pass over the characters for the distance-1 variants, which also notes the confusable
    # characters and the digit runs for the distance-2 ones (a single check's hot path).
    s = normalized
    n = len(s)
    seen: dict[str, None] = {}
    confusable: list[int] = []
    runs: list[tuple[int, int]] = []  # (start, end) of each maximal run of ASCII digits
    run_start = -1
    for i in range(n):
        char = s[i]
        head, here, after = s[:i], s[i:], s[i + 1 :]
        seen[head + after] = None  # deletion
        if i + 1 < n and char != s[i + 1]:
            seen[head + s[i + 1] + char + s[i + 2 :]] = None  # transposition
        confused = _OCR.get(char)
        if confused is not None:
            seen[head + confused + after] = None  # OCR substitution
            confusable.append(i)
        seen[head + char + here] = None  # doubled keystroke
        if char in _DIGIT_SET:
            seen[head + "0" + here] = None  # zero inserted into a digit run
            if digit_substitutions:
                for digit in _DIGITS:
                    if digit != char:
                        seen[head + digit + after] = None
            if run_start < 0:
                run_start = i
        elif run_start >= 0:
            runs.append((run_start, i))
            run_start = -1
    if run_start >= 0:
        runs.append((run_start, n))
    for start, end in runs:
        seen[s[:start] + "00" + s[start:]] = None  # padded by two zeros
        if end - start > 2 and s[start : start + 2] == "00":
            seen[s[:start] + s[start + 2 :]] = None  # two leading zeros dropped
    for i, j in combinations(confusable, 2):
        seen[s[:i] + _OCR[s[i]] + s[i + 1 : j] + _OCR[s[j]] + s[j + 1 :]] = None
    seen.pop(s, None)
    seen.pop("", None)
    out = list(seen)[:MAX_VARIANTS]
    if not s.isascii():
        # Removing a character can leave a sequence that NFKC composes: hash what a client would.
        out = list(dict.fromkeys(unicodedata.normalize("NFKC", v) for v in out if v != s))
    return out


# ---------------------------------------------------------------------------------------------
# Hashes (byte for byte registry.invoice.invoice_key / fingerprint, without eth-abi's overhead)
# ---------------------------------------------------------------------------------------------


_keccak256: Final = keccak256


# The ABI encodings packed in one call each: every uint an Invoice holds fits 64 bits (debtor uint24,
# face value < 2**63, dates uint32), so a 32-byte word is 24 zero bytes and a big-endian uint64; the
# currency's 3 ASCII bytes are left-aligned and zero-padded, as `32s` pads. A third of the time of the
# byte concatenations they replace (0.24 against 0.70 us a fingerprint, measured).
_KEY_LAYOUT: Final = struct.Struct(">32s24xQ32s")
_FINGERPRINT_LAYOUT: Final = struct.Struct(">32s24xQ32s32s24xQ24xQ24xQ")


def _key_preimage(debtor: int, number_hash: bytes) -> bytes:
    return _KEY_LAYOUT.pack(INVOICE_KEY_TYPEHASH, debtor, number_hash)


def _fingerprint_preimage(invoice: Invoice) -> bytes:
    return _FINGERPRINT_LAYOUT.pack(
        FINGERPRINT_TYPEHASH,
        invoice.debtor,
        invoice.number_hash,
        invoice.currency.encode("ascii"),
        invoice.face_value,
        invoice.issue_date,
        invoice.due_date,
    )


def _key_of(debtor: int, number_hash: bytes) -> bytes:
    return _keccak256(_key_preimage(debtor, number_hash))


def _fingerprint_of(invoice: Invoice) -> bytes:
    return _keccak256(_fingerprint_preimage(invoice))


def _keys_and_fingerprints(invoices: Sequence[Invoice]) -> tuple[list[bytes], list[bytes]]:
    """Each invoice's key and fingerprint, in one batch."""
    preimages: list[bytes] = []
    for invoice in invoices:
        preimages.append(_key_preimage(invoice.debtor, invoice.number_hash))
        preimages.append(_fingerprint_preimage(invoice))
    hashes = keccak256_many(preimages)
    return hashes[0::2], hashes[1::2]


# ---------------------------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------------------------


class _RawBytes(TypeDecorator[bytes]):
    """Bytes passed to the driver as they are (both drivers take ``bytes`` for BLOB/bytea): spares
    LargeBinary's per-value wrapping on the lists of thousands of hashes that bulk checks bind."""

    impl = LargeBinary
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


def _hashes(name: str) -> BindParameter[bytes]:
    """An expanding ``IN`` list of 32-byte hashes."""
    return bindparam(name, expanding=True, type_=_RawBytes())


_R = table_of(Receivable)
_A = table_of(Assignment)
_C = table_of(Cursor)
_PART = _R.alias("part")
_PART_ASSIGNMENT = _A.alias("part_assignment")
_CURSOR_ID: Final = 1  # the projector keeps the one cursor row at id 1

_CANCELLED: Final = int(Status.CANCELLED)
_SPLIT: Final = int(Status.SPLIT)
_STATUSES: Final = tuple(Status)
"""Each status at the index of its number (a lookup in the hot loop of a bulk check; ``Status(n)`` goes
through the enum's metaclass)."""
assert all(index == status for index, status in enumerate(_STATUSES))

# Lines per exact statement (a key each; a split lineage takes two parameters): a bulk check of 10,000
# invoices is one statement (in three of 4,000, it took about 5% longer).
_EXACT_CHUNK: Final = 10_000
_NEAR_PARAMS: Final = 20_000  # parameters per near-duplicate statement (SQLite allows 32,766)
_MAX_BATCH_REFERENCES: Final = 10  # other lines named per line and reason (a batch of look-alikes stays linear)


_LIVE: Final = _R.c.status != _CANCELLED


def _current(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition AND valid_to IS NULL``: each OR branch must imply a partial index's predicate."""
    return and_(condition, _R.c.valid_to.is_(None))


_WAS_ASSIGNED = select(literal(1)).where(_A.c.receivable_id == _R.c.id).exists()


def _financed_parts_statement(lineages: Sequence[tuple[int, bytes]]) -> Select[Any]:
    """Which of the given (debtor, number hash) lineages have a current split part that is financed.

    Parts carry their parent's debtor and number hash (the contract copies the receivable), at any
    depth of splitting. Only split registrations need this, so it is a second statement rather than a
    correlated subquery that would weigh on every plan.
    """
    wanted = (
        values(column("debtor", Integer), column("number_hash", LargeBinary), name="lineage")
        .data(list(lineages))
        .cte("lineage")
    )
    return (
        select(wanted.c.debtor, wanted.c.number_hash)
        .distinct()
        .select_from(wanted)
        .join(
            _PART,
            and_(
                _PART.c.debtor == wanted.c.debtor,
                _PART.c.number_hash == wanted.c.number_hash,
                _PART.c.valid_to.is_(None),
            ),
        )
        .where(
            _PART.c.parent_id.is_not(None),
            or_(
                _PART.c.status == int(Status.ASSIGNED),
                _PART.c.holder != _PART.c.creditor,
                select(literal(1)).where(_PART_ASSIGNMENT.c.receivable_id == _PART.c.id).exists(),
            ),
        )
    )


_MATCH_COLUMNS: Final = (
    _R.c.id,
    _R.c.status,
    _R.c.creditor,
    _R.c.debtor,
    _R.c.holder,
    _R.c.currency,
    _R.c.face_value,
    _R.c.paid,
    _R.c.due_date,
    _R.c.invoice_key,
    _R.c.fingerprint,
    _R.c.number_hash,
    _WAS_ASSIGNED.label("was_assigned"),
)
_CURSOR_COLUMNS: Final = (_C.c.block_number, _C.c.block_hash, _C.c.block_timestamp)


def _single_statement(by_key: bool, by_fingerprint: bool) -> Select[Any]:
    """The cursor row left-joined with the live registration holding the key and/or fingerprint."""
    branches = []
    if by_key:
        branches.append(_current(_R.c.invoice_key == bindparam("key")))
    if by_fingerprint:
        branches.append(_current(_R.c.fingerprint == bindparam("fingerprint")))
    on = and_(or_(*branches), _LIVE)
    return select(*_CURSOR_COLUMNS, *_MATCH_COLUMNS).select_from(_C.outerjoin(_R, on)).where(_C.c.id == _CURSOR_ID)


class _Prepared:
    """A statement compiled once for the engine's dialect and run on the DBAPI cursor directly.

    The single exact check is one indexed lookup that the database answers in a few microseconds;
    SQLAlchemy's per-execution work (cache lookup, parameter processing, result wrapping) costs several
    times that, so the hot path binds the two hashes into a prepared parameter template instead.
    """

    def __init__(self, statement: Select[Any], engine: Engine, names: Sequence[str]) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        base = compiled.construct_params(dict.fromkeys(names, b""))
        if compiled.positiontup is not None:
            order = list(compiled.positiontup)
            self.template: list[Any] | dict[str, Any] = [base[name] for name in order]
            self.slots = {name: [i for i, n in enumerate(order) if n == name] for name in names}
        else:
            self.template = dict(base)
            self.slots = {}

    def params(self, values: Mapping[str, bytes]) -> Any:
        if isinstance(self.template, list):
            bound = list(self.template)
            for name, value in values.items():
                for i in self.slots[name]:
                    bound[i] = value
            return tuple(bound)
        return {**self.template, **values}

    def rows(self, dbapi: Any, values: Mapping[str, bytes]) -> list[Sequence[Any]]:
        """The rows, run on ``dbapi`` (a driver connection, or the pool's proxy of one)."""
        cursor = dbapi.cursor()
        try:
            cursor.execute(self.sql, self.params(values))
            return list(cursor.fetchall())
        finally:
            cursor.close()


_CURSOR_STATEMENT: Final = select(*_CURSOR_COLUMNS).where(_C.c.id == _CURSOR_ID)
_NEAR_COLUMNS: Final = (
    _R.c.id,
    _R.c.creditor,
    _R.c.debtor,
    _R.c.holder,
    _R.c.number_hash,
    _R.c.invoice_key,
    _R.c.document_hash,
    _R.c.currency,
    _R.c.face_value,
    _R.c.due_date,
)


def _reason(reason: NearDuplicateReason) -> Any:
    return literal(_REASON_CODES[reason]).label("reason")


def _by_document(condition: ColumnElement[bool], *padding: Any) -> Select[Any]:
    return select(_reason(NearDuplicateReason.SAME_DOCUMENT_HASH), *_NEAR_COLUMNS, *padding).where(
        _current(condition), _LIVE
    )


class _Likely(ColumnElement[Any]):
    """``clause``, told to SQLite's planner to hold for most rows (``likely(clause)``); other dialects get
    ``clause`` itself. SQLite without ANALYZE statistics takes ``valid_to IS NULL`` for a selective
    equality and walked ``ix_receivables_valid_to`` over every current row rather than probing a partial
    index once per value of an ``IN`` list, while that index held current rows (before migration 0007
    made it partial); kept so that no index on ``valid_to`` can be preferred again. ``likely()`` still
    implies the partial index's predicate."""

    inherit_cache = True
    _traverse_internals = [("clause", InternalTraversal.dp_clauseelement)]  # noqa: RUF012 (SQLAlchemy protocol)
    type = NullType()  # (a Boolean would be rendered ``likely(...) = 1``, which implies no partial index)

    def __init__(self, clause: ColumnElement[bool]) -> None:
        self.clause = clause


@compiles(_Likely)
def _compile_likely(element: _Likely, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clause, **kw))


@compiles(_Likely, "sqlite")
def _compile_likely_sqlite(element: _Likely, compiler: Any, **kw: Any) -> str:
    return f"likely({compiler.process(element.clause, **kw)})"


_SIMILAR_NUMBER: Final = _reason(NearDuplicateReason.SIMILAR_INVOICE_NUMBER)
# A registration itself, not its split parts (they carry its debtor and number hash but no invoice key):
# as when variants were looked up by invoice key.
_REGISTRATION: Final = _R.c.invoice_key.is_not(None)


def _by_variant_number(condition: ColumnElement[bool], *padding: Any) -> Select[Any]:
    # By (debtor, number hash) on ix_receivables_current_debtor_number: one keccak per variant (the
    # number's), where a lookup by invoice key needs a second one per variant to derive the key; the
    # hashing was most of a single check's cost. ``likely()``: without it SQLite walked every current
    # row through ix_receivables_valid_to (0.76 ms of a 3 ms check at 2,000 receivables, growing).
    return select(_SIMILAR_NUMBER, *_NEAR_COLUMNS, *padding).where(
        condition, _Likely(_R.c.valid_to.is_(None)), _REGISTRATION, _LIVE
    )


# A single check with near-duplicates is one statement, so its own snapshot (two statements took a read
# transaction around them, and the connection, BEGIN and ROLLBACK cost as much as the exact lookup): the
# cursor row left-joined with the exact match (reason 0), then each near-duplicate rule's rows (a bulk
# chunk joins VALUES lists instead), all of one shape: the reason, :data:`_NEAR_COLUMNS`, then the
# columns only the exact match and the cursor fill (NULL in a near-duplicate's row).
_CURSOR_ROW: Final = 0
_EXACT_ONLY_COLUMNS: Final = (
    _R.c.status,
    _R.c.paid,
    _R.c.fingerprint,
    _WAS_ASSIGNED.label("was_assigned"),
    *_CURSOR_COLUMNS,
)
_NO_EXACT_COLUMNS: Final = tuple(null() for _ in _EXACT_ONLY_COLUMNS)
_CHECK_SINGLE: Final[CompoundSelect[Any]] = union_all(
    select(literal(_CURSOR_ROW).label("reason"), *_NEAR_COLUMNS, *_EXACT_ONLY_COLUMNS)
    .select_from(
        _C.outerjoin(
            _R,
            and_(
                or_(
                    _current(_R.c.invoice_key == bindparam("key")),
                    _current(_R.c.fingerprint == bindparam("fingerprint")),
                ),
                _LIVE,
            ),
        )
    )
    .where(_C.c.id == _CURSOR_ID),
    select(_reason(NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE), *_NEAR_COLUMNS, *_NO_EXACT_COLUMNS).where(
        _current(
            and_(
                _R.c.debtor == bindparam("debtor"),
                _R.c.face_value == bindparam("face_value"),
                _R.c.due_date == bindparam("due_date"),
            )
        ),
        _R.c.currency == bindparam("currency"),
        _LIVE,
    ),
    _by_document(_R.c.document_hash == bindparam("document"), *_NO_EXACT_COLUMNS),
    _by_variant_number(
        and_(_R.c.debtor == bindparam("debtor"), _R.c.number_hash.in_(_hashes("variants"))), *_NO_EXACT_COLUMNS
    ),
)
_CHECK_NAMES: Final = ("key", "fingerprint", "debtor", "currency", "face_value", "due_date", "document")
_MAX_VARIANT_BRANCHES: Final = 100  # debtors per similar-number statement (SQLite allows 500 compound terms)


class _CheckForm(NamedTuple):
    """:data:`_CHECK_SINGLE` written out for one length of the variant list."""

    sql: str
    named: dict[str, Any] | None
    """Named parameters (PostgreSQL's driver): the constants' values; None for positional ones."""
    template: list[Any]
    """Positional parameters (SQLite's driver): the constants in place, the rest to be filled in."""
    slots: tuple[tuple[int, str], ...]
    """Positional: (index, name) of each per-check value of :data:`_CHECK_NAMES`."""
    variants_at: int
    """Positional: where the variant hashes' run begins (the ``IN`` list, contiguous)."""


class _PreparedCheck:
    """:data:`_CHECK_SINGLE` compiled once per length of the variant list (at most :data:`MAX_VARIANTS`
    + 1 forms) and run on the DBAPI cursor: SQLAlchemy's per-execution work on an expanding ``IN`` list
    (cache key, post-compile rendering, result wrapping) cost more than the database's probes. A
    positional form keeps the parameter list with its constants in place, so a check fills in seven
    values and splices its variant hashes in (a lookup per parameter took as long as the probes)."""

    def __init__(self, engine: Engine) -> None:
        self._compiled = _CHECK_SINGLE.compile(dialect=engine.dialect)
        self._forms: dict[int, _CheckForm] = {}

    def _form(self, n: int) -> _CheckForm:
        form = self._forms.get(n)
        if form is None:
            sample = dict.fromkeys(_CHECK_NAMES) | {"variants": [b""] * n}
            expanded = self._compiled.construct_expanded_state(sample)
            constants = dict(expanded.parameters)
            if expanded.positiontup is None:
                form = _CheckForm(expanded.statement, constants, [], (), 0)
            else:
                order = list(expanded.positiontup)
                variants = [f"variants_{i}" for i in range(1, n + 1)]
                at = order.index(variants[0]) if n else len(order)
                assert order[at : at + n] == variants, "the IN list's parameters are contiguous"
                template = [constants.get(name) for name in order]
                slots = tuple((i, name) for i, name in enumerate(order) if name in _CHECK_NAMES)
                form = _CheckForm(expanded.statement, None, template, slots, at)
            self._forms[n] = form
        return form

    def rows(self, dbapi: Any, line: _Line) -> list[Sequence[Any]]:
        """The statement's rows for ``line``, run on ``dbapi`` (a driver connection or the pool's proxy)."""
        inv = line.invoice
        hashes = line.variant_hashes
        form = self._form(len(hashes))
        given = {
            "key": line.key,
            "fingerprint": line.fingerprint,
            "debtor": inv.debtor,
            "currency": inv.currency,
            "face_value": inv.face_value,
            "due_date": inv.due_date,
            "document": line.document,
        }
        params: list[Any] | dict[str, Any]
        if form.named is None:
            params = form.template.copy()
            for i, name in form.slots:
                params[i] = given[name]
            params[form.variants_at : form.variants_at + len(hashes)] = hashes
        else:
            params = {**form.named, **given}
            params.update({f"variants_{i}": h for i, h in enumerate(hashes, start=1)})
        cursor = dbapi.cursor()
        try:
            cursor.execute(form.sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


class _BulkSql:
    """The bulk statements, written out for the engine's dialect and run on the DBAPI cursor.

    Their ``IN`` and ``VALUES`` lists are as long as the batch: SQLAlchemy compiles a ``VALUES`` list
    value by value on every execution and renders an expanding ``IN`` list element by element, which
    took longer than the database's index probes (2 s of a 2,000-line check with near-duplicates). Here
    a list is one string multiplication; PostgreSQL gets each parameter cast to its column's type so
    that the comparisons stay on the indexes. The constants are the enums' own integers. SQLite is told
    that ``valid_to IS NULL`` holds for most rows (``likely``, as in :class:`_Likely`): without it, the
    exact lookup of a batch walked ix_receivables_valid_to over every current row, twice (5,300
    invoices/s at 300,000 receivables).
    """

    _NEAR = ", ".join(f"receivables.{c.name}" for c in _NEAR_COLUMNS)
    _MATCH = ", ".join(f"receivables.{c.name}" for c in _MATCH_COLUMNS[:-1])
    # is_financed reads the assignment history of a paid or closed registration only, so the probe of
    # ix_assignments_receivable_id is made for those rows only (false for the others, whose answer it
    # cannot change): made for every row, it took about a third of the statement's time at 1,000,000
    # receivables.
    _WAS_ASSIGNED = (
        "CASE WHEN receivables.status IN ("
        + ", ".join(str(int(status)) for status in sorted(PAID_OR_CLOSED_STATUSES))
        + ") THEN EXISTS (SELECT 1 FROM assignments WHERE assignments.receivable_id = receivables.id) "
        "ELSE false END AS was_assigned"
    )

    def __init__(self, dialect: Dialect) -> None:
        self.sqlite = dialect.name == "sqlite"

    def _p(self, pg_type: str) -> str:
        return "?" if self.sqlite else f"%s::{pg_type}"

    def _list(self, n: int, pg_type: str) -> str:
        return ", ".join([self._p(pg_type)] * n)

    def _current_likely(self) -> str:
        return "likely(receivables.valid_to IS NULL)" if self.sqlite else "receivables.valid_to IS NULL"

    def exact(self, keys: int, fingerprints: int = 0) -> str:
        """Live registrations holding one of the keys or fingerprints (:data:`_MATCH_COLUMNS`); with no
        fingerprints, a probe of ix_receivables_current_key alone (what :meth:`DuplicateChecker.check_many`
        runs: see :meth:`DuplicateChecker._exact_rows`).

        SQLite walks an ``IN`` list in key order, so the rows it finds are read in random order, and a
        batch of thousands reads a table page, and pages above it, per row. The rowids are taken from the
        indexes first (a list subquery, which SQLite keeps sorted), and the table read in rowid order: a
        bulk exact check took about 15% less time at 1,000,000 receivables. PostgreSQL's bitmap heap scan
        reads the table in its order by itself."""
        branches = [f"receivables.invoice_key IN ({self._list(keys, 'bytea')}) AND {self._current_likely()}"]
        if fingerprints:
            branches.append(
                f"receivables.fingerprint IN ({self._list(fingerprints, 'bytea')}) AND {self._current_likely()}"
            )
        where = f"({' OR '.join(branches)})"
        if self.sqlite:
            where = f"receivables.rowid IN (SELECT receivables.rowid FROM receivables WHERE {where})"
        return (
            f"SELECT {self._MATCH}, {self._WAS_ASSIGNED} FROM receivables WHERE {where} "
            f"AND receivables.status != {_CANCELLED}"
        )

    def amounts(self, rows: int) -> str:
        """Same debtor, currency, face value and due date as one of the (debtor, currency, face value,
        due date) rows, on ix_receivables_current_debtor_amount."""
        row = f"({self._p('integer')}, {self._p('varchar')}, {self._p('bigint')}, {self._p('bigint')})"
        code = _REASON_CODES[NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE]
        return (
            f"WITH batch(debtor, currency, face_value, due_date) AS (VALUES {', '.join([row] * rows)}) "
            f"SELECT {code} AS reason, {self._NEAR} FROM batch JOIN receivables ON receivables.debtor = "
            "batch.debtor AND receivables.face_value = batch.face_value AND receivables.due_date = batch.due_date "
            "AND receivables.valid_to IS NULL WHERE receivables.currency = batch.currency "
            f"AND receivables.status != {_CANCELLED}"
        )

    def documents(self, n: int) -> str:
        code = _REASON_CODES[NearDuplicateReason.SAME_DOCUMENT_HASH]
        return (
            f"SELECT {code} AS reason, {self._NEAR} FROM receivables WHERE receivables.document_hash IN "
            f"({self._list(n, 'bytea')}) AND {self._current_likely()} AND receivables.status != {_CANCELLED}"
        )

    def similar_numbers(self, sizes: Sequence[int]) -> str:
        """For each size, a registration (not a split part) of one debtor holding one of that many number
        hashes, on ix_receivables_current_debtor_number; parameters: debtor, then its hashes."""
        code = _REASON_CODES[NearDuplicateReason.SIMILAR_INVOICE_NUMBER]
        return " UNION ALL ".join(
            f"SELECT {code} AS reason, {self._NEAR} FROM receivables WHERE receivables.debtor = "
            f"{self._p('integer')} AND receivables.number_hash IN ({self._list(n, 'bytea')}) AND "
            f"{self._current_likely()} AND receivables.invoice_key IS NOT NULL "
            f"AND receivables.status != {_CANCELLED}"
            for n in sizes
        )


def _raw_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


@dataclass(frozen=True, slots=True)
class _Match:
    """A live registration as read by an exact check."""

    id: int
    status: Status
    creditor: int
    debtor: int
    holder: int
    currency: str
    face_value: int
    paid: int
    due_date: int
    invoice_key: bytes | None
    fingerprint: bytes | None
    number_hash: bytes | None
    was_assigned: bool
    parts_financed: bool = False

    @classmethod
    def of(cls, values: Sequence[Any]) -> _Match:
        """From the values of :data:`_MATCH_COLUMNS`, in order."""
        (id_, status, creditor, debtor, holder, currency, face, paid, due, key, fp, number_hash, assigned) = values
        return cls(
            id=int(id_),
            status=Status(status),
            creditor=int(creditor),
            debtor=int(debtor),
            holder=int(holder),
            currency=str(currency),
            face_value=int(face),
            paid=int(paid),
            due_date=int(due),
            invoice_key=_bytes(key),
            fingerprint=_bytes(fp),
            number_hash=_bytes(number_hash),
            was_assigned=bool(assigned),
        )

    @classmethod
    def of_check_row(cls, row: Sequence[Any]) -> _Match:
        """From the exact match's row of :data:`_CHECK_SINGLE`: the reason, :data:`_NEAR_COLUMNS`, then
        status, paid, fingerprint, was_assigned (and the cursor's columns)."""
        _, id_, creditor, debtor, holder, number, key, _, currency, face, due = row[:11]
        status, paid, fp, assigned = row[11:15]
        return cls.of((id_, status, creditor, debtor, holder, currency, face, paid, due, key, fp, number, assigned))

    @property
    def financed(self) -> bool:
        return is_financed(self.status, self.holder, self.creditor, self.was_assigned, self.parts_financed)

    def parties_for(self, viewer: int | None) -> Parties | None:
        if viewer is None or viewer not in (self.creditor, self.debtor, self.holder):
            return None
        return _parties(
            self.creditor, self.debtor, self.holder, self.currency, self.face_value, self.paid, self.due_date
        )


def _parties(
    creditor: int, debtor: int, holder: int, currency: str, face_value: int, paid: int, due_date: int
) -> Parties:
    return Parties(
        creditor=EntityId(int(creditor)),
        debtor=EntityId(int(debtor)),
        holder=EntityId(int(holder)),
        currency=str(currency),
        face_value=MinorUnits(int(face_value)),
        paid=MinorUnits(int(paid)),
        due_date=UnixTime(int(due_date)),
    )


@dataclass(frozen=True, slots=True)
class _Similar:
    """A live registration found by a near-duplicate rule."""

    reason: NearDuplicateReason
    id: int
    creditor: int
    debtor: int
    holder: int
    number_hash: bytes | None
    invoice_key: bytes | None
    document_hash: bytes | None
    currency: str
    face_value: int
    due_date: int

    @classmethod
    def of(cls, values: Sequence[Any]) -> _Similar:
        """From the values of the reason code and :data:`_NEAR_COLUMNS`, in order."""
        (reason, id_, creditor, debtor, holder, number_hash, key, document, currency, face, due) = values
        return cls(
            reason=_REASONS_BY_CODE[int(reason)],
            id=int(id_),
            creditor=int(creditor),
            debtor=int(debtor),
            holder=int(holder),
            number_hash=_bytes(number_hash),
            invoice_key=_bytes(key),
            document_hash=_bytes(document),
            currency=str(currency),
            face_value=int(face),
            due_date=int(due),
        )


@dataclass(frozen=True, slots=True)
class _AsOf:
    block: int
    block_hash: str
    timestamp: int
    staleness: float


@dataclass(slots=True)
class _Line:
    """One queried invoice with its derived hashes."""

    invoice: Invoice
    key: bytes
    fingerprint: bytes
    variant_hashes: list[bytes]
    """Number hashes of the similar numbers (:func:`number_variants`), for the line's debtor."""

    @property
    def lineage(self) -> tuple[int, bytes]:
        return (self.invoice.debtor, self.invoice.number_hash)

    @property
    def amount_key(self) -> tuple[int, str, int, int]:
        inv = self.invoice
        return (inv.debtor, inv.currency, inv.face_value, inv.due_date)

    @property
    def document(self) -> bytes | None:
        return None if self.invoice.document_hash == ZERO_HASH else self.invoice.document_hash


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------


class DuplicateChecker:
    """Exact and near-duplicate checks of invoices against the mirror (engine passed in)."""

    def __init__(
        self,
        engine: Engine,
        *,
        digit_substitutions: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.digit_substitutions = digit_substitutions
        self.clock = clock
        self._by_both = _Prepared(_single_statement(True, True), engine, ("key", "fingerprint"))
        self._by_key = _Prepared(_single_statement(True, False), engine, ("key",))
        self._by_fingerprint = _Prepared(_single_statement(False, True), engine, ("fingerprint",))
        self._check_single = _PreparedCheck(engine)
        self._bulk = _BulkSql(engine.dialect)

    # ------------------------------------------------------------------ single checks

    def check(self, invoice: Invoice, *, viewer_entity: int | None = None, near_duplicates: bool = True) -> CheckResult:
        """Exact match by invoice key or fingerprint, and (unless disabled) near-duplicate flags."""
        line = self._line(invoice, variants=near_duplicates)
        if not near_duplicates:
            as_of, match = self._exact(self._by_both, {"key": line.key, "fingerprint": line.fingerprint})
            return self._result(as_of, match, line, viewer_entity, (), None)
        with self._statement() as dbapi:
            as_of, match, similar = self._check_rows(self._check_single.rows(dbapi, line), line)
        if match is not None and match.status is Status.SPLIT:
            # Whether a part is financed takes a second statement: both again, in one snapshot.
            with self._snapshot() as conn:
                dbapi = conn.connection.dbapi_connection
                as_of, match, similar = self._check_rows(self._check_single.rows(dbapi, line), line)
                if match is not None and match.status is Status.SPLIT:
                    match = self._with_parts(conn, [match])[0]
        flags = self._flags(line, similar, viewer_entity)
        return self._result(as_of, match, line, viewer_entity, flags, None)

    def check_key(self, key: bytes, *, viewer_entity: int | None = None) -> CheckResult:
        """Exact match by invoice key only (no near-duplicates: the fields are not known)."""
        as_of, match = self._exact(self._by_key, {"key": bytes(key)})
        return self._result(as_of, match, None, viewer_entity, (), None, kind=MatchKind.INVOICE_KEY)

    def check_fingerprint(self, fp: bytes, *, viewer_entity: int | None = None) -> CheckResult:
        """Exact match by fingerprint only (no near-duplicates: the fields are not known)."""
        as_of, match = self._exact(self._by_fingerprint, {"fingerprint": bytes(fp)})
        return self._result(as_of, match, None, viewer_entity, (), None, kind=MatchKind.FINGERPRINT)

    # ------------------------------------------------------------------ bulk

    def check_many(
        self,
        invoices: Sequence[Invoice],
        *,
        viewer_entity: int | None = None,
        near_duplicates: bool = True,
    ) -> list[CheckResult]:
        """One result per invoice, in order: set-based queries, plus duplicates within the batch."""
        if not invoices:
            return []
        with paused_gc():  # (registry.memory: thousands of lines, ten objects each, none in a cycle)
            return self._check_many(invoices, viewer_entity, near_duplicates)

    def _check_many(
        self, invoices: Sequence[Invoice], viewer_entity: int | None, near_duplicates: bool
    ) -> list[CheckResult]:
        # An exact-only check needs each line's key and fingerprint, nothing else: hashed in one batch,
        # and the statement's rows kept as the driver's tuples, so that a line costs one object that
        # lives on (its answer); a _Line and a _Match per line cost as much again in garbage collection.
        lines = [self._line(inv, variants=True) for inv in invoices] if near_duplicates else []
        if lines:
            keys = [line.key for line in lines]
            fingerprints = [line.fingerprint for line in lines]
        else:
            keys, fingerprints = _keys_and_fingerprints(invoices)
        with self._snapshot() as conn:
            as_of = self._as_of(conn.execute(_CURSOR_STATEMENT).first())
            by_key, by_fingerprint = self._exact_rows(conn, keys)
            splits = {(int(r[3]), bytes(r[11])) for r in by_key.values() if r[1] == _SPLIT and r[11] is not None}
            financed_splits = self._financed_lineages(conn, splits) if splits else set()
            similar = self._near_rows(conn, lines) if near_duplicates else []
        duplicate_of = self._batch_duplicates(keys)
        batch_flags = self._batch_near_duplicates(lines) if near_duplicates else {}
        similar_by_line: dict[int, list[_Similar]] = defaultdict(list)
        if similar:
            for index, found in self._assign_similar(lines, similar):
                similar_by_line[index].append(found)
        results: list[CheckResult] = []
        append = results.append
        answer = self._row_result
        for index, fingerprint in enumerate(fingerprints):
            row = by_fingerprint.get(fingerprint) or by_key.get(keys[index])
            flags: tuple[NearDuplicate, ...] = ()
            if near_duplicates:
                flags = self._flags(lines[index], similar_by_line.get(index, []), viewer_entity)
                flags += batch_flags.get(index, ())
            append(answer(as_of, row, fingerprint, viewer_entity, flags, duplicate_of.get(index), financed_splits))
        return results

    # ------------------------------------------------------------------ diagnostics

    def query_plan(self, invoice: Invoice, *, conn: Connection | None = None) -> list[str]:
        """The database's plan for the single exact check of ``invoice`` (SQLite ``EXPLAIN QUERY PLAN``
        details, PostgreSQL ``EXPLAIN`` lines)."""
        statement = self._by_both
        args = statement.params({"key": invoice.key, "fingerprint": invoice.fingerprint})
        sqlite = self.engine.dialect.name == "sqlite"
        sql = ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement.sql

        def run(c: Connection) -> list[str]:
            rows = c.exec_driver_sql(sql, args).all()
            return [str(row[3]) if sqlite else str(row[0]) for row in rows]

        if conn is not None:
            return run(conn)
        with self.engine.connect() as own:
            return run(own)

    # ------------------------------------------------------------------ internals: reads

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction: every statement inside sees the same committed state."""
        dialect = self.engine.dialect.name
        with self.engine.connect() as conn:
            if dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                with conn.begin():
                    yield conn
                return
            if dialect == "sqlite":
                # pysqlite begins transactions before DML only; without BEGIN each SELECT would read
                # its own snapshot, and the cursor could come from another batch than the rows. (On the
                # driver's connection: through SQLAlchemy, BEGIN and ROLLBACK cost more than the reads.)
                dbapi = conn.connection.dbapi_connection
                assert dbapi is not None
                dbapi.execute("BEGIN")
                try:
                    yield conn
                finally:
                    dbapi.rollback()
                return
            try:
                yield conn
            finally:
                conn.rollback()

    def _as_of(self, row: Any) -> _AsOf:
        if row is None:
            raise MirrorNotReady("the mirror has not indexed any block yet: run the indexer first")
        return self._as_of_values(int(row.block_number), str(row.block_hash), int(row.block_timestamp))

    def _as_of_values(self, block: int, block_hash: str, timestamp: int) -> _AsOf:
        return _AsOf(block, block_hash, timestamp, max(0.0, self.clock() - timestamp))

    @contextmanager
    def _statement(self) -> Iterator[Any]:
        """A driver connection for one statement, which is its own snapshot: on PostgreSQL in autocommit
        (no BEGIN and ROLLBACK round trips around it); elsewhere the pool's connection itself (no
        SQLAlchemy Connection around it: a single check's hot path)."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT").connection.dbapi_connection
            return
        pooled = self.engine.raw_connection()
        try:
            yield pooled
        finally:
            pooled.close()

    def _no_cursor(self) -> MirrorNotReady:
        return MirrorNotReady("the mirror has not indexed any block yet: run the indexer first")

    @staticmethod
    def _preferred(matches: list[_Match], fingerprint: bytes | None) -> _Match | None:
        """The match to report: the contract lets one live registration hold a key and fingerprint;
        prefer the fingerprint match should the mirror ever hold two."""
        if len(matches) > 1:
            matches.sort(key=lambda m: (m.fingerprint != fingerprint, -m.id))
        return matches[0] if matches else None

    def _single(self, dbapi: Any, statement: _Prepared, params: Mapping[str, bytes]) -> tuple[_AsOf, _Match | None]:
        rows = statement.rows(dbapi, params)
        if not rows:
            raise self._no_cursor()
        block, block_hash, timestamp = rows[0][:3]
        as_of = self._as_of_values(int(block), str(block_hash), int(timestamp))
        matches = [_Match.of(row[3:]) for row in rows if row[3] is not None]
        return as_of, self._preferred(matches, params.get("fingerprint"))

    def _check_rows(self, rows: Sequence[Sequence[Any]], line: _Line) -> tuple[_AsOf, _Match | None, list[_Similar]]:
        """The as-of block, the exact match and the near-duplicates in the rows of :data:`_CHECK_SINGLE`."""
        as_of: _AsOf | None = None
        matches: list[_Match] = []
        similar: list[_Similar] = []
        for row in rows:
            if row[0] != _CURSOR_ROW:
                similar.append(_Similar.of(row[:11]))
                continue
            if as_of is None:
                block, block_hash, timestamp = row[-3:]
                as_of = self._as_of_values(int(block), str(block_hash), int(timestamp))
            if row[1] is not None:
                matches.append(_Match.of_check_row(row))
        if as_of is None:
            raise self._no_cursor()
        return as_of, self._preferred(matches, line.fingerprint), similar

    def _exact(self, statement: _Prepared, params: Mapping[str, bytes]) -> tuple[_AsOf, _Match | None]:
        """One indexed statement; a split match reads its parts too, in the same snapshot."""
        with self._statement() as dbapi:
            as_of, match = self._single(dbapi, statement, params)
        if match is None or match.status is not Status.SPLIT:
            return as_of, match
        with self._snapshot() as conn:
            as_of, match = self._single(conn.connection.dbapi_connection, statement, params)
            if match is not None and match.status is Status.SPLIT:
                match = self._with_parts(conn, [match])[0]
            return as_of, match

    def _with_parts(self, conn: Connection, splits: Sequence[_Match]) -> list[_Match]:
        """The split matches, with ``parts_financed`` read from their current parts."""
        lineages = {(m.debtor, m.number_hash) for m in splits if m.number_hash is not None}
        financed = self._financed_lineages(conn, lineages)
        return [dataclasses.replace(m, parts_financed=(m.debtor, m.number_hash) in financed) for m in splits]

    @staticmethod
    def _financed_lineages(conn: Connection, lineages: Iterable[tuple[int, bytes]]) -> set[tuple[int, bytes]]:
        """Which of the (debtor, number hash) lineages of split registrations have a financed part."""
        financed: set[tuple[int, bytes]] = set()
        for chunk in _chunks(sorted(lineages), _EXACT_CHUNK):
            for debtor, number_hash in conn.execute(_financed_parts_statement(chunk)):
                financed.add((int(debtor), bytes(number_hash)))
        return financed

    def _exact_rows(
        self, conn: Connection, keys: Sequence[bytes]
    ) -> tuple[dict[bytes, Sequence[Any]], dict[bytes, Sequence[Any]]]:
        """The live registrations holding the keys, by key and by fingerprint: the rows of
        :meth:`_BulkSql.exact` (:data:`_MATCH_COLUMNS`), as the driver gives them.

        By key alone, one probe of ix_receivables_current_key per line: a registration's fingerprint
        hashes its debtor and number hash, and its key hashes the same two (``fingerprintOf`` and
        ``invoiceKeyOf`` in the contract, which the projector copies), so a registration holding a
        line's fingerprint also holds its key, and the lookup by key finds it (a second probe, of
        ix_receivables_current_fp, found nothing more and cost as much again). Split parts hold neither.
        """
        by_key: dict[bytes, Sequence[Any]] = {}
        by_fingerprint: dict[bytes, Sequence[Any]] = {}
        for chunk in _chunks(list(dict.fromkeys(keys)), _EXACT_CHUNK):
            for row in _raw_rows(conn, self._bulk.exact(len(chunk)), chunk):
                by_key[bytes(row[9])] = row
                if row[10] is not None:
                    by_fingerprint[bytes(row[10])] = row
        return by_key, by_fingerprint

    def _near_rows(self, conn: Connection, lines: Sequence[_Line]) -> list[_Similar]:
        """Live registrations that some line of a batch finds by a near-duplicate rule: one statement per
        chunk of lines for the amount and document rules and one per group of debtors for the similar
        numbers (a single check has its own statement: :data:`_CHECK_SINGLE`)."""
        found: list[_Similar] = []
        chunk: list[_Line] = []
        budget = 0
        for line in lines:
            if chunk and budget + 5 > _NEAR_PARAMS:  # four for the amount, one for a document hash
                found.extend(self._near_chunk(conn, chunk))
                chunk, budget = [], 0
            chunk.append(line)
            budget += 5
        if chunk:
            found.extend(self._near_chunk(conn, chunk))
        by_debtor: dict[int, set[bytes]] = defaultdict(set)
        for line in lines:
            by_debtor[line.invoice.debtor].update(line.variant_hashes)
        branches: list[tuple[int, list[bytes]]] = []
        budget = 0
        for debtor in sorted(by_debtor):
            hashes = sorted(by_debtor[debtor])
            for part in _chunks(hashes, _NEAR_PARAMS - 1):
                if branches and (budget + 1 + len(part) > _NEAR_PARAMS or len(branches) == _MAX_VARIANT_BRANCHES):
                    found.extend(self._similar_numbers(conn, branches))
                    branches, budget = [], 0
                branches.append((debtor, list(part)))
                budget += 1 + len(part)
        if branches:
            found.extend(self._similar_numbers(conn, branches))
        return found

    def _near_chunk(self, conn: Connection, lines: Sequence[_Line]) -> list[_Similar]:
        """The amount and document rules for a chunk of lines."""
        amounts = sorted({line.amount_key for line in lines})
        rows = _raw_rows(conn, self._bulk.amounts(len(amounts)), [v for amount in amounts for v in amount])
        documents = sorted({doc for line in lines if (doc := line.document) is not None})
        if documents:
            rows += _raw_rows(conn, self._bulk.documents(len(documents)), documents)
        return [_Similar.of(row) for row in rows]

    def _similar_numbers(self, conn: Connection, branches: Sequence[tuple[int, list[bytes]]]) -> list[_Similar]:
        """Registrations holding one of the number hashes for the same debtor: one branch per debtor, a
        probe of ix_receivables_current_debtor_number per hash."""
        sql = self._bulk.similar_numbers([len(hashes) for _, hashes in branches])
        params = [v for debtor, hashes in branches for v in (debtor, *hashes)]
        return [_Similar.of(row) for row in _raw_rows(conn, sql, params)]

    # ------------------------------------------------------------------ internals: answers

    def _line(self, invoice: Invoice, *, variants: bool) -> _Line:
        # The key, the fingerprint and each variant's number hash in one batch (keccak256_many).
        preimages = [_key_preimage(invoice.debtor, invoice.number_hash), _fingerprint_preimage(invoice)]
        if variants:
            numbers = number_variants(invoice.normalized_number, digit_substitutions=self.digit_substitutions)
            preimages += [n.encode("utf-8") for n in numbers]
        key, fingerprint, *hashes = keccak256_many(preimages)
        return _Line(invoice, key, fingerprint, hashes)

    @staticmethod
    def _assign_similar(lines: Sequence[_Line], found: Sequence[_Similar]) -> Iterator[tuple[int, _Similar]]:
        """Which lines each found registration is similar to (never the line's own lineage)."""
        by_amount: dict[tuple[int, str, int, int], list[int]] = defaultdict(list)
        by_document: dict[bytes, list[int]] = defaultdict(list)
        by_variant: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        for index, line in enumerate(lines):
            by_amount[line.amount_key].append(index)
            if line.document is not None:
                by_document[line.document].append(index)
            for number_hash in line.variant_hashes:
                by_variant[(line.invoice.debtor, number_hash)].append(index)
        for similar in found:
            if similar.reason is NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE:
                indexes = by_amount.get((similar.debtor, similar.currency, similar.face_value, similar.due_date), [])
            elif similar.reason is NearDuplicateReason.SAME_DOCUMENT_HASH:
                indexes = by_document.get(similar.document_hash or b"", [])
            else:
                indexes = by_variant.get((similar.debtor, similar.number_hash or b""), [])
            for index in indexes:
                if lines[index].lineage != (similar.debtor, similar.number_hash):
                    yield index, similar

    @staticmethod
    def _flags(line: _Line, found: Sequence[_Similar], viewer: int | None) -> tuple[NearDuplicate, ...]:
        """One flag per (reason, similar registration) the viewer is party to; one anonymous flag per
        reason for the rest. A registration and its split parts (same debtor and number) count once."""
        if not found:  # most lines of a batch
            return ()
        groups: dict[tuple[NearDuplicateReason, int, bytes | None], list[_Similar]] = defaultdict(list)
        for similar in found:
            if line.lineage != (similar.debtor, similar.number_hash):
                groups[(similar.reason, similar.debtor, similar.number_hash)].append(similar)
        named: set[tuple[NearDuplicateReason, int]] = set()
        anonymous: set[NearDuplicateReason] = set()
        for (reason, _, _), members in groups.items():
            visible = [m for m in members if viewer is not None and viewer in (m.creditor, m.debtor, m.holder)]
            if visible:
                # The registration itself (it has the key) before its parts, then the oldest.
                best = min(visible, key=lambda m: (m.invoice_key is None, m.id))
                named.add((reason, best.id))
            else:
                anonymous.add(reason)
        flags = [NearDuplicate(reason, reason.risk, receivable_id=ReceivableId(rid)) for reason, rid in named]
        flags += [NearDuplicate(reason, reason.risk) for reason in anonymous]
        flags.sort(key=lambda f: (f.risk is not Risk.HIGH, f.reason.value, f.receivable_id or 0))
        return tuple(flags)

    @staticmethod
    def _batch_duplicates(keys: Sequence[bytes]) -> dict[int, int]:
        """line -> the first earlier line with the same key or fingerprint: the same key, since lines
        with the same fingerprint have the same debtor and number hash, so the same key."""
        first_by_key: dict[bytes, int] = {}
        out: dict[int, int] = {}
        for index, key in enumerate(keys):
            first = first_by_key.setdefault(key, index)
            if first != index:
                out[index] = first
        return out

    @staticmethod
    def _batch_near_duplicates(lines: Sequence[_Line]) -> dict[int, tuple[NearDuplicate, ...]]:
        """Near-duplicate rules between lines of the same batch (both lines are flagged)."""
        pairs: set[tuple[int, int, NearDuplicateReason]] = set()

        def pair_up(groups: Mapping[Any, list[int]], reason: NearDuplicateReason) -> None:
            for members in groups.values():
                for i in members:
                    others = (j for j in members if lines[j].key != lines[i].key)
                    pairs.update((i, j, reason) for j in islice(others, _MAX_BATCH_REFERENCES))

        by_amount: dict[tuple[int, str, int, int], list[int]] = defaultdict(list)
        by_document: dict[bytes, list[int]] = defaultdict(list)
        first_by_lineage: dict[tuple[int, bytes], int] = {}
        for index, line in enumerate(lines):
            by_amount[line.amount_key].append(index)
            if line.document is not None:
                by_document[line.document].append(index)
            first_by_lineage.setdefault(line.lineage, index)
        pair_up(by_amount, NearDuplicateReason.SAME_DEBTOR_AMOUNT_DUE_DATE)
        pair_up(by_document, NearDuplicateReason.SAME_DOCUMENT_HASH)
        for index, line in enumerate(lines):
            debtor = line.invoice.debtor
            for number_hash in line.variant_hashes:
                other = first_by_lineage.get((debtor, number_hash))
                if other is not None and other != index:
                    pairs.add((index, other, NearDuplicateReason.SIMILAR_INVOICE_NUMBER))
                    pairs.add((other, index, NearDuplicateReason.SIMILAR_INVOICE_NUMBER))
        out: dict[int, list[NearDuplicate]] = defaultdict(list)
        named: dict[tuple[int, NearDuplicateReason], int] = defaultdict(int)
        for index, other, reason in sorted(pairs, key=lambda p: (p[0], p[2].risk is not Risk.HIGH, p[2].value, p[1])):
            if named[(index, reason)] < _MAX_BATCH_REFERENCES:
                named[(index, reason)] += 1
                out[index].append(NearDuplicate(reason, reason.risk, batch_line=other))
        return {index: tuple(flags) for index, flags in out.items()}

    def _result(
        self,
        as_of: _AsOf,
        match: _Match | None,
        line: _Line | None,
        viewer: int | None,
        flags: tuple[NearDuplicate, ...],
        duplicate_of_line: int | None,
        *,
        kind: MatchKind | None = None,
    ) -> CheckResult:
        if match is not None and kind is None and line is not None:
            kind = MatchKind.FINGERPRINT if match.fingerprint == line.fingerprint else MatchKind.INVOICE_KEY
        return CheckResult(
            registered=match is not None,
            status=match.status if match is not None else Status.NONE,
            financed=match.financed if match is not None else False,
            receivable_id=ReceivableId(match.id) if match is not None else None,
            match=kind if match is not None else None,
            parties=match.parties_for(viewer) if match is not None else None,
            near_duplicates=flags,
            duplicate_of_line=duplicate_of_line,
            as_of_block=as_of.block,
            as_of_block_hash=as_of.block_hash,
            as_of_timestamp=as_of.timestamp,
            staleness_seconds=as_of.staleness,
        )

    def _row_result(
        self,
        as_of: _AsOf,
        row: Sequence[Any] | None,
        fingerprint: bytes,
        viewer: int | None,
        flags: tuple[NearDuplicate, ...],
        duplicate_of_line: int | None,
        financed_splits: set[tuple[int, bytes]],
    ) -> CheckResult:
        """:meth:`_result` from a row of :meth:`_BulkSql.exact` (no :class:`_Match` in between: a bulk
        check's hot loop); ``financed_splits``: the lineages of split matches with a financed part."""
        if row is None:
            return self._result(as_of, None, None, viewer, flags, duplicate_of_line)
        rid, code, creditor, debtor, holder, currency, face_value, paid, due_date, _, fp, number_hash, assigned = row
        status = _STATUSES[code]
        parts_financed = (
            status is Status.SPLIT and number_hash is not None and (debtor, bytes(number_hash)) in financed_splits
        )
        return CheckResult(
            registered=True,
            status=status,
            financed=is_financed(status, holder, creditor, bool(assigned), parts_financed),
            receivable_id=ReceivableId(rid),
            match=MatchKind.FINGERPRINT if fp == fingerprint else MatchKind.INVOICE_KEY,
            parties=(
                None
                if viewer is None or viewer not in (creditor, debtor, holder)
                else _parties(creditor, debtor, holder, currency, face_value, paid, due_date)
            ),
            near_duplicates=flags,
            duplicate_of_line=duplicate_of_line,
            as_of_block=as_of.block,
            as_of_block_hash=as_of.block_hash,
            as_of_timestamp=as_of.timestamp,
            staleness_seconds=as_of.staleness,
        )
