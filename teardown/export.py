"""Write an event's teardown export to a local directory, and verify one.

``export_event`` is the entry point for the teardown: it reads and validates every
input first (``teardown.csvinput``, ``teardown.reconcile.load_orders``), reconciles,
and only then writes. ``write_export`` writes already validated data, and
``verify_export`` checks an export against its manifest, from a directory or from a
callable that returns a file's bytes by name (for a copy in object storage).

Files, all listed in ``manifest.json`` (``docs/export-format.md`` has every column):

* ``orders``, ``settlements``, ``receipts``, ``dead_letters``, ``reconciliation`` and
  ``totals``, each as ``.csv`` and ``.parquet``;
* ``received/settlement-<n>-<name>`` and ``received/receipt-<n>-<name>``: each input
  file as received, byte for byte, except for redacted spans (below);
* ``report.html``, rendered from ``templates/reconciliation_report.html.j2``;
* ``manifest.json``, which is not listed in itself.

Determinism: the same inputs give byte-identical files. Rows have a fixed order, and
pyarrow writes CSV with ``\\r\\n`` line ends and Parquet with fixed settings (snappy
compression, dictionary encoding, row groups of 1,048,576 rows). The Parquet footer names the
pyarrow version, so another pyarrow version writes different Parquet bytes. The
manifest has sorted keys and no time unless the caller passes ``generated_at``.

Personal data:

* Orders: ``customerEmail`` and ``customerPhone`` are dropped, ``cardNumber`` becomes
  ``card_last4``, and fields outside the order contract are dropped.
* Dead-letter bodies: in a JSON body the values of the keys in ``PERSONAL_DATA_KEYS``
  are replaced, card numbers by their last four digits, and the body is written back
  compactly with sorted keys. Then every body goes through ``redact_text``.
* Settlement and receipt files: the values of their free-text columns (``note``,
  ``description`` and every column the layout does not know) go through
  ``redact_text``. In the normalised files the redacted value replaces the original.
  In the received copies each redacted span is replaced by its marker wherever that
  exact text occurs in the file. The manifest records the size and SHA-256 of each
  original input.

``redact_text`` replaces, in this order, e-mail addresses with ``[email]``, runs of 13
to 19 digits (single spaces or hyphens allowed between digits) that pass the Luhn check
with ``[card ending NNNN]``, and phone numbers with ``[phone]``. A phone number is a run
of digit groups separated by one space, dot or hyphen, or by parentheses as in
``(555) 123-4567``, not touching letters, digits or ``:``, with 7 to 15 digits after a
leading ``+`` or 9 to 15 digits without one.

NOTE: redaction finds personal data by pattern only. Names and street addresses in
free text are not detected, and a 9-digit number with no other meaning is redacted as
a phone number.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import jinja2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lambdas.flagstore import AuditEntry
from teardown import money
from teardown.csvinput import (
    EMAIL_PATTERN,
    TIMESTAMP,
    InputError,
    InputFile,
    Receipts,
    Settlements,
    SourceFile,
    read_receipts,
    read_settlements,
)
from teardown.reconcile import (
    CLASSES,
    TOTAL_GROUPS,
    Reconciliation,
    load_orders,
    naive_timestamps,
    reconcile,
)

EXPORT_FORMAT = "popstack-teardown-export"
EXPORT_FORMAT_VERSION = 1
GENERATOR = "popstack.teardown.export"
GENERATOR_VERSION = "1.0.0"

MANIFEST = "manifest.json"
REPORT = "report.html"
TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "reconciliation_report.html.j2"

PARQUET_OPTIONS = {
    "version": "2.6",
    "compression": "snappy",
    "use_dictionary": True,
    "write_statistics": True,
    "row_group_size": 1 << 20,
    "data_page_version": "1.0",
    "store_schema": True,
}
CSV_LINE_END = "\r\n"

# Keys (compared in lower case) whose values are removed from JSON dead-letter bodies.
PERSONAL_DATA_KEYS = ("customeremail", "customerphone", "email", "phone", "cardnumber", "pan")

EMAIL = re.compile(EMAIL_PATTERN)
CARD_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
PHONE_CANDIDATE = re.compile(r"(?<![\w:])\+?\(?[0-9]+(?:(?:\)[ .-]?|[ .-]\(?)[0-9]+)*(?![\w:])")


@dataclass(frozen=True)
class ExportContext:
    """The event an export belongs to: id, window and time zone, and an optional time stamp.

    ``opens`` and ``closes`` must carry UTC offsets. ``generated_at`` is written to the
    manifest and report only when given, so that exports stay reproducible.
    """

    event_id: str
    opens: datetime
    closes: datetime
    time_zone: str
    generated_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.event_id:
            raise ValueError("event_id is empty; pass the event's id")
        for name in ("opens", "closes", "generated_at"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"{name} {moment.isoformat()} has no UTC offset; add one")
        if self.closes <= self.opens:
            raise ValueError("closes is not after opens; check the event window")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{self.time_zone!r} is not an IANA time zone such as Europe/Lisbon"
            ) from None


@dataclass(frozen=True)
class ExportResult:
    """A written export: its directory, manifest, the manifest's SHA-256 and the reconciliation."""

    directory: Path
    manifest: dict[str, object]
    manifest_sha256: str
    reconciliation: Reconciliation


@dataclass(frozen=True)
class FileProblem:
    """One file that does not match the manifest.

    ``kind`` is ``missing``, ``size``, ``sha256``, ``unexpected`` (a file the manifest does
    not list) or ``invalid_name`` (a manifest name outside the export).
    """

    name: str
    kind: str
    expected: str | int | None = None
    actual: str | int | None = None

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"{self.name}: missing"
        if self.kind == "unexpected":
            return f"{self.name}: not listed in the manifest"
        if self.kind == "invalid_name":
            return f"{self.name}: the manifest names a path outside the export"
        return f"{self.name}: {self.kind} is {self.actual}, the manifest says {self.expected}"


@dataclass(frozen=True)
class Verification:
    """The result of ``verify_export``: every file that failed, by name."""

    checked: int
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def failed_names(self) -> list[str]:
        return sorted({problem.name for problem in self.problems})

    def __str__(self) -> str:
        if self.ok:
            return f"all {self.checked} files match the manifest"
        lines = [f"{len(self.failed_names)} of {self.checked} files do not match the manifest:"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


# Redaction


def redact_text(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Redact e-mail addresses, card numbers and phone numbers, by the module's rules.

    Returns the redacted text and each replaced span with its marker, in order.
    """
    replaced: list[tuple[str, str]] = []

    def substitute(marker_of: Callable[[str], str | None]) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            original = match.group(0)
            marker = marker_of(original)
            if marker is None:
                return original
            replaced.append((original, marker))
            return marker

        return replace

    text = EMAIL.sub(substitute(lambda _: "[email]"), text)
    text = CARD_CANDIDATE.sub(substitute(_card_marker), text)
    text = PHONE_CANDIDATE.sub(substitute(_phone_marker), text)
    return text, replaced


def _card_marker(candidate: str) -> str | None:
    """Return the marker when some run of whole digit groups is a Luhn-valid card number."""
    groups = re.split(r"[ -]", candidate)
    for first in range(len(groups)):
        digits = ""
        for last in range(first, len(groups)):
            digits += groups[last]
            if 13 <= len(digits) <= 19 and _luhn_valid(digits):
                return f"[card ending {digits[-4:]}]"
    return None


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _phone_marker(candidate: str) -> str | None:
    digits = sum(char.isdigit() for char in candidate)
    if candidate.startswith("+"):
        return "[phone]" if 7 <= digits <= 15 else None
    return "[phone]" if 9 <= digits <= 15 else None


def redact_json_body(body: str) -> tuple[str, str | None, int]:
    """Redact a dead-letter body and return it with its orderId and the redaction count.

    In a body that parses as a JSON object or array, the values of
    ``PERSONAL_DATA_KEYS`` are replaced and the document is serialised again with sorted
    keys. Then every body goes through ``redact_text``. The orderId is the ``orderId``
    of a JSON object body, or None.
    """
    count = 0
    order_id = None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict | list):

        def scrub(value: object) -> object:
            nonlocal count
            if isinstance(value, dict):
                cleaned = {}
                for key, item in value.items():
                    if isinstance(key, str) and key.lower() in PERSONAL_DATA_KEYS:
                        count += 1
                        cleaned[key] = _masked_value(key, item)
                    else:
                        cleaned[key] = scrub(item)
                return cleaned
            if isinstance(value, list):
                return [scrub(item) for item in value]
            return value

        if isinstance(document, dict) and isinstance(document.get("orderId"), str):
            order_id = document["orderId"]
        body = json.dumps(scrub(document), sort_keys=True, separators=(",", ":"))
    redacted, spans = redact_text(body)
    if order_id is not None:
        order_id, _ = redact_text(order_id)
    return redacted, order_id, count + len(spans)


def _masked_value(key: str, value: object) -> str:
    if key.lower() in ("cardnumber", "pan"):
        digits = re.sub(r"[^0-9]", "", str(value))
        return f"[card ending {digits[-4:]}]" if len(digits) >= 4 else "[card]"
    return "[redacted]"


# Dead letters

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("sent_at", TIMESTAMP),
        ("receive_count", pa.int64()),
        ("order_id", pa.string()),
        ("body", pa.string()),
        ("redactions", pa.int64()),
    ]
)


def normalise_dead_letters(records: Iterable[Mapping[str, object]]) -> pa.Table:
    """Validate and redact dead-letter messages; return them sorted, as ``DEAD_LETTER_SCHEMA``.

    Each record has ``messageId`` (str), ``body`` (str), ``sentAt`` and ``receiveCount``.
    ``sentAt`` is an aware datetime, an ISO 8601 string with offset, or epoch
    milliseconds as an int or a digit string (the form of SQS's SentTimestamp).
    ``receiveCount`` is an int or a digit string. Rows are sorted by sent_at, then
    message_id, then body. Raises InputError naming the record (1-based) and field.
    """
    rows = []
    for number, record in enumerate(records, start=1):

        def fail(column: str, problem: str, number: int = number) -> InputError:
            return InputError("dead letters", problem, record=number, column=column)

        message_id = record.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            raise fail("messageId", "messageId is missing; pass the SQS message id")
        body = record.get("body")
        if not isinstance(body, str):
            raise fail("body", f"body must be a string, got {type(body).__name__}")
        sent_at = _sent_at(record.get("sentAt"), fail)
        count = record.get("receiveCount")
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise fail("receiveCount", f"receiveCount {count!r} is not a non-negative integer")
        redacted, order_id, redactions = redact_json_body(body)
        rows.append((sent_at, message_id, redacted, count, order_id, redactions))
    rows.sort(key=lambda row: (row[0], row[1], row[2], row[3]))
    return pa.table(
        {
            "message_id": [row[1] for row in rows],
            "sent_at": [row[0] for row in rows],
            "receive_count": [row[3] for row in rows],
            "order_id": [row[4] for row in rows],
            "body": [row[2] for row in rows],
            "redactions": [row[5] for row in rows],
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def _sent_at(value: object, fail: Callable[[str, str], InputError]) -> datetime:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise fail("sentAt", f"sentAt {value!r} is not an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise fail("sentAt", f"sentAt {value!r} is not a time")
    if value.utcoffset() is None:
        raise fail("sentAt", f"sentAt {value.isoformat()} has no UTC offset; add one")
    return value.astimezone(UTC)


# Writing


def export_event(
    directory: str | os.PathLike[str],
    context: ExportContext,
    *,
    orders: Iterable[Mapping[str, object]] | pa.Table,
    settlement_files: Sequence[InputFile],
    receipt_files: Sequence[InputFile],
    dead_letters: Iterable[Mapping[str, object]],
) -> ExportResult:
    """Validate every input, reconcile, and write the export into ``directory``.

    ``directory`` must not exist or must be empty. Raises InputError for the first
    invalid input, before anything is written.
    """
    order_table = load_orders(orders)
    settlements = read_settlements(settlement_files)
    receipts = read_receipts(receipt_files)
    letters = normalise_dead_letters(dead_letters)
    reconciliation = reconcile(order_table, settlements, receipts, time_zone=context.time_zone)
    return write_export(
        directory,
        context,
        settlements=settlements,
        receipts=receipts,
        dead_letters=letters,
        reconciliation=reconciliation,
    )


def write_export(
    directory: str | os.PathLike[str],
    context: ExportContext,
    *,
    settlements: Settlements,
    receipts: Receipts,
    dead_letters: pa.Table,
    reconciliation: Reconciliation,
    template: Path = TEMPLATE,
) -> ExportResult:
    """Write every export file and the manifest into ``directory``, all or nothing.

    ``settlements`` and ``receipts`` come from ``teardown.csvinput``, ``dead_letters``
    from ``normalise_dead_letters`` and ``reconciliation`` from
    ``teardown.reconcile.reconcile``, which also carries the orders. The files are
    written into a temporary sibling directory, which is renamed to ``directory`` only
    when complete. Raises FileExistsError when ``directory`` exists and is not empty.
    """
    target = Path(directory)
    if target.exists():
        if not target.is_dir() or any(target.iterdir()):
            raise FileExistsError(
                f"{target} already exists and is not empty; verify the export in it with "
                "verify_export, or remove it to write a new one"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        manifest = _write_files(
            staging, context, settlements, receipts, dead_letters, reconciliation, template
        )
        manifest_bytes = _manifest_bytes(manifest)
        (staging / MANIFEST).write_bytes(manifest_bytes)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(
        directory=target,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        reconciliation=reconciliation,
    )


def _write_files(
    staging: Path,
    context: ExportContext,
    settlements: Settlements,
    receipts: Receipts,
    dead_letters: pa.Table,
    reconciliation: Reconciliation,
    template: Path,
) -> dict[str, object]:
    redactions = _Redactions(settlements.sources + receipts.sources)
    settlement_rows = _redact_column(settlements.table, "description", redactions)
    receipt_rows = _redact_column(receipts.table, "note", redactions)

    # The files are independent, and pyarrow and hashlib release the GIL while they work.
    # The next table is shaped while the last one is written, and no more, which bounds
    # memory to two shaped tables.
    entries: list[dict[str, object]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list = []
        for name, csv_table, parquet_table in _shaped_tables(
            settlement_rows, receipt_rows, dead_letters, reconciliation
        ):
            submitted = [
                pool.submit(_write_csv, staging, f"{name}.csv", csv_table),
                pool.submit(_write_parquet, staging, f"{name}.parquet", parquet_table),
            ]
            del csv_table, parquet_table
            entries += [future.result() for future in pending]
            pending = submitted
        entries += [future.result() for future in pending]

    inputs = []
    for source in settlements.sources + receipts.sources:
        name = _received_name(source)
        data = redactions.received_bytes(source)
        entries.append(_write_bytes(staging, name, data, rows=source.records))
        inputs.append(
            {
                "kind": source.kind,
                "name": source.file.name,
                "export_name": name,
                "layout": source.file.layout,
                "format": source.file.format.describe(),
                "records": source.records,
                "bytes": len(source.file.data),
                "sha256": hashlib.sha256(source.file.data).hexdigest(),
                "redacted_spans": redactions.count(source),
            }
        )

    manifest: dict[str, object] = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "generator": {
            "name": GENERATOR,
            "version": GENERATOR_VERSION,
            "pyarrow": pa.__version__,
        },
        "event": {
            "id": context.event_id,
            "window": {
                "opens": context.opens.isoformat(),
                "closes": context.closes.isoformat(),
                "time_zone": context.time_zone,
            },
        },
        "inputs": inputs,
        "class_counts": reconciliation.class_counts(),
        "totals": reconciliation.totals_as_dict(),
    }
    if context.generated_at is not None:
        manifest["generated_at"] = context.generated_at.isoformat()

    report = _render_report(template, context, reconciliation, sorted(entries, key=_by_name))
    entries.append(_write_bytes(staging, REPORT, report.encode("utf-8"), rows=None))
    manifest["files"] = sorted(entries, key=_by_name)
    return manifest


def _by_name(entry: Mapping[str, object]) -> str:
    return str(entry["name"])


def _received_name(source: SourceFile) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(source.file.name).name) or "file"
    return f"received/{source.kind}-{source.index + 1}-{safe}"


class _Redactions:
    """Redacted forms of the suspect free-text values of each input file."""

    def __init__(self, sources: Sequence[SourceFile]):
        self._values: dict[str, str] = {}
        self._spans: dict[tuple[str, int], list[tuple[str, str]]] = {}
        for source in sources:
            spans: dict[str, str] = {}
            for value in source.suspect_values:
                redacted, replaced = redact_text(value)
                self._values[value] = redacted
                spans.update(replaced)
            # Longer spans first, so that a span inside another is not replaced alone.
            ordered = sorted(spans.items(), key=lambda item: (-len(item[0]), item[0]))
            self._spans[(source.kind, source.index)] = ordered

    def value(self, text: str) -> str:
        return self._values.get(text, text)

    def mapping(self) -> dict[str, str]:
        return {k: v for k, v in self._values.items() if k != v}

    def count(self, source: SourceFile) -> int:
        return len(self._spans[(source.kind, source.index)])

    def received_bytes(self, source: SourceFile) -> bytes:
        """Return the file as received, with every redacted span replaced by its marker."""
        spans = self._spans[(source.kind, source.index)]
        if not spans:
            return source.file.data
        encoding = source.file.format.encoding
        text = source.file.data.decode(encoding)
        for original, marker in spans:
            text = text.replace(original, marker)
        return text.encode(encoding)


def _redact_column(table: pa.Table, name: str, redactions: _Redactions) -> pa.Table:
    mapping = redactions.mapping()
    if not mapping or table.num_rows == 0:
        return table
    values = table.column(name).combine_chunks()
    originals = pa.array(list(mapping), pa.string())
    positions = pc.index_in(values, value_set=originals)
    replacements = pc.take(pa.array(list(mapping.values()), pa.string()), positions)
    redacted = pc.if_else(pc.is_valid(positions), replacements, values)
    return table.set_column(table.schema.get_field_index(name), name, redacted)


# Table shapes. Every amount is written twice, as minor units and as a decimal string, and
# every time as a UTC timestamp in Parquet and as ISO 8601 text with offset in CSV.


def _decimal_sql(column: str, exponents: Mapping[str, int]) -> str:
    """Return SQL that formats minor units as a decimal string, like money.format_minor."""

    def fixed(digits: int) -> str:
        if digits == 0:
            return f"{column}::VARCHAR"
        scale = 10**digits
        return (
            f"(CASE WHEN {column} < 0 THEN '-' ELSE '' END || (abs({column}) // {scale})::VARCHAR"
            f" || '.' || lpad((abs({column}) % {scale})::VARCHAR, {digits}, '0'))"
        )

    distinct = sorted(set(exponents.values()))
    if len(distinct) == 1:
        return fixed(distinct[0])
    cases = " ".join(
        f"WHEN '{code}' THEN {fixed(digits)}" for code, digits in sorted(exponents.items())
    )
    return f"CASE currency {cases} END"


def _time_sql(column: str) -> str:
    """Return SQL that formats a naive UTC timestamp as ISO 8601 text with offset.

    DuckDB writes the fractional seconds without trailing zeros, as ``_iso_time`` does.
    """
    return f"replace({column}::VARCHAR, ' ', 'T') || '+00:00'"


_AMOUNT = "amount"
_TIME = "time"

# Each file's columns: (name, source column, kind). An amount column is written as
# <name>_minor and <name>; a time column as a timestamp (Parquet) or text (CSV).
_COLUMNS: dict[str, list[tuple[str, str, str | None]]] = {
    "orders": [
        ("order_id", "order_id", None),
        ("location_id", "location_id", None),
        ("created_at", "created_at", _TIME),
        ("currency", "currency", None),
        ("amount", "amount_minor", _AMOUNT),
        ("payment_method", "payment_method", None),
        ("payment_reference", "payment_reference", None),
        ("status", "status", None),
        ("refunded", "refunded_minor", _AMOUNT),
        ("card_last4", "card_last4", None),
    ],
    "settlements": [
        ("settlement_id", "settlement_id", None),
        ("payment_reference", "payment_reference", None),
        ("type", "type", None),
        ("currency", "currency", None),
        ("amount", "amount_minor", _AMOUNT),
        ("fee", "fee_minor", _AMOUNT),
        ("net", "net_minor", _AMOUNT),
        ("settled_at", "settled_at", _TIME),
        ("description", "description", None),
        ("source_file", "source_file", None),
        ("source_record", "source_record", None),
    ],
    "receipts": [
        ("receipt_id", "receipt_id", None),
        ("location_id", "location_id", None),
        ("taken_at", "taken_at", _TIME),
        ("currency", "currency", None),
        ("amount", "amount_minor", _AMOUNT),
        ("payment_method", "payment_method", None),
        ("order_id", "order_id", None),
        ("payment_reference", "payment_reference", None),
        ("staff_id", "staff_id", None),
        ("note", "note", None),
        ("source_file", "source_file", None),
        ("source_record", "source_record", None),
    ],
    "reconciliation": [
        ("row_kind", "row_kind", None),
        ("class", "class", None),
        ("reason", "reason", None),
        ("order_id", "order_id", None),
        ("settlement_ids", "settlement_ids", None),
        ("receipt_ids", "receipt_ids", None),
        ("payment_reference", "payment_reference", None),
        ("location_id", "location_id", None),
        ("payment_method", "payment_method", None),
        ("status", "status", None),
        ("currency", "currency", None),
        ("occurred_at", "occurred_at", _TIME),
        ("hour", "hour", None),
        ("amount", "amount_minor", _AMOUNT),
        ("settled", "settled_minor", _AMOUNT),
        ("receipts", "receipts_minor", _AMOUNT),
    ],
}

TOTALS_SCHEMA = pa.schema(
    [
        ("group", pa.string()),
        ("key", pa.string()),
        ("currency", pa.string()),
        ("rows", pa.int64()),
        ("amount_minor", pa.int64()),
        ("amount", pa.string()),
        ("settled_minor", pa.int64()),
        ("settled", pa.string()),
        ("receipts_minor", pa.int64()),
        ("receipts", pa.string()),
    ]
)


def _shaped_tables(
    settlements: pa.Table,
    receipts: pa.Table,
    dead_letters: pa.Table,
    reconciliation: Reconciliation,
) -> Iterator[tuple[str, pa.Table, pa.Table]]:
    """Yield each file's base name, CSV table and Parquet table, one table at a time."""
    # Every table is already in its fixed order, which a plain projection keeps. The
    # orders come from the reconciliation, which sorts them.
    sources = {
        "orders": reconciliation.orders,
        "settlements": settlements,
        "receipts": receipts,
        "reconciliation": reconciliation.rows,
    }
    connection = duckdb.connect(":memory:")
    try:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute("SET preserve_insertion_order = true")
        for name, columns in _COLUMNS.items():
            csv_table, parquet_table = _shape(connection, sources[name], columns)
            yield name, csv_table, parquet_table
    finally:
        connection.close()
    letters_csv = dead_letters.set_column(
        dead_letters.schema.get_field_index("sent_at"),
        "sent_at",
        _iso_times(dead_letters.column("sent_at")),
    )
    yield "dead_letters", letters_csv, dead_letters
    totals = _totals_table(reconciliation)
    yield "totals", totals, totals


def _shape(
    connection: duckdb.DuckDBPyConnection,
    source: pa.Table,
    columns: Sequence[tuple[str, str, str | None]],
) -> tuple[pa.Table, pa.Table]:
    """Return the CSV and Parquet tables of one file.

    Only the formatted columns go through DuckDB. The other columns are the source's own
    arrays, which stay aligned because a plain projection keeps the row order.
    """
    codes = pc.unique(source["currency"]).drop_null().to_pylist()
    exponents = {code: money.exponent(code) for code in codes} or {"": 0}
    select = []
    for column, origin, kind in columns:
        if kind == _AMOUNT:
            select.append(f"{_decimal_sql(origin, exponents)} AS {column}")
        elif kind == _TIME:
            select.append(f"{_time_sql(origin)} AS {column}")
    connection.register("source", naive_timestamps(source))
    try:
        formatted = _utc(connection.sql(f"SELECT {', '.join(select)} FROM source").to_arrow_table())
    finally:
        connection.unregister("source")

    csv_columns: dict[str, pa.ChunkedArray] = {}
    parquet_columns: dict[str, pa.ChunkedArray] = {}
    for column, origin, kind in columns:
        if kind == _AMOUNT:
            for target in (csv_columns, parquet_columns):
                target[f"{column}_minor"] = source.column(origin)
                target[column] = formatted.column(column)
        elif kind == _TIME:
            csv_columns[column] = formatted.column(column)
            parquet_columns[column] = source.column(origin)
        else:
            csv_columns[column] = source.column(origin)
            parquet_columns[column] = source.column(origin)
    return _table(csv_columns), _table(parquet_columns)


def _table(columns: Mapping[str, pa.ChunkedArray]) -> pa.Table:
    """Return a table of the columns, with every null-typed column as strings."""
    arrays = [
        column.cast(pa.string()) if pa.types.is_null(column.type) else column
        for column in columns.values()
    ]
    return pa.Table.from_arrays(arrays, names=list(columns))


def _iso_times(times: pa.ChunkedArray) -> pa.Array:
    """Format UTC timestamps as ``_time_sql`` does, in Python, for small tables."""
    return pa.array([None if t is None else _iso_time(t) for t in times.to_pylist()], pa.string())


def _iso_time(moment: datetime) -> str:
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    whole, fraction = text.split(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}+00:00" if fraction else f"{whole}+00:00"


def _utc(table: pa.Table) -> pa.Table:
    """Return the table with naive timestamps as UTC and every string as pa.string()."""
    columns = []
    fields = []
    for column_field in table.schema:
        column = table.column(column_field.name)
        if pa.types.is_timestamp(column_field.type):
            column = column.cast(TIMESTAMP)
        elif (
            pa.types.is_large_string(column_field.type)
            or pa.types.is_string_view(column_field.type)
            or pa.types.is_null(column_field.type)
        ):
            column = column.cast(pa.string())
        columns.append(column)
        fields.append(pa.field(column_field.name, column.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _totals_table(reconciliation: Reconciliation) -> pa.Table:
    rows = []
    for group in TOTAL_GROUPS:
        for total in reconciliation.totals[group]:
            entry = total.as_dict()
            rows.append({"group": group, **entry})
    return pa.Table.from_pylist(rows, schema=TOTALS_SCHEMA)


# Columns holding signed decimal strings such as "-4.00"; every other text column
# may carry outside text, which a spreadsheet would run as a formula.
DECIMAL_COLUMNS = frozenset({"amount", "refunded", "fee", "net", "settled", "receipts"})
FORMULA_START = r"^[=+\-@\t\r]"


def _neutralise_formulas(table: pa.Table) -> pa.Table:
    """Prefix text cells that start like a spreadsheet formula with an apostrophe.

    Only the CSV files get this; the Parquet files keep the text as received.
    """
    columns = []
    for column_field in table.schema:
        column = table.column(column_field.name)
        if pa.types.is_string(column_field.type) and column_field.name not in DECIMAL_COLUMNS:
            starts = pc.fill_null(pc.match_substring_regex(column, FORMULA_START), False)
            column = pc.if_else(starts, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


FLAG_AUDIT_COLUMNS = (
    "version",
    "at",
    "actor",
    "reason",
    "flag",
    "old",
    "new",
    "deployment",
    "deployment_state",
    "label",
)


def flag_audit_csv(entries: Iterable[AuditEntry]) -> bytes:
    """Write the flag audit log as CSV, one row per flag change, oldest first.

    old and new are on or off. old is empty for the initial values, and a value that
    is not true or false in AppConfig is written as invalid. actor and reason are
    redacted like other free text, and text that a spreadsheet would run as a formula
    gets a leading apostrophe, as in the other CSV files.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=CSV_LINE_END)
    writer.writerow(FLAG_AUDIT_COLUMNS)
    for entry in entries:
        row = [
            entry.version,
            entry.at or "",
            _no_formula(redact_text(entry.actor)[0]),
            _no_formula(redact_text(entry.reason)[0]),
            entry.flag,
            _switch_cell(entry.old, missing=""),
            _switch_cell(entry.new, missing="invalid"),
            "" if entry.deployment is None else entry.deployment,
            entry.deployment_state or "",
            _no_formula(entry.label or ""),
        ]
        writer.writerow(row)
    return buffer.getvalue().encode("utf-8")


def _switch_cell(value: bool | None, missing: str) -> str:
    if value is None:
        return missing
    return "on" if value else "off"


def _no_formula(text: str) -> str:
    return "'" + text if re.match(FORMULA_START, text) else text


def _write_csv(directory: Path, name: str, table: pa.Table) -> dict[str, object]:
    path = directory / name
    options = pacsv.WriteOptions(
        include_header=True, delimiter=",", quoting_style="needed", eol=CSV_LINE_END
    )
    pacsv.write_csv(_neutralise_formulas(table), path, write_options=options)
    return _entry(path, name, table.num_rows)


def _write_parquet(directory: Path, name: str, table: pa.Table) -> dict[str, object]:
    path = directory / name
    pq.write_table(table, path, **PARQUET_OPTIONS)
    return _entry(path, name, table.num_rows)


def _write_bytes(directory: Path, name: str, data: bytes, rows: int | None) -> dict[str, object]:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _entry(path, name, rows)


def _entry(path: Path, name: str, rows: int | None) -> dict[str, object]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {"name": name, "rows": rows, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


# Report


def _render_report(
    template: Path,
    context: ExportContext,
    reconciliation: Reconciliation,
    files: list[dict[str, object]],
) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template.parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    totals = reconciliation.totals_as_dict()
    charts = [
        {"currency": currency, "svg": _hourly_chart(currency, hours)}
        for currency, hours in _hourly_takings(reconciliation).items()
    ]
    return environment.get_template(template.name).render(
        event_id=context.event_id,
        opens=context.opens.isoformat(),
        closes=context.closes.isoformat(),
        time_zone=context.time_zone,
        generated_at=context.generated_at.isoformat() if context.generated_at else None,
        generator=f"{GENERATOR} {GENERATOR_VERSION}",
        class_counts=reconciliation.class_counts(),
        classes=CLASSES,
        totals=totals,
        charts=charts,
        files=files,
    )


def _hourly_takings(reconciliation: Reconciliation) -> dict[str, list[tuple[str, int]]]:
    """Return each currency's amount per local hour, with empty hours in between as 0."""
    by_currency: dict[str, dict[str, int]] = {}
    for total in reconciliation.totals["hour"]:
        by_currency.setdefault(total.currency, {})[total.key] = total.amount_minor
    zone = ZoneInfo(reconciliation.time_zone)
    result = {}
    for currency, amounts in sorted(by_currency.items()):
        result[currency] = [(hour, amounts.get(hour, 0)) for hour in _hour_range(amounts, zone)]
    return result


def _hour_range(amounts: Mapping[str, int], zone: ZoneInfo) -> list[str]:
    moments = sorted(datetime.fromisoformat(hour) for hour in amounts)
    hours = []
    moment = moments[0]
    while moment <= moments[-1] and len(hours) <= 24 * 14:
        hours.append(moment.astimezone(zone).isoformat())
        moment += timedelta(hours=1)
    if not set(amounts) <= set(hours):
        # A zone with a 30-minute DST shift breaks the hourly steps; show data hours only.
        return sorted(amounts, key=datetime.fromisoformat)
    return hours


def _hourly_chart(currency: str, hours: list[tuple[str, int]]) -> str:
    """Return an inline SVG bar chart of the hourly amounts, with labels in local time."""
    width_per_bar = 36
    left, right, top, bottom = 72, 16, 16, 48
    plot_height = 180
    width = left + right + width_per_bar * len(hours)
    height = top + plot_height + bottom
    peak = max([abs(amount) for _, amount in hours] + [1])
    has_negative = any(amount < 0 for _, amount in hours)
    zero_y = top + (plot_height / 2 if has_negative else plot_height)
    scale = (plot_height / 2 if has_negative else plot_height) / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Hourly takings in {_xml(currency)}">',
        f'<line x1="{left}" y1="{zero_y:.1f}" x2="{width - right}" y2="{zero_y:.1f}" '
        'stroke="#444" stroke-width="1"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11">'
        f"{_xml(money.format_minor(peak, currency))}</text>",
        f'<text x="{left - 6}" y="{zero_y + 4:.1f}" text-anchor="end" font-size="11">0</text>',
    ]
    for position, (hour, amount) in enumerate(hours):
        x = left + position * width_per_bar + 4
        bar = abs(amount) * scale
        y = zero_y - bar if amount >= 0 else zero_y
        label = hour[11:16]
        value = money.format_minor(amount, currency)
        parts.append(
            f'<rect x="{x}" y="{y:.1f}" width="{width_per_bar - 8}" height="{bar:.1f}" '
            f'fill="{"#2b6cb0" if amount >= 0 else "#c53030"}">'
            f"<title>{_xml(hour)}: {_xml(value)} {_xml(currency)}</title></rect>"
        )
        parts.append(
            f'<text x="{x + (width_per_bar - 8) / 2:.1f}" y="{top + plot_height + 16}" '
            f'text-anchor="middle" font-size="10">{_xml(label)}</text>'
        )

    parts.append("</svg>")
    return "\n".join(parts)


def _xml(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


# Verification


def verify_export(
    source: str | os.PathLike[str] | Callable[[str], bytes],
    manifest: Mapping[str, object] | None = None,
    *,
    manifest_sha256: str | None = None,
) -> Verification:
    """Re-read every file of an export and report each one whose size or SHA-256 differs.

    ``source`` is the export directory, or a callable that returns a file's bytes by its
    manifest name and raises FileNotFoundError or KeyError for a missing file. Without
    ``manifest``, ``manifest.json`` is read from the source; with ``manifest_sha256``,
    that file's own checksum is checked too. For a directory, files that the manifest
    does not list are reported as unexpected.
    """
    if callable(source):
        read = source
        root = None
    else:
        root = Path(source)

        def read(name: str) -> bytes:
            return (root / name).read_bytes()

    problems: list[FileProblem] = []
    if manifest is None or manifest_sha256 is not None:
        try:
            manifest_bytes = read(MANIFEST)
        except (FileNotFoundError, KeyError):
            return Verification(checked=1, problems=[FileProblem(MANIFEST, "missing")])
        if manifest_sha256 is not None:
            actual = hashlib.sha256(manifest_bytes).hexdigest()
            if actual != manifest_sha256:
                problems.append(FileProblem(MANIFEST, "sha256", manifest_sha256, actual))
        if manifest is None:
            manifest = json.loads(manifest_bytes)
    entries = list(manifest["files"])
    for entry in entries:
        name = str(entry["name"])
        if not _safe_name(name):
            problems.append(FileProblem(name, "invalid_name"))
            continue
        try:
            data = read(name)
        except (FileNotFoundError, KeyError):
            problems.append(FileProblem(name, "missing"))
            continue
        if len(data) != entry["bytes"]:
            problems.append(FileProblem(name, "size", entry["bytes"], len(data)))
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            problems.append(FileProblem(name, "sha256", entry["sha256"], digest))
    if root is not None:
        listed = {str(entry["name"]) for entry in entries} | {MANIFEST}
        for path in sorted(root.rglob("*")):
            name = path.relative_to(root).as_posix()
            if path.is_file() and name not in listed:
                problems.append(FileProblem(name, "unexpected"))
    return Verification(checked=len(entries), problems=problems)


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name
