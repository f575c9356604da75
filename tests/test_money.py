"""Exact minor-unit parsing and formatting in teardown.money."""

from __future__ import annotations

import pytest

from teardown.money import AmountError, exponent, format_minor, parse_amount


def test_exponent_of_common_currencies():
    assert exponent("USD") == 2
    assert exponent("JPY") == 0
    assert exponent("KWD") == 3
    assert exponent("CLF") == 4


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ABC", "currency 'ABC' is not an ISO 4217 code such as EUR or USD"),
        ("usd", "currency 'usd' is not an ISO 4217 code such as EUR or USD"),
        ("XAU", "currency XAU has no minor unit, so it cannot be a payment"),
    ],
)
def test_exponent_rejects_unusable_codes(code, message):
    with pytest.raises(AmountError) as error:
        exponent(code)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1234, "USD", "12.34"),
        (-1234, "USD", "-12.34"),
        (5, "USD", "0.05"),
        (-5, "KWD", "-0.005"),
        (1234, "KWD", "1.234"),
        (1500, "JPY", "1500"),
        (-100, "JPY", "-100"),
        (0, "USD", "0.00"),
        (999_999_999_999_999, "USD", "9999999999999.99"),
    ],
)
def test_format_minor(minor, currency, text):
    assert format_minor(minor, currency) == text


def test_format_minor_rejects_float():
    with pytest.raises(TypeError):
        format_minor(12.5, "USD")


@pytest.mark.parametrize(
    ("text", "currency", "decimal", "thousands", "minor"),
    [
        ("12.34", "USD", ".", None, 1234),
        ("12.5", "USD", ".", None, 1250),
        ("12", "USD", ".", None, 1200),
        ("-0.5", "KWD", ".", None, -500),
        ("1.234", "KWD", ".", None, 1234),
        ("1500", "JPY", ".", None, 1500),
        (" 7.00 ", "EUR", ".", None, 700),
        ("1,234.56", "USD", ".", ",", 123456),
        ("1.234,56", "EUR", ",", ".", 123456),
        ("1.234", "EUR", ",", ".", 123400),
        ("12,5", "EUR", ",", ".", 1250),
        ("1 234,50", "EUR", ",", " ", 123450),
        ("-1.000.000,00", "EUR", ",", ".", -100000000),
        ("999999999999999", "JPY", ".", None, 999_999_999_999_999),
    ],
)
def test_parse_amount_valid(text, currency, decimal, thousands, minor):
    assert parse_amount(text, currency, decimal, thousands) == minor


@pytest.mark.parametrize(
    ("text", "currency", "decimal", "thousands", "message"),
    [
        (
            "1,234",
            "USD",
            ".",
            None,
            "amount '1,234' is ambiguous under the declared format (decimal '.', thousands not "
            "declared): ',' could be a decimal or a thousands separator; declare thousands=',' "
            "in the file's CSV format or write the amount without separators",
        ),
        (
            "1.234",
            "EUR",
            ",",
            None,
            "amount '1.234' is ambiguous under the declared format (decimal ',', thousands not "
            "declared): '.' could be a decimal or a thousands separator; declare thousands='.' "
            "in the file's CSV format or write the amount without separators",
        ),
        (
            "1.23",
            "EUR",
            ",",
            ".",
            "amount '1.23' is ambiguous under the declared format (decimal ',', thousands '.'): "
            "'.' must separate groups of three digits, as in 1.234,50",
        ),
        (
            "12.345",
            "USD",
            ".",
            None,
            "amount '12.345' has 3 decimal places but USD allows 2; check the currency and the "
            "file's decimal separator",
        ),
        (
            "1.5",
            "JPY",
            ".",
            None,
            "amount '1.5' has 1 decimal place but JPY allows none; check the currency and the "
            "file's decimal separator",
        ),
        (
            "100.0",
            "JPY",
            ".",
            None,
            "amount '100.0' has 1 decimal place but JPY allows none; check the currency and the "
            "file's decimal separator",
        ),
        (
            "1.2345",
            "KWD",
            ".",
            None,
            "amount '1.2345' has 4 decimal places but KWD allows 3; check the currency and the "
            "file's decimal separator",
        ),
        (
            "12.",
            "USD",
            ".",
            None,
            "amount '12.' is not a decimal number under the declared format (decimal '.', "
            "thousands not declared); write it as, for example, -1234.50",
        ),
        (
            "1e3",
            "USD",
            ".",
            None,
            "amount '1e3' is not a decimal number under the declared format (decimal '.', "
            "thousands not declared); write it as, for example, -1234.50",
        ),
        ("", "USD", ".", None, "amount is empty; write the amount, for example 12.50"),
        (
            "10000000000000.00",
            "USD",
            ".",
            None,
            "amount '10000000000000.00' is out of range: it has more than 15 digits in minor units",
        ),
    ],
)
def test_parse_amount_rejects(text, currency, decimal, thousands, message):
    with pytest.raises(AmountError) as error:
        parse_amount(text, currency, decimal, thousands)
    assert str(error.value) == message
