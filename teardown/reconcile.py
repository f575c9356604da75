"""Reconcile an event's orders with payment settlements and manual receipts.

Entry points: ``load_orders`` validates the order records of the checkout service.
``reconcile`` matches them with the output of ``teardown.csvinput``. It returns one
classified row for each order, each unmatched or repeated settlement line and each
unmatched or repeated receipt, with exact totals.

Matching:

* A settlement line belongs to the order whose ``paymentReference`` equals the line's
  payment reference. Only the first line with a given settlement id is matched.
* A receipt belongs to the order with its ``order_id``. When it has none, or no order
  has that id, it belongs to the order with its ``payment_reference``. Only the first
  receipt with a given receipt id is matched.
* When several orders share an ``orderId``, or a ``paymentReference``, only the one
  created first is matched. Ties on ``createdAt`` are broken by the other fields, so the
  choice does not depend on the order in which the records arrive.

Expected money per order: ``charged`` is ``amountMinor``, or 0 when ``cancelled``.
``refunded`` is ``amountMinor`` for ``refunded``, ``refundedMinor`` for
``partially_refunded`` and 0 otherwise. The order's amount is ``charged - refunded``.

Every row gets exactly one class. For an order row the first rule that applies wins:

1. ``duplicate``: an earlier order has the same ``orderId`` or ``paymentReference``.
2. ``currency_mismatch``: a matched settlement line or receipt is in another currency.
3. ``missing_settlement``: a card or wallet order, not cancelled, with no matched line.
   Cash and manual orders need no settlement line.
4. ``amount_mismatch``: the matched charge lines do not add up to ``charged``, the
   refund lines to ``-refunded``, or the matched receipts to the order's amount. Lines
   are compared only when there are some, and receipts only when there are some.
5. ``refund``: status ``refunded``.
6. ``partial_refund``: status ``partially_refunded``.
7. ``matched``: everything else, including a cancelled card order with no line.

A settlement line that is not matched is a row of its own: ``duplicate`` when an
earlier line has its settlement id, else ``settlement_without_order``. A receipt that
is not matched is a row of its own: ``duplicate`` when an earlier receipt has its
receipt id, else ``manual_only``.

Row amounts: ``amount_minor`` is the order's amount, the line's amount or the
receipt's amount. ``settled_minor`` and ``receipts_minor`` are the signed sums of the
settlement lines and receipts attached to the row in the row's currency, and a line or
receipt row counts itself. Lines and receipts in another currency are listed in
``settlement_ids`` and ``receipt_ids`` but left out of the sums. Each row's ``hour``
is the start of its local hour in the event's time zone, computed from ``createdAt``,
the line's settlement time or the receipt's ``taken_at``.

Totals are exact integers, one entry per key and currency: per class over all rows,
and per location, currency, payment method and hour over every row except
``duplicate`` rows, which repeat money that another row already counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from teardown import money
from teardown.csvinput import TIMESTAMP, InputError, Receipts, Settlements, parse_times

MATCHED = "matched"
AMOUNT_MISMATCH = "amount_mismatch"
CURRENCY_MISMATCH = "currency_mismatch"
MISSING_SETTLEMENT = "missing_settlement"
SETTLEMENT_WITHOUT_ORDER = "settlement_without_order"
DUPLICATE = "duplicate"
REFUND = "refund"
PARTIAL_REFUND = "partial_refund"
MANUAL_ONLY = "manual_only"
CLASSES = (
    MATCHED,
    AMOUNT_MISMATCH,
    CURRENCY_MISMATCH,
    MISSING_SETTLEMENT,
    SETTLEMENT_WITHOUT_ORDER,
    DUPLICATE,
    REFUND,
    PARTIAL_REFUND,
    MANUAL_ONLY,
)

PAYMENT_METHODS = ("card", "wallet", "cash", "manual")
ORDER_STATUSES = ("paid", "refunded", "partially_refunded", "cancelled")
TOTAL_GROUPS = ("class", "location", "currency", "payment_method", "hour")

ORDER_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("location_id", pa.string()),
        ("created_at", TIMESTAMP),
        ("currency", pa.string()),
        ("amount_minor", pa.int64()),
        ("payment_method", pa.string()),
        ("payment_reference", pa.string()),
        ("status", pa.string()),
        ("refunded_minor", pa.int64()),
        ("card_last4", pa.string()),
        ("source_record", pa.int64()),
    ]
)

ROW_SCHEMA = pa.schema(
    [
        ("row_kind", pa.string()),
        ("class", pa.string()),
        ("reason", pa.string()),
        ("order_id", pa.string()),
        ("settlement_ids", pa.string()),
        ("receipt_ids", pa.string()),
        ("payment_reference", pa.string()),
        ("location_id", pa.string()),
        ("payment_method", pa.string()),
        ("status", pa.string()),
        ("currency", pa.string()),
        ("occurred_at", TIMESTAMP),
        ("hour", pa.string()),
        ("amount_minor", pa.int64()),
        ("settled_minor", pa.int64()),
        ("receipts_minor", pa.int64()),
    ]
)

# Order record fields (the checkout service's contract) and their normalised columns.
_ORDER_TEXT_FIELDS = {
    "orderId": "order_id",
    "locationId": "location_id",
    "createdAt": "created_at",
    "currency": "currency",
    "paymentMethod": "payment_method",
    "paymentReference": "payment_reference",
    "status": "status",
    "cardNumber": "card_number",
}
_ORDER_INTEGER_FIELDS = {"amountMinor": "amount_minor", "refundedMinor": "refunded_minor"}
_ORDER_REQUIRED = ("orderId", "locationId", "createdAt", "currency", "amountMinor")
_ORDERS = "orders"


@dataclass(frozen=True)
class Total:
    """Sums of one group key in one currency, in minor units."""

    group: str
    key: str | None
    currency: str
    rows: int
    amount_minor: int
    settled_minor: int
    receipts_minor: int

    def as_dict(self) -> dict[str, object]:
        """Return the total with decimal strings beside the minor units."""
        return {
            "key": self.key,
            "currency": self.currency,
            "rows": self.rows,
            "amount_minor": self.amount_minor,
            "amount": money.format_minor(self.amount_minor, self.currency),
            "settled_minor": self.settled_minor,
            "settled": money.format_minor(self.settled_minor, self.currency),
            "receipts_minor": self.receipts_minor,
            "receipts": money.format_minor(self.receipts_minor, self.currency),
        }


@dataclass(frozen=True)
class Reconciliation:
    """Classified rows (``ROW_SCHEMA``, in a fixed order) and their totals per group.

    ``orders`` are the orders in the order of their rows, which is the export's order.
    """

    rows: pa.Table
    totals: dict[str, list[Total]]
    time_zone: str
    orders: pa.Table

    def totals_as_dict(self) -> dict[str, list[dict[str, object]]]:
        return {group: [t.as_dict() for t in totals] for group, totals in self.totals.items()}

    def class_counts(self) -> dict[str, int]:
        """Return the number of rows in each class, every class included."""
        counts = dict.fromkeys(CLASSES, 0)
        for total in self.totals["class"]:
            counts[total.key] += total.rows
        return counts


def load_orders(records: Iterable[Mapping[str, object]] | pa.Table) -> pa.Table:
    """Validate order records and return them as a table with ``ORDER_SCHEMA``.

    ``records`` are dicts with the checkout service's camelCase fields, as a scan of the
    orders table returns them (integers may be ``Decimal``), or an Arrow table with
    those column names. ``customerEmail`` and ``customerPhone`` are dropped, and
    ``cardNumber`` is reduced to its last four digits. Unknown fields are ignored.
    ``source_record`` is the 1-based input position. A scan returns records in no fixed
    order, so the reconciliation and the export sort on the other columns first. Raises
    InputError naming the input record (1-based) and field.
    """
    if isinstance(records, pa.Table):
        columns = _columns_from_table(records)
    else:
        columns = _columns_from_records(records)
    return _validate_orders(columns)


def _columns_from_records(records: Iterable[Mapping[str, object]]) -> dict[str, list]:
    fields = list(_ORDER_TEXT_FIELDS) + list(_ORDER_INTEGER_FIELDS)
    columns: dict[str, list] = {field: [] for field in fields}
    for number, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise InputError(
                _ORDERS, f"expected a mapping of fields, got {type(record).__name__}", record=number
            )
        for field in _ORDER_TEXT_FIELDS:
            value = record.get(field)
            if value is not None and not isinstance(value, str):
                raise InputError(
                    _ORDERS,
                    f"{field} must be a string, got {type(value).__name__} {value!r}",
                    record=number,
                    column=field,
                )
            columns[field].append(value)
        for field in _ORDER_INTEGER_FIELDS:
            columns[field].append(_integer(record.get(field), field, number))
    return columns


def _integer(value: object, field: str, number: int) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    raise InputError(
        _ORDERS,
        f"{field} must be an integer number of minor units, got {value!r}",
        record=number,
        column=field,
    )


def _columns_from_table(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    columns: dict[str, pa.ChunkedArray] = {}
    rows = table.num_rows
    for field in _ORDER_TEXT_FIELDS:
        if field in table.column_names:
            values = table.column(field)
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                raise InputError(
                    _ORDERS, f"{field} must be a string column, got {values.type}", column=field
                )
            columns[field] = values if values.type == pa.string() else values.cast(pa.string())
        else:
            columns[field] = pa.chunked_array([pa.nulls(rows, pa.string())])
    for field in _ORDER_INTEGER_FIELDS:
        if field in table.column_names:
            values = table.column(field)
            if not pa.types.is_integer(values.type):
                raise InputError(
                    _ORDERS, f"{field} must be an integer column, got {values.type}", column=field
                )
            columns[field] = values if values.type == pa.int64() else values.cast(pa.int64())
        else:
            columns[field] = pa.chunked_array([pa.nulls(rows, pa.int64())])
    return columns


def _validate_orders(columns: Mapping[str, list | pa.Array]) -> pa.Table:
    arrays = {
        field: values
        if isinstance(values, pa.Array | pa.ChunkedArray)
        else pa.array(values, pa.int64() if field in _ORDER_INTEGER_FIELDS else pa.string())
        for field, values in columns.items()
    }
    for field in ("orderId", "locationId", "paymentReference"):
        arrays[field] = pc.utf8_trim(arrays[field], " ")
    order_ids = arrays["orderId"]

    def fail(index: int, field: str, problem: str) -> InputError:
        order_id = order_ids[index].as_py()
        suffix = f" (orderId {order_id})" if order_id else ""
        return InputError(_ORDERS, problem + suffix, record=index + 1, column=field)

    def check(field: str, good: pa.Array, problem: Callable[[int], str]) -> None:
        if pc.all(good, skip_nulls=False, min_count=0).as_py() is True:
            return
        index = pc.index(pc.fill_null(good, False), False).as_py()
        raise fail(index, field, problem(index))

    for field in _ORDER_REQUIRED:
        values = arrays[field]
        if pa.types.is_string(values.type):
            present = pc.greater(pc.utf8_length(values), 0)
        else:
            present = pc.is_valid(values)
        check(field, present, lambda i, f=field: f"{f} is missing")
    check(
        "paymentMethod",
        pc.is_in(arrays["paymentMethod"], value_set=pa.array(PAYMENT_METHODS)),
        lambda i: (
            f"paymentMethod {arrays['paymentMethod'][i].as_py()!r} is not one of "
            f"{', '.join(PAYMENT_METHODS)}"
        ),
    )
    check(
        "status",
        pc.is_in(arrays["status"], value_set=pa.array(ORDER_STATUSES)),
        lambda i: (
            f"status {arrays['status'][i].as_py()!r} is not one of {', '.join(ORDER_STATUSES)}"
        ),
    )
    currency = pc.utf8_upper(arrays["currency"])
    for code in pc.unique(currency).to_pylist():
        try:
            money.exponent(code)
        except money.AmountError as error:
            raise fail(pc.index(currency, code).as_py(), "currency", str(error)) from None
    created_at, index, problem = parse_times(arrays["createdAt"])
    if created_at is None:
        raise fail(index, "createdAt", problem)

    amount = arrays["amountMinor"]
    limit = 10**money.MAX_MINOR_DIGITS
    check(
        "amountMinor",
        pc.and_(pc.greater_equal(amount, 0), pc.less(amount, limit)),
        lambda i: (
            f"amountMinor {amount[i].as_py()} is out of range; it must be from 0 to {limit - 1}"
        ),
    )
    status = arrays["status"]
    refunded = pc.fill_null(arrays["refundedMinor"], 0)
    partial = pc.equal(status, "partially_refunded")
    full = pc.equal(status, "refunded")
    refund_ok = pc.case_when(
        pc.make_struct(partial, full),
        pc.and_(pc.greater(refunded, 0), pc.less(refunded, amount)),
        pc.or_(pc.equal(refunded, 0), pc.equal(refunded, amount)),
        pc.equal(refunded, 0),
    )

    def refund_problem(i: int) -> str:
        value = refunded[i].as_py()
        state = status[i].as_py()
        total = amount[i].as_py()
        if state == "partially_refunded":
            return f"refundedMinor {value} must be between 0 and amountMinor {total}, exclusive"
        if state == "refunded":
            return f"refundedMinor {value} must be 0 or amountMinor {total} for a refunded order"
        return f"refundedMinor {value} must be 0 for status {state}"

    check("refundedMinor", refund_ok, refund_problem)
    refunded_minor = pc.if_else(full, amount, refunded)
    reference = arrays["paymentReference"]
    reference = pc.if_else(pc.equal(reference, ""), pa.scalar(None, pa.string()), reference)
    digits = pc.replace_substring_regex(arrays["cardNumber"], r"[^0-9]", "")
    last4 = pc.if_else(
        pc.greater_equal(pc.utf8_length(digits), 4),
        pc.utf8_slice_codeunits(digits, -4),
        pa.scalar(None, pa.string()),
    )
    table = pa.Table.from_arrays(
        [
            order_ids,
            arrays["locationId"],
            created_at,
            currency,
            amount,
            arrays["paymentMethod"],
            reference,
            status,
            refunded_minor,
            last4,
        ],
        schema=ORDER_SCHEMA.remove(ORDER_SCHEMA.get_field_index("source_record")),
    )
    positions = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), table.num_rows))
    return table.append_column("source_record", positions)


def reconcile(
    orders: pa.Table,
    settlements: Settlements,
    receipts: Receipts,
    *,
    time_zone: str,
) -> Reconciliation:
    """Match and classify orders, settlement lines and receipts by the module's rules.

    ``orders`` comes from ``load_orders``; ``time_zone`` is the event's IANA zone, used
    for the hour of each row. The rows come in a fixed order that does not depend on
    the order of the records: order rows by ``createdAt``, ``orderId`` and duplicate
    rank, then settlement rows and then receipt rows, each in input order.
    """
    zone = ZoneInfo(time_zone)
    currencies = _currencies(orders, settlements.table, receipts.table)
    # Arrow keeps freed memory for reuse; hand it back before DuckDB allocates its own.
    pa.default_memory_pool().release_unused()
    connection = duckdb.connect(":memory:")
    try:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("orders_input", naive_timestamps(orders))
        settlement_rows = _with_position(naive_timestamps(settlements.table))
        connection.register("settlements_input", settlement_rows)
        connection.register("receipts_input", _with_position(naive_timestamps(receipts.table)))
        connection.register("currencies", currencies)
        connection.execute(_MACROS)
        result = connection.sql(_RECONCILE_SQL).to_arrow_table()
    finally:
        connection.close()
    rows, ordered_orders = _attach_inputs(result, orders, settlements.table, receipts.table, zone)
    return Reconciliation(
        rows=rows,
        totals=_totals(rows),
        time_zone=time_zone,
        orders=ordered_orders,
    )


# Input columns of each output column: (orders, settlements, receipts); None is null.
_ROW_SOURCES = {
    "order_id": ("order_id", None, "order_id"),
    "payment_reference": ("payment_reference", "payment_reference", "payment_reference"),
    "location_id": ("location_id", None, "location_id"),
    "payment_method": ("payment_method", None, "payment_method"),
    "status": ("status", None, None),
    "currency": ("currency", "currency", "currency"),
    "occurred_at": ("created_at", "settled_at", "taken_at"),
}
_ROW_KINDS = ("order", "settlement", "receipt")


def _attach_inputs(
    result: pa.Table,
    orders: pa.Table,
    settlements: pa.Table,
    receipts: pa.Table,
    zone: ZoneInfo,
) -> tuple[pa.Table, pa.Table]:
    """Return the full rows, and the orders in the order of their rows.

    The narrow result lists the rows of each kind together, so the input columns of each
    kind are one ``take`` from its input table, at the rows' positions.
    """
    kinds = result.column("kind_rank").cast(pa.int64())
    parts = []
    ordered_orders = orders.slice(0, 0)
    start = 0
    for kind, table in enumerate((orders, settlements, receipts)):
        rows = pc.sum(pc.equal(kinds, kind)).as_py() or 0
        part = result.slice(start, rows)
        start += rows
        positions = pc.subtract(part.column("position"), 1)
        if kind == 0:
            ordered_orders = input_rows = table.take(positions)
        else:
            needed = [sources[kind] for sources in _ROW_SOURCES.values() if sources[kind]]
            input_rows = table.select(needed).take(positions)
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            "row_kind": pa.repeat(pa.scalar(_ROW_KINDS[kind], pa.string()), rows),
        }
        for name, sources in _ROW_SOURCES.items():
            column_type = ROW_SCHEMA.field(name).type
            if sources[kind] is None:
                columns[name] = pa.nulls(rows, column_type)
            else:
                columns[name] = input_rows.column(sources[kind]).cast(column_type)
        columns["hour"] = _local_hours(columns["occurred_at"], zone)
        for name in ROW_SCHEMA.names:
            if name not in columns:
                columns[name] = part.column(name)
        arrays = [columns[name] for name in ROW_SCHEMA.names]
        parts.append(pa.Table.from_arrays(arrays, schema=ROW_SCHEMA))
    return pa.concat_tables(parts), ordered_orders


def _currencies(*tables: pa.Table) -> pa.Table:
    codes = sorted({code for table in tables for code in pc.unique(table["currency"]).to_pylist()})
    return pa.table(
        {"currency": codes, "exponent": [money.exponent(code) for code in codes]},
        schema=pa.schema([("currency", pa.string()), ("exponent", pa.int64())]),
    )


def naive_timestamps(table: pa.Table) -> pa.Table:
    """Return the table with UTC timestamps as naive ones, so DuckDB's zone cannot apply."""
    columns = []
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.timestamp("us"))
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _with_position(table: pa.Table) -> pa.Table:
    """Append ``seq``, the 1-based position of each row, which orders duplicates."""
    positions = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), table.num_rows))
    return table.append_column("seq", positions)


def _local_hours(times: pa.Array | pa.ChunkedArray, zone: ZoneInfo) -> pa.Array:
    """Return the start of each time's local hour as ISO 8601 with offset.

    Times are grouped by UTC minute, so only each distinct minute goes through zoneinfo.
    Every zone offset in use is a whole number of minutes.
    """
    minutes = pc.floor_temporal(times, unit="minute")
    if isinstance(minutes, pa.ChunkedArray):
        minutes = minutes.combine_chunks()
    encoded = minutes.dictionary_encode()
    labels = []
    for moment in encoded.dictionary.to_pylist():
        local = moment.astimezone(zone)
        start = (moment - timedelta(minutes=local.minute)).astimezone(zone)
        labels.append(start.isoformat(timespec="seconds"))
    return pc.take(pa.array(labels, pa.string()), encoded.indices)


def _totals(rows: pa.Table) -> dict[str, list[Total]]:
    columns = {
        "class": "class",
        "location": "location_id",
        "currency": "currency",
        "payment_method": "payment_method",
        "hour": "hour",
    }
    connection = duckdb.connect(":memory:")
    totals: dict[str, list[Total]] = {}
    try:
        connection.register("reconciliation", rows.drop_columns(["occurred_at"]))
        for group, column in columns.items():
            where = "" if group == "class" else f"WHERE class <> '{DUPLICATE}'"
            query = f"""
                SELECT {column} AS key, currency, count(*) AS rows,
                       sum(amount_minor)::HUGEINT, sum(settled_minor)::HUGEINT,
                       sum(receipts_minor)::HUGEINT
                FROM reconciliation {where}
                GROUP BY ALL
                ORDER BY key NULLS FIRST, currency
            """
            totals[group] = [
                Total(group, key, currency, count, int(amount), int(settled), int(received))
                for key, currency, count, amount, settled, received in connection.sql(
                    query
                ).fetchall()
            ]
    finally:
        connection.close()
    # Hour keys sort as text, which misorders the repeated hour when summer time ends.
    totals["hour"].sort(key=lambda total: (datetime.fromisoformat(total.key), total.currency))
    return totals


# fmt_minor(v, e) formats minor units as a decimal string, as money.format_minor does.
_MACROS = """
CREATE MACRO fmt_minor(v, e) AS
    CASE WHEN e = 0 THEN v::VARCHAR
    ELSE (CASE WHEN v < 0 THEN '-' ELSE '' END)
        || (abs(v) // (10::BIGINT ** e)::BIGINT)::VARCHAR || '.'
        || lpad((abs(v) % (10::BIGINT ** e)::BIGINT)::VARCHAR, e::INTEGER, '0')
    END;
"""

_ORDER_TIE_BREAK = (
    "created_at, location_id, currency, amount_minor, payment_method, payment_reference, "
    "status, refunded_minor, card_last4, source_record"
)

# Duplicates are rare, so each rank is computed by a window over the repeated keys only.
# DuckDB materialises a CTE that is read more than once. o and o_ref are wide and cheap
# to recompute, so they are inlined instead, which saves memory.
# The result has one narrow row per output row, in output order: the kind (0 order,
# 1 settlement line, 2 receipt), its 1-based position in its input table, and what the
# reconciliation adds. Order rows come first, by createdAt, orderId and duplicate rank,
# then settlement rows and receipt rows, each in input order. The input columns are
# attached afterwards, in Arrow, which keeps them out of DuckDB's joins and sort.
_RECONCILE_SQL = f"""
WITH
id_ranks AS (
    SELECT source_record,
        row_number() OVER (PARTITION BY order_id ORDER BY {_ORDER_TIE_BREAK}) AS id_rank,
        count(*) OVER (PARTITION BY order_id) AS id_copies
    FROM orders_input
    WHERE order_id IN (SELECT order_id FROM orders_input GROUP BY order_id HAVING count(*) > 1)
),
o AS NOT MATERIALIZED (
    SELECT o.*, c.exponent, coalesce(d.id_rank, 1) AS id_rank, d.id_copies,
        CASE WHEN o.status = 'cancelled' THEN 0 ELSE o.amount_minor END AS charged,
        CASE WHEN o.status IN ('refunded', 'partially_refunded') THEN o.refunded_minor
             ELSE 0 END AS refunded
    FROM orders_input o
    JOIN currencies c USING (currency)
    LEFT JOIN id_ranks d USING (source_record)
),
ref_ranks AS (
    SELECT source_record,
        row_number() OVER (PARTITION BY payment_reference ORDER BY {_ORDER_TIE_BREAK})
            AS ref_rank,
        first_value(order_id) OVER (
            PARTITION BY payment_reference ORDER BY {_ORDER_TIE_BREAK}) AS ref_first_order
    FROM o
    WHERE id_rank = 1 AND payment_reference IN (
        SELECT payment_reference FROM o
        WHERE id_rank = 1 AND payment_reference IS NOT NULL
        GROUP BY payment_reference HAVING count(*) > 1)
),
o_ref AS NOT MATERIALIZED (
    SELECT o.*, coalesce(r.ref_rank, 1) AS ref_rank, r.ref_first_order
    FROM o LEFT JOIN ref_ranks r USING (source_record)
),
primary_by_id AS (SELECT order_id, currency FROM o_ref WHERE id_rank = 1),
primary_by_ref AS (
    SELECT payment_reference, order_id, currency FROM o_ref
    WHERE id_rank = 1 AND ref_rank = 1 AND payment_reference IS NOT NULL
),
line_ranks AS (
    SELECT seq,
        row_number() OVER (PARTITION BY settlement_id ORDER BY seq) AS line_rank,
        first_value(source_file || ' record ' || source_record) OVER (
            PARTITION BY settlement_id ORDER BY seq) AS line_first
    FROM settlements_input
    WHERE settlement_id IN (
        SELECT settlement_id FROM settlements_input GROUP BY settlement_id HAVING count(*) > 1)
),
s_matched AS (
    SELECT s.seq, s.settlement_id, s.payment_reference, s.type, s.currency, s.amount_minor,
        s.settled_at, coalesce(d.line_rank, 1) AS line_rank, d.line_first,
        p.order_id AS matched_order_id, p.currency AS order_currency
    FROM settlements_input s
    LEFT JOIN line_ranks d USING (seq)
    LEFT JOIN primary_by_ref p
        ON coalesce(d.line_rank, 1) = 1 AND s.payment_reference = p.payment_reference
),
line_totals AS (
    SELECT matched_order_id AS order_id,
        count(*) AS line_count,
        sum(CASE WHEN type = 'charge' AND currency = order_currency THEN amount_minor
                 ELSE 0 END)::BIGINT AS charge_sum,
        sum(CASE WHEN type = 'refund' AND currency = order_currency THEN amount_minor
                 ELSE 0 END)::BIGINT AS refund_sum,
        count(*) FILTER (WHERE currency <> order_currency) AS line_currency_mismatches,
        min(settlement_id) AS first_settlement_id
    FROM s_matched WHERE matched_order_id IS NOT NULL
    GROUP BY matched_order_id
),
line_lists AS (
    SELECT matched_order_id AS order_id,
        string_agg(settlement_id, ' ' ORDER BY settlement_id) AS settlement_ids,
        string_agg(DISTINCT currency, ' ' ORDER BY currency)
            FILTER (WHERE currency <> order_currency) AS line_currencies
    FROM s_matched
    WHERE matched_order_id IN (
        SELECT order_id FROM line_totals
        WHERE line_count > 1 OR line_currency_mismatches > 0)
    GROUP BY matched_order_id
),
receipt_ranks AS (
    SELECT seq,
        row_number() OVER (PARTITION BY receipt_id ORDER BY seq) AS receipt_rank,
        first_value(source_file || ' record ' || source_record) OVER (
            PARTITION BY receipt_id ORDER BY seq) AS receipt_first
    FROM receipts_input
),
r_matched AS (
    SELECT r.*, d.receipt_rank, d.receipt_first,
        CASE WHEN d.receipt_rank = 1 THEN coalesce(by_id.order_id, by_ref.order_id) END
            AS matched_order_id,
        coalesce(by_id.currency, by_ref.currency) AS order_currency
    FROM receipts_input r
    JOIN receipt_ranks d USING (seq)
    LEFT JOIN primary_by_id by_id ON r.order_id = by_id.order_id
    LEFT JOIN primary_by_ref by_ref ON r.payment_reference = by_ref.payment_reference
),
receipt_totals AS (
    SELECT matched_order_id AS order_id,
        count(*) AS receipt_count,
        sum(CASE WHEN currency = order_currency THEN amount_minor ELSE 0 END)::BIGINT
            AS receipt_sum,
        count(*) FILTER (WHERE currency <> order_currency) AS receipt_currency_mismatches,
        string_agg(DISTINCT currency, ' ' ORDER BY currency)
            FILTER (WHERE currency <> order_currency) AS receipt_currencies,
        string_agg(receipt_id, ' ' ORDER BY receipt_id) AS receipt_ids
    FROM r_matched WHERE matched_order_id IS NOT NULL
    GROUP BY matched_order_id
),
order_facts AS (
    SELECT o.*,
        coalesce(l.line_count, 0) AS line_count,
        coalesce(l.charge_sum, 0) AS charge_sum,
        coalesce(l.refund_sum, 0) AS refund_sum,
        coalesce(l.line_currency_mismatches, 0) AS line_currency_mismatches,
        m.line_currencies,
        CASE WHEN l.line_count = 1 THEN l.first_settlement_id ELSE m.settlement_ids END
            AS settlement_ids,
        coalesce(t.receipt_count, 0) AS receipt_count,
        coalesce(t.receipt_sum, 0) AS receipt_sum,
        coalesce(t.receipt_currency_mismatches, 0) AS receipt_currency_mismatches,
        t.receipt_currencies, t.receipt_ids
    FROM o_ref o
    LEFT JOIN line_totals l ON o.id_rank = 1 AND o.order_id = l.order_id
    LEFT JOIN line_lists m ON o.id_rank = 1 AND o.order_id = m.order_id
    LEFT JOIN receipt_totals t ON o.id_rank = 1 AND o.order_id = t.order_id
),
order_classes AS (
    SELECT *,
        CASE
            WHEN id_rank > 1 OR ref_rank > 1 THEN '{DUPLICATE}'
            WHEN line_currency_mismatches > 0 OR receipt_currency_mismatches > 0
                THEN '{CURRENCY_MISMATCH}'
            WHEN payment_method IN ('card', 'wallet') AND status <> 'cancelled'
                AND line_count = 0 THEN '{MISSING_SETTLEMENT}'
            WHEN (line_count > 0 AND (charge_sum <> charged OR refund_sum <> -refunded))
                OR (receipt_count > 0 AND receipt_sum <> charged - refunded)
                THEN '{AMOUNT_MISMATCH}'
            WHEN status = 'refunded' THEN '{REFUND}'
            WHEN status = 'partially_refunded' THEN '{PARTIAL_REFUND}'
            ELSE '{MATCHED}'
        END AS class
    FROM order_facts
),
order_rows AS (
    SELECT 0::TINYINT AS kind_rank, source_record AS position, class,
        CASE class
            WHEN '{DUPLICATE}' THEN
                CASE WHEN id_rank > 1
                    THEN 'orderId ' || order_id || ' appears ' || id_copies
                        || ' times; the one created first is reconciled'
                    ELSE 'payment reference ' || payment_reference
                        || ' is also on order ' || ref_first_order || ', created earlier'
                END
            WHEN '{CURRENCY_MISMATCH}' THEN
                'order in ' || currency
                || CASE WHEN line_currencies IS NOT NULL
                    THEN ', settlement lines in ' || line_currencies ELSE '' END
                || CASE WHEN receipt_currencies IS NOT NULL
                    THEN ', receipts in ' || receipt_currencies ELSE '' END
            WHEN '{MISSING_SETTLEMENT}' THEN
                CASE WHEN payment_reference IS NULL
                    THEN payment_method || ' order has no payment reference'
                    ELSE 'no settlement line has payment reference ' || payment_reference
                END
            WHEN '{AMOUNT_MISMATCH}' THEN
                concat_ws('; ',
                    CASE WHEN line_count > 0 AND charge_sum <> charged
                        THEN 'charges settled ' || fmt_minor(charge_sum, exponent)
                            || ', expected ' || fmt_minor(charged, exponent) END,
                    CASE WHEN line_count > 0 AND refund_sum <> -refunded
                        THEN 'refunds settled ' || fmt_minor(refund_sum, exponent)
                            || ', expected ' || fmt_minor(-refunded, exponent) END,
                    CASE WHEN receipt_count > 0 AND receipt_sum <> charged - refunded
                        THEN 'receipts ' || fmt_minor(receipt_sum, exponent)
                            || ', expected ' || fmt_minor(charged - refunded, exponent) END)
            WHEN '{PARTIAL_REFUND}' THEN
                'refunded ' || fmt_minor(refunded, exponent) || ' of '
                || fmt_minor(charged, exponent)
            ELSE ''
        END AS reason,
        settlement_ids, receipt_ids,
        charged - refunded AS amount_minor, charge_sum + refund_sum AS settled_minor,
        receipt_sum AS receipts_minor,
        created_at AS occurred_at, order_id AS sort_id, id_rank AS sort_position
    FROM order_classes
),
settlement_rows AS (
    SELECT 1::TINYINT AS kind_rank, seq AS position,
        CASE WHEN line_rank > 1 THEN '{DUPLICATE}' ELSE '{SETTLEMENT_WITHOUT_ORDER}' END
            AS class,
        CASE WHEN line_rank > 1
            THEN 'settlement id ' || settlement_id || ' appears more than once; the first is '
                || line_first
            ELSE 'no order has payment reference ' || payment_reference
        END AS reason,
        settlement_id AS settlement_ids, NULL::VARCHAR AS receipt_ids,
        amount_minor, amount_minor AS settled_minor, 0::BIGINT AS receipts_minor,
        settled_at AS occurred_at, settlement_id AS sort_id, seq AS sort_position
    FROM s_matched WHERE matched_order_id IS NULL
),
receipt_rows AS (
    SELECT 2::TINYINT AS kind_rank, seq AS position,
        CASE WHEN receipt_rank > 1 THEN '{DUPLICATE}' ELSE '{MANUAL_ONLY}' END AS class,
        CASE
            WHEN receipt_rank > 1
                THEN 'receipt id ' || receipt_id || ' appears more than once; the first is '
                    || receipt_first
            WHEN order_id IS NULL AND payment_reference IS NULL
                THEN 'the receipt names no order id or payment reference'
            ELSE 'no order has '
                || concat_ws(' or ', 'orderId ' || order_id,
                             'payment reference ' || payment_reference)
        END AS reason,
        NULL::VARCHAR AS settlement_ids, receipt_id AS receipt_ids,
        amount_minor, 0::BIGINT AS settled_minor, amount_minor AS receipts_minor,
        taken_at AS occurred_at, receipt_id AS sort_id, seq AS sort_position
    FROM r_matched WHERE matched_order_id IS NULL
)
SELECT kind_rank, position, class, reason, settlement_ids, receipt_ids, amount_minor,
    settled_minor, receipts_minor
FROM (
    SELECT * FROM order_rows
    UNION ALL BY NAME SELECT * FROM settlement_rows
    UNION ALL BY NAME SELECT * FROM receipt_rows
)
ORDER BY kind_rank,
    CASE WHEN kind_rank = 0 THEN occurred_at END,
    CASE WHEN kind_rank = 0 THEN sort_id END,
    sort_position
"""
