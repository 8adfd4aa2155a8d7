"""Invoice fields: normalisation, validation and the on-chain derivations.

Double-financing detection only works if two spellings of the same invoice produce the same
bytes.  This module is the single place where raw invoice text becomes those bytes, and where the
Python side reproduces exactly what the Solidity contract computes on-chain.  Every rejection is an
:class:`~registry.errors.InvalidInvoice` naming the field at fault.

Invoice number (:func:`normalize_invoice_number`)
    1. Unicode NFKC, so that full-width text from Chinese e-invoices ("ＩＮＶ－００１",
       "ＩＮＶ　００１") becomes ASCII, and "№" becomes the letters "No".
    2. Case folding, then upper case (``casefold().upper()``), so that every case variant of a
       letter (including "ß"/"SS") ends up identical.
    3. Removal of the separators people use inconsistently, and of nothing else:

       - whitespace of any kind (``str.isspace``: space, tab, NBSP, thin space, U+3000 ...);
       - dashes of any kind (Unicode category Pd: "-", "‐", "‑", "‒", "–", "—", "〜" ...) and the
         minus sign "−" (U+2212);
       - connector punctuation (category Pc: "_" ...);
       - dots ".", "。", "·", "・"; slashes "/" and "\\"; the number sign "#";
       - invisible characters left by copy and paste: soft hyphen, zero-width space, word joiner
         and byte-order mark.

       Letters are never removed: the katakana long vowel mark "ー" is a letter, not a dash, and
       a "NO" prefix (from "№" or typed) stays part of the number.
    4. NFKC again, to recompose any combining mark that a removed separator had kept apart.

    Leading zeros are kept ("INV-001" and "INV-1" are different numbers).  The result must be
    1 to 64 characters long, every character a letter (category L*), a decimal digit (Nd), a letter
    number (Nl, e.g. "〇") or a combining mark (M*) that follows one of those.  Anything else, such
    as ":" or "(", is rejected rather than silently dropped.

    :func:`invoice_number_hash` is keccak256 of the UTF-8 bytes of the normalised number.

Currency (:func:`normalize_currency`)
    Surrounding whitespace removed, NFKC, upper case; the result must be a key of
    :data:`CURRENCY_EXPONENTS` (ISO 4217 codes with their minor-unit exponents).

Amount (:func:`parse_amount`)
    ``int`` input is already in minor units (fen, cents, fils).  ``str`` and ``Decimal`` input is in
    major units and is converted exactly with the currency's exponent; it is never rounded.

    Text is NFKC-normalised (full-width digits and commas become ASCII) and stripped, and must then
    be ASCII digits with at most one "." as the decimal point, digits required on both sides of it.
    Left of the point, digits may be grouped with one separator used consistently: ",", "_", "'",
    "’" or a space (NBSP, thin space and U+3000 become a space under NFKC).  Groups are either
    Western (1 to 3 digits, then groups of exactly 3: "1,850,600") or Indian lakh grouping
    (1 or 2 digits, groups of exactly 2, a final group of 3: "18,50,600").  A "," is never a
    decimal point.  Rejected: empty text, any sign, zero, exponents ("1e5"), NaN and infinities,
    Python floats (always, whatever their value), fractional digits beyond the currency's exponent
    unless they are all zeros ("100.000" CNY is 10000 fen, "100.005" CNY is an error), and
    anything that does not fit the contract's uint64.

Date (:func:`parse_date`)
    ``int`` is taken as Unix seconds; ``datetime.date`` and text mean midnight UTC of that day.
    Text is NFKC-normalised and stripped, then one of "YYYY-MM-DD", "YYYY/MM/DD" or
    "YYYY年MM月DD日" (month and day may have one digit).  The result must satisfy
    ``0 < seconds < 2**32`` (the contract's uint32).

Derivations (:func:`invoice_key`, :func:`fingerprint`)
    EIP-712-style hashes of ``abi.encode(TYPEHASH, fields...)``, byte for byte what the contract
    computes.  Neither includes the creditor, and the key includes neither amount nor dates: the
    same invoice registered by another party or with a different amount still collides.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from registry.errors import InvalidInvoice
from registry.hashing import keccak256
from registry.types import EntityId, MinorUnits, UnixTime

__all__ = [
    "CURRENCY_EXPONENTS",
    "FINGERPRINT_TYPEHASH",
    "INVOICE_KEY_TYPEHASH",
    "MAX_INVOICE_NUMBER_LENGTH",
    "Invoice",
    "RegistrationInput",
    "currency_bytes",
    "fingerprint",
    "format_amount",
    "invoice_key",
    "invoice_number_hash",
    "normalize_currency",
    "normalize_invoice_number",
    "parse_amount",
    "parse_date",
    "parse_day_bound",
]

MAX_INVOICE_NUMBER_LENGTH: Final = 64
UINT24_MAX: Final = 2**24 - 1  # entity ids are uint24 on-chain
UINT32_MAX: Final = 2**32 - 1
UINT64_MAX: Final = 2**64 - 1
MAX_FACE_VALUE: Final = 2**63 - 1  # the contract's MAX_FACE_VALUE: what signed 64-bit SQL integers mirror
ZERO_HASH: Final = bytes(32)

# ---------------------------------------------------------------------------------------------
# Invoice number
# ---------------------------------------------------------------------------------------------

_SEPARATOR_CHARS: Final = frozenset(
    "\u2212"  # minus sign (category Sm, so not caught by Pd)
    ".\u3002\u00b7\u30fb"  # full stop, ideographic full stop, middle dot, katakana middle dot
    "/\\#"
    "\u00ad\u200b\u2060\ufeff"  # soft hyphen, zero-width space, word joiner, byte-order mark
)
_SEPARATOR_CATEGORIES: Final = frozenset({"Pd", "Pc"})
_BASE_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl"})
_MARK_CATEGORIES: Final = frozenset({"Mn", "Mc", "Me"})


def _is_separator(char: str) -> bool:
    return char.isspace() or char in _SEPARATOR_CHARS or unicodedata.category(char) in _SEPARATOR_CATEGORIES


# The ASCII separators (whitespace, "-", "_", ".", "/", "\\", "#"), deleted by one str.translate.
_ASCII_SEPARATORS: Final = str.maketrans(dict.fromkeys(c for c in map(chr, range(128)) if _is_separator(c)))


def normalize_invoice_number(raw: str) -> str:
    """Return the canonical form of an invoice number (rules in the module docstring)."""
    if not isinstance(raw, str):
        raise InvalidInvoice("invoice_number", f"must be text, not {type(raw).__name__}")
    if raw.isascii():
        # The common case, the same rules in fewer steps: NFKC leaves ASCII as it is, casefold().upper()
        # of ASCII is upper(), and an ASCII letter or digit is what the character check below admits.
        # Anything else (no character left, too long, other punctuation) takes the general path, for
        # its error.
        text = raw.upper().translate(_ASCII_SEPARATORS)
        if text.isalnum() and len(text) <= MAX_INVOICE_NUMBER_LENGTH:
            return text
    text = unicodedata.normalize("NFKC", raw).casefold().upper()
    text = unicodedata.normalize("NFKC", "".join(c for c in text if not _is_separator(c)))
    if not text:
        raise InvalidInvoice("invoice_number", "is empty once spaces and separators are removed")
    if len(text) > MAX_INVOICE_NUMBER_LENGTH:
        raise InvalidInvoice(
            "invoice_number",
            f"is {len(text)} characters long once normalised; at most {MAX_INVOICE_NUMBER_LENGTH} allowed",
        )
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category in _BASE_CATEGORIES or (category in _MARK_CATEGORIES and position > 0):
            continue
        raise InvalidInvoice(
            "invoice_number",
            f"contains {char!r} (U+{ord(char):04X}), which is neither a letter, a digit nor a separator",
        )
    return text


def invoice_number_hash(raw: str) -> bytes:
    """Return keccak256 of the UTF-8 bytes of the normalised invoice number."""
    return keccak256(normalize_invoice_number(raw).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Currency
# ---------------------------------------------------------------------------------------------


def _exponents(exponent: int, codes: str) -> dict[str, int]:
    return dict.fromkeys(codes.split(), exponent)


CURRENCY_EXPONENTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        **_exponents(
            0,
            "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF",
        ),
        **_exponents(
            2,
            """
            AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BRL BSD BWP BYN BZD
            CAD CDF CHF CNY COP CRC CZK DKK DOP DZD EGP ETB EUR FJD GBP GEL GHS GMD GTQ GYD
            HKD HNL HTG HUF IDR ILS INR JMD KES KGS KHR KYD KZT LAK LBP LKR MAD MDL MKD MMK
            MNT MOP MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN
            QAR RON RSD RUB SAR SCR SEK SGD THB TJS TOP TRY TTD TWD TZS UAH USD UYU UZS XCD
            ZAR ZMW
            """,
        ),
        **_exponents(3, "BHD IQD JOD KWD LYD OMR TND"),
    }
)
"""ISO 4217 code -> number of decimal places of the minor unit (CNY 2: yuan/fen; JPY 0; KWD 3)."""


def normalize_currency(code: str) -> str:
    """Return the upper-case ISO 4217 code, or raise InvalidInvoice("currency", ...) if unknown."""
    if not isinstance(code, str):
        raise InvalidInvoice("currency", f"must be text, not {type(code).__name__}")
    normalised = unicodedata.normalize("NFKC", code.strip()).strip().upper()
    if normalised not in CURRENCY_EXPONENTS:
        raise InvalidInvoice("currency", f"{code!r} is not a supported ISO 4217 currency code")
    return normalised


def currency_bytes(code: str) -> bytes:
    """Return the three ASCII bytes of the currency code, the contract's ``bytes3``."""
    return normalize_currency(code).encode("ascii")


# ---------------------------------------------------------------------------------------------
# Amounts
# ---------------------------------------------------------------------------------------------

_GROUP_SEPARATORS: Final = ",_' \u2019"
_SEP: Final = f"(?P<sep>[{re.escape(_GROUP_SEPARATORS)}])"
_WESTERN_GROUPING: Final = re.compile(rf"[0-9]{{1,3}}{_SEP}[0-9]{{3}}(?:(?P=sep)[0-9]{{3}})*")
_INDIAN_GROUPING: Final = re.compile(rf"[0-9]{{1,2}}{_SEP}(?:[0-9]{{2}}(?P=sep))*[0-9]{{3}}")
_DIGITS: Final = re.compile(r"[0-9]+")
# uint64 max has 20 digits; anything longer (leading zeros aside) overflows.
_MAX_DIGITS: Final = len(str(UINT64_MAX))


def _amount_error(message: str) -> InvalidInvoice:
    return InvalidInvoice("face_value", message)


def _check_minor(minor: int) -> MinorUnits:
    if minor <= 0:
        raise _amount_error("must be greater than zero")
    if minor > MAX_FACE_VALUE:
        raise _amount_error(f"{minor} minor units exceeds the registry's maximum face value {MAX_FACE_VALUE}")
    return MinorUnits(minor)


def _to_minor(integer_digits: str, fraction_digits: str, exponent: int, currency: str) -> MinorUnits:
    """Combine ASCII digit strings (major units) into minor units, exactly."""
    kept, extra = fraction_digits[:exponent], fraction_digits[exponent:]
    if extra.strip("0"):
        raise _amount_error(f"{currency} has {exponent} decimal place(s); the amount has more and is never rounded")
    integer_digits = integer_digits.lstrip("0")
    if len(integer_digits) + exponent > _MAX_DIGITS:
        raise _amount_error("exceeds the registry's maximum face value")
    return _check_minor(int((integer_digits or "0") + kept.ljust(exponent, "0")))


def _parse_amount_text(value: str, exponent: int, currency: str) -> MinorUnits:
    text = unicodedata.normalize("NFKC", value).strip()
    if not text:
        raise _amount_error("is empty")
    if text[0] in "+-\u2212":
        raise _amount_error(f"{value!r}: signs are not accepted; amounts are positive")
    lowered = text.lower()
    if "e" in lowered and any(c.isdigit() for c in text):
        raise _amount_error(f"{value!r}: exponents (scientific notation) are not accepted")
    if lowered in {"nan", "snan", "inf", "infinity"}:
        raise _amount_error(f"{value!r} is not a number")
    integer_part, point, fraction_part = text.partition(".")
    if point and not _DIGITS.fullmatch(fraction_part):
        raise _amount_error(f"{value!r}: a '.' must be followed by digits only (one decimal point at most)")
    if _DIGITS.fullmatch(integer_part):
        integer_digits = integer_part
    elif _WESTERN_GROUPING.fullmatch(integer_part) or _INDIAN_GROUPING.fullmatch(integer_part):
        integer_digits = "".join(c for c in integer_part if c.isdigit())
    else:
        raise _amount_error(
            f"{value!r} is not a plain amount: use digits, one '.' as decimal point, and optionally "
            "',' '_' \"'\" or spaces to group digits in threes (or Indian lakh grouping)"
        )
    return _to_minor(integer_digits, fraction_part, exponent, currency)


def _parse_amount_decimal(value: Decimal, exponent: int, currency: str) -> MinorUnits:
    if not value.is_finite():
        raise _amount_error(f"{value} is not a finite number")
    if value.is_signed() and value:
        raise _amount_error("must be greater than zero")
    decimal_tuple = value.as_tuple()
    assert isinstance(decimal_tuple.exponent, int)  # finite, checked above
    digits = "".join(map(str, decimal_tuple.digits)).lstrip("0")
    coefficient = digits.rstrip("0")
    if not coefficient:
        raise _amount_error("must be greater than zero")
    # value == coefficient * 10**(exponent of the decimal + trailing zeros); shift to minor units.
    shift = decimal_tuple.exponent + (len(digits) - len(coefficient)) + exponent
    if shift < 0:
        raise _amount_error(f"{currency} has {exponent} decimal place(s); the amount has more and is never rounded")
    if len(coefficient) + shift > _MAX_DIGITS:
        raise _amount_error("exceeds the registry's maximum face value")
    return _check_minor(int(coefficient) * 10**shift)


def parse_amount(value: str | int | Decimal, currency: str) -> MinorUnits:
    """Return the face value in integer minor units of ``currency``.

    ``int`` means minor units already (fen, cents); ``str`` and ``Decimal`` mean major units and
    are converted exactly (rules in the module docstring).  Floats are always rejected.
    """
    code = normalize_currency(currency)
    exponent = CURRENCY_EXPONENTS[code]
    if isinstance(value, (bool, float)):
        raise _amount_error(
            f"{type(value).__name__} is not accepted; pass text or Decimal (major units) or int (minor units)"
        )
    if isinstance(value, int):
        return _check_minor(value)
    if isinstance(value, Decimal):
        return _parse_amount_decimal(value, exponent, code)
    if isinstance(value, str):
        return _parse_amount_text(value, exponent, code)
    raise _amount_error(f"{type(value).__name__} is not accepted; pass text, Decimal or int")


def format_amount(minor: int, currency: str) -> str:
    """Return ``minor`` units as a plain major-unit string: 185060000 CNY -> "1850600.00"."""
    exponent = CURRENCY_EXPONENTS[normalize_currency(currency)]
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise _amount_error(f"minor units must be an int, not {type(minor).__name__}")
    sign = "-" if minor < 0 else ""
    if exponent == 0:
        return f"{sign}{abs(minor)}"
    major, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{major}.{fraction:0{exponent}d}"


# ---------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------

_DATE_PATTERNS: Final = (
    re.compile(r"(?P<y>[0-9]{4})(?P<sep>[-/])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})"),
    re.compile(r"(?P<y>[0-9]{4})年(?P<m>[0-9]{1,2})月(?P<d>[0-9]{1,2})日"),
)
_EPOCH: Final = datetime.date(1970, 1, 1)


def _check_unix_time(seconds: int, field: str) -> UnixTime:
    if not 0 < seconds <= UINT32_MAX:
        raise InvalidInvoice(field, f"{seconds} is outside the contract's range (0 < seconds < 2**32)")
    return UnixTime(seconds)


def parse_date(value: str | datetime.date | int, field: str = "date") -> UnixTime:
    """Return midnight UTC of the given day as Unix seconds; ``int`` is taken as seconds already."""
    if isinstance(value, (bool, datetime.datetime)):
        raise InvalidInvoice(field, f"{type(value).__name__} is not accepted; pass a date, text or int")
    if isinstance(value, int):
        return _check_unix_time(value, field)
    if isinstance(value, datetime.date):
        return _check_unix_time((value - _EPOCH).days * 86_400, field)
    if not isinstance(value, str):
        raise InvalidInvoice(field, f"{type(value).__name__} is not accepted; pass a date, text or int")
    text = unicodedata.normalize("NFKC", value).strip()
    for pattern in _DATE_PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            try:
                day = datetime.date(int(match["y"]), int(match["m"]), int(match["d"]))
            except ValueError as exc:
                raise InvalidInvoice(field, f"{value!r} is not a calendar date ({exc})") from None
            return _check_unix_time((day - _EPOCH).days * 86_400, field)
    raise InvalidInvoice(field, f"{value!r} is not a date; use YYYY-MM-DD, YYYY/MM/DD or YYYY年MM月DD日")


def _is_compact_day(digits: str) -> bool:
    try:
        datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return False
    return True


def parse_day_bound(value: str, field: str = "date", *, upper: bool = False) -> UnixTime:
    """A bound of a date range in a filter, inclusive: Unix seconds written as digits (``0`` allowed: a
    filter's bound, not a contract value), or a day as :func:`parse_date` reads it, which as the
    ``upper`` bound means its last second (a due date need not be midnight)."""
    text = unicodedata.normalize("NFKC", value).strip()
    if text.isascii() and text.isdigit():
        if len(text) == 8 and _is_compact_day(text):
            raise InvalidInvoice(field, f"{value!r} is ambiguous: write the day as {text[:4]}-{text[4:6]}-{text[6:]}")
        seconds = int(text) if len(text) <= 10 else UINT32_MAX + 1
        if seconds > UINT32_MAX:
            raise InvalidInvoice(field, f"{value!r} is past the contract's range (seconds < 2**32)")
        return UnixTime(seconds)
    start = parse_date(text, field=field)
    return UnixTime(min(start + 86_399, UINT32_MAX)) if upper else start


# ---------------------------------------------------------------------------------------------
# Derivations mirroring the contract
# ---------------------------------------------------------------------------------------------

INVOICE_KEY_TYPEHASH: Final = keccak(text="InvoiceKey(uint24 debtor,bytes32 invoiceNumberHash)")
FINGERPRINT_TYPEHASH: Final = keccak(
    text=(
        "ReceivableFingerprint(uint24 debtor,bytes32 invoiceNumberHash,bytes3 currency,"
        "uint64 faceValue,uint32 issueDate,uint32 dueDate)"
    )
)


def _check_uint(value: int, bits: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise InvalidInvoice(field, f"{value!r} is not a uint{bits}")
    return value


def _check_bytes32(value: bytes, field: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidInvoice(field, "must be exactly 32 bytes")
    return value


def invoice_key(debtor: int, number_hash: bytes) -> bytes:
    """Return the duplicate key: keccak256(abi.encode(INVOICE_KEY_TYPEHASH, debtor, number_hash))."""
    return keccak(
        encode(
            ["bytes32", "uint24", "bytes32"],
            [
                INVOICE_KEY_TYPEHASH,
                _check_uint(debtor, 24, "debtor"),
                _check_bytes32(number_hash, "number_hash"),
            ],
        )
    )


def fingerprint(
    debtor: int,
    number_hash: bytes,
    currency_code: str,
    face_value_minor: int,
    issue_date: int,
    due_date: int,
) -> bytes:
    """Return keccak256(abi.encode(FINGERPRINT_TYPEHASH, debtor, number_hash, currency, face value, dates))."""
    return keccak(
        encode(
            ["bytes32", "uint24", "bytes32", "bytes3", "uint64", "uint32", "uint32"],
            [
                FINGERPRINT_TYPEHASH,
                _check_uint(debtor, 24, "debtor"),
                _check_bytes32(number_hash, "number_hash"),
                currency_bytes(currency_code),
                _check_uint(face_value_minor, 64, "face_value"),
                _check_uint(issue_date, 32, "issue_date"),
                _check_uint(due_date, 32, "due_date"),
            ],
        )
    )


# ---------------------------------------------------------------------------------------------
# The invoice
# ---------------------------------------------------------------------------------------------

RegistrationInput = tuple[int, bytes, bytes, int, int, int, bytes]
"""The Solidity ``RegistrationInput`` struct as a tuple, in field order:
(debtor, invoiceNumberHash, currency, faceValue, issueDate, dueDate, documentHash)."""

_HEX32: Final = re.compile(r"0[xX][0-9a-fA-F]{64}")


def _check_debtor(debtor: object) -> None:
    if isinstance(debtor, bool) or not isinstance(debtor, int) or not 0 < debtor <= UINT24_MAX:
        raise InvalidInvoice("debtor", f"{debtor!r} is not a participant id (0 < id < 2**24)")


def _parse_document_hash(value: bytes | str | None) -> bytes:
    if value is None:
        return ZERO_HASH
    if isinstance(value, str):
        if not _HEX32.fullmatch(value):
            raise InvalidInvoice("document_hash", "must be 32 bytes or a 0x-prefixed hex string of 32 bytes")
        return bytes.fromhex(value[2:])
    if isinstance(value, bytearray):
        value = bytes(value)
    return _check_bytes32(value, "document_hash")


@dataclass(frozen=True, slots=True)
class Invoice:
    """A validated invoice; construction checks that every field is canonical and in range."""

    debtor: EntityId
    invoice_number: str
    """The invoice number as given (kept for display; the chain sees only ``number_hash``)."""
    number_hash: bytes
    currency: str
    face_value: MinorUnits
    issue_date: UnixTime
    due_date: UnixTime
    document_hash: bytes = ZERO_HASH

    def __post_init__(self) -> None:
        _check_debtor(self.debtor)
        if self.number_hash != invoice_number_hash(self.invoice_number):
            raise InvalidInvoice("number_hash", "does not match the invoice number")
        if normalize_currency(self.currency) != self.currency:
            raise InvalidInvoice("currency", f"{self.currency!r} is not normalised")
        _check_minor(_check_uint(self.face_value, 256, "face_value"))
        _check_unix_time(_check_uint(self.issue_date, 256, "issue_date"), "issue_date")
        _check_unix_time(_check_uint(self.due_date, 256, "due_date"), "due_date")
        if self.due_date <= self.issue_date:
            raise InvalidInvoice("due_date", "must be after the issue date")
        _check_bytes32(self.document_hash, "document_hash")

    @classmethod
    def parse(
        cls,
        *,
        debtor: int,
        invoice_number: str,
        face_value: str | int | Decimal,
        currency: str,
        issue_date: str | datetime.date | int,
        due_date: str | datetime.date | int,
        document_hash: bytes | str | None = None,
    ) -> Invoice:
        """Validate and normalise raw fields; ``face_value`` as in :func:`parse_amount`. Refuses with one
        :class:`InvalidInvoice` naming every bad field (its ``problems``)."""
        try:
            code = normalize_currency(currency)
            return cls(
                debtor=EntityId(debtor),
                invoice_number=invoice_number,
                number_hash=invoice_number_hash(invoice_number),
                currency=code,
                face_value=parse_amount(face_value, code),
                issue_date=parse_date(issue_date, field="issue_date"),
                due_date=parse_date(due_date, field="due_date"),
                document_hash=_parse_document_hash(document_hash),
            )
        except InvalidInvoice as first:
            # Off the hot path: each field again on its own, so that one answer names them all.
            found: list[tuple[str, str]] = []

            def attempt(parse_field: Callable[[], object]) -> object:
                try:
                    return parse_field()
                except InvalidInvoice as problem:
                    found.extend(problem.problems)
                    return None

            attempt(lambda: _check_debtor(debtor))
            attempt(lambda: invoice_number_hash(invoice_number))
            normalized = attempt(lambda: normalize_currency(currency))
            if isinstance(normalized, str):
                attempt(lambda: parse_amount(face_value, normalized))
            issue = attempt(lambda: parse_date(issue_date, field="issue_date"))
            due = attempt(lambda: parse_date(due_date, field="due_date"))
            if isinstance(issue, int) and isinstance(due, int) and due <= issue:
                found.append(("due_date", "must be after the issue date"))
            attempt(lambda: _parse_document_hash(document_hash))
            raise InvalidInvoice.of(found or first.problems) from None

    @property
    def normalized_number(self) -> str:
        """The canonical invoice number whose hash is ``number_hash``."""
        return normalize_invoice_number(self.invoice_number)

    @property
    def key(self) -> bytes:
        """The duplicate key (debtor, invoice number): equal for any amount, dates or creditor."""
        return invoice_key(self.debtor, self.number_hash)

    @property
    def fingerprint(self) -> bytes:
        """The fingerprint of every economic field, as the contract computes it."""
        return fingerprint(
            self.debtor, self.number_hash, self.currency, self.face_value, self.issue_date, self.due_date
        )

    def as_contract_input(self) -> RegistrationInput:
        """Return the Solidity ``RegistrationInput`` tuple for this invoice."""
        return (
            self.debtor,
            self.number_hash,
            currency_bytes(self.currency),
            self.face_value,
            self.issue_date,
            self.due_date,
            self.document_hash,
        )
