"""EventBridge Scheduler target of the event calendar: opens and closes the doors on time.

Scheduler invokes ``handle`` with ``{"action": "open"}`` when doors open and with
``{"action": "close"}`` when they close (components/schedules.py).

``open``
    turns the ``elevated_sampling`` flag on and sets the X-Ray sampling rule to the
    elevated rate and reservoir.
``close``
    turns ``checkout_enabled`` and ``elevated_sampling`` off and sets the sampling rule
    back to the base rate and reservoir.

Each action is idempotent, because Scheduler and Lambda retry a failed invocation and
a retry runs the whole action again: ``set_flags`` writes nothing when the flags
already have the requested values, and the sampling rule is set to absolute values.
When the latest version already has the values but was never deployed (an earlier
invocation wrote it and then failed to start its deployment), the retry deploys it.
An ``open`` that arrives at or after doors close, such as a late retry, changes
nothing, so it cannot raise sampling again once the doors are closed.

The flags change as one new hosted configuration version of the AppConfig profile,
labelled ``popstack-calendar``. Its audit record names the actor ``popstack calendar``
and the window edge. When the stack has an AppConfig environment, the version is
deployed with the stack's all-at-once strategy.

Environment:

- ``POPSTACK_EVENT_ID``: the event id, for log lines.
- ``WINDOW_OPENS``, ``WINDOW_CLOSES``: the window edges, ISO 8601 with UTC offset.
- ``FLAGS_APPLICATION_ID``, ``FLAGS_PROFILE_ID``: the AppConfig flag profile.
- ``FLAGS_ENVIRONMENT_ID``, ``FLAGS_STRATEGY_ID``: the environment and all-at-once
  strategy to deploy to; unset in an emulator stack, which has no environment.
- ``SAMPLING_RULE_NAME`` with ``SAMPLING_BASE_RATE``, ``SAMPLING_BASE_RESERVOIR``,
  ``SAMPLING_ELEVATED_RATE``, ``SAMPLING_ELEVATED_RESERVOIR``: the X-Ray sampling rule
  and its two settings; unset in an emulator stack, which has no sampling rule.

The Lambda archive keeps the repository's paths, so this module imports
``lambdas.flagstore`` as the operator CLI does. It needs only the standard library and
boto3, which the Lambda Python runtime provides.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from lambdas.flagstore import LABEL_CALENDAR, FlagStore, FlagTarget, set_flags

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

ACTOR = "popstack calendar"
OPEN = "open"
CLOSE = "close"
ACTIONS = (OPEN, CLOSE)


class CalendarError(Exception):
    """An invocation or configuration the calendar cannot act on; the message names the fix."""


@dataclass(frozen=True)
class Sampling:
    """The X-Ray sampling rule and its rate and reservoir outside and inside the window."""

    rule_name: str
    base_rate: float
    base_reservoir: int
    elevated_rate: float
    elevated_reservoir: int


@dataclass(frozen=True)
class CalendarConfig:
    """The handler's settings, read from its environment variables."""

    event_id: str
    opens: datetime
    closes: datetime
    target: FlagTarget
    sampling: Sampling | None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> CalendarConfig:
        """Read the configuration; raise CalendarError naming a missing or invalid variable."""
        sampling = None
        settings = [name for name in SAMPLING_SETTINGS if environ.get(name)]
        if environ.get("SAMPLING_RULE_NAME"):
            sampling = Sampling(
                rule_name=environ["SAMPLING_RULE_NAME"],
                base_rate=_rate(environ, "SAMPLING_BASE_RATE"),
                base_reservoir=_reservoir(environ, "SAMPLING_BASE_RESERVOIR"),
                elevated_rate=_rate(environ, "SAMPLING_ELEVATED_RATE"),
                elevated_reservoir=_reservoir(environ, "SAMPLING_ELEVATED_RESERVOIR"),
            )
        elif settings:
            raise CalendarError(
                f"environment variable SAMPLING_RULE_NAME is missing but {', '.join(settings)} "
                "is set; redeploy the stack"
            )
        deploy_to = [environ.get("FLAGS_ENVIRONMENT_ID"), environ.get("FLAGS_STRATEGY_ID")]
        if any(deploy_to) and not all(deploy_to):
            raise CalendarError(
                "environment variables FLAGS_ENVIRONMENT_ID and FLAGS_STRATEGY_ID must be set "
                "together, or both left unset for a stack without an AppConfig environment; "
                "redeploy the stack"
            )
        config = cls(
            event_id=_required(environ, "POPSTACK_EVENT_ID"),
            opens=_time(environ, "WINDOW_OPENS"),
            closes=_time(environ, "WINDOW_CLOSES"),
            target=FlagTarget(
                application_id=_required(environ, "FLAGS_APPLICATION_ID"),
                profile_id=_required(environ, "FLAGS_PROFILE_ID"),
                environment_id=environ.get("FLAGS_ENVIRONMENT_ID") or None,
                strategy_id=environ.get("FLAGS_STRATEGY_ID") or None,
            ),
            sampling=sampling,
        )
        if config.opens >= config.closes:
            raise CalendarError(
                "environment variable WINDOW_OPENS is not before WINDOW_CLOSES; redeploy the stack"
            )
        return config


SAMPLING_SETTINGS = (
    "SAMPLING_BASE_RATE",
    "SAMPLING_BASE_RESERVOIR",
    "SAMPLING_ELEVATED_RATE",
    "SAMPLING_ELEVATED_RESERVOIR",
)


def _rate(environ: Mapping[str, str], name: str) -> float:
    value = _number(environ, name, float)
    if not 0.0 <= value <= 1.0:  # Also rejects NaN, which compares false.
        raise CalendarError(
            f"environment variable {name}={value!r} is not a rate from 0 to 1; redeploy the stack"
        )
    return value


def _reservoir(environ: Mapping[str, str], name: str) -> int:
    value = _number(environ, name, int)
    if value < 0:
        raise CalendarError(f"environment variable {name}={value} is negative; redeploy the stack")
    return value


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise CalendarError(f"environment variable {name} is missing; redeploy the stack")
    return value


def _number(environ: Mapping[str, str], name: str, kind: type) -> Any:
    text = _required(environ, name)
    try:
        return kind(text)
    except ValueError:
        raise CalendarError(
            f"environment variable {name}={text!r} is not a {kind.__name__}; redeploy the stack"
        ) from None


def _time(environ: Mapping[str, str], name: str) -> datetime:
    text = _required(environ, name)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise CalendarError(
            f"environment variable {name}={text!r} is not an ISO 8601 time with a UTC "
            "offset; redeploy the stack"
        )
    return moment


def now() -> datetime:
    """Return the current time in UTC. Tests replace this function to move the clock."""
    return datetime.now(UTC)


def make_client(service_name: str) -> Any:
    """Create a boto3 client for the service. Tests replace this function to stub one."""
    return boto3.client(service_name)


def make_flag_store(target: FlagTarget) -> FlagStore:
    """Create the flag store with one AppConfig client. Tests replace this function."""
    return FlagStore(target, make_client("appconfig"))


def read_action(event: Any) -> str:
    """Return the event's action; raise CalendarError for any other payload."""
    action = event.get("action") if isinstance(event, Mapping) else None
    if action not in ACTIONS:
        raise CalendarError(
            f'invalid calendar event {event!r}; expected {{"action": "open"}} or '
            '{"action": "close"}'
        )
    return str(action)


def handle(event: Any, context: Any) -> dict[str, Any]:
    """Run the event's action and return what it changed.

    Raises CalendarError for an invalid event or environment, and lets FlagError and
    botocore errors through, so that the invocation fails and is retried.
    """
    action = read_action(event)
    config = CalendarConfig.from_environment(os.environ)
    started = now()
    summary: dict[str, Any] = {"event": config.event_id, "action": action}
    if action == OPEN and started >= config.closes:
        logger.warning(
            "event %s: open at %s is after doors closed at %s; nothing changed",
            config.event_id,
            started.isoformat(),
            config.closes.isoformat(),
        )
        return summary | {"skipped": "doors already closed"}

    if action == OPEN:
        changes = {"elevated_sampling": True}
        reason = f"doors open at {config.opens.isoformat()}"
    else:
        changes = {"checkout_enabled": False, "elevated_sampling": False}
        reason = f"doors close at {config.closes.isoformat()}"
    store = make_flag_store(config.target)
    result = set_flags(
        store,
        changes,
        actor=ACTOR,
        reason=reason,
        label=LABEL_CALENDAR,
        clock=now,
        skip_missing=True,
    )
    deployment = (result.deployment, result.deployment_state)
    if result.changed:
        logger.info(
            "event %s: %s set %s in version %s, deployment %s %s",
            config.event_id,
            action,
            ", ".join(f"{c.flag} {_state(c.old)} -> {_state(c.new)}" for c in result.changes),
            result.version,
            *deployment,
        )
    elif result.redeployed:
        logger.warning(
            "event %s: %s found %s already set in version %s, which was never deployed; "
            "deployment %s %s",
            config.event_id,
            action,
            ", ".join(result.unchanged),
            result.base_version,
            *deployment,
        )
    else:
        logger.info(
            "event %s: %s found %s already set in version %s; nothing written; deployment %s %s",
            config.event_id,
            action,
            ", ".join(result.unchanged),
            result.base_version,
            *deployment,
        )
    summary.update(
        flags={change.flag: [change.old, change.new] for change in result.changes},
        unchanged=list(result.unchanged),
        version=result.version or result.base_version,
        deployment=deployment[0],
    )

    if config.sampling is not None:
        summary["sampling"] = set_sampling(config, action)
    if result.missing:
        # Raised after the flags that exist and the sampling are set, so the Lambda's
        # error alarm fires while the rest of the action has taken effect.
        raise CalendarError(
            f"event {config.event_id}: {action} could not set {', '.join(result.missing)}, "
            "missing from the AppConfig flag profile; set them by hand with "
            "`popstack flags set`, or run `popstack flags sync` to restore the schema"
        )
    return summary


def set_sampling(config: CalendarConfig, action: str) -> dict[str, Any]:
    """Set the sampling rule's rate and reservoir for the action; return what was set."""
    sampling = config.sampling
    assert sampling is not None
    elevated = action == OPEN
    update = {
        "RuleName": sampling.rule_name,
        "FixedRate": sampling.elevated_rate if elevated else sampling.base_rate,
        "ReservoirSize": sampling.elevated_reservoir if elevated else sampling.base_reservoir,
    }
    make_client("xray").update_sampling_rule(SamplingRuleUpdate=update)
    logger.info(
        "event %s: sampling rule %s set to rate %s and reservoir %s",
        config.event_id,
        sampling.rule_name,
        update["FixedRate"],
        update["ReservoirSize"],
    )
    return update


def _state(enabled: bool) -> str:
    return "on" if enabled else "off"
