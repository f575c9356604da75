"""Event facts and thresholds that the rules compare resources against.

`popstack plan` builds the settings from the parsed event spec. In a real preview the
pack reads the same values from the stack config, which the engine passes to the
policy pack process in the PULUMI_CONFIG environment variable: a JSON object from
`namespace:key` to text, with objects as JSON text (constructEnv in the Pulumi
engine's pkg/resource/plugin/analyzer_plugin.go). Policy config
(`--policy-pack-config`) overrides the stack config, key by key. Only the standard
library is used here, because the pack runs in its own virtualenv without the
project's dependencies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

NAMESPACE = "popstack"
# Written by teardown once the export is verified; only then may stateful resources
# lose their protection. Same key as components.spec.EXPORT_VERIFIED_KEY.
EXPORT_VERIFIED_KEY = f"{NAMESPACE}:teardownVerifiedExport"

# The event spec's defaults for fields that a stack file may leave out
# (components.spec.Window.pre_sync_hours and EventSpec.grace_hours). A test keeps them equal.
DEFAULT_PRE_SYNC_HOURS = 6
DEFAULT_GRACE_HOURS = 72


@dataclass(frozen=True)
class Thresholds:
    """Limits of the advisory cost rules; each can be set in the policy config."""

    # Requests per second one checkout replica serves at the HPA's target CPU
    # utilization. An estimate: measure it with a load test of the real checkout flow
    # and set `rpsPerReplica` in the policy config.
    rps_per_replica: float = 50.0
    # maxReplicas above this multiple of the replicas that peakRps needs is reported.
    max_replica_headroom: float = 4.0
    # ElastiCache Serverless caps above these are reported; the caps bound the bill.
    max_ecpu_per_second: int = 1_000_000
    max_data_storage_gb: int = 50


@dataclass(frozen=True)
class EventSettings:
    """The event facts and thresholds the rules compare resources against.

    A field is None when neither the spec, the stack config nor the policy config
    sets it. Rules that need it then report that they cannot check yet.
    `problems` lists config values that could not be read, each with the key.
    """

    event_id: str | None = None
    owner: str | None = None
    cost_centre: str | None = None
    opens: datetime | None = None
    closes: datetime | None = None
    pre_sync_hours: int = DEFAULT_PRE_SYNC_HOURS
    grace_hours: int = DEFAULT_GRACE_HOURS
    peak_rps: int | None = None
    export_verified: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    problems: tuple[str, ...] = ()

    @property
    def freeze(self) -> tuple[datetime, datetime] | None:
        """Return the UTC interval in which no secret may rotate: pre-sync start to close."""
        if self.opens is None or self.closes is None:
            return None
        start = self.opens - timedelta(hours=self.pre_sync_hours)
        return start.astimezone(UTC), self.closes.astimezone(UTC)

    @property
    def latest_expiry(self) -> datetime | None:
        """Return the latest allowed `popstack:expires-at`: window close plus grace, in UTC."""
        if self.closes is None:
            return None
        return (self.closes + timedelta(hours=self.grace_hours)).astimezone(UTC)

    def missing_window(self) -> str:
        """Describe why the window is unknown, for a `cannot check until known` finding."""
        detail = "; ".join(self.problems) or (
            f"set {NAMESPACE}:window in the stack file, or windowOpens and windowCloses "
            "in the policy config"
        )
        return f"the event window is unknown ({detail})"


def settings_from_spec(spec: Any, export_verified: bool = False) -> EventSettings:
    """Build the settings from a parsed `components.spec.EventSpec`."""
    return EventSettings(
        event_id=spec.id,
        owner=spec.owner,
        cost_centre=spec.cost_centre,
        opens=spec.window.opens,
        closes=spec.window.closes,
        pre_sync_hours=spec.window.pre_sync_hours,
        grace_hours=spec.grace_hours,
        peak_rps=spec.peak_rps,
        export_verified=export_verified,
    )


def settings_from_stack_config(config: Mapping[str, str]) -> EventSettings:
    """Build the settings from Pulumi's flat stack config map (`popstack:key` to text)."""
    problems: list[str] = []

    def text(key: str) -> str | None:
        value = config.get(f"{NAMESPACE}:{key}")
        return value if isinstance(value, str) and value else None

    def integer(key: str, default: int | None) -> int | None:
        raw = text(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            problems.append(f"{NAMESPACE}:{key} is not an integer")
            return default

    opens = closes = None
    pre_sync_hours = DEFAULT_PRE_SYNC_HOURS
    raw_window = text("window")
    if raw_window is not None:
        try:
            window = json.loads(raw_window)
            opens = parse_time(window["opens"])
            closes = parse_time(window["closes"])
            pre_sync_hours = int(window.get("preSyncHours", DEFAULT_PRE_SYNC_HOURS))
        except KeyError as error:
            problems.append(f"{NAMESPACE}:window has no {error.args[0]}")
            opens = closes = None
        except (ValueError, TypeError, AttributeError) as error:
            problems.append(f"{NAMESPACE}:window is unreadable: {error}")
            opens = closes = None

    return EventSettings(
        event_id=text("id"),
        owner=text("owner"),
        cost_centre=text("costCentre"),
        opens=opens,
        closes=closes,
        pre_sync_hours=pre_sync_hours,
        grace_hours=integer("graceHours", DEFAULT_GRACE_HOURS),
        peak_rps=integer("peakRps", None),
        export_verified=bool(config.get(EXPORT_VERIFIED_KEY)),
        problems=tuple(problems),
    )


# Policy config properties and the settings fields they override.
POLICY_CONFIG_FIELDS = {
    "eventId": "event_id",
    "windowOpens": "opens",
    "windowCloses": "closes",
    "preSyncHours": "pre_sync_hours",
    "graceHours": "grace_hours",
    "peakRps": "peak_rps",
}
POLICY_CONFIG_THRESHOLDS = {
    "rpsPerReplica": "rps_per_replica",
    "maxReplicaHeadroom": "max_replica_headroom",
    "maxEcpuPerSecond": "max_ecpu_per_second",
    "maxDataStorageGb": "max_data_storage_gb",
}


def with_policy_config(settings: EventSettings, config: Mapping[str, Any]) -> EventSettings:
    """Return the settings with every field that one policy's config sets replaced."""
    # Policy config arrives as a protobuf Struct, which carries every number as a float.
    config = {key: _whole(value) for key, value in config.items()}
    changes: dict[str, Any] = {}
    problems = list(settings.problems)
    for key, name in POLICY_CONFIG_FIELDS.items():
        if key not in config:
            continue
        value = config[key]
        if name in ("opens", "closes"):
            try:
                value = parse_time(value)
            except ValueError as error:
                problems.append(f"policy config {key} is invalid: {error}")
                continue
        changes[name] = value
    thresholds = {
        name: config[key] for key, name in POLICY_CONFIG_THRESHOLDS.items() if key in config
    }
    if thresholds:
        changes["thresholds"] = replace(settings.thresholds, **thresholds)
    if problems != list(settings.problems):
        changes["problems"] = tuple(problems)
    return replace(settings, **changes) if changes else settings


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def parse_time(value: Any) -> datetime:
    """Parse an ISO 8601 time with a UTC offset; raise ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time string, got {type(value).__name__}")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value} has no UTC offset; write it as {value}+00:00")
    return moment


def replicas_for(peak_rps: int, rps_per_replica: float) -> int:
    """Return the replicas that serve `peak_rps` at `rps_per_replica` each, at least one."""
    return max(1, math.ceil(peak_rps / rps_per_replica))
