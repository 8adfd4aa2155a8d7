"""Invoice normalisation, amounts, dates and the derivations that must equal the contract's."""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Callable
from decimal import Decimal

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import InvalidInvoice, RegistryError
from registry.invoice import (
    CURRENCY_EXPONENTS,
    FINGERPRINT_TYPEHASH,
    INVOICE_KEY_TYPEHASH,
    Invoice,
    currency_bytes,
    fingerprint,
    format_amount,
    invoice_key,
    invoice_number_hash,
    normalize_currency,
    normalize_invoice_number,
    parse_amount,
    parse_date,
    parse_day_bound,
)
from registry.types import MinorUnits

MAR_5_2024 = 1_709_596_800
JUN_5_2024 = 1_717_545_600

# ---------------------------------------------------------------------------------------------
# Invoice numbers
# ---------------------------------------------------------------------------------------------

SPELLINGS_OF_INV_001 = [
    "INV-001",
    "inv 001",
    "Inv_001",
    "INV.001",
    "ＩＮＶ－００１",
    "ＩＮＶ\u3000００１",
    " inv—001 ",
    "INV/001",
    "INV\\001",
    "#INV-001",
    "INV\u00a0001",
    "INV\u2009001",
    "INV\u2212001",
    "INV\u2011001",
    "INV–001",
    "INV\u200b001",
]


@pytest.mark.parametrize("raw", SPELLINGS_OF_INV_001)
def test_reformatted_invoice_numbers_normalise_to_the_same_text(raw: str) -> None:
    assert normalize_invoice_number(raw) == "INV001"


@pytest.mark.parametrize("raw", SPELLINGS_OF_INV_001)
def test_reformatted_invoice_numbers_hash_to_the_same_bytes(raw: str) -> None:
    assert invoice_number_hash(raw) == keccak(b"INV001")


def test_full_width_chinese_e_invoice_number_becomes_ascii() -> None:
    assert normalize_invoice_number("ＮＯ．０４４０３１９０００１１") == "NO044031900011"


def test_chinese_characters_are_kept_and_hashed_as_utf8() -> None:
    assert normalize_invoice_number("发票-00123") == "发票00123"
    assert invoice_number_hash("发票 00123") == keccak("发票00123".encode())


def test_katakana_long_vowel_mark_is_a_letter_not_a_dash() -> None:
    assert normalize_invoice_number("ナー1") == "ナー1"
    assert normalize_invoice_number("ナー1") != normalize_invoice_number("ナ1")


def test_numero_sign_becomes_letters_and_is_not_stripped() -> None:
    assert normalize_invoice_number("№ 001") == "NO001"
    assert normalize_invoice_number("№ 001") != normalize_invoice_number("001")


def test_leading_zeros_keep_invoice_numbers_distinct() -> None:
    assert normalize_invoice_number("INV-001") != normalize_invoice_number("INV-1")
    assert invoice_number_hash("INV-001") != invoice_number_hash("INV-1")


def test_case_variants_including_sharp_s_normalise_equal() -> None:
    assert normalize_invoice_number("straße-1") == normalize_invoice_number("STRASSE 1") == "STRASSE1"


@pytest.mark.parametrize("raw", ["", "   ", "-", "--//..", "#", "\u3000", "_._"])
def test_empty_or_separator_only_invoice_number_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        normalize_invoice_number(raw)
    assert excinfo.value.field == "invoice_number"


@pytest.mark.parametrize("raw", ["INV:001", "INV(001)", "INV,001", "INV+001", "½", "\u0301A"])
def test_invoice_number_with_other_punctuation_is_rejected_not_silently_dropped(raw: str) -> None:
    with pytest.raises(InvalidInvoice, match="invoice_number"):
        normalize_invoice_number(raw)


def test_invoice_number_of_64_characters_is_accepted_and_65_rejected() -> None:
    assert normalize_invoice_number("A" * 64) == "A" * 64
    assert normalize_invoice_number("-".join("A" * 64)) == "A" * 64  # separators do not count
    with pytest.raises(InvalidInvoice, match="65 characters"):
        normalize_invoice_number("A" * 65)


def test_invoice_number_must_be_text() -> None:
    with pytest.raises(InvalidInvoice, match="invoice_number"):
        normalize_invoice_number(1234)  # type: ignore[arg-type]


def test_invalid_invoice_is_a_registry_error_and_a_value_error() -> None:
    with pytest.raises(RegistryError):
        normalize_invoice_number("")
    with pytest.raises(ValueError):
        normalize_invoice_number("")


# ---------------------------------------------------------------------------------------------
# Currencies
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("CNY", 2), ("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("VND", 0), ("KWD", 3), ("BHD", 3)],
)
def test_currency_exponents_follow_iso_4217(code: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[code] == exponent


def test_every_currency_code_is_three_ascii_upper_case_letters() -> None:
    assert len(CURRENCY_EXPONENTS) > 30
    for code in CURRENCY_EXPONENTS:
        assert len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


@pytest.mark.parametrize("raw", ["cny", " CNY ", "Cny", "ＣＮＹ"])
def test_currency_codes_are_normalised(raw: str) -> None:
    assert normalize_currency(raw) == "CNY"
    assert currency_bytes(raw) == b"CNY"


@pytest.mark.parametrize("raw", ["", "RMB", "XYZ", "CN", "CNYY", "元"])
def test_unknown_currency_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        normalize_currency(raw)
    assert excinfo.value.field == "currency"


# ---------------------------------------------------------------------------------------------
# Amounts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1,850,600.00",
        "1850600",
        "1850600.00",
        "1 850 600.00",
        "1\u2009850\u2009600.00",
        "1\u00a0850\u00a0600.00",
        "1_850_600",
        "1'850'600.00",
        "１，８５０，６００．００",
        "18,50,600.00",
        "  1,850,600.0  ",
    ],
)
def test_reformatted_cny_amounts_parse_to_the_same_minor_units(text: str) -> None:
    assert parse_amount(text, "CNY") == 185_060_000


def test_decimal_is_major_units_and_int_is_minor_units() -> None:
    assert parse_amount(Decimal("1850600.00"), "CNY") == 185_060_000
    assert parse_amount(Decimal("1.8506E+6"), "CNY") == 185_060_000
    assert parse_amount(185_060_000, "CNY") == 185_060_000


def test_indian_lakh_grouping_is_accepted() -> None:
    assert parse_amount("1,00,000", "INR") == 10_000_000
    assert parse_amount("12,34,56,789.50", "INR") == 12_345_678_950


def test_jpy_has_no_minor_unit() -> None:
    assert parse_amount("1000", "JPY") == 1000
    assert parse_amount("1,000.000", "JPY") == 1000
    with pytest.raises(InvalidInvoice, match="never rounded"):
        parse_amount("1000.5", "JPY")


def test_kwd_has_three_decimal_places() -> None:
    assert parse_amount("1.234", "KWD") == 1234
    with pytest.raises(InvalidInvoice, match="never rounded"):
        parse_amount("1.2345", "KWD")


def test_extra_zero_decimals_are_accepted() -> None:
    assert parse_amount("100.000", "CNY") == 10_000
    assert parse_amount(Decimal("100.000000"), "CNY") == 10_000


@pytest.mark.parametrize("value", ["100.005", "100.001", Decimal("100.005"), Decimal("1E-999999999")])
def test_extra_non_zero_decimals_are_rejected_never_rounded(value: str | Decimal) -> None:
    with pytest.raises(InvalidInvoice, match="never rounded"):
        parse_amount(value, "CNY")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "-1",
        "+1",
        "\u22121",
        "0",
        "0.00",
        "000",
        "1e5",
        "1E5",
        "nan",
        "NaN",
        "inf",
        "Infinity",
        "1,85",
        "1,8500",
        "1,850 600",
        "1.850.600,00",
        "1850600,00",
        "1.",
        ".5",
        "1..0",
        "1,850.600.00",
        "12 34",
        "abc",
        "١٢٣",
        "0x10",
        0,
        -5,
        Decimal(0),
        Decimal("-0"),
        Decimal(-1),
        Decimal("NaN"),
        Decimal("Infinity"),
    ],
)
def test_malformed_signed_zero_or_non_finite_amounts_are_rejected(value: str | int | Decimal) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        parse_amount(value, "CNY")
    assert excinfo.value.field == "face_value"


@pytest.mark.parametrize("value", [1.5, 100.0, float("nan"), True])
def test_floats_and_bools_are_never_accepted(value: object) -> None:
    with pytest.raises(InvalidInvoice, match="not accepted"):
        parse_amount(value, "CNY")  # type: ignore[arg-type]


def test_largest_mirrorable_amount_is_accepted_and_one_more_rejected() -> None:
    assert parse_amount("92233720368547758.07", "CNY") == 2**63 - 1
    assert parse_amount(2**63 - 1, "CNY") == 2**63 - 1
    too_big_values: list[str | int | Decimal] = [
        "184467440737095516.16",
        "1" + "0" * 30,
        "9" * 5000,
        2**63,
        Decimal("1E+999999999"),
    ]
    for too_big in too_big_values:
        with pytest.raises(InvalidInvoice, match="maximum face value"):
            parse_amount(too_big, "CNY")


def test_amount_with_unknown_currency_is_a_currency_error() -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        parse_amount("100", "RMB")
    assert excinfo.value.field == "currency"


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(185_060_000, "CNY", "1850600.00"), (5, "CNY", "0.05"), (1000, "JPY", "1000"), (1234, "KWD", "1.234")],
)
def test_format_amount_writes_plain_major_units(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text
    assert parse_amount(text, currency) == minor


currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
uint64_amounts = st.integers(min_value=1, max_value=2**63 - 1)


@given(minor=uint64_amounts, currency=currencies)
def test_format_then_parse_round_trips(minor: int, currency: str) -> None:
    text = format_amount(minor, currency)
    assert parse_amount(text, currency) == minor
    assert parse_amount(Decimal(text), currency) == minor


@given(minor=uint64_amounts, currency=currencies, separator=st.sampled_from([",", "_", "'", " ", "\u2009"]))
def test_grouping_thousands_does_not_change_the_amount(minor: int, currency: str, separator: str) -> None:
    major, point, fraction = format_amount(minor, currency).partition(".")
    grouped = f"{int(major):,}".replace(",", separator) + point + fraction
    assert parse_amount(grouped, currency) == minor


@given(value=st.text(), currency=currencies)
def test_parse_amount_raises_nothing_but_invalid_invoice_on_arbitrary_text(value: str, currency: str) -> None:
    try:
        result = parse_amount(value, currency)
    except InvalidInvoice:
        return
    assert 0 < result < 2**64


@given(value=st.from_regex(r"[0-9,._' +\-eE]{0,30}", fullmatch=True), currency=currencies)
def test_parse_amount_raises_nothing_but_invalid_invoice_on_number_like_text(value: str, currency: str) -> None:
    try:
        result = parse_amount(value, currency)
    except InvalidInvoice:
        return
    assert 0 < result < 2**64


# ---------------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-05",
        "2024/03/05",
        "2024/3/5",
        "2024年03月05日",
        "2024年3月5日",
        "２０２４－０３－０５",
        "２０２４年３月５日",
        " 2024-03-05 ",
        datetime.date(2024, 3, 5),
        MAR_5_2024,
    ],
)
def test_dates_parse_to_midnight_utc(value: str | datetime.date | int) -> None:
    assert parse_date(value) == MAR_5_2024


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2024-02-30",
        "2024-13-01",
        "05/03/2024",
        "2024-03/05",
        "20240305",
        "1970-01-01",
        "2106-02-08",
        0,
        -1,
        2**32,
        True,
        datetime.datetime(2024, 3, 5, tzinfo=datetime.UTC),
    ],
)
def test_bad_or_out_of_range_dates_are_rejected_with_the_given_field(
    value: str | datetime.date | int,
) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        parse_date(value, field="due_date")
    assert excinfo.value.field == "due_date"


@pytest.mark.parametrize(
    ("value", "upper", "expected"),
    [
        ("2024-03-05", False, MAR_5_2024),
        ("2024-03-05", True, MAR_5_2024 + 86_399),
        ("２０２４年３月５日", True, MAR_5_2024 + 86_399),
        (str(MAR_5_2024 + 7), True, MAR_5_2024 + 7),
        ("0", False, 0),
        (str(2**32 - 1), True, 2**32 - 1),
        ("2106-02-07", True, 2**32 - 1),
    ],
)
def test_a_filters_day_bound_is_a_day_or_seconds_and_an_upper_day_takes_all_of_it(
    value: str, upper: bool, expected: int
) -> None:
    assert parse_day_bound(value, "due_to", upper=upper) == expected


@pytest.mark.parametrize("value", ["", "tomorrow", "2024-02-30", str(2**32), "9" * 30, "20240305", "-1", "1.5"])
def test_an_unreadable_or_ambiguous_day_bound_is_refused_naming_it(value: str) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        parse_day_bound(value, "due_from")
    assert excinfo.value.field == "due_from"


# ---------------------------------------------------------------------------------------------
# Derivations
# ---------------------------------------------------------------------------------------------

NUMBER_HASH = invoice_number_hash("INV-001")


def test_typehashes_are_keccak_of_the_solidity_type_strings() -> None:
    assert INVOICE_KEY_TYPEHASH.hex() == "cc07dd2c8a4c22e03f4f10341190f21f7b080b5fa1776c18e9fdf4050cc66717"
    assert FINGERPRINT_TYPEHASH.hex() == "859414c6fcd10814c96a8ce9a74a004374e91177c79517edd29cebd9f5bd63bd"


def test_invoice_key_equals_abi_encoding_of_typehash_debtor_and_number_hash() -> None:
    expected = keccak(
        encode(
            ["bytes32", "uint24", "bytes32"],
            [keccak(text="InvoiceKey(uint24 debtor,bytes32 invoiceNumberHash)"), 7, keccak(b"INV001")],
        )
    )
    assert invoice_key(7, NUMBER_HASH) == expected
    assert expected.hex() == "72195bddcb69d92b3158accd5a75875a74598e28034b88ebd4004ac77293a011"


def test_fingerprint_equals_abi_encoding_of_all_fields() -> None:
    typehash = keccak(
        text="ReceivableFingerprint(uint24 debtor,bytes32 invoiceNumberHash,bytes3 currency,"
        "uint64 faceValue,uint32 issueDate,uint32 dueDate)"
    )
    # abi.encode by hand: every static field is one 32-byte word; bytes3 is left-aligned.
    words = [
        typehash,
        (7).to_bytes(32, "big"),
        keccak(b"INV001"),
        b"CNY".ljust(32, b"\0"),
        (185_060_000).to_bytes(32, "big"),
        MAR_5_2024.to_bytes(32, "big"),
        JUN_5_2024.to_bytes(32, "big"),
    ]
    expected = keccak(b"".join(words))
    assert expected == keccak(
        encode(
            ["bytes32", "uint24", "bytes32", "bytes3", "uint64", "uint32", "uint32"],
            [typehash, 7, keccak(b"INV001"), b"CNY", 185_060_000, MAR_5_2024, JUN_5_2024],
        )
    )
    assert fingerprint(7, NUMBER_HASH, "CNY", 185_060_000, MAR_5_2024, JUN_5_2024) == expected
    assert expected.hex() == "87d27349f466728c5c9c0e9e643c718908de654c44115d629d38109352e116fb"


BASE_FIELDS: dict[str, str | int] = {
    "debtor": 7,
    "invoice_number": "INV-001",
    "face_value": "1,850,600.00",
    "currency": "CNY",
    "issue_date": "2024-03-05",
    "due_date": "2024-06-05",
}


def _invoice(**changes: str | int) -> Invoice:
    return Invoice.parse(**{**BASE_FIELDS, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"face_value": "1,850,600.01"},
        {"currency": "USD"},
        {"issue_date": "2024-03-04"},
        {"due_date": "2024-06-06"},
    ],
)
def test_key_ignores_amount_currency_and_dates_but_fingerprint_changes(change: dict[str, str]) -> None:
    base, changed = _invoice(), _invoice(**change)
    assert changed.key == base.key
    assert changed.fingerprint != base.fingerprint


@pytest.mark.parametrize("change", [{"debtor": 8}, {"invoice_number": "INV-002"}])
def test_key_and_fingerprint_change_with_debtor_and_invoice_number(change: dict[str, str | int]) -> None:
    base, changed = _invoice(), _invoice(**change)
    assert changed.key != base.key
    assert changed.fingerprint != base.fingerprint


def test_reformatted_invoice_has_the_same_key_and_fingerprint() -> None:
    reformatted = _invoice(invoice_number="ｉｎｖ　００１", face_value="１８,５０,６００", currency="cny")
    assert reformatted.key == _invoice().key
    assert reformatted.fingerprint == _invoice().fingerprint


def test_derivations_reject_out_of_range_fields() -> None:
    with pytest.raises(InvalidInvoice, match="debtor"):
        invoice_key(2**24, NUMBER_HASH)
    with pytest.raises(InvalidInvoice, match="number_hash"):
        invoice_key(7, b"short")
    with pytest.raises(InvalidInvoice, match="face_value"):
        fingerprint(7, NUMBER_HASH, "CNY", 2**64, MAR_5_2024, JUN_5_2024)


# ---------------------------------------------------------------------------------------------
# Invoice
# ---------------------------------------------------------------------------------------------


def test_parsed_invoice_keeps_raw_number_and_normalised_fields() -> None:
    invoice = _invoice(invoice_number="inv 001", currency=" cny ")
    assert invoice.invoice_number == "inv 001"
    assert invoice.number_hash == keccak(b"INV001")
    assert invoice.currency == "CNY"
    assert invoice.face_value == 185_060_000
    assert (invoice.issue_date, invoice.due_date) == (MAR_5_2024, JUN_5_2024)
    assert invoice.document_hash == bytes(32)


def test_contract_input_follows_the_registration_input_struct_order() -> None:
    invoice = _invoice(document_hash="0x" + "ab" * 32)
    assert invoice.as_contract_input() == (
        7,
        keccak(b"INV001"),
        b"CNY",
        185_060_000,
        MAR_5_2024,
        JUN_5_2024,
        b"\xab" * 32,
    )
    encode(
        ["(uint24,bytes32,bytes3,uint64,uint32,uint32,bytes32)"], [invoice.as_contract_input()]
    )  # encodable as the Solidity tuple


def test_document_hash_may_be_given_as_bytes() -> None:
    assert Invoice.parse(**BASE_FIELDS, document_hash=b"\x01" * 32).document_hash == b"\x01" * 32  # type: ignore[arg-type]


@pytest.mark.parametrize("document_hash", ["ab" * 32, "0x" + "ab" * 31, "0x" + "zz" * 32, b"\x01" * 31])
def test_malformed_document_hash_is_rejected(document_hash: str | bytes) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        Invoice.parse(**BASE_FIELDS, document_hash=document_hash)  # type: ignore[arg-type]
    assert excinfo.value.field == "document_hash"


@pytest.mark.parametrize("debtor", [0, -1, 2**24, True, "7"])
def test_debtor_must_be_a_positive_uint24(debtor: object) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        _invoice(debtor=debtor)  # type: ignore[arg-type]
    assert excinfo.value.field == "debtor"


@pytest.mark.parametrize("due_date", ["2024-03-05", "2024-03-04"])
def test_due_date_must_be_after_issue_date(due_date: str) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        _invoice(due_date=due_date)
    assert excinfo.value.field == "due_date"


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"face_value": "1.001"}, ["face_value"]),
        (
            {"debtor": 0, "invoice_number": "", "currency": "XX", "issue_date": "2024-13-01"},
            ["debtor", "invoice_number", "currency", "issue_date"],
        ),
        (
            {"face_value": "-5", "due_date": "2024-02-30", "document_hash": "0x12"},
            ["face_value", "due_date", "document_hash"],
        ),
        ({"debtor": "x", "issue_date": "2024-07-01"}, ["debtor", "due_date"]),
        (
            {"invoice_number": "a:b", "face_value": "1.001", "due_date": "2024-03-05"},
            ["invoice_number", "face_value", "due_date"],
        ),
    ],
)
def test_one_error_names_every_bad_field_in_order_the_first_as_field(
    changes: dict[str, str | int], fields: list[str]
) -> None:
    with pytest.raises(InvalidInvoice) as excinfo:
        _invoice(**changes)
    error = excinfo.value
    assert [field for field, _ in error.problems] == fields
    assert (error.field, error.message) == error.problems[0]
    assert str(error) == "; ".join(f"{field}: {message}" for field, message in error.problems)


def test_invoice_is_immutable_and_checks_its_fields_when_built_directly() -> None:
    invoice = _invoice()
    with pytest.raises(AttributeError):
        invoice.face_value = MinorUnits(1)  # type: ignore[misc]
    with pytest.raises(InvalidInvoice, match="number_hash"):
        Invoice(
            debtor=invoice.debtor,
            invoice_number="INV-002",
            number_hash=invoice.number_hash,
            currency=invoice.currency,
            face_value=invoice.face_value,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
        )


# ---------------------------------------------------------------------------------------------
# Normalisation properties
# ---------------------------------------------------------------------------------------------

ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789发票号码增值税"
SEPARATORS = " \u3000\u00a0\u2009-‐‑‒–—\u2212_./\\#\u200b"


@given(st.text())
def test_normalisation_is_idempotent(raw: str) -> None:
    try:
        once = normalize_invoice_number(raw)
    except InvalidInvoice:
        return
    assert normalize_invoice_number(once) == once


@given(st.text())
def test_normalise_raises_nothing_but_invalid_invoice_and_yields_at_most_64_characters(raw: str) -> None:
    try:
        normalised = normalize_invoice_number(raw)
    except InvalidInvoice:
        return
    assert 0 < len(normalised) <= 64


@given(
    number=st.text(alphabet=ALPHANUMERIC, min_size=1, max_size=64),
    insertions=st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(SEPARATORS)), max_size=10),
)
def test_inserting_separators_does_not_change_the_normalised_number(
    number: str, insertions: list[tuple[int, str]]
) -> None:
    spelled = number
    for position, separator in insertions:
        index = position % (len(spelled) + 1)
        spelled = spelled[:index] + separator + spelled[index:]
    assert normalize_invoice_number(spelled) == normalize_invoice_number(number) == number.upper()


# The rules as first written, character by character: the reference the faster normalisation (an ASCII
# path by str.translate) must agree with, result and refusal alike.
_REFERENCE_SEPARATORS = frozenset("\u2212.\u3002\u00b7\u30fb/\\#\u00ad\u200b\u2060\ufeff")


def _reference_normalize(raw: str) -> str:
    def separator(char: str) -> bool:
        return char.isspace() or char in _REFERENCE_SEPARATORS or unicodedata.category(char) in ("Pd", "Pc")

    text = unicodedata.normalize("NFKC", raw).casefold().upper()
    text = unicodedata.normalize("NFKC", "".join(c for c in text if not separator(c)))
    if not text:
        raise InvalidInvoice("invoice_number", "is empty once spaces and separators are removed")
    if len(text) > 64:
        raise InvalidInvoice("invoice_number", f"is {len(text)} characters long once normalised; at most 64 allowed")
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category in ("Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl") or (category[0] == "M" and position > 0):
            continue
        raise InvalidInvoice(
            "invoice_number",
            f"contains {char!r} (U+{ord(char):04X}), which is neither a letter, a digit nor a separator",
        )
    return text


def _outcome(normalise: Callable[[str], str], raw: str) -> tuple[str, str]:
    try:
        return ("ok", normalise(raw))
    except InvalidInvoice as exc:
        return (exc.field, exc.message)


ASCII_NUMBERS = st.text(alphabet=st.characters(max_codepoint=127), max_size=80)
TYPED_NUMBERS = st.text(alphabet=ALPHANUMERIC + SEPARATORS + ":(ß№ＩＮＶ－０１\u0301", max_size=80)
LONG_NUMBERS = st.text(alphabet=ALPHANUMERIC[:62] + "-", min_size=60, max_size=70)  # around the 64 limit


@given(st.one_of(st.text(max_size=80), ASCII_NUMBERS, TYPED_NUMBERS, LONG_NUMBERS))
def test_normalisation_agrees_with_the_character_by_character_rules(raw: str) -> None:
    assert _outcome(normalize_invoice_number, raw) == _outcome(_reference_normalize, raw)


@pytest.mark.parametrize(
    "raw",
    [*SPELLINGS_OF_INV_001, "a" * 64, "a" * 65, "-" * 70 + "a", "", " ", "INV:1", "inv\x1f001", "ß", "№1", "e\u0301"],
)
def test_normalisation_agrees_with_the_character_by_character_rules_on_known_cases(raw: str) -> None:
    assert _outcome(normalize_invoice_number, raw) == _outcome(_reference_normalize, raw)
