"""The on-call runbook of one event, as Markdown and as one self-contained HTML page.

`runbook_context` gathers every fact the runbook prints, and both templates
(templates/runbook.md.j2 and templates/runbook.html.j2) render that one context, so
the two formats carry the same commands, links, contacts and times.

Names and ids come from the stack's outputs when the engine can read them, and from
the plan otherwise: the physical names that components/naming.py derives from the
event id. The page names the source each run used.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2

from components.flags import ENVIRONMENT, PROFILE, flag_document, location_flag
from components.naming import physical_name
from components.receipts import RECEIPTS_PREFIX
from components.spec import Contact, EventSpec, StackFile
from popstack.engine import SECRET_MASK, AutomationEngine, Engine, EngineError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FORMATS = ("md", "html")

# Stands in for the AWS account id in plan values. The plan's own account id
# (123456789012) is a mock, so it would give a wrong bucket name.
ACCOUNT_PLACEHOLDER = "<account-id>"

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


class RunbookError(Exception):
    """A stack file without a value the runbook needs. The message names the fix."""


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


def stack_region(stack_file: StackFile) -> str:
    """Return the stack's `aws:region`, or raise RunbookError when it is not set."""
    region = stack_file.config.get("aws:region")
    if not isinstance(region, str) or not region:
        raise RunbookError(
            f"{stack_file.path}: aws:region is missing; set it, for example "
            f"`pulumi config set aws:region eu-west-1 --stack {stack_file.stack}`"
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


def flag_command(stack: str, key: str, state: str, reason: str) -> str:
    """Return the `popstack flags set` command that sets one switch."""
    return f'popstack flags set {stack} {key}={state} --reason "{reason}"'


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
            f"{_console(region)}/systems-manager/appconfig/applications/{application_id}"
            f"/featureflags/{profile_id}/versions?region={region}"
        )
    return f"{_console(region)}/systems-manager/appconfig/applications?region={region}"


def dashboard_url(region: str, name: str) -> str:
    """Return the CloudWatch console page of one dashboard."""
    return f"{_console(region)}/cloudwatch/home?region={region}#dashboards/dashboard/{name}"


def s3_url(region: str, bucket: str, prefix: str) -> str:
    """Return the S3 console page of a prefix, or the bucket list while the bucket is unknown."""
    if ACCOUNT_PLACEHOLDER in bucket:
        return f"https://s3.console.aws.amazon.com/s3/buckets?region={region}"
    return (
        f"https://s3.console.aws.amazon.com/s3/buckets/{bucket}"
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


def _source_sentence(stack: str, values: StackValues) -> str:
    if values.source == "outputs":
        return f"Names and ids on this page come from the outputs of stack {stack}."
    plan_keys = ", ".join(key for key in OUTPUT_KEYS if key not in values.from_outputs)
    if values.source == "outputs and plan":
        return (
            f"Names and ids on this page come from the outputs of stack {stack}, "
            f"except {plan_keys}, which come from the plan because the outputs lack them."
        )
    reason = values.outputs_problem or "the stack outputs contain none of these names"
    return (
        f"Names on this page come from the plan, because {reason}. "
        f"Replace {ACCOUNT_PLACEHOLDER} with the AWS account id of the stack. "
        "The AppConfig ids are known only after the stack is deployed."
    )


def aws_command(endpoints: Mapping[str, str], service: str) -> str:
    """Return the start of an AWS CLI command, aimed at the emulator when the stack has one."""
    endpoint = endpoints.get(service)
    return f"aws --endpoint-url {endpoint}" if endpoint else "aws"


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
                    f"{aws_command(endpoints, 's3')} s3 cp {file_name} s3://{bucket}/{prefix}"
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
    """Return the window's edges and the teardown deadline, in local time and in UTC."""
    zone = ZoneInfo(spec.window.time_zone)
    edges = [
        ("Stock pre-sync starts", spec.window.pre_sync_starts),
        ("Doors open: change freeze starts", spec.window.opens),
        ("Doors close: change freeze ends", spec.window.closes),
        ("Teardown deadline (the stack expires)", spec.expires_at),
    ]
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
        "source_sentence": _source_sentence(stack, values),
        "flags": flags,
        "flag": by_key,
        "locations": [
            {"id": location.id, "name": location.name, "flag": by_key[location_flag(location.id)]}
            for location in spec.locations
        ],
        "flags_show_command": f"popstack flags show {stack}",
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
        # TODO: add the command that re-runs the pre-sync (`kubectl create job --from=...`)
        # once the stack names a pre-sync CronJob. Until then the page names only the command.
        "pre_sync_command": shlex.join(spec.inventory.pre_sync_command),
        "namespace": names["checkoutNamespace"],
        "cluster_context": spec.cluster.context,
        "up_emergency_command": (
            f'popstack up {stack} --emergency --reason "cache throttling at peak"'
        ),
        "receipts": _receipts(spec, names["receiptsBucket"] or "", region, endpoints),
        "escalation": [_contact(c) for c in sorted(spec.escalation, key=lambda c: c.level)],
        "times": _times(spec),
        "dashboard": {
            "name": dashboard,
            "url": None if spec.emulator else dashboard_url(region, dashboard),
            "cli_command": (
                f"{aws_command(endpoints, 'cloudwatch')} cloudwatch get-dashboard "
                f"--dashboard-name {dashboard}"
            ),
        },
        "alerts": {"topic_arn": names["alertTopicArn"], "email": spec.alerts.email},
        "alarms": {
            "dead_letters": physical_name(spec.id, "alarm", "dead-letters"),
            "queue_age": physical_name(spec.id, "alarm", "queue-age"),
            "cache_throttling": physical_name(spec.id, "alarm", "cache-throttling"),
            "checkout_errors": physical_name(spec.id, "alarm", "checkout-errors"),
        },
        "cache_max_ecpu": spec.cache.max_ecpu_per_second,
        "dead_letter_command": (
            f"{aws_command(endpoints, 'sqs')} sqs receive-message --queue-url "
            f"{dead_letter_queue} --max-number-of-messages 10"
        ),
        "teardown_command": f"popstack teardown {stack} --settlements FILE",
    }


# --- rendering -------------------------------------------------------------------------


def _markdown_cell(value: object) -> str:
    """Escape a value for one Markdown table cell."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _environment(autoescape: bool) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["cell"] = _markdown_cell
    return environment


def render_context(context: Mapping[str, Any], output_format: str) -> str:
    """Render a runbook context as Markdown ("md") or as an HTML page ("html")."""
    if output_format not in FORMATS:
        raise ValueError(f"unknown runbook format {output_format!r}; use md or html")
    template = f"runbook.{output_format}.j2"
    return _environment(autoescape=output_format == "html").get_template(template).render(context)


def render_runbook(
    stack_file: StackFile, values: StackValues | None = None, output_format: str = "md"
) -> str:
    """Render the on-call runbook of one event, from the plan's values unless `values` is given."""
    if values is None:
        values = stack_values(stack_file, {})
    return render_context(runbook_context(stack_file, values), output_format)
