"""Reading settlement reports and manual receipts, hostile files included.

Every rejected file must raise InputError with the exact file, line and column, and
export_event must then leave nothing behind.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from teardown.csvinput import (
    FORMATS,
    CsvFormat,
    InputError,
    InputFile,
    read_receipts,
    read_settlements,
)
from teardown.export import ExportContext, export_event

GENERIC_HEADER = "settlement_id,payment_reference,type,amount,currency,settled_at\n"
STRIPE_HEADER = (
    "balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,"
    "source_id,charge_id,description\n"
)
RECEIPT_HEADER = (
    "receipt_id,location_id,taken_at,amount,currency,payment_method,order_id,"
    "payment_reference,staff_id,note\n"
)


def generic(text: str, fmt: CsvFormat = FORMATS["default"], name: str = "s.csv") -> InputFile:
    return InputFile(name, text.encode(), fmt, "generic")


def stripe(text: str) -> InputFile:
    return InputFile("stripe.csv", (STRIPE_HEADER + text).encode(), FORMATS["default"], "stripe")


def receipts(data: bytes | str, fmt: CsvFormat = FORMATS["default"]) -> InputFile:
    raw = data.encode() if isinstance(data, str) else data
    return InputFile("receipts.csv", raw, fmt)


def settlement_rows(file: InputFile) -> list[dict]:
    return read_settlements([file]).table.to_pylist()


def rejection(read, file: InputFile) -> InputError:
    with pytest.raises(InputError) as error:
        read([file])
    return error.value


# Accepted input


def test_generic_layout_parses_exact_values():
    rows = settlement_rows(
        generic(
            GENERIC_HEADER + "s1,ch_1,charge,12.50,USD,2027-06-05T10:00:00+01:00\n"
            "s2,ch_1,refund,-2.5,usd,2027-06-05T11:00:00Z\n"
        )
    )
    assert [row["amount_minor"] for row in rows] == [1250, -250]
    assert [row["currency"] for row in rows] == ["USD", "USD"]
    assert rows[0]["settled_at"] == datetime(2027, 6, 5, 9, 0, tzinfo=UTC)
    assert rows[1]["type"] == "refund"
    assert [row["source_record"] for row in rows] == [1, 2]


def test_utf8_byte_order_mark_is_skipped():
    data = (
        b"\xef\xbb\xbf" + (GENERIC_HEADER + "s1,ch_1,charge,1.00,EUR,2027-06-05T10:00Z\n").encode()
    )
    rows = settlement_rows(InputFile("s.csv", data, FORMATS["default"], "generic"))
    assert rows[0]["settlement_id"] == "s1"
    assert rows[0]["amount_minor"] == 100


def test_eu_format_semicolons_decimal_comma_thousands():
    text = (
        "settlement_id;payment_reference;type;amount;currency;settled_at\n"
        "s1;ch_1;charge;1.234,56;EUR;2027-06-05T10:00:00+01:00\n"
        "s2;ch_2;charge;12,5;EUR;2027-06-05T10:00:00+01:00\n"
        "s3;ch_3;refund;-1.000;EUR;2027-06-05T10:00:00+01:00\n"
    )
    rows = settlement_rows(generic(text, FORMATS["eu"]))
    assert [row["amount_minor"] for row in rows] == [123456, 1250, -100000]


def test_declared_thousands_comma_in_default_delimiter():
    fmt = CsvFormat(thousands=",")
    text = GENERIC_HEADER + 's1,ch_1,charge,"1,234.50",USD,2027-06-05T10:00:00Z\n'
    assert settlement_rows(generic(text, fmt))[0]["amount_minor"] == 123450


def test_quoted_comma_and_newline_keep_line_numbers():
    text = (
        RECEIPT_HEADER + 'r1,belem,2027-06-05T12:00:00+01:00,4.00,EUR,cash,,,staff-1,"a, b"\n'
        'r2,belem,2027-06-05T12:00:00+01:00,4.00,EUR,cash,,,staff-1,"two\nlines ""quoted"""\n'
        "r3,belem,2027-06-05T12:00:00+01:00,4.001,EUR,cash,,,staff-1,\n"
    )
    error = rejection(read_receipts, receipts(text))
    assert str(error) == (
        "receipts.csv, line 5, column amount: amount '4.001' has 3 decimal places but EUR "
        "allows 2; check the currency and the file's decimal separator"
    )
    good = read_receipts([receipts(text.replace("4.001", "4.01"))]).table.to_pylist()
    assert good[0]["note"] == "a, b"
    assert good[1]["note"] == 'two\nlines "quoted"'
    assert good[2]["amount_minor"] == 401


def test_crlf_line_ends():
    text = (GENERIC_HEADER + "s1,ch_1,charge,1.00,EUR,2027-06-05T10:00Z\n").replace("\n", "\r\n")
    assert settlement_rows(generic(text))[0]["amount_minor"] == 100


def test_declared_legacy_encoding():
    text = RECEIPT_HEADER + "r1,belem,2027-06-05T12:00:00+01:00,4.00,EUR,cash,,,staff-1,café\n"
    file = InputFile("receipts.csv", text.encode("cp1252"), CsvFormat(encoding="cp1252"))
    assert read_receipts([file]).table.column("note").to_pylist() == ["café"]


def test_stripe_layout_lines():
    rows = settlement_rows(
        stripe(
            "txn_1,2027-06-05 09:00:00,usd,10.00,0.59,9.41,charge,ch_1,ch_1,Sale\n"
            "txn_2,2027-06-05 10:00:00,usd,-5.00,0.00,-5.00,refund,re_1,ch_1,\n"
            "txn_3,2027-06-05 10:00:00,jpy,1500,45,1455,charge,ch_3,,\n"
        )
    )
    assert [row["payment_reference"] for row in rows] == ["ch_1", "ch_1", "ch_3"]
    assert [row["amount_minor"] for row in rows] == [1000, -500, 1500]
    assert [row["fee_minor"] for row in rows] == [59, 0, 45]
    assert [row["net_minor"] for row in rows] == [941, -500, 1455]
    assert rows[0]["settled_at"] == datetime(2027, 6, 5, 9, 0, tzinfo=UTC)
    assert rows[0]["description"] == "Sale"


def test_header_only_settlement_report_is_valid():
    assert read_settlements([generic(GENERIC_HEADER)]).table.num_rows == 0


def test_suspect_free_text_values_are_collected():
    text = (
        RECEIPT_HEADER + "r1,belem,2027-06-05T12:00:00+01:00,4.00,EUR,cash,,,staff-1,"
        "mail ana@example.com\n"
        "r2,belem,2027-06-05T12:00:00+01:00,4.00,EUR,cash,,,staff-1,no contact\n"
    )
    source = read_receipts([receipts(text)]).sources[0]
    assert source.scanned_columns == ("note",)
    assert source.suspect_values == ("mail ana@example.com",)


# Rejected input: (reader, file, exact message)

HOSTILE_CASES = {
    "ambiguous thousands": (
        read_settlements,
        generic(GENERIC_HEADER + 's1,ch_1,charge,"1,234",USD,2027-06-05T10:00:00Z\n'),
        "s.csv, line 2, column amount: amount '1,234' is ambiguous under the declared format "
        "(decimal '.', thousands not declared): ',' could be a decimal or a thousands "
        "separator; declare thousands=',' in the file's CSV format or write the amount "
        "without separators",
    ),
    "ambiguous eu group": (
        read_settlements,
        generic(
            "settlement_id;payment_reference;type;amount;currency;settled_at\n"
            "s1;ch_1;charge;1.23;EUR;2027-06-05T10:00:00+01:00\n",
            FORMATS["eu"],
        ),
        "s.csv, line 2, column amount: amount '1.23' is ambiguous under the declared format "
        "(decimal ',', thousands '.'): '.' must separate groups of three digits, as in "
        "1.234,50",
    ),
    "too many decimals for JPY": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,charge,1.5,JPY,2027-06-05T10:00:00Z\n"),
        "s.csv, line 2, column amount: amount '1.5' has 1 decimal place but JPY allows none; "
        "check the currency and the file's decimal separator",
    ),
    "too many decimals for KWD": (
        read_receipts,
        receipts(RECEIPT_HEADER + "r1,belem,2027-06-05T12:00Z,1.2345,KWD,cash,,,staff-1,\n"),
        "receipts.csv, line 2, column amount: amount '1.2345' has 4 decimal places but KWD "
        "allows 3; check the currency and the file's decimal separator",
    ),
    "positive refund": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,refund,12.34,USD,2027-06-05T10:00:00Z\n"),
        "s.csv, line 2, column amount: refund amount '12.34' must be negative, because a "
        "refund takes money back; write it as -12.34",
    ),
    "negative charge": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,charge,-1.00,USD,2027-06-05T10:00:00Z\n"),
        "s.csv, line 2, column amount: charge amount '-1.00' must be positive; a refund is a "
        "line of type refund",
    ),
    "missing column": (
        read_settlements,
        generic("settlement_id,payment_reference,type,currency,settled_at\n"),
        "s.csv, line 1, column amount: required column amount is missing; the header has: "
        "settlement_id, payment_reference, type, currency, settled_at. Check the delimiter "
        "in the declared CSV format and the column names",
    ),
    "wrong delimiter": (
        read_settlements,
        generic(
            "settlement_id;payment_reference;type;amount;currency;settled_at\n"
            "s1;ch_1;charge;1,00;EUR;2027-06-05T10:00:00+01:00\n"
        ),
        "s.csv, line 1, column settlement_id: required column settlement_id is missing; the "
        "header has: settlement_id;payment_reference;type;amount;currency;settled_at. Check "
        "the delimiter in the declared CSV format and the column names",
    ),
    "undecodable byte": (
        read_settlements,
        InputFile(
            "s.csv",
            (GENERIC_HEADER + "s1,ch_1,charge,1.00,EUR,2027-06-05T10:00Z\n").encode()
            + b"s2,ch_\xff,charge,1.00,EUR,2027-06-05T10:00Z\n",
            FORMATS["default"],
            "generic",
        ),
        "s.csv, line 3, byte offset 112: byte 0xff is not valid UTF-8; save the file as "
        "UTF-8 or declare its encoding in the CSV format",
    ),
    "time without offset": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,charge,1.00,EUR,2027-06-05T10:00:00\n"),
        "s.csv, line 2, column settled_at: time '2027-06-05T10:00:00' has no UTC offset; add "
        "one, for example 2027-06-05T10:00:00+01:00 for a time in UTC+1, or Z for UTC",
    ),
    "impossible date": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,charge,1.00,EUR,2027-02-30T10:00:00Z\n"),
        "s.csv, line 2, column settled_at: time '2027-02-30T10:00:00Z' is not a valid "
        "calendar date and time",
    ),
    "unknown currency": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,charge,1.00,EUX,2027-06-05T10:00:00Z\n"),
        "s.csv, line 2, column currency: currency 'EUX' is not an ISO 4217 code such as EUR or USD",
    ),
    "currency without minor unit": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,charge,1.00,XAU,2027-06-05T10:00:00Z\n"),
        "s.csv, line 2, column currency: currency XAU has no minor unit, so it cannot be a payment",
    ),
    "extra field": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,charge,1.00,EUR,2027-06-05T10:00:00Z,extra\n"),
        "s.csv, line 2: the row has 7 fields but the header has 6; quote values that contain "
        "the delimiter and check for missing delimiters",
    ),
    "empty settlement id": (
        read_settlements,
        generic(GENERIC_HEADER + " ,ch_1,charge,1.00,EUR,2027-06-05T10:00:00Z\n"),
        "s.csv, line 2, column settlement_id: settlement_id is empty; every row needs a "
        "settlement_id",
    ),
    "unknown type": (
        read_settlements,
        generic(GENERIC_HEADER + "s1,ch_1,payout,1.00,EUR,2027-06-05T10:00:00Z\n"),
        "s.csv, line 2, column type: type 'payout' is not one of charge, refund; write charge "
        "or refund",
    ),
    "personal data column": (
        read_settlements,
        stripe("txn_1,2027-06-05 09:00:00,usd,10.00,0.59,9.41,charge,ch_1,ch_1,x\n").__class__(
            "stripe.csv",
            (
                STRIPE_HEADER.replace("description", "customer_email")
                + "txn_1,2027-06-05 09:00:00,usd,10.00,0.59,9.41,charge,ch_1,ch_1,a@b.example\n"
            ).encode(),
            FORMATS["default"],
            "stripe",
        ),
        "stripe.csv, line 1, column customer_email: column customer_email contains personal "
        "data, which must not reach the export; remove the column (for a provider report, "
        "leave it out of the report's columns) and upload the file again",
    ),
    "stripe net mismatch": (
        read_settlements,
        stripe("txn_1,2027-06-05 09:00:00,usd,10.00,0.59,9.40,charge,ch_1,ch_1,\n"),
        "stripe.csv, line 2, column net: net '9.40' is not gross '10.00' minus fee '0.59'; "
        "check the row against the provider's report",
    ),
    "stripe payout line": (
        read_settlements,
        stripe("txn_1,2027-06-05 09:00:00,usd,10.00,0.00,10.00,payout,po_1,,\n"),
        "stripe.csv, line 2, column reporting_category: reporting_category 'payout' is not "
        "one of charge, refund; only charge and refund lines can be reconciled with orders; "
        "run the report for the event's charges and refunds only",
    ),
    "stripe refund without charge": (
        read_settlements,
        stripe("txn_2,2027-06-05 10:00:00,usd,-5.00,0.00,-5.00,refund,re_1,,\n"),
        "stripe.csv, line 2, column charge_id: a refund line needs the charge_id of the "
        "refunded charge, because its source_id is the refund's own id; add the charge_id "
        "column to the report",
    ),
    "empty receipts file": (
        read_receipts,
        receipts(b""),
        "receipts.csv: the file is empty; upload the file with its header line and at least "
        "one row",
    ),
    "byte order mark only": (
        read_receipts,
        receipts(b"\xef\xbb\xbf\r\n"),
        "receipts.csv: the file is empty; upload the file with its header line and at least "
        "one row",
    ),
    "header-only receipts file": (
        read_receipts,
        receipts(RECEIPT_HEADER),
        "receipts.csv: the file has a header but no receipts; add the receipt rows, or leave "
        "the file out if no manual receipts were taken",
    ),
    "receipt payment method": (
        read_receipts,
        receipts(RECEIPT_HEADER + "r1,belem,2027-06-05T12:00Z,1.00,EUR,voucher,,,staff-1,\n"),
        "receipts.csv, line 2, column payment_method: payment_method 'voucher' is not one of "
        "cash, card, wallet, manual; write cash, card, wallet or manual",
    ),
    "e-mail address as staff id": (
        read_receipts,
        receipts(
            RECEIPT_HEADER + "r1,belem,2027-06-05T12:00Z,1.00,EUR,cash,,,joao@venue.example,\n"
        ),
        "receipts.csv, line 2, column staff_id: staff_id contains an e-mail address, which "
        "must not reach the export; use an identifier without personal data",
    ),
    "receipt missing staff": (
        read_receipts,
        receipts(RECEIPT_HEADER + "r1,belem,2027-06-05T12:00Z,1.00,EUR,cash,,,,\n"),
        "receipts.csv, line 2, column staff_id: staff_id is empty; every row needs a staff_id",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_hostile_input_rejected_with_location(case):
    read, file, message = HOSTILE_CASES[case]
    error = rejection(read, file)
    assert str(error) == message


def test_undecodable_byte_error_fields():
    _, file, _ = HOSTILE_CASES["undecodable byte"]
    error = rejection(read_settlements, file)
    assert error.source == "s.csv"
    assert error.line == 3
    assert error.byte_offset == 112
    assert file.data[112] == 0xFF


def test_unterminated_quote():
    text = GENERIC_HEADER + 's1,ch_1,charge,1.00,EUR,2027-06-05T10:00Z\ns2,"ch_2,charge\n'
    error = rejection(read_settlements, generic(text))
    assert error.line == 3
    assert str(error).startswith("s.csv, line 3: the row is not valid CSV")


def test_layout_must_be_declared():
    file = InputFile("s.csv", GENERIC_HEADER.encode())
    error = rejection(read_settlements, file)
    assert str(error) == "s.csv: settlement layout None is unknown; declare 'stripe' or 'generic'"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"decimal": ";"}, "decimal separator ';' is invalid; use '.' or ','"),
        ({"decimal": ",", "thousands": ","}, "thousands and decimal separators are both ','"),
        ({"delimiter": ","}, None),
        ({"delimiter": '"'}, "delimiter '\"' is invalid; use one character such as ',' or ';'"),
        ({"delimiter": ";;"}, "delimiter ';;' is invalid; use one character such as ',' or ';'"),
        ({"encoding": "klingon"}, "encoding 'klingon' is not known to Python"),
    ],
)
def test_csv_format_validation(arguments, message):
    if message is None:
        assert CsvFormat(**arguments).delimiter == ","
        return
    with pytest.raises(ValueError) as error:
        CsvFormat(**arguments)
    assert str(error.value).startswith(message)


def test_named_formats():
    assert CsvFormat.named("default") == CsvFormat()
    assert CsvFormat.named("eu") == CsvFormat(";", ",", ".", "utf-8")
    with pytest.raises(ValueError, match="unknown CSV format 'us'"):
        CsvFormat.named("us")


@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_rejected_input_writes_nothing(tmp_path, case):
    read, file, message = HOSTILE_CASES[case]
    settlement_files = [file] if read is read_settlements else []
    receipt_files = [file] if read is read_receipts else []
    context = ExportContext(
        "lisbon-popup",
        datetime.fromisoformat("2027-06-05T10:00:00+01:00"),
        datetime.fromisoformat("2027-06-05T18:00:00+01:00"),
        "Europe/Lisbon",
    )
    target = tmp_path / "export"
    with pytest.raises(InputError) as error:
        export_event(
            target,
            context,
            orders=[],
            settlement_files=settlement_files,
            receipt_files=receipt_files,
            dead_letters=[],
        )
    assert str(error.value) == message
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
