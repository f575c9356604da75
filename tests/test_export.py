"""Export files: determinism, the committed expected export, verification and personal data."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from teardown import export
from teardown.csvinput import FORMATS, InputError, InputFile
from teardown.export import (
    MANIFEST,
    ExportContext,
    export_event,
    normalise_dead_letters,
    redact_json_body,
    redact_text,
    verify_export,
)
from teardown.money import exponent, format_minor

DATA = Path(__file__).parent / "data" / "reconcile"
EXPECTED = DATA / "expected"
CONTEXT = ExportContext(
    "lisbon-popup",
    datetime.fromisoformat("2027-06-05T10:00:00+01:00"),
    datetime.fromisoformat("2027-06-05T18:00:00+01:00"),
    "Europe/Lisbon",
)

# Personal data in the fixture inputs; none of it may appear in any exported byte.
PERSONAL_DATA = [
    "ana.silva@example.com",
    "rui@example.org",
    "joao.p@example.net",
    "marta@example.com",
    "ops@example.com",
    "+351 912 345 678",
    "+351 213 000 111",
    "+351 912 000 333",
    "+351 919 876 543",
    "213 456 789",
    "4111 1111 1111 1111",
    "4111111111111111",
    "5500005555555559",
    "4242 4242 4242 4242",
    "4000056655665556",
]


def fixture_inputs() -> dict:
    return {
        "orders": json.loads((DATA / "orders.json").read_text()),
        "settlement_files": [
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
        ],
        "receipt_files": [InputFile("receipts.csv", (DATA / "receipts.csv").read_bytes())],
        "dead_letters": json.loads((DATA / "dead_letters.json").read_text()),
    }


def write_fixture_export(directory: Path):
    """Write the export of the committed fixture inputs (also used to regenerate EXPECTED)."""
    return export_event(directory, CONTEXT, **fixture_inputs())


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def written(tmp_path):
    result = write_fixture_export(tmp_path / "export")
    return result


# Determinism


def test_two_runs_are_byte_identical(tmp_path):
    first = files_of(write_fixture_export(tmp_path / "a").directory)
    second = files_of(write_fixture_export(tmp_path / "b").directory)
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name] == second[name], name


def test_shuffled_scan_gives_identical_files(tmp_path):
    inputs = fixture_inputs()
    inputs["orders"] = list(reversed(inputs["orders"]))
    inputs["dead_letters"] = list(reversed(inputs["dead_letters"]))
    shuffled = files_of(export_event(tmp_path / "b", CONTEXT, **inputs).directory)
    assert shuffled == files_of(write_fixture_export(tmp_path / "a").directory)


def test_text_files_match_committed_expected(written):
    produced = files_of(written.directory)
    expected = files_of(EXPECTED)
    assert sorted(produced) == sorted(expected)
    for name, data in expected.items():
        if name.endswith(".parquet") or name == MANIFEST:
            continue
        assert produced[name] == data, f"{name} differs from {EXPECTED / name}"


def test_parquet_and_manifest_match_committed_expected(written):
    expected_manifest = json.loads((EXPECTED / MANIFEST).read_bytes())
    version = expected_manifest["generator"]["pyarrow"]
    produced = files_of(written.directory)
    for name in produced:
        if name.endswith(".parquet"):
            # The content is independent of the pyarrow version, the bytes are not.
            assert pq.read_table(written.directory / name).equals(pq.read_table(EXPECTED / name))
    if pa.__version__ != version:
        pytest.skip(
            f"expected Parquet bytes were written by pyarrow {version}, not {pa.__version__}"
        )
    for name in produced:
        if name.endswith(".parquet") or name == MANIFEST:
            assert produced[name] == (EXPECTED / name).read_bytes(), name


def test_expected_csv_content_read_back():
    orders = (EXPECTED / "orders.csv").read_text().splitlines()
    assert orders[0] == (
        '"order_id","location_id","created_at","currency","amount_minor","amount",'
        '"payment_method","payment_reference","status","refunded_minor","refunded","card_last4"'
    )
    assert orders[1] == (
        '"o-001","chiado","2027-06-05T09:05:00+00:00","EUR",1250,"12.50","card","ch_001",'
        '"paid",0,"0.00","1111"'
    )
    assert '"o-012","belem","2027-06-05T12:30:00+00:00","KWD",1234,"1.234"' in orders[11]
    assert '"o-011","belem","2027-06-05T12:00:00+00:00","JPY",1500,"1500"' in orders[10]
    data = (EXPECTED / "orders.csv").read_bytes()
    assert data.count(b"\r\n") == 14
    assert data.count(b"\n") == 14


def test_parquet_types(written):
    orders = pq.read_table(written.directory / "orders.parquet")
    assert orders.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert orders.schema.field("amount_minor").type == pa.int64()
    assert orders.schema.field("amount").type == pa.string()
    assert orders.column("amount").to_pylist()[:2] == ["12.50", "20.00"]
    rows = pq.read_table(written.directory / "reconciliation.parquet")
    assert rows.num_rows == 18
    assert rows.column("hour")[0].as_py() == "2027-06-05T10:00:00+01:00"


def test_manifest_lists_every_file(written):
    manifest = json.loads((written.directory / MANIFEST).read_bytes())
    names = [entry["name"] for entry in manifest["files"]]
    on_disk = sorted(files_of(written.directory))
    assert sorted(names + [MANIFEST]) == on_disk
    assert names == sorted(names)
    for entry in manifest["files"]:
        data = (written.directory / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    rows = {entry["name"]: entry["rows"] for entry in manifest["files"]}
    assert rows["orders.csv"] == 13
    assert rows["reconciliation.parquet"] == 18
    assert rows["received/settlement-1-stripe_settlements.csv"] == 8
    assert rows["report.html"] is None
    assert manifest["event"] == {
        "id": "lisbon-popup",
        "window": {
            "opens": "2027-06-05T10:00:00+01:00",
            "closes": "2027-06-05T18:00:00+01:00",
            "time_zone": "Europe/Lisbon",
        },
    }
    assert "generated_at" not in manifest
    assert manifest["class_counts"]["duplicate"] == 3
    assert (
        written.manifest_sha256
        == hashlib.sha256((written.directory / MANIFEST).read_bytes()).hexdigest()
    )


def test_manifest_records_original_inputs(written):
    inputs = {entry["name"]: entry for entry in written.manifest["inputs"]}
    stripe = inputs["stripe_settlements.csv"]
    original = (DATA / "stripe_settlements.csv").read_bytes()
    assert stripe["sha256"] == hashlib.sha256(original).hexdigest()
    assert stripe["bytes"] == len(original)
    assert stripe["redacted_spans"] == 1
    assert stripe["format"] == {
        "decimal": ".",
        "delimiter": ",",
        "encoding": "utf-8",
        "thousands": None,
    }
    assert inputs["receipts.csv"]["redacted_spans"] == 3


def test_generated_at_only_when_given(tmp_path):
    context = ExportContext(
        CONTEXT.event_id,
        CONTEXT.opens,
        CONTEXT.closes,
        CONTEXT.time_zone,
        generated_at=datetime.fromisoformat("2027-06-06T09:00:00+00:00"),
    )
    result = export_event(tmp_path / "x", context, **fixture_inputs())
    assert result.manifest["generated_at"] == "2027-06-06T09:00:00+00:00"
    assert "Generated 2027-06-06T09:00:00+00:00." in (result.directory / "report.html").read_text()


# Received copies


def test_received_copy_is_input_except_redacted_spans(written):
    original = (DATA / "generic_settlements_eu.csv").read_bytes()
    copy = (written.directory / "received/settlement-2-generic_settlements_eu.csv").read_bytes()
    assert copy == original
    stripe = (written.directory / "received/settlement-1-stripe_settlements.csv").read_bytes()
    expected = (
        (DATA / "stripe_settlements.csv").read_bytes().replace(b"ana.silva@example.com", b"[email]")
    )
    assert stripe == expected
    assert stripe.startswith(b"\xef\xbb\xbf")


# Personal data


def test_no_personal_data_in_any_file(written):
    for name, data in files_of(written.directory).items():
        for value in PERSONAL_DATA:
            assert value.encode() not in data, f"{value!r} found in {name}"
        assert b"@example." not in data, name


def test_card_numbers_are_reduced_to_last_four(written):
    orders = (written.directory / "orders.csv").read_text()
    assert '"1111"' in orders
    assert '"5559"' in orders
    receipts = (written.directory / "receipts.csv").read_text()
    assert "Offline card [card ending 4242] exchanged for token" in receipts
    letters = (written.directory / "dead_letters.csv").read_text()
    assert "[card ending 5556]" in letters


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("mail ana@example.com now", "mail [email] now"),
        ("card 4111 1111 1111 1111 ok", "card [card ending 1111] ok"),
        ("card 4111-1111-1111-1111", "card [card ending 1111]"),
        ("card 4111111111111112 fails Luhn", "card 4111111111111112 fails Luhn"),
        ("pan 4111 1111 1111 1111 999 extra", "pan [card ending 1111] extra"),
        ("call +351 912 345 678", "call [phone]"),
        ("call (555) 123-4567 today", "call [phone] today"),
        ("call 213 456 789", "call [phone]"),
        ("sku 12345678 stays", "sku 12345678 stays"),
        ("at 2027-06-05 10:00:00", "at 2027-06-05 10:00:00"),
        ("order o-015 for 2500", "order o-015 for 2500"),
    ],
)
def test_redact_text(text, redacted):
    assert redact_text(text)[0] == redacted


def test_redact_json_body():
    body = json.dumps(
        {"orderId": "o-1", "customerEmail": "x@example.com", "cardNumber": "4000056655665556"}
    )
    redacted, order_id, count = redact_json_body(body)
    assert redacted == (
        '{"cardNumber":"[card ending 5556]","customerEmail":"[redacted]","orderId":"o-1"}'
    )
    assert order_id == "o-1"
    assert count == 2


def test_dead_letters_normalised_and_sorted():
    table = normalise_dead_letters(
        [
            {"messageId": "m2", "body": "b", "sentAt": "1812186000000", "receiveCount": "4"},
            {
                "messageId": "m1",
                "body": "a",
                "sentAt": "2027-06-05T09:00:00+01:00",
                "receiveCount": 2,
            },
        ]
    )
    assert table.column("message_id").to_pylist() == ["m1", "m2"]
    assert table.column("receive_count").to_pylist() == [2, 4]
    assert [t.isoformat() for t in table.column("sent_at").to_pylist()] == [
        "2027-06-05T08:00:00+00:00",
        "2027-06-05T09:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"messageId": "m1", "body": "a", "sentAt": "2027-06-05T09:00:00", "receiveCount": 1},
            "dead letters, record 1, column sentAt: sentAt 2027-06-05T09:00:00 has no UTC "
            "offset; add one",
        ),
        (
            {"messageId": "", "body": "a", "sentAt": 1, "receiveCount": 1},
            "dead letters, record 1, column messageId: messageId is missing; pass the SQS "
            "message id",
        ),
        (
            {"messageId": "m1", "body": None, "sentAt": 1, "receiveCount": 1},
            "dead letters, record 1, column body: body must be a string, got NoneType",
        ),
        (
            {"messageId": "m1", "body": "a", "sentAt": 1, "receiveCount": -1},
            "dead letters, record 1, column receiveCount: receiveCount -1 is not a "
            "non-negative integer",
        ),
    ],
)
def test_invalid_dead_letter_rejected(record, message):
    with pytest.raises(InputError) as error:
        normalise_dead_letters([record])
    assert str(error.value) == message


# Verification


def test_verify_untouched_export(written):
    result = verify_export(written.directory)
    assert result.ok
    assert result.checked == 16
    assert str(result) == "all 16 files match the manifest"


def test_verify_names_tampered_truncated_and_missing_files(written):
    directory = written.directory
    orders = directory / "orders.csv"
    orders.write_bytes(orders.read_bytes().replace(b"12.50", b"12.60"))
    parquet = directory / "reconciliation.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-10])
    (directory / "received/receipt-1-receipts.csv").unlink()
    (directory / "extra.txt").write_text("not from the export")
    result = verify_export(directory, manifest_sha256=written.manifest_sha256)
    assert not result.ok
    assert result.failed_names == [
        "extra.txt",
        "orders.csv",
        "received/receipt-1-receipts.csv",
        "reconciliation.parquet",
    ]
    kinds = {(problem.name, problem.kind) for problem in result.problems}
    assert ("orders.csv", "sha256") in kinds
    assert ("orders.csv", "size") not in kinds
    assert ("reconciliation.parquet", "size") in kinds
    assert ("received/receipt-1-receipts.csv", "missing") in kinds
    assert ("extra.txt", "unexpected") in kinds


def test_verify_with_reader_callable(written):
    stored = files_of(written.directory)
    stored["totals.csv"] = stored["totals.csv"][:-1]
    del stored["report.html"]

    def read(name: str) -> bytes:
        return stored[name]

    result = verify_export(read, written.manifest)
    assert result.failed_names == ["report.html", "totals.csv"]


def test_verify_detects_changed_manifest(written):
    path = written.directory / MANIFEST
    path.write_bytes(path.read_bytes().replace(b'"lisbon-popup"', b'"other-event"'))
    result = verify_export(written.directory, manifest_sha256=written.manifest_sha256)
    assert result.failed_names == [MANIFEST]


def test_verify_rejects_paths_outside_export(written):
    manifest = dict(written.manifest)
    manifest["files"] = [{"name": "../secret", "bytes": 1, "sha256": "0" * 64, "rows": None}]
    result = verify_export(written.directory, manifest)
    assert [(p.name, p.kind) for p in result.problems][0] == ("../secret", "invalid_name")


# Writing


def test_invalid_order_writes_nothing(tmp_path):
    inputs = fixture_inputs()
    inputs["orders"][3]["createdAt"] = "2027-06-05T11:10:00"
    with pytest.raises(InputError) as error:
        export_event(tmp_path / "export", CONTEXT, **inputs)
    assert str(error.value).startswith("orders, record 4, column createdAt: time")
    assert list(tmp_path.iterdir()) == []


def test_existing_export_is_not_overwritten(written):
    with pytest.raises(FileExistsError):
        write_fixture_export(written.directory)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "_render_report", fail)
    with pytest.raises(OSError, match="disk full"):
        write_fixture_export(tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


def test_report_has_totals_and_inline_chart(written):
    report = (written.directory / "report.html").read_text()
    assert "<script" not in report
    assert "http://" not in report.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert report.count("<svg") == 3
    assert "<title>2027-06-05T16:00:00+01:00: 1234.56 EUR</title>" in report
    assert "Totals per location" in report
    assert "Totals per payment method" in report
    assert "Totals per hour" in report
    assert re.search(r"<td>chiado</td><td>EUR</td><td class=\"number\">7</td>", report)


@pytest.mark.parametrize("minor", [0, 1, -1, 5, -5, 99, 100, -100, 1234, -1234, 10**14 + 7])
@pytest.mark.parametrize("currency", ["JPY", "USD", "KWD", "CLF"])
def test_sql_decimal_matches_format_minor(minor, currency):
    expression = export._decimal_sql("v", {currency: exponent(currency)})
    query = f"SELECT {expression} FROM (SELECT {minor}::BIGINT AS v, '{currency}' AS currency)"
    value = duckdb.sql(query).fetchall()[0][0]
    assert value == format_minor(minor, currency)


def test_sql_decimal_with_several_currencies():
    expression = export._decimal_sql("v", {"JPY": 0, "USD": 2})
    query = (
        f"SELECT {expression} FROM (VALUES (-5::BIGINT, 'USD'), (-5::BIGINT, 'JPY')) "
        "AS t(v, currency)"
    )
    assert [row[0] for row in duckdb.sql(query).fetchall()] == ["-0.05", "-5"]


def test_sql_time_matches_python():
    for text in ["2027-06-05 10:00:05", "2027-06-05 10:00:05.5", "2027-06-05 10:00:05.123456"]:
        value = duckdb.sql(
            f"SELECT {export._time_sql('t')} FROM (SELECT TIMESTAMP '{text}' AS t)"
        ).fetchall()[0][0]
        moment = datetime.fromisoformat(text + "+00:00")
        assert value == export._iso_time(moment)


def test_csv_neutralises_formula_text(tmp_path):
    inputs = fixture_inputs()
    lines = (DATA / "receipts.csv").read_bytes().decode("utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\r\n").split(",")
    note = header.index("note")
    fields = lines[1].rstrip("\r\n").split(",")
    fields[note] = '"=HYPERLINK(""http://127.0.0.1/x"",""click"")"'
    lines[1] = ",".join(fields) + "\r\n"
    inputs["receipt_files"] = [InputFile("receipts.csv", "".join(lines).encode("utf-8"))]

    result = export_event(tmp_path / "export", CONTEXT, **inputs)

    rows = list(csv.DictReader(io.StringIO((result.directory / "receipts.csv").read_text())))
    notes = [row["note"] for row in rows]
    assert '\'=HYPERLINK("http://127.0.0.1/x","click")' in notes
    assert not any(n.startswith("=") for n in notes)
    table = pq.read_table(result.directory / "receipts.parquet")
    assert '=HYPERLINK("http://127.0.0.1/x","click")' in table.column("note").to_pylist()


def test_flag_audit_csv_redacts_reasons_and_neutralises_formulas() -> None:
    from lambdas.flagstore import AuditEntry
    from teardown.export import flag_audit_csv

    entry = AuditEntry(
        version=3,
        label="popstack-flag",
        at="2027-06-05T12:00:00Z",
        actor='=HYPERLINK("x")',
        reason="call +351 912 345 678 or rita@example.com, card 4242 4242 4242 4242",
        flag="checkout_enabled",
        old=True,
        new=False,
        deployment=4,
        deployment_state="COMPLETE",
    )

    assert flag_audit_csv([entry]) == (
        b"version,at,actor,reason,flag,old,new,deployment,deployment_state,label\r\n"
        b'3,2027-06-05T12:00:00Z,"\'=HYPERLINK(""x"")","call [phone] or [email], card '
        b'[card ending 4242]",checkout_enabled,on,off,4,COMPLETE,popstack-flag\r\n'
    )
