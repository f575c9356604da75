"""The on-call runbook of one event, as Markdown and as one self-contained HTML page.

`runbook_context` gathers every fact the runbook prints, and both templates
(templates/runbook.md.j2 and templates/runbook.html.j2) render that one context, so
the two formats carry the same commands, links, contacts and times.

Names and ids come from the stack's outputs when the engine can read them, and from
the plan otherwise: the physical names that components/naming.py derives from the
event id. The page names the source each run used.

Every value from the stack file or the outputs is quoted with `shell_word` where it
goes into a shell command. The Markdown environment escapes every `{{ ... }}` value as
inline text unless a filter has already made it Markdown (`code`, `code_line`, `url`),
so a name cannot add markup, links, headings or table cells; literal template text is
printed as written. The HTML environment autoescapes.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
import markupsafe

from components.calendar import rotates_after_close, rotation_after_close, teardown_warnings
from components.flag_schema import ENVIRONMENT, PROFILE, flag_document, location_flag
from components.naming import physical_name
from components.receipts import RECEIPTS_PREFIX
from components.spec import Contact, EventSpec, StackFile
from popstack.checkpoints import CheckpointError, check_stack_name
from popstack.engine import CLI_MISSING, SECRET_MASK, AutomationEngine, Engine, EngineError
from popstack.scaffold import PLACEHOLDER, placeholder_keys

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FORMATS = ("md", "html")

# Stands in for the AWS account id in plan values. The plan's own account id
# (123456789012) is a mock, so it would give a wrong bucket name.
ACCOUNT_PLACEHOLDER = "<account-id>"

# AWS region names such as eu-west-1 or us-gov-west-1. The region becomes part of the
# console links' host name, so any other value is rejected.
AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")

# The stack outputs the runbook prints, each of which the plan can also name.
OUTPUT_KEYS = (
    "receiptsBucket",
    "dashboardName",
    "flagsApplicationId",
    "flagsProfileId",
    "alertTopicArn",
    "checkoutNamespace",
    "deadLetterQueueUrl",
)

# The columns of a manual receipt file, as teardown reads them (docs/settlement-formats.md).
RECEIPT_COLUMNS = (
    ("receipt_id", True, "receipt number, unique for the event"),
    ("location_id", True, "the location id where it was taken"),
    ("taken_at", True, "date and time with UTC offset (ISO 8601)"),
    ("amount", True, "in the currency's main unit; negative for money handed back"),
    ("currency", True, "ISO 4217 code"),
    ("payment_method", True, "cash, card, wallet or manual"),
    ("staff_id", True, "who took it"),
    ("order_id", False, "the order it belongs to, if there is one"),
    ("payment_reference", False, "the payment reference or token from the terminal"),
    ("note", False, "free text; no customer names, e-mail addresses, phone or card numbers"),
)

# The reason each switch command passes with --reason, by the state it sets.
REASONS = {
    ("checkout_enabled", "off"): "checkout failing everywhere",
    ("checkout_enabled", "on"): "checkout fixed",
    ("inventory_read_only", "on"): "stock counts wrong",
    ("inventory_read_only", "off"): "stock sync repaired",
    ("offline_receipts_allowed", "on"): "payment provider down",
    ("offline_receipts_allowed", "off"): "payment provider back",
    ("elevated_sampling", "on"): "tracing checkout errors",
    ("elevated_sampling", "off"): "tracing done",
}

# The reason the source sentence gives when `popstack runbook --no-outputs` ran. Text
# between backticks in a reason renders as code.
NO_OUTPUTS_REASON = "`popstack runbook` ran with `--no-outputs`"

# A `code span` in a reason or sentence that the templates render as code.
_CODE_SPAN = re.compile(r"`([^`]+)`")


class RunbookError(Exception):
    """A stack file value the runbook cannot use, or a --to directory it cannot write to.

    The message names the path and the fix.
    """


def make_engine() -> Engine:
    """Return the engine for the project in the working directory. Tests replace it."""
    return AutomationEngine(Path.cwd())


@dataclass(frozen=True)
class StackValues:
    """The names and ids the runbook prints, and where each one came from.

    `values` maps an output key to its value, or to None when neither the outputs
    nor the plan have it (the AppConfig ids before the first deploy).
    `outputs_problem` is why the stack outputs were not read, or None if they were.
    """

    values: dict[str, str | None]
    from_outputs: frozenset[str] = field(default_factory=frozenset)
    outputs_problem: str | None = None

    @property
    def source(self) -> str:
        """Where the values came from: "outputs", "plan" or "outputs and plan"."""
        if not self.from_outputs:
            return "plan"
        if self.from_outputs >= set(OUTPUT_KEYS):
            return "outputs"
        return "outputs and plan"


def read_outputs(engine: Engine, stack: str) -> tuple[dict[str, Any], str | None]:
    """Read a stack's outputs, or return none and the reason when they cannot be read.

    The reason is phrased to follow "because" in the runbook's source sentence.
    """
    try:
        outputs = dict(engine.outputs(stack))
    except EngineError as error:
        if str(error) == CLI_MISSING:
            # The engine's message ends with advice for `plan` that does not fit a runbook.
            return {}, "the Pulumi CLI is not on PATH, so the stack outputs could not be read"
        return {}, f"the stack outputs could not be read: {error}"
    if not outputs:
        return {}, f"stack {stack} has no outputs yet: it has not been deployed"
    return outputs, None


def plan_values(stack_file: StackFile) -> dict[str, str | None]:
    """Return the plan's value of each output in OUTPUT_KEYS, or None where it has none."""
    spec = stack_file.spec
    region = stack_region(stack_file)
    suffix = ".fifo" if spec.queues.type == "fifo" else ""
    dead_letter_queue = physical_name(spec.id, "sqs", f"orders-dlq{suffix}")
    topic = spec.alerts.topic_arn or (
        f"arn:aws:sns:{region}:{ACCOUNT_PLACEHOLDER}:{physical_name(spec.id, 'sns', 'alerts')}"
    )
    return {
        "receiptsBucket": f"{physical_name(spec.id, 's3', 'receipts')}-{ACCOUNT_PLACEHOLDER}",
        "dashboardName": physical_name(spec.id, "cloudwatch", "board"),
        # AppConfig assigns the ids when the stack is deployed.
        "flagsApplicationId": None,
        "flagsProfileId": None,
        "alertTopicArn": topic,
        "checkoutNamespace": physical_name(spec.id, "k8s"),
        "deadLetterQueueUrl": (
            f"https://sqs.{region}.amazonaws.com/{ACCOUNT_PLACEHOLDER}/{dead_letter_queue}"
        ),
    }


def stack_values(
    stack_file: StackFile, outputs: Mapping[str, Any], outputs_problem: str | None = None
) -> StackValues:
    """Merge the stack outputs over the plan's values, key by key.

    An output that is missing, empty or masked as a secret keeps the plan's value.
    """
    values = plan_values(stack_file)
    used: set[str] = set()
    for key in OUTPUT_KEYS:
        value = outputs.get(key)
        if isinstance(value, str) and value and value != SECRET_MASK:
            values[key] = value
            used.add(key)
    return StackValues(values, frozenset(used), outputs_problem)


def check_stack(stack_file: StackFile) -> None:
    """Raise RunbookError unless the stack name is one the Pulumi CLI accepts.

    The name goes into every command on the page, and it comes from the file name,
    which may contain any character.
    """
    try:
        check_stack_name(stack_file.stack)
    except CheckpointError as error:
        raise RunbookError(
            f"{stack_file.path}: {error} (the stack name is the part of the file name "
            "between Pulumi. and .yaml)"
        ) from None


def stack_region(stack_file: StackFile) -> str:
    """Return the stack's `aws:region`, or raise RunbookError when it is missing or invalid."""
    region = stack_file.config.get("aws:region")
    if region is None or region == "":
        raise RunbookError(
            f"{stack_file.path}: aws:region is missing; set it, for example "
            f"`pulumi config set aws:region eu-west-1 --stack {stack_file.stack}`"
        )
    if not isinstance(region, str) or not AWS_REGION.fullmatch(region):
        raise RunbookError(
            f"{stack_file.path}: aws:region {region!r} is not an AWS region name; "
            "set one such as eu-west-1"
        )
    return region


def emulator_endpoints(stack_file: StackFile) -> dict[str, str]:
    """Return the `aws:endpoints` of an emulator stack as service -> URL, else {}."""
    if not stack_file.spec.emulator:
        return {}
    endpoints: dict[str, str] = {}
    for entry in stack_file.config.get("aws:endpoints") or []:
        if isinstance(entry, Mapping):
            endpoints.update({str(key): str(value) for key, value in entry.items()})
    return endpoints


# --- the context both templates render ---------------------------------------------------


# Control characters, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ANSI_C_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _ansi_c_escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _ANSI_C_ESCAPES:
        return _ANSI_C_ESCAPES[character]
    # bash reads at most 2 digits after \x and 4 after \u, so a fixed width ends each escape.
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def shell_word(value: str) -> str:
    """Quote one word for a POSIX shell.

    shlex.quote would keep a control character, such as a newline, raw inside its quotes,
    where it breaks the command's line on the page. A value with one is written in
    ANSI-C quoting instead, $'...' with the character as an escape sequence, which bash,
    zsh and ksh read.
    """
    if not _CONTROL.search(value):
        return shlex.quote(value)
    body = re.sub(r"[\\']|" + _CONTROL.pattern, _ansi_c_escape, value)
    return f"$'{body}'"


def flag_command(stack: str, key: str, state: str, reason: str) -> str:
    """Return the `popstack flags set` command that sets one switch.

    The reason is one of REASONS or names a location id (a DNS label), so the double
    quotes around it need no escaping.
    """
    return f'popstack flags set {shell_word(stack)} {key}={state} --reason "{reason}"'


def _reason(key: str, state: str, location_ids: Mapping[str, str]) -> str:
    if key in location_ids:
        return f"{'reopening' if state == 'on' else 'closing'} location {location_ids[key]}"
    return REASONS[(key, state)]


def _console(region: str) -> str:
    return f"https://{region}.console.aws.amazon.com"


def appconfig_url(region: str, application_id: str | None, profile_id: str | None) -> str:
    """Return the AppConfig console page of the flag profile, or of the region's applications."""
    if application_id and profile_id:
        return (
            f"{_console(region)}/systems-manager/appconfig/applications/"
            f"{quote(application_id, safe='')}/featureflags/{quote(profile_id, safe='')}"
            f"/versions?region={region}"
        )
    return f"{_console(region)}/systems-manager/appconfig/applications?region={region}"


def dashboard_url(region: str, name: str) -> str:
    """Return the CloudWatch console page of one dashboard."""
    return (
        f"{_console(region)}/cloudwatch/home?region={region}"
        f"#dashboards/dashboard/{quote(name, safe='')}"
    )


def s3_url(region: str, bucket: str, prefix: str) -> str:
    """Return the S3 console page of a prefix, or the bucket list while the bucket is unknown."""
    if ACCOUNT_PLACEHOLDER in bucket:
        return f"https://s3.console.aws.amazon.com/s3/buckets?region={region}"
    return (
        f"https://s3.console.aws.amazon.com/s3/buckets/{quote(bucket, safe='')}"
        f"?region={region}&prefix={quote(prefix)}"
    )


def _example_amount(exponent: int, units: int) -> str:
    return str(units) if exponent == 0 else f"{units}.{'0' * exponent}"


def _contact(contact: Contact) -> dict[str, Any]:
    chat = contact.chat
    return {
        "level": contact.level,
        "name": contact.name,
        "role": contact.role,
        "when": contact.when,
        "phone": contact.phone,
        "phone_uri": contact.phone_uri,
        "email": contact.email,
        "mailto": None if contact.email is None else "mailto:" + quote(contact.email, safe="@"),
        "chat": chat,
        "chat_url": chat if chat and chat.startswith("https://") else None,
    }


def inline_parts(text: str) -> list[dict[str, Any]]:
    """Split text into parts to print as written and `code spans` to print as code.

    Each part is {"text": ..., "code": bool}; the code parts lose their backticks.
    """
    parts = []
    for index, piece in enumerate(_CODE_SPAN.split(text)):
        if piece:
            parts.append({"text": piece, "code": index % 2 == 1})
    return parts


def _source_sentence(stack: str, values: StackValues) -> str:
    """Return where the page's values came from, with command names as `code spans`."""
    if values.source == "outputs":
        return f"Names and ids on this page come from the outputs of stack {stack}."
    plan_keys = ", ".join(key for key in OUTPUT_KEYS if key not in values.from_outputs)
    if values.source == "outputs and plan":
        return (
            f"Names and ids on this page come from the outputs of stack {stack}, "
            f"except {plan_keys}, which come from the plan because the outputs lack them."
        )
    reason = values.outputs_problem or "the stack outputs contain none of these names"
    if reason == NO_OUTPUTS_REASON:
        skipped = f"Names on this page come from the plan, because {reason}, "
        skipped += "which skips reading the stack outputs. "
    else:
        skipped = (
            f"Names on this page come from the plan, because {reason}. "
            "`popstack runbook --no-outputs` skips reading the stack outputs. "
        )
    return (
        f"{skipped}Replace {ACCOUNT_PLACEHOLDER} with the AWS account id of the stack. "
        "The AppConfig ids are known only after the stack is deployed."
    )


def aws_command(endpoints: Mapping[str, str], service: str) -> str:
    """Return the start of an AWS CLI command, aimed at the emulator when the stack has one."""
    endpoint = endpoints.get(service)
    return f"aws --endpoint-url {shell_word(endpoint)}" if endpoint else "aws"


def _flags(stack: str, spec: EventSpec, console_url: str | None) -> list[dict[str, Any]]:
    """Describe every switch: its key, name, starting state and the commands that flip it."""
    document = flag_document(spec)
    location_ids = {location_flag(location.id): location.id for location in spec.locations}
    flags = []
    for key, value in document["values"].items():
        flags.append(
            {
                "key": key,
                "name": document["flags"][key]["name"],
                "description": document["flags"][key]["description"],
                "starts": "on" if value["enabled"] else "off",
                "off_command": flag_command(stack, key, "off", _reason(key, "off", location_ids)),
                "on_command": flag_command(stack, key, "on", _reason(key, "on", location_ids)),
                "console_url": console_url,
            }
        )
    return flags


def _calendar_alarm(stack: str, spec: EventSpec) -> dict[str, Any]:
    """Describe the calendar alarm: its name, the calendar Lambda's log group, and the
    `popstack flags set` commands that make each calendar action by hand.

    The handler (lambdas/calendar/handler.py) turns elevated_sampling on at doors open,
    and checkout_enabled and elevated_sampling off at doors close.
    """
    return {
        "name": physical_name(spec.id, "alarm", "calendar-errors"),
        "log_group": f"/aws/lambda/{physical_name(spec.id, 'lambda', 'calendar')}",
        "doors_open_command": (
            f"popstack flags set {shell_word(stack)} elevated_sampling=on "
            '--reason "doors-open action failed"'
        ),
        "doors_close_command": (
            f"popstack flags set {shell_word(stack)} checkout_enabled=off elevated_sampling=off "
            '--reason "doors-close action failed"'
        ),
    }


def _receipt_example(spec: EventSpec) -> list[str]:
    """Return the lines of an example receipt file: the header and two receipts."""
    taken_at = (spec.window.opens + timedelta(hours=1)).astimezone(ZoneInfo(spec.window.time_zone))
    common = {
        "location_id": spec.locations[0].id,
        "currency": spec.currency,
        "staff_id": "staff-01",
    }
    rows = [
        {
            "receipt_id": "r-001",
            "taken_at": taken_at.isoformat(timespec="seconds"),
            "amount": _example_amount(spec.currency_exponent, 12),
            "payment_method": "cash",
        },
        {
            "receipt_id": "r-002",
            "taken_at": (taken_at + timedelta(minutes=20)).isoformat(timespec="seconds"),
            "amount": _example_amount(spec.currency_exponent, 7),
            "payment_method": "manual",
            "payment_reference": "tok_0001",
            "note": '"Offline card, token exchanged"',
        },
    ]
    header = ",".join(column for column, _, _ in RECEIPT_COLUMNS)
    lines = [header]
    for row in rows:
        values = {**common, **row}
        lines.append(",".join(values.get(column, "") for column, _, _ in RECEIPT_COLUMNS))
    return lines


def _receipts(
    spec: EventSpec, bucket: str, region: str, endpoints: Mapping[str, str]
) -> dict[str, Any]:
    """Describe the receipt upload: the columns, an example, and each location's prefix."""
    opens = spec.window.opens.astimezone(ZoneInfo(spec.window.time_zone))
    locations = []
    for location in spec.locations:
        prefix = f"{RECEIPTS_PREFIX}{location.id}/"
        # An example name, <location>-<date>-<staff id>-<number>.csv, unique per upload.
        file_name = f"{location.id}-{opens:%Y-%m-%d}-staff-01-1.csv"
        locations.append(
            {
                "id": location.id,
                "name": location.name,
                "uri": f"s3://{bucket}/{prefix}",
                "upload_command": (
                    f"{aws_command(endpoints, 's3')} s3 cp {shell_word(file_name)} "
                    f"{shell_word(f's3://{bucket}/{prefix}')}"
                ),
                "console_url": None if spec.emulator else s3_url(region, bucket, prefix),
            }
        )
    return {
        "bucket": bucket,
        "prefix": RECEIPTS_PREFIX,
        "locations": locations,
        "columns": [
            {"name": name, "required": required, "meaning": meaning}
            for name, required, meaning in RECEIPT_COLUMNS
        ],
        "example": _receipt_example(spec),
    }


def _times(spec: EventSpec) -> list[dict[str, str]]:
    """Return the event calendar: each time in local time and UTC, with what happens then.

    An emulator stack has no Scheduler schedules, so nothing happens by itself there.
    """
    zone = ZoneInfo(spec.window.time_zone)
    automatic = not spec.emulator
    edges = []
    if spec.window.pre_sync_hours:
        edges.append(
            ("Stock pre-sync starts: the stock sync job runs", spec.window.pre_sync_starts)
        )
    edges.append(
        (
            "Doors open: change freeze starts"
            + ("; elevated sampling switches on by itself" if automatic else ""),
            spec.window.opens,
        )
    )
    edges.append(
        (
            "Doors close: change freeze ends"
            + ("; checkout and elevated sampling switch off by themselves" if automatic else ""),
            spec.window.closes,
        )
    )
    if automatic and any(
        rotates_after_close(spec.window, secret.rotation_days) for secret in spec.secrets
    ):
        edges.append(
            ("Secrets held back during the event rotate", rotation_after_close(spec.window))
        )
    if automatic:
        edges += [
            (
                "Teardown warning to the alert topic: "
                f"{int(warning.before_deadline.total_seconds() // 3600)} h left",
                warning.at,
            )
            for warning in teardown_warnings(spec)
            if warning.at < spec.expires_at
        ]
    edges.append(("Teardown deadline (the stack expires)", spec.expires_at))
    return [
        {
            "label": label,
            "local": moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
            "utc": moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
        }
        for label, moment in edges
    ]


def runbook_context(stack_file: StackFile, values: StackValues) -> dict[str, Any]:
    """Build the facts both runbook templates print."""
    check_stack(stack_file)
    spec = stack_file.spec
    stack = stack_file.stack
    region = stack_region(stack_file)
    endpoints = emulator_endpoints(stack_file)
    names = values.values

    # An emulator stack has no AWS console, so the page gives commands instead of links.
    flags_console_known = bool(names["flagsApplicationId"] and names["flagsProfileId"])
    flags_console = None
    if not spec.emulator:
        flags_console = appconfig_url(region, names["flagsApplicationId"], names["flagsProfileId"])
    flags = _flags(stack, spec, flags_console)
    by_key = {flag["key"]: flag for flag in flags}
    dashboard = names["dashboardName"] or ""
    dead_letter_queue = names["deadLetterQueueUrl"] or ""
    return {
        "stack": stack,
        "stack_path": str(stack_file.path),
        "event": {
            "id": spec.id,
            "title": spec.title,
            "brand": spec.brand,
            "owner": spec.owner,
            "cost_centre": spec.cost_centre,
            "currency": spec.currency,
            "region": region,
            "time_zone": spec.window.time_zone,
        },
        "emulator": spec.emulator,
        "emulator_endpoint": next(iter(endpoints.values()), None),
        "source": values.source,
        "source_parts": inline_parts(_source_sentence(stack, values)),
        "placeholder": PLACEHOLDER,
        "placeholder_keys": placeholder_keys(stack_file),
        "flags": flags,
        "flag": by_key,
        "locations": [
            {"id": location.id, "name": location.name, "flag": by_key[location_flag(location.id)]}
            for location in spec.locations
        ],
        "flags_show_command": f"popstack flags show {shell_word(stack)}",
        "flags_console_url": flags_console,
        "flags_console_known": flags_console_known,
        "flags_console_label": (
            "AppConfig flag profile"
            if flags_console_known
            else f"AppConfig applications in {region}"
        ),
        "flags_application_name": physical_name(spec.id, "appconfig", "flags"),
        "flags_profile_name": PROFILE,
        "flags_environment": ENVIRONMENT,
        "flags_strategy": physical_name(spec.id, "appconfig", "all-at-once"),
        "poll_interval_seconds": spec.flags.poll_interval_seconds,
        "pre_sync_command": " ".join(map(shell_word, spec.inventory.pre_sync_command)),
        "pre_sync_rerun_command": (
            f"kubectl -n {shell_word(names['checkoutNamespace'] or '')} create job "
            f"pre-sync-manual --from=cronjob/{physical_name(spec.id, 'cronjob', 'pre-sync')}"
        ),
        "namespace": names["checkoutNamespace"],
        "cluster_context": spec.cluster.context,
        "up_emergency_command": (
            f'popstack up {shell_word(stack)} --emergency --reason "cache throttling at peak"'
        ),
        "receipts": _receipts(spec, names["receiptsBucket"] or "", region, endpoints),
        "escalation": [_contact(c) for c in sorted(spec.escalation, key=lambda c: c.level)],
        "times": _times(spec),
        "dashboard": {
            "name": dashboard,
            "url": None if spec.emulator else dashboard_url(region, dashboard),
            "cli_command": (
                f"{aws_command(endpoints, 'cloudwatch')} cloudwatch get-dashboard "
                f"--dashboard-name {shell_word(dashboard)}"
            ),
        },
        "alerts": {"topic_arn": names["alertTopicArn"], "email": spec.alerts.email},
        "alarms": {
            "dead_letters": physical_name(spec.id, "alarm", "dead-letters"),
            "queue_age": physical_name(spec.id, "alarm", "queue-age"),
            "cache_throttling": physical_name(spec.id, "alarm", "cache-throttling"),
            "checkout_errors": physical_name(spec.id, "alarm", "checkout-errors"),
        },
        # components/schedules.py creates this alarm in every stack, emulator stacks too.
        "calendar_alarm": _calendar_alarm(stack, spec),
        "cache_max_ecpu": spec.cache.max_ecpu_per_second,
        "dead_letter_command": (
            f"{aws_command(endpoints, 'sqs')} sqs receive-message --queue-url "
            f"{shell_word(dead_letter_queue)} --max-number-of-messages 10"
        ),
        "teardown_command": f"popstack teardown {shell_word(stack)} --settlements FILE",
        "runbook_command": f"popstack runbook {shell_word(stack)}",
    }


# --- rendering -------------------------------------------------------------------------


class Markdown(str):
    """Text that is already Markdown, which the Markdown template prints unchanged."""


# What CommonMark or GitHub Flavored Markdown reads as markup anywhere in a line. That
# is a punctuation character in the class below, the '&' of an entity reference, and a
# '_' that can open or close emphasis (one between two letters or digits cannot). It is
# also the first '#' of a run that can open or close an ATX heading.
_INLINE_MARKUP = re.compile(
    r"[\\`*\[\]<>|~]"
    r"|&(?=[#A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])"
    r"|(?:(?<=\s)|^)#(?=#*(?:\s|$))"
)
# Block markers that count only at the start of a line: a bullet list item, a thematic
# break, a setext heading underline, or an ordered list item. A value placed after "- "
# or at the start of a template line starts a line in this sense.
_BULLET_OR_UNDERLINE = re.compile(r"^([-+=])(?=\s|$|\1)")
_ORDERED_ITEM = re.compile(r"^([0-9]{1,9})([.)])(?=\s|$)")
# Characters a link destination keeps as they are: RFC 3986's unreserved and reserved
# characters, less the ones Markdown reads in a destination ('(', ')', '[', ']'), ';'
# (which could end an entity reference), and '%' unless it starts an escape.
_URL_UNSAFE = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~:/?#@!$&'*+,=%]")


def markdown_text(value: object) -> Markdown:
    """Escape a value as Markdown inline text, in a paragraph, list item or table cell.

    Runs of whitespace, newlines included, become one space, so the value stays on its
    line. Other control characters become U+FFFD.
    """
    text = _CONTROL.sub("\ufffd", " ".join(str(value).split()))
    text = _INLINE_MARKUP.sub(r"\\\g<0>", text)
    text = _BULLET_OR_UNDERLINE.sub(r"\\\1", text)
    return Markdown(_ORDERED_ITEM.sub(r"\1\\\2", text))


def markdown_code(value: object, table_cell: bool = False) -> Markdown:
    """Return a value as a Markdown code span, or in a table cell if `table_cell`.

    The fence is one backtick longer than the longest backtick run in the value, and a
    space pads each side where CommonMark would otherwise merge a backtick into the
    fence or strip a space of the value. Line breaks and other control characters
    become U+FFFD, because a line break would end the paragraph or the table row.
    """
    text = _CONTROL.sub("\ufffd", str(value))
    if table_cell:
        if "\\|" in text:
            # Escaping the pipe of a backslash and a pipe gives two backslashes and a
            # pipe. GFM's table grammar (as markdown-rs implements it) reads that as an
            # escaped backslash and a cell boundary, while markdown-it reads a backslash
            # and an escaped pipe. Escaped text reads the same in both.
            return markdown_text(text)
        text = text.replace("|", "\\|")
    if not text:
        return Markdown("` `")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    if text.strip(" ") and (text[0] in "` " or text[-1] in "` "):
        text = f" {text} "
    return Markdown(f"{fence}{text}{fence}")


def markdown_code_line(value: object) -> Markdown:
    """Return a value as one line of a fenced code block, with control characters as U+FFFD.

    Each template line in a fenced block starts with literal text, so no value can
    start a line that closes the fence.
    """
    return Markdown(_CONTROL.sub("\ufffd", str(value)))


def _percent_encode(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def markdown_url(value: object) -> Markdown:
    """Return a URL as a Markdown link destination, percent-encoding what Markdown reads.

    The context builds its URLs from quoted parts, so for those this returns them as
    they are and the HTML page links the same address.
    """
    return Markdown(_URL_UNSAFE.sub(_percent_encode, str(value)))


def markdown_inline(parts: list[Mapping[str, Any]]) -> Markdown:
    """Return `inline_parts` output as Markdown: escaped text and code spans."""
    rendered = []
    for part in parts:
        text = part["text"]
        if part["code"]:
            rendered.append(markdown_code(text))
            continue
        # markdown_text strips the spaces at the ends, which separate this part from the next.
        leading = " " if text[:1].isspace() else ""
        trailing = " " if text[-1:].isspace() and text.strip() else ""
        rendered.append(leading + markdown_text(text) + trailing)
    return Markdown("".join(rendered))


def html_inline(parts: list[Mapping[str, Any]]) -> markupsafe.Markup:
    """Return `inline_parts` output as HTML: escaped text and <code> elements."""
    code = markupsafe.Markup("<code>{}</code>")
    return markupsafe.Markup("").join(
        code.format(part["text"]) if part["code"] else markupsafe.escape(part["text"])
        for part in parts
    )


def _escape_markdown(value: object) -> object:
    """Escape every `{{ ... }}` value of the Markdown template that no filter made Markdown."""
    return value if isinstance(value, Markdown) else markdown_text(value)


def _environment(output_format: str) -> jinja2.Environment:
    options: dict[str, Any] = {}
    if output_format == "md":
        options["finalize"] = _escape_markdown
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=output_format == "html",
        trim_blocks=True,
        lstrip_blocks=True,
        **options,
    )
    if output_format == "md":
        environment.filters.update(
            code=markdown_code,
            cell_code=lambda value: markdown_code(value, table_cell=True),
            code_line=markdown_code_line,
            url=markdown_url,
            inline=markdown_inline,
        )
    else:
        environment.filters["inline"] = html_inline
    return environment


def render_context(context: Mapping[str, Any], output_format: str) -> str:
    """Render a runbook context as Markdown ("md") or as an HTML page ("html")."""
    if output_format not in FORMATS:
        raise ValueError(f"unknown runbook format {output_format!r}; use md or html")
    template = f"runbook.{output_format}.j2"
    return _environment(output_format).get_template(template).render(context)


def render_runbook(
    stack_file: StackFile, values: StackValues | None = None, output_format: str = "md"
) -> str:
    """Render the on-call runbook of one event, from the plan's values unless `values` is given."""
    if values is None:
        values = stack_values(stack_file, {})
    return render_context(runbook_context(stack_file, values), output_format)


# --- writing the files -----------------------------------------------------------------


def _os_error_fix(error: OSError) -> str:
    """Return what to do about an OSError that stopped a runbook file being written."""
    if error.errno == errno.ENAMETOOLONG:
        return "give a shorter path"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "check the permissions or give another --to directory"
    if error.errno == errno.EROFS:
        return "give a directory on a writable file system"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space or give another --to directory"
    return "give another --to directory"


def _os_error_message(path: Path, error: OSError, outcome: str | None = None) -> str:
    """Return "<path>: <error>[, so <outcome>]; <fix>" for an OSError."""
    consequence = f", so {outcome}" if outcome else ""
    return f"{path}: {error.strerror or error}{consequence}; {_os_error_fix(error)}"


def check_directory(directory: Path) -> None:
    """Raise RunbookError unless `directory` is a directory or can be created as one."""
    try:
        status = directory.stat()
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise RunbookError(
            f"--to {directory}: a parent of the directory is a file; give a directory path"
        ) from None
    except OSError as error:
        raise RunbookError(f"--to {_os_error_message(directory, error)}") from None
    if not stat.S_ISDIR(status.st_mode):
        raise RunbookError(
            f"--to {directory} is a file; give a directory for runbook.md and runbook.html"
        )


def _check_target(target: Path) -> bool:
    """Raise RunbookError if `target` cannot be replaced by a rename; return whether it exists.

    A symbolic link is replaced, not followed.
    """
    try:
        status = target.lstat()
    except FileNotFoundError:
        return False
    except OSError as error:
        raise RunbookError(_os_error_message(target, error, "no file was changed")) from None
    if stat.S_ISDIR(status.st_mode):
        raise RunbookError(
            f"{target} is a directory, so no file was changed; remove it or give another "
            "--to directory"
        )
    return True


def _write_temporary(directory: Path, name: str, text: str) -> Path:
    """Write `text` to a new hidden file in `directory` and return its path.

    The file is created with mode 0666 less the umask, as open() creates a new file.
    """
    path = directory / f".{name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _keep_previous(target: Path) -> Path | None:
    """Hard-link an existing target to a hidden name, so a failed write can restore it.

    Return the link, or None where the file system has no hard links.
    """
    backup = target.with_name(f".{target.name}.{secrets.token_hex(8)}.old")
    try:
        os.link(target, backup, follow_symlinks=False)
    except OSError:
        return None
    return backup


def _create_directory(directory: Path) -> None:
    check_directory(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        check_directory(directory)
        raise RunbookError(
            f"--to {directory}: cannot create the directory, because a broken symbolic link "
            "or a file is in its path; give another directory"
        ) from None
    except NotADirectoryError:
        raise RunbookError(
            f"--to {directory}: a parent of the directory is a file; give a directory path"
        ) from None
    except OSError as error:
        raise RunbookError(f"--to {_os_error_message(directory, error)}") from None


def _write_temporaries(
    directory: Path, targets: Mapping[str, Path], documents: Mapping[str, str]
) -> dict[str, Path]:
    """Write every document to its temporary file, or remove them all and raise RunbookError."""
    temporary: dict[str, Path] = {}
    try:
        for name, text in documents.items():
            temporary[name] = _write_temporary(directory, targets[name].name, text)
    except OSError as error:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        target = targets[next(name for name in documents if name not in temporary)]
        raise RunbookError(_os_error_message(target, error, "no file was changed")) from None
    return temporary


def write_runbooks(directory: Path, documents: Mapping[str, str]) -> list[Path]:
    """Write each rendered document to `directory`/runbook.<format>, all or none of them.

    Every target is checked first, then each document goes to a temporary file in the
    directory, and only then are the temporary files renamed over the targets. If a
    rename fails, the targets renamed before it are restored. Raises RunbookError with
    the path and the fix for any OSError.
    """
    _create_directory(directory)
    targets = {name: directory / f"runbook.{name}" for name in documents}
    existed = {name: _check_target(target) for name, target in targets.items()}
    temporary = _write_temporaries(directory, targets, documents)

    backups = {name: _keep_previous(targets[name]) for name in documents if existed[name]}
    replaced: list[str] = []
    try:
        for name in documents:
            os.replace(temporary[name], targets[name])
            replaced.append(name)
    except OSError as error:
        failed = targets[next(name for name in documents if name not in replaced)]
        unrestored = _restore(targets, replaced, existed, backups)
        for name in documents:
            if name not in replaced:
                temporary[name].unlink(missing_ok=True)
        outcome = "no file was changed"
        if unrestored:
            written = " and ".join(str(targets[name]) for name in unrestored)
            outcome = f"only {written} has the new runbook"
        raise RunbookError(_os_error_message(failed, error, outcome)) from None
    finally:
        for backup in backups.values():
            if backup is not None:
                backup.unlink(missing_ok=True)
    return list(targets.values())


def _restore(
    targets: Mapping[str, Path],
    replaced: list[str],
    existed: Mapping[str, bool],
    backups: Mapping[str, Path | None],
) -> list[str]:
    """Undo the renames of `replaced` targets; return the names that could not be undone."""
    unrestored = []
    for name in replaced:
        backup = backups.get(name)
        try:
            if backup is not None:
                os.replace(backup, targets[name])
            elif not existed[name]:
                targets[name].unlink()
            else:
                unrestored.append(name)
        except OSError:
            unrestored.append(name)
    return unrestored
