"""Matching and classification rules of teardown.reconcile, with exact totals."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from teardown.csvinput import FORMATS, InputError, InputFile, read_receipts, read_settlements
from teardown.reconcile import CLASSES, load_orders, reconcile

DATA = Path(__file__).parent / "data" / "reconcile"
ZONE = "Europe/Lisbon"
GENERIC_HEADER = "settlement_id,payment_reference,type,amount,currency,settled_at\n"
RECEIPT_HEADER = (
    "receipt_id,location_id,taken_at,amount,currency,payment_method,order_id,"
    "payment_reference,staff_id,note\n"
)


def order(order_id: str, amount: int, **fields) -> dict:
    record = {
        "orderId": order_id,
        "locationId": "chiado",
        "createdAt": "2027-06-05T10:00:00+01:00",
        "currency": "EUR",
        "amountMinor": amount,
        "paymentMethod": "card",
        "paymentReference": f"ch_{order_id}",
        "status": "paid",
    }
    record.update(fields)
    return {key: value for key, value in record.items() if value is not None}


def settlements(*lines: str):
    text = GENERIC_HEADER + "".join(line + "\n" for line in lines)
    return read_settlements([InputFile("s.csv", text.encode(), FORMATS["default"], "generic")])


def receipts(*lines: str):
    if not lines:
        return read_receipts([])
    text = RECEIPT_HEADER + "".join(line + "\n" for line in lines)
    return read_receipts([InputFile("r.csv", text.encode())])


def run(orders, lines=(), receipt_lines=()):
    return reconcile(
        load_orders(orders), settlements(*lines), receipts(*receipt_lines), time_zone=ZONE
    )


def rows_by_class(result) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in result.rows.to_pylist():
        grouped.setdefault(row["class"], []).append(row)
    return grouped


def only_row(result) -> dict:
    rows = result.rows.to_pylist()
    assert len(rows) == 1
    return rows[0]


# One rule at a time


def test_matched_card_order():
    row = only_row(run([order("o1", 1250)], ["s1,ch_o1,charge,12.50,EUR,2027-06-05T09:01:00Z"]))
    assert row["class"] == "matched"
    assert row["settlement_ids"] == "s1"
    assert row["amount_minor"] == 1250
    assert row["settled_minor"] == 1250
    assert row["reason"] == ""


def test_amount_mismatch_names_both_amounts():
    row = only_row(run([order("o1", 2000)], ["s1,ch_o1,charge,19.50,EUR,2027-06-05T09:01:00Z"]))
    assert row["class"] == "amount_mismatch"
    assert row["reason"] == "charges settled 19.50, expected 20.00"
    assert row["settled_minor"] == 1950


def test_currency_mismatch_wins_over_amount():
    row = only_row(run([order("o1", 800)], ["s1,ch_o1,charge,7.00,USD,2027-06-05T09:01:00Z"]))
    assert row["class"] == "currency_mismatch"
    assert row["reason"] == "order in EUR, settlement lines in USD"
    assert row["settled_minor"] == 0


def test_missing_settlement_for_card_and_wallet_only():
    result = run(
        [
            order("o1", 500),
            order("o2", 500, paymentMethod="wallet"),
            order("o3", 500, paymentMethod="cash", paymentReference=None),
            order("o4", 500, paymentMethod="manual", paymentReference="tok_4"),
            order("o5", 500, status="cancelled"),
            order("o6", 500, paymentReference=None),
        ]
    )
    classes = {row["order_id"]: row["class"] for row in result.rows.to_pylist()}
    assert classes == {
        "o1": "missing_settlement",
        "o2": "missing_settlement",
        "o3": "matched",
        "o4": "matched",
        "o5": "matched",
        "o6": "missing_settlement",
    }
    reasons = {row["order_id"]: row["reason"] for row in result.rows.to_pylist()}
    assert reasons["o1"] == "no settlement line has payment reference ch_o1"
    assert reasons["o6"] == "card order has no payment reference"


def test_settlement_without_order():
    row = only_row(run([], ["s9,ch_x,charge,3.00,EUR,2027-06-05T11:30:00Z"]))
    assert row["row_kind"] == "settlement"
    assert row["class"] == "settlement_without_order"
    assert row["reason"] == "no order has payment reference ch_x"
    assert row["settled_minor"] == 300
    assert row["location_id"] is None


def test_repeated_settlement_line_is_duplicate():
    line = "s1,ch_o1,charge,12.50,EUR,2027-06-05T09:01:00Z"
    grouped = rows_by_class(run([order("o1", 1250)], [line, line]))
    assert [row["order_id"] for row in grouped["matched"]] == ["o1"]
    assert grouped["matched"][0]["settled_minor"] == 1250
    duplicate = grouped["duplicate"][0]
    assert duplicate["row_kind"] == "settlement"
    assert duplicate["reason"] == (
        "settlement id s1 appears more than once; the first is s.csv record 1"
    )


def test_orders_sharing_a_reference_keep_the_earliest():
    orders = [
        order("o2", 1500, paymentReference="ch_9", createdAt="2027-06-05T12:16:00+01:00"),
        order("o1", 1500, paymentReference="ch_9", createdAt="2027-06-05T12:15:00+01:00"),
    ]
    grouped = rows_by_class(run(orders, ["s1,ch_9,charge,15.00,EUR,2027-06-05T11:16:00Z"]))
    assert [row["order_id"] for row in grouped["matched"]] == ["o1"]
    assert [row["order_id"] for row in grouped["duplicate"]] == ["o2"]
    assert grouped["duplicate"][0]["reason"] == (
        "payment reference ch_9 is also on order o1, created earlier"
    )
    assert grouped["duplicate"][0]["settled_minor"] == 0


def test_repeated_order_id_is_duplicate():
    orders = [order("o1", 1000), order("o1", 1000)]
    grouped = rows_by_class(run(orders, ["s1,ch_o1,charge,10.00,EUR,2027-06-05T09:01:00Z"]))
    assert len(grouped["matched"]) == 1
    assert len(grouped["duplicate"]) == 1
    assert grouped["duplicate"][0]["reason"] == (
        "orderId o1 appears 2 times; the one created first is reconciled"
    )


def test_refund_and_partial_refund():
    orders = [
        order("o1", 1000, status="refunded", refundedMinor=1000),
        order("o2", 3000, status="partially_refunded", refundedMinor=1000),
        order("o3", 600, status="refunded"),
    ]
    lines = [
        "s1,ch_o1,charge,10.00,EUR,2027-06-05T09:01:00Z",
        "s1r,ch_o1,refund,-10.00,EUR,2027-06-05T12:00:00Z",
        "s2,ch_o2,charge,30.00,EUR,2027-06-05T09:02:00Z",
        "s2r,ch_o2,refund,-10.00,EUR,2027-06-05T13:00:00Z",
        "s3,ch_o3,charge,6.00,EUR,2027-06-05T09:03:00Z",
        "s3r,ch_o3,refund,-6.00,EUR,2027-06-05T13:00:00Z",
    ]
    rows = {row["order_id"]: row for row in run(orders, lines).rows.to_pylist()}
    assert rows["o1"]["class"] == "refund"
    assert rows["o1"]["amount_minor"] == 0
    assert rows["o1"]["settlement_ids"] == "s1 s1r"
    assert rows["o2"]["class"] == "partial_refund"
    assert rows["o2"]["amount_minor"] == 2000
    assert rows["o2"]["settled_minor"] == 2000
    assert rows["o2"]["reason"] == "refunded 10.00 of 30.00"
    assert rows["o3"]["class"] == "refund"


def test_refund_not_yet_settled_is_amount_mismatch():
    orders = [order("o1", 1000, status="refunded")]
    row = only_row(run(orders, ["s1,ch_o1,charge,10.00,EUR,2027-06-05T09:01:00Z"]))
    assert row["class"] == "amount_mismatch"
    assert row["reason"] == "refunds settled 0.00, expected -10.00"


def test_receipts_match_by_order_id_then_reference():
    orders = [
        order("o1", 400, paymentMethod="cash", paymentReference=None),
        order("o2", 700, paymentMethod="manual", paymentReference="tok_2"),
        order("o3", 500, paymentMethod="cash", paymentReference=None),
    ]
    receipt_lines = [
        "r1,belem,2027-06-05T12:01:00+01:00,4.00,EUR,cash,o1,,staff-7,",
        "r2,belem,2027-06-05T12:01:00+01:00,7.00,EUR,manual,o-missing,tok_2,staff-7,",
        "r3,belem,2027-06-05T12:01:00+01:00,4.00,EUR,cash,o3,,staff-7,",
        "r4,belem,2027-06-05T12:40:00+01:00,9.90,EUR,cash,,,staff-3,",
        "r5,belem,2027-06-05T12:41:00+01:00,1.00,EUR,cash,o-gone,ref-gone,staff-3,",
    ]
    grouped = rows_by_class(run(orders, [], receipt_lines))
    matched = {row["order_id"]: row for row in grouped["matched"]}
    assert matched["o1"]["receipt_ids"] == "r1"
    assert matched["o1"]["receipts_minor"] == 400
    assert matched["o2"]["receipt_ids"] == "r2"
    mismatch = grouped["amount_mismatch"][0]
    assert mismatch["order_id"] == "o3"
    assert mismatch["reason"] == "receipts 4.00, expected 5.00"
    manual = {row["receipt_ids"]: row for row in grouped["manual_only"]}
    assert manual["r4"]["reason"] == "the receipt names no order id or payment reference"
    assert manual["r5"]["reason"] == "no order has orderId o-gone or payment reference ref-gone"
    assert manual["r4"]["amount_minor"] == 990
    assert manual["r4"]["receipts_minor"] == 990


def test_receipt_in_other_currency():
    orders = [order("o1", 400, paymentMethod="cash", paymentReference=None)]
    row = only_row(
        run(orders, [], ["r1,belem,2027-06-05T12:01:00+01:00,4.00,GBP,cash,o1,,staff-7,"])
    )
    assert row["class"] == "currency_mismatch"
    assert row["reason"] == "order in EUR, receipts in GBP"


def test_hours_in_event_zone_across_dst_change():
    orders = [
        order("o1", 100, createdAt="2027-10-31T00:30:00+00:00"),
        order("o2", 100, createdAt="2027-10-31T01:30:00+00:00"),
    ]
    lines = [
        "s1,ch_o1,charge,1.00,EUR,2027-10-31T00:31:00Z",
        "s2,ch_o2,charge,1.00,EUR,2027-10-31T01:31:00Z",
    ]
    result = reconcile(
        load_orders(orders), settlements(*lines), receipts(), time_zone="Europe/Lisbon"
    )
    # Lisbon leaves summer time at 02:00 local on 2027-10-31, so 01:00 happens twice.
    assert result.rows.column("hour").to_pylist() == [
        "2027-10-31T01:00:00+01:00",
        "2027-10-31T01:00:00+00:00",
    ]
    assert [total.key for total in result.totals["hour"]] == [
        "2027-10-31T01:00:00+01:00",
        "2027-10-31T01:00:00+00:00",
    ]


def test_half_hour_zone_hours():
    result = run([order("o1", 100, createdAt="2027-06-05T10:10:00+00:00")])
    kolkata = reconcile(result.orders, settlements(), receipts(), time_zone="Asia/Kolkata")
    assert kolkata.rows.column("hour").to_pylist() == ["2027-06-05T15:00:00+05:30"]


def test_result_does_not_depend_on_order_of_records():
    records = json.loads((DATA / "orders.json").read_text())
    baseline = fixture_reconciliation(records)
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)
    again = fixture_reconciliation(shuffled)
    assert again.rows.equals(baseline.rows)
    assert again.orders.drop_columns(["source_record"]).equals(
        baseline.orders.drop_columns(["source_record"])
    )


def test_empty_inputs_give_no_rows():
    result = run([])
    assert result.rows.num_rows == 0
    assert result.class_counts() == dict.fromkeys(CLASSES, 0)
    assert all(result.totals[group] == [] for group in result.totals)


# The committed fixture: every class, with exact totals


def fixture_reconciliation(records=None):
    if records is None:
        records = json.loads((DATA / "orders.json").read_text())
    settlement_files = [
        InputFile(
            "stripe_settlements.csv",
            (DATA / "stripe_settlements.csv").read_bytes(),
            FORMATS["default"],
            "stripe",
        ),
        InputFile(
            "generic_settlements_eu.csv",
            (DATA / "generic_settlements_eu.csv").read_bytes(),
            FORMATS["eu"],
            "generic",
        ),
    ]
    receipt_files = [InputFile("receipts.csv", (DATA / "receipts.csv").read_bytes())]
    return reconcile(
        load_orders(records),
        read_settlements(settlement_files),
        read_receipts(receipt_files),
        time_zone=ZONE,
    )


def test_fixture_covers_every_class():
    assert fixture_reconciliation().class_counts() == {
        "matched": 7,
        "amount_mismatch": 1,
        "currency_mismatch": 1,
        "missing_settlement": 1,
        "settlement_without_order": 2,
        "duplicate": 3,
        "refund": 1,
        "partial_refund": 1,
        "manual_only": 1,
    }


def test_fixture_rows():
    rows = [
        (
            row["row_kind"],
            row["class"],
            row["order_id"] or row["settlement_ids"] or row["receipt_ids"],
        )
        for row in fixture_reconciliation().rows.to_pylist()
    ]
    assert rows == [
        ("order", "matched", "o-001"),
        ("order", "amount_mismatch", "o-002"),
        ("order", "currency_mismatch", "o-003"),
        ("order", "missing_settlement", "o-004"),
        ("order", "refund", "o-006"),
        ("order", "partial_refund", "o-007"),
        ("order", "matched", "o-008"),
        ("order", "matched", "o-009"),
        ("order", "duplicate", "o-010"),
        ("order", "matched", "o-011"),
        ("order", "matched", "o-012"),
        ("order", "matched", "o-013"),
        ("order", "matched", "o-014"),
        ("settlement", "duplicate", "txn_001"),
        ("settlement", "settlement_without_order", "set-999"),
        ("settlement", "settlement_without_order", "set-big"),
        ("receipt", "manual_only", "r-002"),
        ("receipt", "duplicate", "o-008"),
    ]


def totals(result, group):
    return {
        (total.key, total.currency): (
            total.rows,
            total.amount_minor,
            total.settled_minor,
            total.receipts_minor,
        )
        for total in result.totals[group]
    }


def test_fixture_totals_per_class():
    assert totals(fixture_reconciliation(), "class") == {
        ("amount_mismatch", "EUR"): (1, 2000, 1950, 0),
        ("currency_mismatch", "EUR"): (1, 800, 0, 0),
        ("duplicate", "EUR"): (3, 3150, 1250, 400),
        ("manual_only", "EUR"): (1, 990, 0, 990),
        ("matched", "EUR"): (5, 3850, 2750, 1100),
        ("matched", "JPY"): (1, 1500, 1500, 0),
        ("matched", "KWD"): (1, 1234, 1234, 0),
        ("missing_settlement", "EUR"): (1, 500, 0, 0),
        ("partial_refund", "EUR"): (1, 2000, 2000, 0),
        ("refund", "EUR"): (1, 0, 0, 0),
        ("settlement_without_order", "EUR"): (2, 123756, 123756, 0),
    }


def test_fixture_totals_per_location_currency_method_and_hour():
    result = fixture_reconciliation()
    assert totals(result, "location") == {
        (None, "EUR"): (2, 123756, 123756, 0),
        ("belem", "EUR"): (4, 2400, 0, 1100),
        ("belem", "JPY"): (1, 1500, 1500, 0),
        ("belem", "KWD"): (1, 1234, 1234, 0),
        ("chiado", "EUR"): (7, 7740, 6700, 990),
    }
    assert totals(result, "currency") == {
        ("EUR", "EUR"): (13, 133896, 130456, 2090),
        ("JPY", "JPY"): (1, 1500, 1500, 0),
        ("KWD", "KWD"): (1, 1234, 1234, 0),
    }
    assert totals(result, "payment_method") == {
        (None, "EUR"): (2, 123756, 123756, 0),
        ("card", "EUR"): (6, 7550, 6700, 0),
        ("card", "JPY"): (1, 1500, 1500, 0),
        ("card", "KWD"): (1, 1234, 1234, 0),
        ("cash", "EUR"): (3, 1390, 0, 1390),
        ("manual", "EUR"): (1, 700, 0, 700),
        ("wallet", "EUR"): (1, 500, 0, 0),
    }
    assert totals(result, "hour") == {
        ("2027-06-05T10:00:00+01:00", "EUR"): (3, 4050, 3200, 0),
        ("2027-06-05T11:00:00+01:00", "EUR"): (3, 2500, 2000, 0),
        ("2027-06-05T12:00:00+01:00", "EUR"): (4, 3190, 1800, 1390),
        ("2027-06-05T13:00:00+01:00", "JPY"): (1, 1500, 1500, 0),
        ("2027-06-05T13:00:00+01:00", "KWD"): (1, 1234, 1234, 0),
        ("2027-06-05T14:00:00+01:00", "EUR"): (2, 700, 0, 700),
        ("2027-06-05T16:00:00+01:00", "EUR"): (1, 123456, 123456, 0),
    }


def test_totals_as_dict_has_decimal_strings():
    entry = next(
        t for t in fixture_reconciliation().totals_as_dict()["class"] if t["currency"] == "KWD"
    )
    assert entry == {
        "key": "matched",
        "currency": "KWD",
        "rows": 1,
        "amount_minor": 1234,
        "amount": "1.234",
        "settled_minor": 1234,
        "settled": "1.234",
        "receipts_minor": 0,
        "receipts": "0.000",
    }


# Order validation


def test_orders_drop_personal_data_and_mask_cards():
    table = load_orders(
        [order("o1", 100, cardNumber="4111 1111 1111 1111", customerEmail="a@b.example")]
    )
    assert "customerEmail" not in table.column_names
    assert table.column("card_last4").to_pylist() == ["1111"]


def test_orders_accept_decimal_and_arrow_table():
    from_dicts = load_orders([order("o1", Decimal("1250"), refundedMinor=Decimal("0"))])
    arrow = pa.Table.from_pylist(
        [order("o1", 1250, refundedMinor=0)],
        schema=pa.schema(
            [
                ("orderId", pa.string()),
                ("locationId", pa.string()),
                ("createdAt", pa.string()),
                ("currency", pa.string()),
                ("amountMinor", pa.int32()),
                ("paymentMethod", pa.string()),
                ("paymentReference", pa.string()),
                ("status", pa.string()),
                ("refundedMinor", pa.int64()),
            ]
        ),
    )
    assert load_orders(arrow).equals(from_dicts)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            order("o1", 100, createdAt="2027-06-05T10:00:00"),
            "orders, record 1, column createdAt: time '2027-06-05T10:00:00' has no UTC offset; "
            "add one, for example 2027-06-05T10:00:00+01:00 for a time in UTC+1, or Z for UTC "
            "(orderId o1)",
        ),
        (
            order("o1", Decimal("12.5")),
            "orders, record 1, column amountMinor: amountMinor must be an integer number of "
            "minor units, got Decimal('12.5')",
        ),
        (
            order("o1", -5),
            "orders, record 1, column amountMinor: amountMinor -5 is out of range; it must be "
            "from 0 to 999999999999999 (orderId o1)",
        ),
        (
            order("o1", 100, currency="EUX"),
            "orders, record 1, column currency: currency 'EUX' is not an ISO 4217 code such as "
            "EUR or USD (orderId o1)",
        ),
        (
            order("o1", 100, status="lost"),
            "orders, record 1, column status: status 'lost' is not one of paid, refunded, "
            "partially_refunded, cancelled (orderId o1)",
        ),
        (
            order("o1", 100, paymentMethod="cheque"),
            "orders, record 1, column paymentMethod: paymentMethod 'cheque' is not one of card, "
            "wallet, cash, manual (orderId o1)",
        ),
        (
            order("o1", 100, status="partially_refunded", refundedMinor=100),
            "orders, record 1, column refundedMinor: refundedMinor 100 must be between 0 and "
            "amountMinor 100, exclusive (orderId o1)",
        ),
        (
            order("o1", 100, refundedMinor=5),
            "orders, record 1, column refundedMinor: refundedMinor 5 must be 0 for status paid "
            "(orderId o1)",
        ),
        (
            order("", 100),
            "orders, record 1, column orderId: orderId is missing",
        ),
        (
            order("o1", 100, locationId=7),
            "orders, record 1, column locationId: locationId must be a string, got int 7",
        ),
    ],
)
def test_invalid_order_rejected(record, message):
    with pytest.raises(InputError) as error:
        load_orders([order("o0", 100), record][1:])
    assert str(error.value) == message
