"""Read settlement reports and manual-receipt CSV files into validated Arrow tables.

Each input file comes with a declared ``CsvFormat``: delimiter, decimal separator,
optional thousands separator and encoding. ``FORMATS`` has the named presets
``default`` (``,`` delimiter, ``.`` decimal, no thousands separator, UTF-8) and ``eu``
(``;`` delimiter, ``,`` decimal, ``.`` thousands, UTF-8). Files are RFC 4180: fields
may be quoted, and quoted fields may contain the delimiter, doubled quotes and line
breaks. A UTF-8 byte order mark is skipped. Blank lines are skipped. Column names are
matched exactly after trimming spaces, and extra columns are ignored.

Settlement layouts (``InputFile.layout``):

``stripe``
    Stripe's itemized balance-change and payout-reconciliation reports
    (``balance_change_from_activity.itemized.*``, ``payout_reconciliation.itemized.*``).
    Required columns: ``balance_transaction_id``, ``created_utc``, ``currency``,
    ``gross``, ``fee``, ``net``, ``reporting_category``, and ``charge_id`` or
    ``source_id``. Optional: ``description``. Amounts are decimal major units,
    ``currency`` is lower case, and ``created_utc`` is ``YYYY-MM-DD HH:MM:SS`` in UTC (an
    explicit offset is also accepted). The payment reference is ``charge_id`` when it is
    set, else ``source_id``; a refund line must have ``charge_id``, because its
    ``source_id`` is the refund's own id. Only ``reporting_category`` ``charge`` and
    ``refund`` are accepted, and ``net`` must equal ``gross - fee``.
``generic``
    Required columns: ``settlement_id``, ``payment_reference``, ``type`` (``charge`` or
    ``refund``), ``amount``, ``currency``, ``settled_at`` (ISO 8601 with offset).
    Optional: ``fee``.

In both layouts a charge amount must be positive and a refund amount negative.

Manual receipts: required columns ``receipt_id``, ``location_id``, ``taken_at`` (ISO
8601 with offset), ``amount`` (negative for money handed back), ``currency``,
``payment_method`` (``cash``, ``card``, ``wallet`` or ``manual``) and ``staff_id``;
optional columns ``order_id``, ``payment_reference`` and ``note``.

Amounts follow the grammar in ``teardown.money``. Currencies are ISO 4217 codes in
either case. A time is ``YYYY-MM-DD``, ``T`` or a space, ``HH[:MM[:SS[.ffffff]]]``,
then ``Z`` or an offset ``+HH``, ``+HHMM`` or ``+HH:MM`` (or with ``-``).

Any problem raises ``InputError`` naming the file, the line (the physical line where
the record starts, counting the header as line 1) and the column. A column whose name
suggests personal data (see ``PERSONAL_DATA_COLUMN_WORDS``) is rejected, because the
file is copied into the export as received, and so is an identifier (an id, location
or staff column) that contains an e-mail address. Reading has no side effects, so a rejected
input leaves nothing behind.

Validation is vectorised with pyarrow. Only after a check fails is the file scanned
record by record, to find the line of the first offending value.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from teardown import money

STRIPE = "stripe"
GENERIC = "generic"
LAYOUTS = (STRIPE, GENERIC)

SETTLEMENT_TYPES = ("charge", "refund")
RECEIPT_PAYMENT_METHODS = ("cash", "card", "wallet", "manual")

# A column whose lower-case name contains one of these words is rejected.
PERSONAL_DATA_COLUMN_WORDS = (
    "email",
    "phone",
    "card_number",
    "cardnumber",
    "customer_name",
    "customer_description",
    "address",
)

TIME_WITH_OFFSET = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)$"
)
TIME_WITHOUT_OFFSET = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?$"
)
STRIPE_UTC_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"

TIMESTAMP = pa.timestamp("us", tz="UTC")
_POWERS_OF_TEN = pa.array([10**n for n in range(19)], pa.int64())
_BLOCK_SIZE = 16 << 20
_HEADER_BYTES = 1 << 16
_UTF8_BOM = codecs.BOM_UTF8


@dataclass(frozen=True)
class CsvFormat:
    """The declared shape of a CSV file: delimiter, decimal and thousands separators, encoding."""

    delimiter: str = ","
    decimal: str = "."
    thousands: str | None = None
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(
                f"delimiter {self.delimiter!r} is invalid; use one character such as ',' or ';'"
            )
        if self.decimal not in money.DECIMAL_SEPARATORS:
            raise ValueError(f"decimal separator {self.decimal!r} is invalid; use '.' or ','")
        if self.thousands is not None:
            if self.thousands not in money.THOUSANDS_SEPARATORS:
                choices = ", ".join(repr(c) for c in money.THOUSANDS_SEPARATORS)
                raise ValueError(
                    f"thousands separator {self.thousands!r} is invalid; use None or one of "
                    f"{choices}"
                )
            if self.thousands == self.decimal:
                raise ValueError(
                    f"thousands and decimal separators are both {self.decimal!r}; they must differ"
                )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"encoding {self.encoding!r} is not known to Python") from None

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name in ("utf-8", "utf-8-sig")

    @classmethod
    def named(cls, name: str) -> CsvFormat:
        """Return the preset called ``name`` ("default" or "eu")."""
        try:
            return FORMATS[name]
        except KeyError:
            raise ValueError(
                f"unknown CSV format {name!r}; use one of {', '.join(sorted(FORMATS))}"
            ) from None

    def describe(self) -> dict[str, str | None]:
        """Return the format as plain values, for the export manifest."""
        return {
            "delimiter": self.delimiter,
            "decimal": self.decimal,
            "thousands": self.thousands,
            "encoding": self.encoding,
        }


FORMATS = {
    "default": CsvFormat(),
    "eu": CsvFormat(delimiter=";", decimal=",", thousands="."),
}


@dataclass(frozen=True)
class InputFile:
    """One uploaded file: its name (for messages and the export), its bytes, its format.

    ``layout`` is required for settlement reports (``stripe`` or ``generic``) and unused
    for manual receipts.
    """

    name: str
    data: bytes
    format: CsvFormat = FORMATS["default"]
    layout: str | None = None


class InputError(Exception):
    """An input that cannot be reconciled exactly, with where it is and how to fix it.

    ``source`` is the file name (or ``orders`` / ``dead letters``); ``line``, ``column``,
    ``record`` and ``byte_offset`` are set where they are known.
    """

    def __init__(
        self,
        source: str,
        problem: str,
        *,
        line: int | None = None,
        column: str | None = None,
        record: int | None = None,
        byte_offset: int | None = None,
    ):
        self.source = source
        self.problem = problem
        self.line = line
        self.column = column
        self.record = record
        self.byte_offset = byte_offset
        where = [source]
        if line is not None:
            where.append(f"line {line}")
        if record is not None:
            where.append(f"record {record}")
        if byte_offset is not None:
            where.append(f"byte offset {byte_offset}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {problem}")


@dataclass(frozen=True)
class SourceFile:
    """An input file as read: the file, its record count and its free-text values.

    ``scanned_columns`` are the columns that may hold free text: ``note``,
    ``description`` and every column the layout does not know. ``suspect_values`` are
    the distinct values of those columns that contain an ``@`` or a run of 7 or more
    digits, the candidates for personal data that the export redacts.
    """

    kind: str
    index: int
    file: InputFile
    records: int
    scanned_columns: tuple[str, ...] = ()
    suspect_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settlements:
    """Settlement lines of all reports, in file order, and the files they came from.

    Table columns: settlement_id, payment_reference, type, currency, amount_minor,
    fee_minor, net_minor, settled_at, description, source_file, source_record.
    """

    table: pa.Table
    sources: list[SourceFile]


@dataclass(frozen=True)
class Receipts:
    """Manual receipts of all files, in file order, and the files they came from.

    Table columns: receipt_id, location_id, taken_at, currency, amount_minor,
    payment_method, order_id, payment_reference, staff_id, note, source_file,
    source_record.
    """

    table: pa.Table
    sources: list[SourceFile]


SETTLEMENT_SCHEMA = pa.schema(
    [
        ("settlement_id", pa.string()),
        ("payment_reference", pa.string()),
        ("type", pa.string()),
        ("currency", pa.string()),
        ("amount_minor", pa.int64()),
        ("fee_minor", pa.int64()),
        ("net_minor", pa.int64()),
        ("settled_at", TIMESTAMP),
        ("description", pa.string()),
        ("source_file", pa.string()),
        ("source_record", pa.int64()),
    ]
)

RECEIPT_SCHEMA = pa.schema(
    [
        ("receipt_id", pa.string()),
        ("location_id", pa.string()),
        ("taken_at", TIMESTAMP),
        ("currency", pa.string()),
        ("amount_minor", pa.int64()),
        ("payment_method", pa.string()),
        ("order_id", pa.string()),
        ("payment_reference", pa.string()),
        ("staff_id", pa.string()),
        ("note", pa.string()),
        ("source_file", pa.string()),
        ("source_record", pa.int64()),
    ]
)

_STRIPE_REQUIRED = (
    "balance_transaction_id",
    "created_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
)
_STRIPE_REFERENCES = ("charge_id", "source_id")
_GENERIC_REQUIRED = (
    "settlement_id",
    "payment_reference",
    "type",
    "amount",
    "currency",
    "settled_at",
)
_RECEIPT_REQUIRED = (
    "receipt_id",
    "location_id",
    "taken_at",
    "amount",
    "currency",
    "payment_method",
    "staff_id",
)
_RECEIPT_OPTIONAL = ("order_id", "payment_reference", "note")

# Columns of a layout that hold identifiers, amounts, codes or times, never free text.
# Every other column is scanned for personal data.
_STRIPE_STRUCTURED = _STRIPE_REQUIRED + (
    "charge_id",
    "source_id",
    "created",
    "available_on",
    "available_on_utc",
    "automatic_payout_id",
    "automatic_payout_effective_at",
    "automatic_payout_effective_at_utc",
    "customer_facing_amount",
    "customer_facing_currency",
    "customer_id",
    "payment_intent_id",
    "invoice_id",
    "invoice_number",
    "subscription_id",
    "payment_method_type",
    "card_brand",
    "card_funding",
    "card_country",
    "transfer_id",
    "destination_payment_id",
    "dispute_reason",
)
_GENERIC_STRUCTURED = _GENERIC_REQUIRED + ("fee",)
_RECEIPT_STRUCTURED = _RECEIPT_REQUIRED + ("order_id", "payment_reference")
# Every column that some layout reads; the reader parses only these and free-text ones.
_READ_COLUMNS = frozenset(
    _STRIPE_REQUIRED
    + ("charge_id", "source_id", "description")
    + _GENERIC_STRUCTURED
    + _RECEIPT_REQUIRED
    + _RECEIPT_OPTIONAL
)
SUSPECT_PATTERN = r"@|[0-9](?:[ .()\-]?[0-9]){6,}"
# An e-mail address, as teardown.export redacts it; valid for Python's re and for RE2.
EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"


def read_settlements(files: Sequence[InputFile]) -> Settlements:
    """Read and validate settlement reports, in the order given.

    Returns every line of every file as one table (see ``Settlements``). A report with a
    header and no lines is valid (a provider reports no activity that way). Raises
    InputError for the first problem found.
    """
    tables = []
    sources = []
    for index, file in enumerate(files):
        if file.layout not in LAYOUTS:
            raise InputError(
                file.name,
                f"settlement layout {file.layout!r} is unknown; declare 'stripe' or 'generic'",
            )
        if file.layout == STRIPE:
            reader = _CsvReader(file, _STRIPE_STRUCTURED, _STRIPE_REQUIRED, _STRIPE_REFERENCES)
            table = _stripe_settlements(reader)
        else:
            reader = _CsvReader(file, _GENERIC_STRUCTURED, _GENERIC_REQUIRED)
            table = _generic_settlements(reader)
        tables.append(table)
        sources.append(reader.source("settlement", index))
    if tables:
        table = pa.concat_tables(tables)
    else:
        table = SETTLEMENT_SCHEMA.empty_table()
    return Settlements(table, sources)


def read_receipts(files: Sequence[InputFile]) -> Receipts:
    """Read and validate manual-receipt files, in the order given.

    Pass no files when no manual receipts were taken. A file with a header and no
    receipts is rejected, because an upload is expected to contain receipts. Raises
    InputError for the first problem found.
    """
    tables = []
    sources = []
    for index, file in enumerate(files):
        reader = _CsvReader(file, _RECEIPT_STRUCTURED, _RECEIPT_REQUIRED)
        if reader.table.num_rows == 0:
            raise InputError(
                file.name,
                "the file has a header but no receipts; add the receipt rows, or leave the "
                "file out if no manual receipts were taken",
            )
        table = _receipts(reader)
        tables.append(table)
        sources.append(reader.source("receipt", index))
    if tables:
        table = pa.concat_tables(tables)
    else:
        table = RECEIPT_SCHEMA.empty_table()
    return Receipts(table, sources)


def _stripe_settlements(reader: _CsvReader) -> pa.Table:
    rows = reader.table.num_rows
    settlement_id = reader.required_text("balance_transaction_id")
    category = reader.column("reporting_category")
    # NOTE: disputes, fees, payouts and other categories are rejected, not reconciled,
    # so a report that contains them must be run again for charges and refunds only.
    reader.check_allowed(
        "reporting_category",
        SETTLEMENT_TYPES,
        "only charge and refund lines can be reconciled with orders; run the report for "
        "the event's charges and refunds only",
    )
    # NOTE: currency is Stripe's settlement currency. A charge presented in another
    # currency (customer_facing_currency) is therefore reported as currency_mismatch.
    currency, exponents = reader.currencies("currency")
    gross = reader.amounts("gross", exponents, currency)
    fee = reader.amounts("fee", exponents, currency)
    net = reader.amounts("net", exponents, currency)

    expected_net = pc.subtract(gross, fee)
    reader.check_true(
        "net",
        pc.equal(net, expected_net),
        lambda i: (
            f"net {reader.value('net', i)!r} is not gross {reader.value('gross', i)!r} "
            f"minus fee {reader.value('fee', i)!r}; check the row against the provider's report"
        ),
    )

    charge_id = reader.optional_text("charge_id")
    source_id = reader.optional_text("source_id")
    if charge_id is None:
        reference = source_id
        refund_has_charge = pc.not_equal(category, "refund")
    else:
        reference = charge_id if source_id is None else pc.coalesce(charge_id, source_id)
        refund_has_charge = pc.or_(pc.not_equal(category, "refund"), pc.is_valid(charge_id))
    reader.check_true(
        "charge_id",
        refund_has_charge,
        lambda i: (
            "a refund line needs the charge_id of the refunded charge, because its source_id "
            "is the refund's own id; add the charge_id column to the report"
        ),
    )
    reader.check_true(
        "charge_id" if charge_id is not None else "source_id",
        pc.is_valid(reference),
        lambda i: "the line has neither charge_id nor source_id, so it cannot be matched",
    )
    _check_signs(reader, "gross", category, gross)

    settled_at = reader.times("created_utc", stripe_utc=True)
    description = reader.optional_text("description", free_text=True)
    return _settlement_table(
        reader,
        settlement_id=settlement_id,
        payment_reference=reference,
        settlement_type=category,
        currency=currency,
        amount=gross,
        fee=fee,
        net=net,
        settled_at=settled_at,
        description=description if description is not None else pa.nulls(rows, pa.string()),
    )


def _generic_settlements(reader: _CsvReader) -> pa.Table:
    rows = reader.table.num_rows
    settlement_id = reader.required_text("settlement_id")
    reference = reader.required_text("payment_reference")
    reader.check_allowed("type", SETTLEMENT_TYPES, "write charge or refund")
    settlement_type = reader.column("type")
    currency, exponents = reader.currencies("currency")
    amount = reader.amounts("amount", exponents, currency)
    _check_signs(reader, "amount", settlement_type, amount)
    if "fee" in reader.header:
        fee = reader.amounts("fee", exponents, currency, optional=True)
        net = pc.subtract(amount, fee)
    else:
        fee = pa.nulls(rows, pa.int64())
        net = pa.nulls(rows, pa.int64())
    return _settlement_table(
        reader,
        settlement_id=settlement_id,
        payment_reference=reference,
        settlement_type=settlement_type,
        currency=currency,
        amount=amount,
        fee=fee,
        net=net,
        settled_at=reader.times("settled_at"),
        description=pa.nulls(rows, pa.string()),
    )


def _check_signs(reader: _CsvReader, column: str, kind: pa.Array, amount: pa.Array) -> None:
    is_refund = pc.equal(kind, "refund")
    good = pc.if_else(is_refund, pc.less(amount, 0), pc.greater(amount, 0))

    def reason(i: int) -> str:
        value = reader.value(column, i)
        if reader.value_of(kind, i) == "refund":
            return (
                f"refund amount {value!r} must be negative, because a refund takes money back; "
                f"write it as -{value.lstrip('-')}"
            )
        return f"charge amount {value!r} must be positive; a refund is a line of type refund"

    reader.check_true(column, good, reason)


def _settlement_table(reader: _CsvReader, **columns: pa.Array) -> pa.Table:
    rows = reader.table.num_rows
    arrays = [
        columns["settlement_id"],
        columns["payment_reference"],
        columns["settlement_type"],
        columns["currency"],
        columns["amount"],
        columns["fee"],
        columns["net"],
        columns["settled_at"],
        columns["description"],
        pa.repeat(pa.scalar(reader.file.name, pa.string()), rows),
        _record_numbers(rows),
    ]
    return pa.Table.from_arrays(arrays, schema=SETTLEMENT_SCHEMA)


def _receipts(reader: _CsvReader) -> pa.Table:
    rows = reader.table.num_rows
    receipt_id = reader.required_text("receipt_id")
    location_id = reader.required_text("location_id")
    staff_id = reader.required_text("staff_id")
    reader.check_allowed(
        "payment_method", RECEIPT_PAYMENT_METHODS, "write cash, card, wallet or manual"
    )
    currency, exponents = reader.currencies("currency")
    amount = reader.amounts("amount", exponents, currency)
    taken_at = reader.times("taken_at")
    optional = {}
    for name in _RECEIPT_OPTIONAL:
        values = reader.optional_text(name, free_text=name == "note")
        optional[name] = values if values is not None else pa.nulls(rows, pa.string())
    arrays = [
        receipt_id,
        location_id,
        taken_at,
        currency,
        amount,
        reader.column("payment_method"),
        optional["order_id"],
        optional["payment_reference"],
        staff_id,
        optional["note"],
        pa.repeat(pa.scalar(reader.file.name, pa.string()), rows),
        _record_numbers(rows),
    ]
    return pa.Table.from_arrays(arrays, schema=RECEIPT_SCHEMA)


def _lines(text: str) -> Iterator[str]:
    """Yield the lines of ``text``, each with its "\\n", without copying the whole text."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


def _record_numbers(rows: int) -> pa.Array:
    """Return 1, 2, ..., rows as int64."""
    return _as_array(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), rows)))


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values


class _CsvReader:
    """One CSV file parsed into string columns, with checks that raise InputError.

    ``columns`` limits the parsed columns to those the layout reads; the free-text
    columns that the export scans for personal data are always parsed.
    """

    def __init__(
        self,
        file: InputFile,
        structured: Sequence[str],
        required: Sequence[str],
        one_of: Sequence[str] = (),
    ):
        self.file = file
        self.name = file.name
        self._text: str | None = None
        payload = self._payload(file)
        self.header = self._read_header(payload)
        self.require(required)
        if one_of:
            self.require_one_of(one_of)
        self.scanned = tuple(name for name in self.header if name not in structured)
        self.table = self._parse(payload, structured)

    # Reading

    def _payload(self, file: InputFile) -> bytes:
        """Return the file as UTF-8 without a byte order mark.

        A UTF-8 file is not decoded here: pyarrow checks its bytes while parsing, and
        only a failure leads to a full decode that locates the invalid byte.
        """
        data = file.data
        fmt = file.format
        if fmt.is_utf8:
            payload = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
        else:
            try:
                text = data.decode(fmt.encoding)
            except UnicodeDecodeError as error:
                line = data.count(b"\n", 0, error.start) + 1
                raise InputError(
                    self.name,
                    f"byte 0x{data[error.start]:02x} cannot be decoded as {fmt.encoding}; "
                    "declare the file's real encoding in the CSV format",
                    line=line,
                    byte_offset=error.start,
                ) from None
            self._text = text.removeprefix("\ufeff")
            payload = self._text.encode("utf-8")
        if re.search(rb"\S", payload) is None:
            raise InputError(
                self.name,
                "the file is empty; upload the file with its header line and at least one row",
            )
        return payload

    def _invalid_utf8(self) -> InputError | None:
        """Return the error for the first invalid UTF-8 byte, or None when there is none."""
        data = self.file.data
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            return InputError(
                self.name,
                f"byte 0x{data[error.start]:02x} is not valid UTF-8; save the file as UTF-8 or "
                "declare its encoding in the CSV format",
                line=data.count(b"\n", 0, error.start) + 1,
                byte_offset=error.start,
            )
        return None

    def _read_header(self, payload: bytes) -> list[str]:
        head = payload[:_HEADER_BYTES]
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            text = decoder.decode(head, final=len(head) < _HEADER_BYTES)
        except UnicodeDecodeError:
            raise self._invalid_utf8() from None
        rows = csv.reader(_lines(text), **self._dialect())
        try:
            raw = next(record for record in rows if record)
        except (csv.Error, StopIteration) as error:
            raise InputError(self.name, f"the header is not valid CSV: {error}", line=1) from None
        header = [name.strip() for name in raw]
        seen = set()
        for name in header:
            if name == "":
                raise InputError(
                    self.name, "the header has an empty column name; name every column", line=1
                )
            if name in seen:
                raise InputError(
                    self.name,
                    f"column {name} appears twice in the header; keep one of them",
                    line=1,
                    column=name,
                )
            seen.add(name)
            lowered = name.lower()
            if any(word in lowered for word in PERSONAL_DATA_COLUMN_WORDS):
                raise InputError(
                    self.name,
                    f"column {name} contains personal data, which must not reach the export; "
                    "remove the column (for a provider report, leave it out of the report's "
                    "columns) and upload the file again",
                    line=1,
                    column=name,
                )
        return header

    def _parse(self, payload: bytes, structured: Sequence[str]) -> pa.Table:
        fmt = self.file.format
        parsed = [name for name in self.header if name in _READ_COLUMNS or name in self.scanned]
        try:
            table = pacsv.read_csv(
                pa.BufferReader(payload),
                read_options=pacsv.ReadOptions(block_size=_BLOCK_SIZE, column_names=self.header),
                parse_options=pacsv.ParseOptions(
                    delimiter=fmt.delimiter,
                    quote_char='"',
                    double_quote=True,
                    escape_char=False,
                    newlines_in_values=True,
                    ignore_empty_lines=True,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in self.header},
                    include_columns=parsed,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as error:
            invalid = self._invalid_utf8() if fmt.is_utf8 else None
            raise (invalid or self._locate_parse_error(error)) from None
        # The header came back as the first row, because the column names were given.
        return table.slice(1)

    def _locate_parse_error(self, error: Exception) -> InputError:
        rows = csv.reader(_lines(self.text), strict=True, **self._dialect())
        width = len(self.header)
        line = 1
        try:
            for record in rows:
                if record and len(record) != width:
                    return InputError(
                        self.name,
                        f"the row has {len(record)} fields but the header has {width}; quote "
                        "values that contain the delimiter and check for missing delimiters",
                        line=line,
                    )
                line = rows.line_num + 1
        except csv.Error as parse_error:
            return InputError(
                self.name,
                f"the row is not valid CSV ({parse_error}); close every opened quote and "
                'double the quotes inside quoted values ("")',
                line=line,
            )
        return InputError(self.name, f"the file is not valid CSV: {error}")

    def _dialect(self) -> dict[str, object]:
        return {"delimiter": self.file.format.delimiter, "quotechar": '"', "doublequote": True}

    @property
    def text(self) -> str:
        """The decoded file, decoded on first use (only error messages need it)."""
        if self._text is None:
            self._text = self.file.data.decode(self.file.format.encoding).removeprefix("\ufeff")
        return self._text

    def line_of(self, record: int) -> int:
        """Return the physical line where data record ``record`` (0-based) starts."""
        rows = csv.reader(_lines(self.text), **self._dialect())
        start = 1
        seen = -1  # the header is record -1
        for values in rows:
            if values:
                if seen == record:
                    return start
                seen += 1
            start = rows.line_num + 1
        raise AssertionError(f"record {record} not found in {self.name}")

    def source(self, kind: str, index: int) -> SourceFile:
        """Return the file's SourceFile, with the suspect values of its free-text columns."""
        suspects: set[str] = set()
        for name in self.scanned:
            values = pc.unique(self.table.column(name))
            hits = pc.filter(values, pc.match_substring_regex(values, SUSPECT_PATTERN))
            suspects.update(hits.to_pylist())
        return SourceFile(
            kind=kind,
            index=index,
            file=self.file,
            records=self.table.num_rows,
            scanned_columns=self.scanned,
            suspect_values=tuple(sorted(suspects)),
        )

    # Column access and checks

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def value(self, name: str, index: int) -> str:
        return self.table.column(name)[index].as_py()

    @staticmethod
    def value_of(values: pa.Array | pa.ChunkedArray, index: int) -> object:
        return values[index].as_py()

    def error(self, index: int, column: str, problem: str) -> InputError:
        return InputError(self.name, problem, line=self.line_of(index), column=column)

    def require(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.header:
                found = ", ".join(self.header)
                raise InputError(
                    self.name,
                    f"required column {name} is missing; the header has: {found}. Check the "
                    "delimiter in the declared CSV format and the column names",
                    line=1,
                    column=name,
                )

    def require_one_of(self, names: Sequence[str]) -> None:
        if not any(name in self.header for name in names):
            raise InputError(
                self.name,
                f"the file needs one of the columns {' or '.join(names)}",
                line=1,
                column=names[0],
            )

    def check_true(self, column: str, good, reason: Callable[[int], str]) -> None:
        """Raise for the first row where ``good`` is false or null."""
        if _all_true(good):
            return
        index = pc.index(pc.fill_null(good, False), False).as_py()
        raise self.error(index, column, reason(index))

    def trimmed(self, name: str) -> pa.ChunkedArray:
        """Return the column without surrounding spaces."""
        return pc.utf8_trim(self.column(name), " ")

    def required_text(self, name: str) -> pa.ChunkedArray:
        """Return an identifier column, trimmed, after checking that no value is empty."""
        values = self.trimmed(name)
        self.check_true(
            name,
            pc.not_equal(values, ""),
            lambda i: f"{name} is empty; every row needs a {name}",
        )
        self.check_no_email(name, values)
        return values

    def optional_text(self, name: str, *, free_text: bool = False) -> pa.ChunkedArray | None:
        """Return the trimmed column with empty values as nulls, or None when it is absent.

        A column that is not ``free_text`` is an identifier and must not contain an
        e-mail address.
        """
        if name not in self.header:
            return None
        values = self.trimmed(name)
        if not free_text:
            self.check_no_email(name, values)
        empty = pc.equal(values, "")
        if not pc.any(empty).as_py():
            return values
        return pc.if_else(empty, pa.scalar(None, pa.string()), values)

    def check_no_email(self, name: str, values: pa.ChunkedArray) -> None:
        """Raise when an identifier contains an e-mail address, which the export would keep.

        Free-text columns are redacted instead, but an identifier has to stay as it is to
        be matched.
        """
        # A plain substring search rules out most files before the regular expression.
        if not pc.any(pc.match_substring(values, "@")).as_py():
            return
        self.check_true(
            name,
            pc.invert(pc.match_substring_regex(values, EMAIL_PATTERN)),
            lambda i: (
                f"{name} contains an e-mail address, which must not reach the export; use an "
                "identifier without personal data"
            ),
        )

    def check_allowed(self, name: str, allowed: Sequence[str], fix: str) -> None:
        values = self.column(name)
        self.check_true(
            name,
            pc.is_in(values, value_set=pa.array(allowed)),
            lambda i: f"{name} {self.value(name, i)!r} is not one of {', '.join(allowed)}; {fix}",
        )

    def currencies(self, name: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
        """Return the upper-cased currency codes and each row's ISO 4217 exponent."""
        codes = pc.utf8_upper(self.trimmed(name))
        distinct = pc.unique(codes).to_pylist()
        exponents = []
        for code in distinct:
            try:
                exponents.append(money.exponent(code))
            except money.AmountError as error:
                index = pc.index(codes, code).as_py()
                raise self.error(index, name, str(error)) from None
        positions = pc.index_in(codes, value_set=pa.array(distinct, pa.string()))
        return codes, pc.take(pa.array(exponents, pa.int64()), positions)

    def amounts(
        self,
        name: str,
        exponents: pa.ChunkedArray,
        currencies: pa.ChunkedArray,
        *,
        optional: bool = False,
    ) -> pa.ChunkedArray:
        """Parse a column of decimal amounts into minor units, exactly, in bulk.

        Well-formed values are converted with string and integer kernels. The first row
        that fails a check is parsed again by ``money.parse_amount``, whose message
        names the problem. With ``optional``, empty values become nulls.
        """
        fmt = self.file.format
        pattern = money.amount_pattern(fmt.decimal, fmt.thousands)
        text = self.column(name)
        empty = None
        if optional:
            text = pc.utf8_trim(text, " ")
            empty = pc.equal(text, "")
            text = pc.if_else(empty, "0", text)

        def reason(i: int) -> str:
            value = text[i].as_py()
            try:
                money.parse_amount(value, currencies[i].as_py(), fmt.decimal, fmt.thousands)
            except money.AmountError as error:
                return str(error)
            raise AssertionError(f"amount {value!r} failed a bulk check but parses")

        if not _all_true(pc.match_substring_regex(text, pattern)):
            text = pc.utf8_trim(text, " ")
            self.check_true(name, pc.match_substring_regex(text, pattern), reason)
        digits = text if fmt.thousands is None else pc.replace_substring(text, fmt.thousands, "")
        point = pc.find_substring(digits, fmt.decimal)
        places = pc.if_else(
            pc.less(point, 0), 0, pc.subtract(pc.subtract(pc.utf8_length(digits), point), 1)
        )
        places = pc.cast(places, pa.int64())
        self.check_true(name, pc.less_equal(places, exponents), reason)
        scale = pc.take(_POWERS_OF_TEN, pc.subtract(exponents, places))
        try:
            unscaled = pc.cast(pc.replace_substring(digits, fmt.decimal, ""), pa.int64())
            minor = pc.multiply_checked(unscaled, scale)
        except pa.ArrowInvalid:
            minor = None
        limit = 10**money.MAX_MINOR_DIGITS
        if minor is None or not _all_true(pc.less(pc.abs_checked(minor), limit)):
            index = self._first_out_of_range(text, currencies)
            raise self.error(index, name, reason(index))
        if empty is not None:
            minor = pc.if_else(empty, pa.scalar(None, pa.int64()), minor)
        return minor

    def _first_out_of_range(self, text: pa.ChunkedArray, currencies: pa.ChunkedArray) -> int:
        fmt = self.file.format
        for index, (value, currency) in enumerate(
            zip(text.to_pylist(), currencies.to_pylist(), strict=True)
        ):
            try:
                money.parse_amount(value, currency, fmt.decimal, fmt.thousands)
            except money.AmountError:
                return index
        raise AssertionError("a bulk amount check failed but every value parses alone")

    def times(self, name: str, *, stripe_utc: bool = False) -> pa.ChunkedArray:
        """Parse ISO 8601 times with an offset into UTC timestamps (microseconds)."""
        text = self.column(name)
        if stripe_utc:
            # Stripe's *_utc columns are UTC by definition and carry no offset.
            naive = pc.strptime(text, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
            if _all_true(pc.is_valid(naive)):
                return pc.cast(naive, TIMESTAMP)
            text = pc.utf8_trim(text, " ")
            no_offset = pc.match_substring_regex(text, STRIPE_UTC_TIME)
            text = pc.if_else(no_offset, pc.binary_join_element_wise(text, "Z", ""), text)
        times, index, problem = parse_times(text)
        if times is None:
            raise self.error(index, name, problem)
        return times


def _all_true(values) -> bool:
    """Return whether every value is true, a null counting as false."""
    return pc.all(values, skip_nulls=False, min_count=0).as_py() is True


def parse_times(values: pa.Array) -> tuple[pa.Array | None, int | None, str | None]:
    """Parse ISO 8601 strings with offsets into UTC timestamps in microseconds.

    Returns ``(timestamps, None, None)``, or ``(None, index, problem)`` for the first
    invalid value. Also used by the order validation in ``teardown.reconcile``.
    """
    try:
        return pc.cast(values, TIMESTAMP), None, None
    except pa.ArrowInvalid:
        pass
    text = pc.utf8_trim(values, " ")
    good = pc.fill_null(pc.match_substring_regex(text, TIME_WITH_OFFSET), False)
    if not _all_true(good):
        index = pc.index(good, False).as_py()
        return None, index, _time_problem(text[index].as_py())
    try:
        return pc.cast(text, TIMESTAMP), None, None
    except pa.ArrowInvalid:
        pass
    for index, value in enumerate(text.to_pylist()):
        try:
            pc.cast(pa.array([value]), TIMESTAMP)
        except pa.ArrowInvalid:
            return None, index, f"time {value!r} is not a valid calendar date and time"
    raise AssertionError("a bulk time cast failed but every value casts alone")


def _time_problem(value: str | None) -> str:
    if value is None or value == "":
        return "the time is empty; write a time such as 2027-06-05T10:00:00+01:00"
    if re.fullmatch(TIME_WITHOUT_OFFSET, value):
        return (
            f"time {value!r} has no UTC offset; add one, for example {value}+01:00 for a "
            "time in UTC+1, or Z for UTC"
        )
    return (
        f"time {value!r} is not an ISO 8601 time with an offset; write it as, for example, "
        "2027-06-05T10:00:00+01:00"
    )
