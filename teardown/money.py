"""Exact money: integer minor units, ISO 4217 exponents and decimal strings.

Every amount in the teardown code is an ``int`` in the currency's minor unit (cents for
USD, yen for JPY, fils for KWD). Decimal text is parsed into minor units and produced
from them by integer arithmetic only, never through ``float``.

The amount grammar, shared by the scalar parser here and the vectorised parser in
``teardown.csvinput``, for a declared decimal separator D and optional thousands
separator T:

* an optional leading ``-``, then the integer part, then optionally D and one or more
  fractional digits;
* the integer part is plain digits, or, when T is declared, a group of 1 to 3 digits
  that does not start with 0, followed by groups of exactly 3 digits, each after T;
* at most as many fractional digits as the currency's exponent, so ``12.345`` USD,
  ``1.5`` JPY and ``100.0`` JPY are all rejected;
* at most 15 digits in minor units (leading zeros aside), so that one value stays far
  inside a signed 64-bit integer. Totals are summed as Python or 128-bit integers.

A value is ambiguous, and rejected, when it contains the separator of the other
convention (``,`` when D is ``.``, ``.`` when D is ``,``) and T is not declared, or
when T is declared but the digits between separators are not groups of three. So
``1,234`` is rejected by the default format (it could be 1234 or 1.234) and ``1.23``
is rejected by the ``eu`` format, while ``1.234`` in the ``eu`` format is 1234.
"""

from __future__ import annotations

import re
from functools import cache

from iso4217 import Currency

MAX_MINOR_DIGITS = 15
THOUSANDS_SEPARATORS = (",", ".", " ", "'", "\u00a0", "\u202f")
DECIMAL_SEPARATORS = (".", ",")


class AmountError(ValueError):
    """An amount or currency that cannot be read exactly. The message gives the reason and fix."""


@cache
def exponent(currency: str) -> int:
    """Return the number of minor-unit digits of an ISO 4217 code (2 for USD, 0 for JPY).

    Raises AmountError for an unknown code or one without a minor unit (XAU, XXX).
    """
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise AmountError(f"currency {currency!r} is not an ISO 4217 code such as EUR or USD")
    try:
        digits = Currency(currency).exponent
    except ValueError:
        raise AmountError(
            f"currency {currency!r} is not an ISO 4217 code such as EUR or USD"
        ) from None
    if digits is None:
        raise AmountError(f"currency {currency} has no minor unit, so it cannot be a payment")
    return digits


def format_minor(minor: int, currency: str) -> str:
    """Format minor units as a decimal string: 1234 USD -> "12.34", -5 KWD -> "-0.005"."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units must be an int, got {type(minor).__name__}")
    digits = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**digits)
    if digits == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{digits}d}"


def other_separator(decimal: str) -> str:
    """Return the decimal separator of the other convention: "," for "." and "." for ","."""
    return "," if decimal == "." else "."


def amount_pattern(decimal: str, thousands: str | None) -> str:
    """Return the regular expression of a well-formed amount under the declared separators.

    The pattern is valid both for Python's ``re`` and for RE2, which pyarrow uses. It does
    not check the number of fractional digits, which depends on the currency.
    """
    d = re.escape(decimal)
    integer = r"[0-9]+"
    if thousands is not None:
        t = re.escape(thousands)
        integer = rf"(?:[0-9]+|[1-9][0-9]{{0,2}}(?:{t}[0-9]{{3}})+)"
    return rf"^-?{integer}(?:{d}[0-9]+)?$"


def parse_amount(text: str, currency: str, decimal: str = ".", thousands: str | None = None) -> int:
    """Parse a decimal amount into minor units of ``currency``, by the module's grammar.

    Surrounding spaces are ignored. Raises AmountError naming the value and the fix.
    """
    digits = exponent(currency)
    value = text.strip(" ")
    if value == "":
        raise AmountError("amount is empty; write the amount, for example 12.50")
    if re.fullmatch(amount_pattern(decimal, thousands), value) is None:
        raise AmountError(_malformed_reason(value, decimal, thousands))
    unsigned = value.removeprefix("-")
    if thousands is not None:
        unsigned = unsigned.replace(thousands, "")
    whole, _, fraction = unsigned.partition(decimal)
    if len(fraction) > digits:
        raise AmountError(too_many_decimals(value, currency, len(fraction), digits))
    if len(whole.lstrip("0")) + digits > MAX_MINOR_DIGITS:
        raise AmountError(out_of_range(value))
    minor = int(whole) * 10**digits + int(fraction.ljust(digits, "0") or "0")
    return -minor if value.startswith("-") else minor


def too_many_decimals(value: str, currency: str, places: int, digits: int) -> str:
    """Return the message for an amount with more fractional digits than its currency has."""
    allowed = "none" if digits == 0 else str(digits)
    plural = "" if places == 1 else "s"
    return (
        f"amount {value!r} has {places} decimal place{plural} but {currency} allows {allowed}; "
        f"check the currency and the file's decimal separator"
    )


def out_of_range(value: str) -> str:
    """Return the message for an amount with more than MAX_MINOR_DIGITS digits in minor units."""
    return (
        f"amount {value!r} is out of range: it has more than {MAX_MINOR_DIGITS} digits "
        "in minor units"
    )


def _malformed_reason(value: str, decimal: str, thousands: str | None) -> str:
    other = other_separator(decimal)
    declared = f"decimal {decimal!r}, thousands " + (
        "not declared" if thousands is None else repr(thousands)
    )
    allowed = set("0123456789-") | {decimal} | ({thousands} if thousands else set())
    if thousands is None and other in value and set(value) <= allowed | {other}:
        return (
            f"amount {value!r} is ambiguous under the declared format ({declared}): "
            f"{other!r} could be a decimal or a thousands separator; declare thousands={other!r} "
            "in the file's CSV format or write the amount without separators"
        )
    if thousands is not None and thousands in value and set(value) <= allowed:
        return (
            f"amount {value!r} is ambiguous under the declared format ({declared}): "
            f"{thousands!r} must separate groups of three digits, as in "
            f"1{thousands}234{decimal}50"
        )
    return (
        f"amount {value!r} is not a decimal number under the declared format ({declared}); "
        f"write it as, for example, -1234{decimal}50"
    )
