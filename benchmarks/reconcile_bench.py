"""Benchmark the teardown reconciliation and export on generated data.

Generates, with a fixed seed, 1,000,000 orders (Parquet, read back as an Arrow table
as the orchestrator would hold them), a Stripe-layout settlement report of 1,000,000
lines and a receipts file of 10,000 rows, in a temporary directory. Then it runs each
phase in its own subprocess and prints its wall time and peak RSS:

* ``reconcile``: read and validate the CSVs and orders, and reconcile;
* ``export``: the same, then write the export files (only the write is timed, and the
  peak RSS covers the whole process);
* ``duckdb-join``: a reference, DuckDB reading the same CSVs and joining them with the
  orders by payment reference into a few per-class counts, without the validation;
* ``duckdb-same``: the reference for ``reconcile``: DuckDB reading and converting the
  CSVs itself, without the validation, then running the same reconciliation SQL.

Run: ``.venv/bin/python benchmarks/reconcile_bench.py`` (``--orders N`` for a smaller
run). Peak RSS is ``ru_maxrss`` of each subprocess, so it includes the interpreter
and the imported libraries. CPU time (user plus system, all threads) is printed beside
the wall time, because wall time on a shared machine depends on its other load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 20270605
EVENT_START = datetime.fromisoformat("2027-06-05T08:00:00+00:00")


def _mix(values: pa.Array, salt: int) -> pa.Array:
    """Return a deterministic pseudo-random int64 in [0, 2**31) for each value."""
    mixed = pc.bit_wise_and(pc.multiply(pc.add(values, SEED + salt), 2654435761), 0x7FFFFFFF)
    mixed = pc.bit_wise_xor(mixed, pc.shift_right(mixed, 13))
    return pc.bit_wise_and(pc.multiply(mixed, 40503), 0x7FFFFFFF)


def _counter(rows: int) -> pa.Array:
    """Return 1, 2, ..., rows as int64."""
    return pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), rows))


def _padded(prefix: str, values: pa.Array, width: int = 7) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(values, pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, text, "")


def _pick(choices: list[str], weights: list[int], draw: pa.Array) -> pa.Array:
    """Map draws in [0, 100) to choices by cumulative percentage weights."""
    conditions = []
    bound = 0
    for weight in weights[:-1]:
        bound += weight
        conditions.append(pc.less(draw, bound))
    return pc.case_when(pc.make_struct(*conditions), *choices)


def _decimal(minor: pa.Array, exponent: pa.Array) -> pa.Array:
    """Format minor units as decimal strings (exponents 0, 2 and 3 only)."""
    sign = pc.if_else(pc.less(minor, 0), "-", "")
    magnitude = pc.abs(minor)
    outputs = []
    for digits in (0, 2, 3):
        scale = 10**digits
        whole = pc.cast(pc.divide(magnitude, scale), pa.string())
        fraction = pc.utf8_lpad(
            pc.cast(
                pc.subtract(magnitude, pc.multiply(pc.divide(magnitude, scale), scale)), pa.string()
            ),
            width=max(digits, 1),
            padding="0",
        )
        text = whole if digits == 0 else pc.binary_join_element_wise(whole, fraction, ".")
        outputs.append(text)
    chosen = pc.case_when(
        pc.make_struct(pc.equal(exponent, 0), pc.equal(exponent, 2)),
        outputs[0],
        outputs[1],
        outputs[2],
    )
    return pc.binary_join_element_wise(sign, chosen, "")


def generate(directory: Path, orders: int, lines: int, receipts: int) -> None:
    """Write orders.parquet, settlements.csv and receipts.csv into ``directory``."""
    index = _counter(orders)
    currency_draw = pc.subtract(_mix(index, 1), pc.multiply(pc.divide(_mix(index, 1), 100), 100))
    currency = _pick(["EUR", "JPY", "KWD"], [98, 1, 1], currency_draw)
    method_draw = pc.subtract(_mix(index, 2), pc.multiply(pc.divide(_mix(index, 2), 100), 100))
    method = _pick(["card", "wallet", "cash", "manual"], [70, 20, 8, 2], method_draw)
    status_draw = pc.subtract(_mix(index, 3), pc.multiply(pc.divide(_mix(index, 3), 100), 100))
    status = _pick(
        ["paid", "refunded", "partially_refunded", "cancelled"], [95, 2, 2, 1], status_draw
    )
    amount = pc.add(
        pc.subtract(_mix(index, 4), pc.multiply(pc.divide(_mix(index, 4), 20000), 20000)), 100
    )
    refunded = pc.case_when(
        pc.make_struct(pc.equal(status, "refunded"), pc.equal(status, "partially_refunded")),
        amount,
        pc.divide(amount, 2),
        pa.scalar(0, pa.int64()),
    )
    seconds = pc.subtract(_mix(index, 5), pc.multiply(pc.divide(_mix(index, 5), 36000), 36000))
    start = int(EVENT_START.timestamp()) * 1_000_000
    created = pc.cast(pc.add(pc.multiply(seconds, 1_000_000), start), pa.timestamp("us"))
    created_text = pc.binary_join_element_wise(
        pc.strftime(pc.cast(created, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%S"), "Z", ""
    )
    is_cash = pc.equal(method, "cash")
    reference = pc.case_when(
        pc.make_struct(is_cash, pc.equal(method, "manual")),
        pa.scalar(None, pa.string()),
        _padded("tok_", index),
        _padded("ch_", index),
    )
    location = _pick(
        ["chiado", "belem", "alfama", "baixa", "online"],
        [30, 25, 20, 15, 10],
        pc.subtract(_mix(index, 6), pc.multiply(pc.divide(_mix(index, 6), 100), 100)),
    )
    order_table = pa.table(
        {
            "orderId": _padded("o-", index),
            "locationId": location,
            "createdAt": created_text,
            "currency": currency,
            "amountMinor": amount,
            "paymentMethod": method,
            "paymentReference": reference,
            "status": status,
            "refundedMinor": refunded,
            "customerEmail": pc.binary_join_element_wise(_padded("c", index), "@example.com", ""),
        }
    )
    pq.write_table(order_table, directory / "orders.parquet")

    # One charge line per card or wallet order that is not cancelled; 1% of them settle
    # one minor unit short. Refund lines for refunded orders, then lines of unknown
    # charges and repeated lines up to the requested count.
    paid_card = pc.and_(
        pc.is_in(method, value_set=pa.array(["card", "wallet"])),
        pc.not_equal(status, "cancelled"),
    )
    charges = order_table.filter(paid_card).combine_chunks()
    short = pc.equal(
        pc.subtract(
            _mix(charges["amountMinor"], 7),
            pc.multiply(pc.divide(_mix(charges["amountMinor"], 7), 100), 100),
        ),
        0,
    )
    charge_amount = pc.subtract(charges["amountMinor"], pc.cast(short, pa.int64()))
    refunds = charges.filter(pc.greater(charges["refundedMinor"], 0)).combine_chunks()
    count = charges.num_rows + refunds.num_rows
    extra = max(lines - count, 0)
    extra_index = _counter(extra)
    exp_of = {"EUR": 2, "JPY": 0, "KWD": 3}

    def exponents(codes: pa.Array) -> pa.Array:
        return pc.case_when(
            pc.make_struct(pc.equal(codes, "JPY"), pc.equal(codes, "KWD")),
            pa.scalar(exp_of["JPY"], pa.int64()),
            pa.scalar(exp_of["KWD"], pa.int64()),
            pa.scalar(exp_of["EUR"], pa.int64()),
        )

    def lines_table(ids, refs, kinds, codes, gross, times) -> pa.Table:
        fee = pc.if_else(pc.equal(kinds, "charge"), pc.divide(gross, 40), 0)
        exps = exponents(codes)
        return pa.table(
            {
                "balance_transaction_id": ids,
                "created_utc": times,
                "currency": pc.utf8_lower(codes),
                "gross": _decimal(gross, exps),
                "fee": _decimal(fee, exps),
                "net": _decimal(pc.subtract(gross, fee), exps),
                "reporting_category": kinds,
                "source_id": refs,
                "charge_id": refs,
                "description": pa.repeat(pa.scalar("Pop-up sale", pa.string()), len(ids)),
            }
        )

    def stripe_times(values: pa.Array) -> pa.Array:
        return pc.strftime(
            pc.cast(pc.cast(values, pa.timestamp("us")), pa.timestamp("s")),
            format="%Y-%m-%d %H:%M:%S",
        )

    charge_times = stripe_times(
        pc.cast(pc.cast(charges["createdAt"], pa.timestamp("s", tz="UTC")), pa.timestamp("s"))
    )
    parts = [
        lines_table(
            _padded("txn_c", _counter(charges.num_rows)),
            charges["paymentReference"],
            pa.repeat(pa.scalar("charge"), charges.num_rows),
            charges["currency"],
            charge_amount,
            charge_times,
        ),
        lines_table(
            _padded("txn_r", _counter(refunds.num_rows)),
            refunds["paymentReference"],
            pa.repeat(pa.scalar("refund"), refunds.num_rows),
            refunds["currency"],
            pc.negate(refunds["refundedMinor"]),
            stripe_times(
                pc.cast(
                    pc.cast(refunds["createdAt"], pa.timestamp("s", tz="UTC")), pa.timestamp("s")
                )
            ),
        ),
        lines_table(
            _padded("txn_x", extra_index),
            _padded("ch_x", extra_index),
            pa.repeat(pa.scalar("charge"), extra),
            pa.repeat(pa.scalar("EUR"), extra),
            pc.add(
                pc.subtract(
                    _mix(extra_index, 8), pc.multiply(pc.divide(_mix(extra_index, 8), 5000), 5000)
                ),
                1,
            ),
            pa.repeat(pa.scalar("2027-06-05 12:00:00"), extra),
        ),
    ]
    settlements = pa.concat_tables(parts)
    options = pacsv.WriteOptions(quoting_style="none", eol="\r\n")
    pacsv.write_csv(
        settlements.slice(0, lines), directory / "settlements.csv", write_options=options
    )

    cash = order_table.filter(pc.and_(is_cash, pc.equal(status, "paid")))
    cash_receipts = cash.slice(0, min(receipts, cash.num_rows)).combine_chunks()
    manual_only = receipts - cash_receipts.num_rows
    manual_index = _counter(manual_only)
    receipt_table = pa.table(
        {
            "receipt_id": pa.concat_arrays(
                [
                    _padded("r-", _counter(cash_receipts.num_rows)),
                    _padded("r-m", manual_index),
                ]
            ),
            "location_id": pa.concat_arrays(
                [
                    cash_receipts["locationId"].combine_chunks(),
                    pa.repeat(pa.scalar("chiado"), manual_only),
                ]
            ),
            "taken_at": pa.concat_arrays(
                [
                    cash_receipts["createdAt"].combine_chunks(),
                    pa.repeat(pa.scalar("2027-06-05T12:00:00+01:00"), manual_only),
                ]
            ),
            "amount": pa.concat_arrays(
                [
                    _decimal(
                        cash_receipts["amountMinor"].combine_chunks(),
                        exponents(cash_receipts["currency"].combine_chunks()),
                    ),
                    pa.repeat(pa.scalar("9.90"), manual_only),
                ]
            ),
            "currency": pa.concat_arrays(
                [
                    cash_receipts["currency"].combine_chunks(),
                    pa.repeat(pa.scalar("EUR"), manual_only),
                ]
            ),
            "payment_method": pa.repeat(pa.scalar("cash"), receipts),
            "order_id": pa.concat_arrays(
                [cash_receipts["orderId"].combine_chunks(), pa.nulls(manual_only, pa.string())]
            ),
            "staff_id": pa.repeat(pa.scalar("staff-01"), receipts),
            "note": pa.repeat(pa.scalar("cash_receipts at the till"), receipts),
        }
    )
    pacsv.write_csv(
        receipt_table,
        directory / "receipts.csv",
        write_options=pacsv.WriteOptions(quoting_style="needed"),
    )


def _duckdb_join(directory: Path, orders: pa.Table) -> dict[str, float]:
    """Join orders with the CSV files by payment reference and count per class, in DuckDB."""
    import duckdb

    started = time.perf_counter()
    connection = duckdb.connect()
    connection.register("orders", orders)
    counts = connection.sql(
        f"""
        WITH s AS (
            SELECT * FROM read_csv('{directory / "settlements.csv"}', header = true,
                                   all_varchar = true)
        ),
        r AS (
            SELECT * FROM read_csv('{directory / "receipts.csv"}', header = true,
                                   all_varchar = true)
        ),
        lines AS (
            SELECT charge_id, sum(CAST(gross AS DECIMAL(18, 3))) AS settled, count(*) AS n
            FROM s GROUP BY charge_id
        ),
        receipts AS (
            SELECT order_id, sum(CAST(amount AS DECIMAL(18, 3))) AS received
            FROM r GROUP BY order_id
        )
        SELECT CASE
            WHEN l.n IS NULL AND o.paymentMethod IN ('card', 'wallet') THEN 'missing'
            WHEN l.n IS NOT NULL AND l.settled * 100 <> o.amountMinor - o.refundedMinor
                THEN 'mismatch'
            ELSE 'matched' END AS class, count(*)
        FROM orders o
        LEFT JOIN lines l ON o.paymentReference = l.charge_id
        LEFT JOIN receipts c ON o.orderId = c.order_id
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    return {"duckdb_join_s": time.perf_counter() - started, "groups": len(counts)}


def _duckdb_same_sql(directory: Path, orders: pa.Table) -> dict[str, float]:
    """Run teardown.reconcile's SQL on tables that DuckDB reads and converts itself.

    DuckDB parses the CSV files and converts amounts through DECIMAL and times through
    its own casts, without the validation of teardown.csvinput. The result is the same
    classified, sorted rows, materialised as an Arrow table.
    """
    import duckdb

    from teardown import reconcile

    started = time.perf_counter()
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    connection.register("orders_raw", orders)
    connection.register(
        "currencies",
        pa.table({"currency": ["EUR", "JPY", "KWD"], "exponent": [2, 0, 3]}),
    )
    connection.execute(reconcile._MACROS)
    connection.execute(
        """
        CREATE TEMP VIEW orders_input AS
        SELECT orderId AS order_id, locationId AS location_id,
            CAST(CAST(createdAt AS TIMESTAMPTZ) AS TIMESTAMP) AS created_at,
            currency, amountMinor AS amount_minor, paymentMethod AS payment_method,
            paymentReference AS payment_reference, status,
            CASE WHEN status = 'refunded' THEN amountMinor ELSE refundedMinor END
                AS refunded_minor,
            NULL::VARCHAR AS card_last4,
            row_number() OVER () AS source_record
        FROM orders_raw
        """
    )
    connection.execute(
        f"""
        CREATE TEMP TABLE settlements_input AS
        SELECT balance_transaction_id AS settlement_id,
            coalesce(charge_id, source_id) AS payment_reference,
            reporting_category AS type, upper(s.currency) AS currency,
            CAST(CAST(gross AS DECIMAL(18, 3)) * 10 ** c.exponent AS BIGINT) AS amount_minor,
            CAST(CAST(fee AS DECIMAL(18, 3)) * 10 ** c.exponent AS BIGINT) AS fee_minor,
            CAST(CAST(net AS DECIMAL(18, 3)) * 10 ** c.exponent AS BIGINT) AS net_minor,
            strptime(created_utc, '%Y-%m-%d %H:%M:%S') AS settled_at,
            description, 'settlements.csv' AS source_file,
            row_number() OVER () AS source_record, row_number() OVER () AS seq
        FROM read_csv('{directory / "settlements.csv"}', header = true, all_varchar = true) s
        JOIN currencies c ON c.currency = upper(s.currency)
        """
    )
    connection.execute(
        f"""
        CREATE TEMP TABLE receipts_input AS
        SELECT receipt_id, location_id,
            CAST(CAST(taken_at AS TIMESTAMPTZ) AS TIMESTAMP) AS taken_at, r.currency,
            CAST(CAST(amount AS DECIMAL(18, 3)) * 10 ** c.exponent AS BIGINT) AS amount_minor,
            payment_method, order_id, NULL::VARCHAR AS payment_reference, staff_id, note,
            'receipts.csv' AS source_file,
            row_number() OVER () AS source_record, row_number() OVER () AS seq
        FROM read_csv('{directory / "receipts.csv"}', header = true, all_varchar = true) r
        JOIN currencies c ON c.currency = r.currency
        """
    )
    rows = connection.sql(reconcile._RECONCILE_SQL).to_arrow_table()
    return {"duckdb_same_s": time.perf_counter() - started, "rows": rows.num_rows}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """Return the user plus system CPU time of this process, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_phase(phase: str, directory: Path) -> dict[str, float]:
    """Run one phase in this process and return its timings and peak RSS."""
    from teardown.csvinput import FORMATS, InputFile, read_receipts, read_settlements
    from teardown.export import ExportContext, normalise_dead_letters, write_export
    from teardown.reconcile import load_orders, reconcile

    result: dict[str, float] = {}
    orders_raw = pq.read_table(directory / "orders.parquet")
    cpu = _cpu_seconds()
    if phase == "duckdb-join":
        result.update(_duckdb_join(directory, orders_raw))
        result["cpu_s"] = _cpu_seconds() - cpu
        result["peak_rss_mib"] = _peak_rss_mib()
        return result
    if phase == "duckdb-same":
        result.update(_duckdb_same_sql(directory, orders_raw))
        result["cpu_s"] = _cpu_seconds() - cpu
        result["peak_rss_mib"] = _peak_rss_mib()
        return result

    started = time.perf_counter()
    settlement_file = InputFile(
        "settlements.csv",
        (directory / "settlements.csv").read_bytes(),
        FORMATS["default"],
        "stripe",
    )
    receipt_file = InputFile("receipts.csv", (directory / "receipts.csv").read_bytes())
    orders = load_orders(orders_raw)
    del orders_raw
    settlements = read_settlements([settlement_file])
    receipts = read_receipts([receipt_file])
    reconciliation = reconcile(orders, settlements, receipts, time_zone="Europe/Lisbon")
    result["reconcile_s"] = time.perf_counter() - started
    result["reconcile_cpu_s"] = _cpu_seconds() - cpu
    result["rows"] = reconciliation.rows.num_rows
    if phase == "export":
        context = ExportContext(
            "bench",
            datetime.fromisoformat("2027-06-05T09:00:00+01:00"),
            datetime.fromisoformat("2027-06-05T19:00:00+01:00"),
            "Europe/Lisbon",
        )
        target = directory / "export"
        shutil.rmtree(target, ignore_errors=True)
        started = time.perf_counter()
        cpu = _cpu_seconds()
        write_export(
            target,
            context,
            settlements=settlements,
            receipts=receipts,
            dead_letters=normalise_dead_letters([]),
            reconciliation=reconciliation,
        )
        result["export_s"] = time.perf_counter() - started
        result["export_cpu_s"] = _cpu_seconds() - cpu
        result["export_mib"] = (
            sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2**20
        )
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000, help="number of orders")
    parser.add_argument("--lines", type=int, default=1_000_000, help="settlement lines")
    parser.add_argument("--receipts", type=int, default=10_000, help="manual receipts")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.data)))
        return
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as name:
        directory = Path(name)
        started = time.perf_counter()
        generate(directory, args.orders, args.lines, args.receipts)
        print(
            f"generated {args.orders} orders, {args.lines} lines, {args.receipts} receipts "
            f"in {time.perf_counter() - started:.1f} s "
            f"(settlements.csv {(directory / 'settlements.csv').stat().st_size / 2**20:.0f} MiB)"
        )
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"load average before the phases: {load} on {os.cpu_count()} cores")
        for phase in ("duckdb-join", "duckdb-same", "reconcile", "export"):
            output = subprocess.run(
                [sys.executable, __file__, "--phase", phase, "--data", str(directory)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            print(
                phase,
                " ".join(
                    f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in figures.items()
                ),
            )


if __name__ == "__main__":
    main()
