"""The similar invoice numbers of registry.checks.number_variants, against the rules as first written."""

from __future__ import annotations

import unicodedata
from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.checks import MAX_VARIANTS, OCR_CONFUSIONS, number_variants

DIGITS = "0123456789"


def _reference_variants(s: str, digit_substitutions: bool) -> list[str]:
    """number_variants as first written: one pass per kind of variant (the order is part of the result)."""
    n = len(s)
    seen: dict[str, None] = {}
    for i in range(n):
        char = s[i]
        seen[s[:i] + s[i + 1 :]] = None
        if i + 1 < n and char != s[i + 1]:
            seen[s[:i] + s[i + 1] + char + s[i + 2 :]] = None
        confused = OCR_CONFUSIONS.get(char)
        if confused is not None:
            seen[s[:i] + confused + s[i + 1 :]] = None
        seen[s[:i] + char + s[i:]] = None
        if char in DIGITS:
            seen[s[:i] + "0" + s[i:]] = None
            if digit_substitutions:
                for digit in DIGITS:
                    if digit != char:
                        seen[s[:i] + digit + s[i + 1 :]] = None
    i = 0
    while i < n:
        if s[i] in DIGITS:
            j = i
            while j < n and s[j] in DIGITS:
                j += 1
            seen[s[:i] + "00" + s[i:]] = None
            if j - i > 2 and s[i : i + 2] == "00":
                seen[s[:i] + s[i + 2 :]] = None
            i = j
        else:
            i += 1
    confusable = [i for i in range(n) if s[i] in OCR_CONFUSIONS]
    for i, j in combinations(confusable, 2):
        seen[s[:i] + OCR_CONFUSIONS[s[i]] + s[i + 1 : j] + OCR_CONFUSIONS[s[j]] + s[j + 1 :]] = None
    seen.pop(s, None)
    seen.pop("", None)
    out = list(seen)[:MAX_VARIANTS]
    if not s.isascii():
        out = list(dict.fromkeys(unicodedata.normalize("NFKC", v) for v in out if v != s))
    return out


NUMBERS = st.one_of(
    st.text(alphabet="ABINOSXZ0123456789", max_size=24),
    st.text(alphabet="ABIOS0158发票Éー\u0301〇", max_size=16),
    st.text(alphabet="0O1I", min_size=30, max_size=64),  # past MAX_VARIANTS
)


@given(NUMBERS, st.booleans())
def test_variants_are_those_of_the_rules_as_first_written_in_the_same_order(number: str, digits: bool) -> None:
    assert number_variants(number, digit_substitutions=digits) == _reference_variants(number, digits)


@pytest.mark.parametrize("number", ["INV2024815", "INV001", "BENCH2026000123", "0" * 64, "A", "00", "OISB0158"])
def test_variants_of_known_numbers_are_those_of_the_rules_as_first_written(number: str) -> None:
    for digits in (False, True):
        assert number_variants(number, digit_substitutions=digits) == _reference_variants(number, digits)
