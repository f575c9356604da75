"""The typed event spec: one event, read from the `popstack:` keys of a stack file.

A stack file `stacks/Pulumi.<stack>.yaml` contains the event under the `popstack:`
config namespace, one top-level key per field (`popstack:id`, `popstack:window`,
...). `load_stack_file` reads and checks it offline with line numbers; the
Pulumi program reads the same keys from `pulumi.Config` through `spec_from_config`.
Both raise `SpecError`, which lists every bad value with its key path and fix.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from iso4217 import Currency
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from components.naming import MAX_SECRET_NAME, longest_name_problem, max_event_id_length

NAMESPACE = "popstack"

# Window edges must fall in these years, which keeps date arithmetic in range.
MIN_YEAR = 2000
MAX_YEAR = 2199

# The maximum pre-sync-to-close freeze. Rotation days skip every UTC day it touches,
# and a monthly rotation schedule needs some days left free.
MAX_FREEZE = timedelta(days=28)

# Secrets Manager accepts AutomaticallyAfterDays from 1 to 1000.
MIN_ROTATION_DAYS = 1
MAX_ROTATION_DAYS = 1000

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
IMAGE_REF = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
# Plain addresses only: no brackets, quotes or pipes, which mail links and tables misread.
EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
MAX_EMAIL = 254
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi)?$")

# C0 and C1 control characters, and the Unicode controls that reorder or hide text.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _plain_text(value: str) -> str:
    if CONTROL.search(value):
        raise ValueError(
            "contains a control character (a newline, tab, escape or invisible formatting "
            "character); write it on one line as plain text"
        )
    return value


def _command_argument(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character, which no command can receive; remove it")
    if not value.strip():
        raise ValueError("is blank; remove it or give the argument")
    return value


Label = Annotated[str, StringConstraints(min_length=1, max_length=63)]
Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    AfterValidator(_plain_text),
]


class SpecError(Exception):
    """One or more invalid values in a stack file, each with its key path and fix."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'s' if count != 1 else ''} in the event spec"
        return head + "\n" + "\n".join(f"  {problem}" for problem in self.problems)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=False,
        frozen=True,
        strict=True,
    )


class Window(_Model):
    """When doors open and close, each edge with its own UTC offset."""

    opens: datetime
    closes: datetime
    time_zone: str
    pre_sync_hours: int = Field(default=6, ge=0, le=72)

    @field_validator("opens", "closes", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an ISO 8601 time; write it as 2027-03-12T10:00:00+00:00"
                ) from None
        else:
            raise ValueError(
                f"expected an ISO 8601 time with offset, got {type(value).__name__} {value!s}; "
                'write it as a quoted string such as "2027-03-12T10:00:00+00:00"'
            )
        if parsed.tzinfo is None:
            raise ValueError(
                f"{value!s} has no UTC offset; add one, for example {parsed.isoformat()}+00:00"
            )
        if not MIN_YEAR <= parsed.year <= MAX_YEAR:
            raise ValueError(
                f"{value!s} is outside the years {MIN_YEAR} to {MAX_YEAR}; check the date"
            )
        if parsed.microsecond:
            # Scheduler's at() takes whole seconds; a fraction would fire the schedule early.
            raise ValueError(
                f"{value!s} has a fraction of a second; give whole seconds, for example "
                f"{parsed.replace(microsecond=0).isoformat()}"
            )
        return parsed

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else "; use an IANA name such as Europe/Lisbon"
            )
            raise ValueError(f"{value!r} is not an IANA time zone{hint}") from None
        return value

    @model_validator(mode="after")
    def _order_and_offsets(self) -> Window:
        if self.closes <= self.opens:
            raise _FieldError(
                ("window", "closes"),
                f"closes ({self.closes.isoformat()}) is not after "
                f"opens ({self.opens.isoformat()}); swap them or move closes later",
            )
        length = self.closes - self.pre_sync_starts
        if length > MAX_FREEZE:
            raise _FieldError(
                ("window", "closes"),
                f"pre-sync start to close is {length.days} days {length.seconds // 3600} h; "
                f"popstack runs an event for at most {MAX_FREEZE.days} days from pre-sync "
                "start to close, because secrets do not rotate in that time; close earlier, "
                "shorten preSyncHours, or split the event into two stacks",
            )
        zone = ZoneInfo(self.time_zone)
        for edge in ("opens", "closes"):
            moment: datetime = getattr(self, edge)
            expected = moment.astimezone(zone).utcoffset()
            if moment.utcoffset() != expected:
                wall_clock = moment.replace(tzinfo=zone)
                same_instant = moment.astimezone(zone)
                naive = moment.replace(tzinfo=None)
                if wall_clock.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
                    raise _FieldError(
                        ("window", edge),
                        f"{edge} {moment.isoformat()}: {moment:%H:%M} local time does not "
                        f"exist on {moment:%Y-%m-%d} in {self.time_zone}, because the clocks "
                        f"go forward then; write {same_instant.isoformat()} for the same "
                        "instant, or pick a local time outside the gap",
                    )
                raise _FieldError(
                    ("window", edge),
                    f"{edge} {moment.isoformat()} has offset {_offset(moment.utcoffset())} but "
                    f"{self.time_zone} is at {_offset(expected)} then; write "
                    f"{wall_clock.isoformat()} for {moment:%H:%M} local time, or "
                    f"{same_instant.isoformat()} for the same instant",
                )
        return self

    @property
    def pre_sync_starts(self) -> datetime:
        return self.opens - timedelta(hours=self.pre_sync_hours)


def pinned_image(value: str) -> str:
    """Return an image reference that is pinned by tag or digest; raise ValueError if not."""
    match = IMAGE_REF.fullmatch(value)
    if not match:
        raise ValueError(
            f"{value!r} is not an image reference; "
            "write registry/repository:tag or registry/repository@sha256:digest"
        )
    if match["tag"] is None and match["digest"] is None:
        raise ValueError(f"{value!r} has no tag or digest; pin it, for example {value}:1.4.2")
    if match["tag"] == "latest":
        raise ValueError(
            f"{value!r} uses the tag 'latest', which is rejected; pin a version tag or a digest"
        )
    return value


class Location(_Model):
    id: Annotated[str, StringConstraints(pattern=DNS_LABEL.pattern, max_length=20)]
    name: Text


class Checkout(_Model):
    image: str
    min_replicas: int = Field(default=2, ge=1, le=100)
    max_replicas: int = Field(default=6, ge=1, le=500)
    port: int = Field(default=8080, ge=1024, le=65535)
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "256Mi"
    memory_limit: str = "512Mi"
    target_cpu_percent: int = Field(default=65, ge=10, le=95)
    health_path: str = "/healthz"
    ready_path: str = "/readyz"

    @field_validator("image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        return pinned_image(value)

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not QUANTITY.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity such as 250m or 512Mi")
        return value

    @model_validator(mode="after")
    def _replica_bounds(self) -> Checkout:
        if self.min_replicas > self.max_replicas:
            raise _FieldError(
                ("checkout", "minReplicas"),
                f"minReplicas ({self.min_replicas}) is greater than maxReplicas "
                f"({self.max_replicas}); raise maxReplicas or lower minReplicas",
            )
        return self


class Cache(_Model):
    engine: Literal["valkey", "redis"] = "valkey"
    max_data_storage_gb: int = Field(default=5, ge=1, le=5000)
    max_ecpu_per_second: int = Field(default=5000, ge=1000, le=15_000_000)


class Queues(_Model):
    type: Literal["standard", "fifo"] = "standard"
    max_receive_count: int = Field(default=5, ge=1, le=1000)
    retention_hours: int = Field(default=96, ge=1, le=335)
    visibility_timeout_seconds: int = Field(default=60, ge=0, le=43200)


class Flags(_Model):
    """Initial values of the kill switches; a location missing here starts enabled."""

    checkout_enabled: bool = True
    inventory_read_only: bool = False
    offline_receipts_allowed: bool = True
    elevated_sampling: bool = False
    locations: dict[str, bool] = Field(default_factory=dict)
    # How often the checkout service polls AppConfig for the flags, so the maximum
    # time a flip takes to reach it. AppConfig's data API accepts 15 s to 86400 s.
    poll_interval_seconds: int = Field(default=15, ge=15, le=3600)


class Inventory(_Model):
    """The stock sync that runs in the pre-sync window before doors open."""

    # Run in a Kubernetes Job in the event's namespace, with the event's
    # configuration in its environment, as the checkout service has it.
    pre_sync_command: list[
        Annotated[
            str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_command_argument)
        ]
    ] = Field(min_length=1, max_length=50)
    # Default: the checkout image.
    pre_sync_image: str | None = None

    @field_validator("pre_sync_image")
    @classmethod
    def _pinned_image(cls, value: str | None) -> str | None:
        return None if value is None else pinned_image(value)


PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


class Contact(_Model):
    """One row of the escalation matrix that the runbook prints."""

    level: int = Field(ge=1, le=9)
    name: Text
    role: Text
    # When on-site staff call this contact, in words they use.
    when: Text
    phone: str | None = None
    email: str | None = None
    chat: Text | None = None

    @field_validator("phone", mode="before")
    @classmethod
    def _phone_as_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f"{value} was read as a number, which drops the leading + and any spaces; "
                'write it as a quoted string such as "+351 912 345 678"'
            )
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not PHONE.fullmatch(re.sub(r"[ ()-]", "", value)):
            raise ValueError(
                f"{value!r} is not an international phone number; write it with its country "
                'code, as a quoted string such as "+351 912 345 678"'
            )
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > MAX_EMAIL or not EMAIL.fullmatch(value)):
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise ValueError(f"{shown!r} is not an email address")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if self.phone is None and self.email is None and self.chat is None:
            raise ValueError(f"{self.name} has no phone, email or chat; give at least one")
        return self

    @property
    def phone_uri(self) -> str | None:
        """The phone number as a tel: URI, which a phone dials when tapped."""
        return None if self.phone is None else "tel:" + re.sub(r"[ ()-]", "", self.phone)


class Secret(_Model):
    name: Annotated[str, StringConstraints(pattern=DNS_LABEL.pattern, max_length=MAX_SECRET_NAME)]
    rotation_days: int
    description: str = ""

    @field_validator("rotation_days")
    @classmethod
    def _rotation_range(cls, value: int) -> int:
        if not MIN_ROTATION_DAYS <= value <= MAX_ROTATION_DAYS:
            raise ValueError(
                f"{value} days is outside what Secrets Manager accepts; "
                f"use {MIN_ROTATION_DAYS} to {MAX_ROTATION_DAYS}"
            )
        return value


class Alerts(_Model):
    email: str | None = None
    topic_arn: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Alerts:
        if (self.email is None) == (self.topic_arn is None):
            raise ValueError("set exactly one of email or topicArn")
        if self.email is not None and not EMAIL.fullmatch(self.email):
            raise ValueError(f"{self.email!r} is not an email address")
        if self.topic_arn is not None and not self.topic_arn.startswith("arn:aws:sns:"):
            raise ValueError(f"{self.topic_arn!r} is not an SNS topic ARN (arn:aws:sns:...)")
        return self


class Cluster(_Model):
    """The existing Kubernetes cluster and network the checkout service runs in."""

    context: str | None = None
    # Write the Kubernetes manifests to this directory instead of applying them
    # to a cluster (the provider's renderYamlToDirectory), as the demo stack does.
    render_yaml_to: str | None = None
    oidc_provider_arn: str
    oidc_issuer: str
    vpc_id: str
    subnet_ids: list[str] = Field(min_length=1)

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer_host(cls, value: str) -> str:
        return value.removeprefix("https://")


class Exports(_Model):
    retention_days: int = Field(default=2555, ge=1, le=36500)
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"


class EventSpec(_Model):
    """One event: everything the stack is built from."""

    id: str
    title: Text
    brand: Text
    owner: Text
    cost_centre: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    currency: str
    window: Window
    grace_hours: int = Field(default=72, ge=1, le=24 * 60)
    locations: list[Location] = Field(min_length=1)
    peak_rps: int = Field(ge=1, le=1_000_000)
    checkout: Checkout
    cache: Cache = Cache()
    queues: Queues = Queues()
    flags: Flags = Flags()
    secrets: list[Secret] = Field(default_factory=list)
    alerts: Alerts
    inventory: Inventory
    escalation: list[Contact] = Field(min_length=1, max_length=20)
    cluster: Cluster
    exports: Exports = Exports()
    # True only for a stack aimed at a local AWS emulator (moto server); it leaves
    # out the parts the emulator does not implement. See EMULATOR_OMITS.
    emulator: bool = False

    @field_validator("id")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a DNS-1123 label; use lower-case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        limit = max_event_id_length()
        if len(value) > limit:
            problem = longest_name_problem(value) or "a derived name is too long"
            raise ValueError(
                f"{value!r} is {len(value)} characters, too long: {problem}; "
                f"shorten the id to at most {limit} characters"
            )
        return value

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        try:
            Currency(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 4217 currency code; use three capitals such as EUR or JPY"
            ) from None
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> EventSpec:
        seen: set[str] = set()
        for index, location in enumerate(self.locations):
            if location.id in seen:
                raise _FieldError(
                    ("locations", index, "id"),
                    f"duplicate location id {location.id!r}; give each location its own id",
                )
            seen.add(location.id)
        for key in self.flags.locations:
            if key not in seen:
                raise _FieldError(
                    ("flags", "locations", key),
                    f"{key!r} is not a location of this event; use one of {sorted(seen)}",
                )
        names: set[str] = set()
        for index, secret in enumerate(self.secrets):
            if secret.name in RESERVED_SECRET_NAMES:
                raise _FieldError(
                    ("secrets", index, "name"),
                    f"{secret.name!r} is reserved for the cache's AUTH secret; choose another name",
                )
            if secret.name in names:
                raise _FieldError(
                    ("secrets", index, "name"),
                    f"duplicate secret name {secret.name!r}; give each secret its own name",
                )
            names.add(secret.name)
        return self

    @property
    def expires_at(self) -> datetime:
        """The time after which the stack must be torn down, in UTC."""
        return (self.window.closes + timedelta(hours=self.grace_hours)).astimezone(UTC)

    @property
    def currency_exponent(self) -> int:
        return int(Currency(self.currency).exponent or 0)

    def location_enabled(self, location_id: str) -> bool:
        return self.flags.locations.get(location_id, True)


# Secret names the stack uses for its own secrets.
RESERVED_SECRET_NAMES = ("cache-auth",)

# The parts a stack with `emulator: true` leaves out, because moto (5.2) does
# not implement their APIs, or, for EventBridge Scheduler, stores schedules but
# never runs them.
EMULATOR_OMITS = (
    "cache (ElastiCache Serverless, its users and security groups)",
    "AppConfig environment, deployment strategy and deployment",
    "X-Ray sampling rule",
    "EventBridge Scheduler group, schedules and role of the event calendar",
)


class _FieldError(ValueError):
    """A cross-field problem raised with the key path it belongs to."""

    def __init__(self, path: tuple[str | int, ...], message: str):
        self.path = path
        super().__init__(message)


def _offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _fields_at(path: tuple[str | int, ...]) -> list[str]:
    """Return the camelCase keys that are valid at a key path of the spec."""
    model: Any = EventSpec
    for part in path:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", ()) or (annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _key_path(parts: tuple[str | int, ...]) -> str:
    text = f"{NAMESPACE}:"
    for index, part in enumerate(parts):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += part if index == 0 else f".{part}"
    return text


# Fixes for pydantic's range and length errors; {} is the limit.
_BOUND_FIXES = {
    "greater_than_equal": "use {} or more",
    "greater_than": "use more than {}",
    "less_than_equal": "use {} or less",
    "less_than": "use less than {}",
    "too_short": "give at least {} item(s)",
    "too_long": "give at most {} item(s)",
    "string_too_short": "use at least {} character(s)",
    "string_too_long": "use at most {} characters",
}

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "float_type": "a number",
}


def _problems(error: ValidationError, lines: Mapping[tuple, int], source: str) -> list[str]:
    problems = []
    for item in error.errors():
        path = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        kind = item["type"]
        context_error = (item.get("ctx") or {}).get("error")
        if isinstance(context_error, _FieldError):
            path = context_error.path
            message = str(context_error)
        elif kind == "extra_forbidden":
            valid = _fields_at(path[:-1])
            close = difflib.get_close_matches(str(path[-1]), valid, n=1, cutoff=0.5)
            fix = f"did you mean {close[0]!r}?" if close else f"valid keys here: {', '.join(valid)}"
            message = f"unknown key {path[-1]!r}; {fix}"
        elif kind == "missing":
            message = "is required but missing; add it to the stack file"
        elif kind in _TYPE_NAMES:
            got = type(item.get("input")).__name__
            message = f"expected {_TYPE_NAMES[kind]}, got {got} {item.get('input')!r}"
        elif kind == "value_error":
            message = str(context_error) if context_error else item["msg"]
        elif kind == "literal_error":
            message = f"{item.get('input')!r} is not allowed; {item['msg'].lower()}"
        elif kind in _BOUND_FIXES:
            context = item.get("ctx") or {}
            limit = next(
                (
                    context[k]
                    for k in ("ge", "gt", "le", "lt", "min_length", "max_length")
                    if k in context
                ),
                "?",
            )
            message = f"{item.get('input')!r} is out of range; {_BOUND_FIXES[kind].format(limit)}"
        else:
            message = f"{item['msg']} (got {item.get('input')!r})"
        line = _line_for(lines, path)
        where = f"{source}:{line}" if line else source
        problems.append(f"{where}: {_key_path(path) if path else NAMESPACE}: {message}")
    return problems


def _line_for(lines: Mapping[tuple, int], path: tuple) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def parse_spec(
    values: Mapping[str, Any], source: str, lines: Mapping[tuple, int] | None = None
) -> EventSpec:
    """Validate the `popstack:` values (keys without the namespace) into an EventSpec.

    Raises SpecError naming every invalid value, its key path and the fix.
    """
    try:
        return EventSpec.model_validate(dict(values), by_alias=True)
    except ValidationError as error:
        raise SpecError(source, _problems(error, lines or {}, source)) from None


def _collect_lines(node: Any, path: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, CommentedMap):
        for key in node:
            line = node.lc.key(key)[0] + 1
            lines[path + (str(key),)] = line
            _collect_lines(node[key], path + (str(key),), lines)
    elif isinstance(node, CommentedSeq):
        for index, item in enumerate(node):
            lines[path + (index,)] = node.lc.item(index)[0] + 1
            _collect_lines(item, path + (index,), lines)


# A stack file expands to far fewer values; more means YAML aliases multiplying it.
MAX_VALUES = 100_000


class _TooManyValues(ValueError):
    """A document whose aliases expand it past MAX_VALUES values."""


def _plain(node: Any, budget: list[int] | None = None) -> Any:
    """Convert ruamel's round-trip nodes into plain dicts, lists and scalars.

    Raises _TooManyValues when the document expands past MAX_VALUES values.
    """
    budget = budget if budget is not None else [MAX_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooManyValues(f"expands to more than {MAX_VALUES} values")
    if isinstance(node, Mapping):
        return {str(k): _plain(v, budget) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v, budget) for v in node]
    if isinstance(node, datetime):
        # YAML reads unquoted timestamps itself; keep the text so offsets survive.
        return node.isoformat()
    # ruamel wraps scalars in subclasses (ScalarInt, ScalarFloat); keep the base types.
    for base in (bool, int, float, str):
        if isinstance(node, base):
            return base(node)
    return node


class StackFile(BaseModel):
    """A parsed stack file: the event spec plus the rest of its config."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    path: Path
    stack: str
    spec: EventSpec
    config: dict[str, Any]
    secret_keys: list[str]
    lines: dict[tuple, int]


def read_yaml(path: Path) -> tuple[CommentedMap, dict[tuple, int]]:
    """Read a stack file, raising SpecError with the line of any YAML syntax error."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            source, [f"{source}: file not found; create it with `popstack new`"]
        ) from None
    except IsADirectoryError:
        raise SpecError(source, [f"{source}: is a directory; give a stack file"]) from None
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise SpecError(
            source, [f"{source}:{line}: byte {error.start} is not UTF-8; save the file as UTF-8"]
        ) from None
    try:
        # Aliases can expand a small file without bound; stack files have no need of them.
        alias = next((e for e in YAML(typ="rt").parse(text) if isinstance(e, AliasEvent)), None)
        if alias is not None:
            line = alias.start_mark.line + 1 if alias.start_mark else "?"
            raise SpecError(
                source,
                [
                    f"{source}:{line}: YAML alias *{alias.anchor}: stack files take no aliases; "
                    "write the value out in full"
                ],
            )
        document = YAML(typ="rt").load(text)
    except RecursionError:
        raise SpecError(source, [f"{source}: YAML nests too deeply; flatten the file"]) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = error.problem or error.context or "invalid YAML"
        raise SpecError(
            source, [f"{source}{line}: YAML syntax error: {problem}; fix the syntax there"]
        ) from None
    except YAMLError as error:
        raise SpecError(
            source, [f"{source}: not readable as YAML ({error}); save it as UTF-8 YAML text"]
        ) from None
    if not isinstance(document, CommentedMap) or not isinstance(
        document.get("config"), CommentedMap
    ):
        raise SpecError(
            source,
            [f"{source}: no `config:` mapping; add `config:` with the `{NAMESPACE}:` keys"],
        )
    lines: dict[tuple, int] = {}
    config = document["config"]
    for key in config:
        if str(key).startswith(f"{NAMESPACE}:") or ":" not in str(key):
            short = str(key).split(":", 1)[-1]
            lines[(short,)] = config.lc.key(key)[0] + 1
            try:
                _collect_lines(config[key], (short,), lines)
            except (KeyError, TypeError, IndexError):
                raise SpecError(
                    source,
                    [
                        f"{source}:{lines[(short,)]}: {key}: uses a YAML merge key or tag that "
                        "stack files do not support; write the values out in full"
                    ],
                ) from None
    return config, lines


def load_stack_file(path: str | Path) -> StackFile:
    """Read and validate one stack file, raising SpecError on any invalid value."""
    path = Path(path)
    config, lines = read_yaml(path)
    try:
        return _stack_file(path, config, lines)
    except _TooManyValues as error:
        raise SpecError(
            str(path), [f"{path}: {error}; remove the YAML aliases (*name) from the file"]
        ) from None


def _stack_file(path: Path, config: CommentedMap, lines: dict[tuple, int]) -> StackFile:
    budget = [MAX_VALUES]
    values: dict[str, Any] = {}
    other: dict[str, Any] = {}
    secret_keys: list[str] = []
    for key, value in config.items():
        key = str(key)
        if ":" not in key:
            # Pulumi reads a key without a namespace as one of the project's.
            key = f"{NAMESPACE}:{key}"
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            secret_keys.append(key)
        if key.startswith(f"{NAMESPACE}:"):
            short = key.split(":", 1)[1]
            if short in NON_SPEC_KEYS:
                other[key] = _plain(value, budget)
            else:
                values[short] = _plain(value, budget)
        else:
            other[key] = _plain(value, budget)
    misplaced = [
        key.split(":", 1)[1]
        for key in secret_keys
        if key.startswith(f"{NAMESPACE}:") and key.split(":", 1)[1] not in SECRET_CONFIG_KEYS
    ]
    if misplaced:
        allowed = ", ".join(SECRET_CONFIG_KEYS)
        raise SpecError(
            str(path),
            [
                f"{path}:{lines.get((short,), '?')}: {NAMESPACE}:{short}: is a secure value, but "
                f"event spec keys hold no secrets; write it in plain text (secret keys: {allowed})"
                for short in misplaced
            ],
        )
    plain_secrets = [
        key
        for key in SECRET_CONFIG_KEYS
        if f"{NAMESPACE}:{key}" in other and f"{NAMESPACE}:{key}" not in secret_keys
    ]
    if plain_secrets:
        raise SpecError(
            str(path),
            [
                f"{path}:{lines.get((key,), '?')}: {NAMESPACE}:{key}: is in plain text; set it "
                f"with `pulumi config set --secret {NAMESPACE}:{key}` so it is stored encrypted"
                for key in plain_secrets
            ],
        )
    verified = other.get(f"{NAMESPACE}:{EXPORT_VERIFIED_KEY}")
    if verified is not None and not VERIFIED_EXPORT.fullmatch(str(verified)):
        line = lines.get((EXPORT_VERIFIED_KEY,), "?")
        raise SpecError(
            str(path),
            [
                f"{path}:{line}: {NAMESPACE}:{EXPORT_VERIFIED_KEY}: {verified!r} is not "
                "s3://BUCKET/KEY#sha256=<64 hex digits>; only `popstack teardown` sets it, so "
                "remove the key"
            ],
        )
    spec = parse_spec(values, str(path), lines)
    if spec.emulator:
        problem = emulator_endpoint_problem(other.get("aws:endpoints"))
        if problem:
            line = lines.get(("emulator",), "?")
            raise SpecError(str(path), [f"{path}:{line}: {NAMESPACE}:emulator: {problem}"])
    stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    return StackFile(
        path=path,
        stack=stack,
        spec=spec,
        config={**{f"{NAMESPACE}:{k}": v for k, v in values.items()}, **other},
        secret_keys=secret_keys,
        lines=lines,
    )


# Config keys under the namespace that hold secret values (set with
# `pulumi config set --secret`) rather than event spec fields.
SECRET_CONFIG_KEYS = ("kubeconfig",)
# Written by teardown once the export is verified (the manifest's S3 URI and
# SHA-256); while it is unset, stateful resources stay protected.
EXPORT_VERIFIED_KEY = "teardownVerifiedExport"
NON_SPEC_KEYS = (*SECRET_CONFIG_KEYS, EXPORT_VERIFIED_KEY)
# The form of EXPORT_VERIFIED_KEY's value that teardown writes.
VERIFIED_EXPORT = re.compile(r"s3://[a-z0-9.-]{3,63}/[^#\s]+#sha256=[0-9a-f]{64}")
# Services an emulator stack must point at the emulator, because the program uses them.
EMULATOR_SERVICES = (
    "appconfig",
    "cloudwatch",
    "dynamodb",
    "iam",
    # The alert topic's key.
    "kms",
    "lambda",
    # CloudWatch Logs: the Lambdas' log groups.
    "logs",
    "s3",
    "secretsmanager",
    "sns",
    "sqs",
    "sts",
)


def spec_from_values(values: Mapping[str, Any], source: str) -> EventSpec:
    """Build the spec from config values as a stack file gives them: objects, lists, text.

    Keys outside the popstack namespace are ignored, as the program ignores them.
    """
    config = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in values.items()
        if key.startswith(f"{NAMESPACE}:")
    }
    return spec_from_config(config, source)


def spec_from_config(config: Mapping[str, str], source: str) -> EventSpec:
    """Build the spec from Pulumi's flat config map (`popstack:key` -> JSON or text)."""
    values: dict[str, Any] = {}
    for key, raw in config.items():
        if not key.startswith(f"{NAMESPACE}:"):
            continue
        short = key.split(":", 1)[1]
        if short in NON_SPEC_KEYS:
            continue
        values[short] = _decode(short, raw)
    return parse_spec(values, source)


def _decode(key: str, raw: str) -> Any:
    """Decode one config value the way Pulumi stores it: JSON for objects, else text.

    Pulumi hands every value over as text, so a string field keeps its text even
    when it looks like a number (an event titled "2027").
    """
    field = next((f for n, f in EventSpec.model_fields.items() if f.alias == key), None)
    if field is not None and field.annotation is str:
        return raw
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return raw


def emulator_endpoint_problem(endpoints: Any) -> str | None:
    """Return why `aws:endpoints` does not point every service at 127.0.0.1, or None.

    A stack marked `emulator: true` must never reach a real AWS account, so every
    endpoint must be plain http to 127.0.0.1 or localhost, and every service the
    program uses must be listed.
    """
    if isinstance(endpoints, str):
        try:
            endpoints = json.loads(endpoints)
        except json.JSONDecodeError:
            endpoints = None
    if not isinstance(endpoints, list) or not endpoints:
        return "is true but aws:endpoints is not a list of service: URL mappings"
    listed: set[str] = set()
    for entry in endpoints:
        if not isinstance(entry, Mapping):
            return f"is true but aws:endpoints has the entry {entry!r}, not a service: URL mapping"
        for service, url in entry.items():
            parts = urlsplit(str(url))
            if (
                parts.scheme != "http"
                or parts.hostname not in ("127.0.0.1", "localhost")
                or parts.username is not None
                or parts.port is None
            ):
                return (
                    f"is true but aws:endpoints.{service} is {url!r}; "
                    "an emulator stack may only use http://127.0.0.1:PORT"
                )
            listed.add(str(service))
    missing = [service for service in EMULATOR_SERVICES if service not in listed]
    if missing:
        return (
            f"is true but aws:endpoints does not list {', '.join(missing)}; point every "
            "service the stack uses at the emulator"
        )
    return None
