"""Every Secrets Manager secret rotates on a schedule that skips the event's freeze.

The freeze runs from the pre-sync start to the window close, in UTC. A rotation
whose window overlaps it would swap tokens while staff and devices rely on them.
The same holds for an EventBridge Scheduler schedule that calls RotateSecret, as
the event calendar does after close for the rotations the freeze held back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from policies.schedule import (
    CronSchedule,
    FixedInterval,
    ScheduleError,
    longest_and_shortest_gap,
    parse_duration,
    parse_schedule,
    rotation_window,
)
from policies.scheduling import (
    SCHEDULE,
    AtExpressionError,
    is_one_time,
    parse_at,
    schedule_time_zone,
)
from policies.settings import EventSettings
from policies.view import UNKNOWN, Finding, ResourceView, cannot_check, resolve_reference, violation

SECRET = "aws:secretsmanager/secret:Secret"
ROTATION = "aws:secretsmanager/secretRotation:SecretRotation"
# Secrets Manager accepts rotation intervals from 1 to 1000 days (AutomaticallyAfterDays).
MIN_INTERVAL = timedelta(days=1)
MAX_INTERVAL = timedelta(days=1000)
# Four years hold a leap day and every month length, so every day-of-month gap shows up.
HORIZON_DAYS = 4 * 366
SCHEDULE_FIX = "components.calendar.rotation_schedule builds one"
# Targets of a Scheduler schedule that change a secret's value: RotateSecret, and the
# calls that write a value directly. Scheduler's universal target names end in the
# API action; they are compared without case.
SECRET_WRITE_TARGETS = (
    ":aws-sdk:secretsmanager:rotatesecret",
    ":aws-sdk:secretsmanager:putsecretvalue",
    ":aws-sdk:secretsmanager:updatesecret",
)
# A scheduled rotation may run this long after it starts, as a rotation window does
# (components.calendar.ROTATION_DURATION_HOURS).
SCHEDULED_ROTATION_DURATION = timedelta(hours=3)


def check_secret_rotation(views: list[ResourceView], settings: EventSettings) -> list[Finding]:
    """Check that each secret has a rotation, and each rotation schedule is valid and unfrozen."""
    secrets = [view for view in views if view.type == SECRET]
    rotated: dict[str, list[ResourceView]] = {secret.urn: [] for secret in secrets}
    unresolved = False
    findings: list[Finding] = []
    for rotation in (view for view in views if view.type == ROTATION):
        secret = resolve_reference(
            rotation, "secretId", rotation.get("secretId"), secrets, ("arn", "id")
        )
        if isinstance(secret, ResourceView):
            rotated[secret.urn].append(rotation)
        elif secret is UNKNOWN:
            unresolved = True
        findings.extend(check_schedule(rotation, settings))

    for schedule in (view for view in views if view.type == SCHEDULE):
        findings.extend(check_scheduled_rotation(schedule, settings))

    for secret in secrets:
        if rotated[secret.urn]:
            continue
        if unresolved:
            findings.append(cannot_check(secret, "the secret of a SecretRotation is not known"))
        else:
            findings.append(
                violation(
                    secret,
                    "has no SecretRotation; rotate it with components.secrets.RotatedSecret",
                )
            )
    return findings


def check_scheduled_rotation(schedule: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that a Scheduler schedule calling RotateSecret fires once, outside the freeze."""
    target = schedule.get("target", "arn")
    expression = schedule.get("scheduleExpression")
    zone = schedule.get("scheduleExpressionTimezone")
    if target is UNKNOWN:
        return [cannot_check(schedule, "target.arn is computed during the update")]
    if not isinstance(target, str) or not target.lower().endswith(SECRET_WRITE_TARGETS):
        return []
    if expression is UNKNOWN or zone is UNKNOWN:
        return [cannot_check(schedule, "its schedule expression is computed during the update")]

    fix = "schedule one at() rotation after the close (components.schedules.EventCalendar does)"
    if not isinstance(expression, str) or not is_one_time(expression):
        return [
            violation(
                schedule,
                f"calls RotateSecret on the recurring schedule {expression}, which this check "
                f"cannot keep out of the freeze; {fix}",
            )
        ]
    if schedule_time_zone(schedule) != "UTC":
        # The scheduler-exact-time rule reports the zone.
        return []
    try:
        moment = parse_at(expression)
    except AtExpressionError:
        # The scheduler-exact-time rule reports the invalid expression.
        return []

    freeze = settings.freeze
    if freeze is None:
        return [cannot_check(schedule, f"the freeze: {settings.missing_window()}")]
    if _overlaps((moment, moment + SCHEDULED_ROTATION_DURATION), freeze):
        return [
            violation(
                schedule,
                f"changes a secret at {_utc(moment)}, and a rotation started then may run "
                f"{SCHEDULED_ROTATION_DURATION.seconds // 3600} h, into the freeze from the "
                f"pre-sync start {_utc(freeze[0])} to the close {_utc(freeze[1])}; {fix}",
            )
        ]
    return []


def check_schedule(rotation: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check one SecretRotation's interval and that none of its windows meets the freeze."""
    rules = rotation.get("rotationRules")
    if rules is UNKNOWN:
        return [cannot_check(rotation, "rotationRules are computed during the update")]
    if not isinstance(rules, dict):
        return [
            violation(rotation, f"has no rotation_rules; set a cron() schedule ({SCHEDULE_FIX})")
        ]
    expression = rules.get("scheduleExpression")
    after_days = rules.get("automaticallyAfterDays")
    duration = rules.get("duration")
    if UNKNOWN in (expression, after_days, duration):
        return [cannot_check(rotation, "rotationRules are computed during the update")]
    if expression is None and after_days is None:
        return [
            violation(
                rotation,
                "rotation_rules set no schedule_expression; set a cron() schedule "
                f"({SCHEDULE_FIX})",
            )
        ]

    if expression is None:
        if not isinstance(after_days, int) or isinstance(after_days, bool):
            return [violation(rotation, "automatically_after_days is not a whole number of days")]
        return _fixed_interval_findings(
            rotation, f"automatically_after_days {after_days}", timedelta(days=after_days)
        )
    try:
        schedule = parse_schedule(expression)
        window_length = parse_duration(duration)
    except ScheduleError as error:
        return [violation(rotation, f"rotation_rules are invalid: {error}")]
    if isinstance(schedule, FixedInterval):
        return _fixed_interval_findings(rotation, f"schedule {expression}", schedule.interval)
    return _cron_findings(rotation, expression, schedule, window_length, settings)


def _fixed_interval_findings(
    rotation: ResourceView, described: str, interval: timedelta
) -> list[Finding]:
    findings = _interval_findings(rotation, described, interval, interval)
    findings.append(
        violation(
            rotation,
            f"{described} counts from the previous rotation, so its rotation days cannot be "
            f"kept out of the freeze; use a cron() schedule listing days of the month "
            f"({SCHEDULE_FIX})",
        )
    )
    return findings


def _interval_findings(
    rotation: ResourceView, described: str, longest: timedelta, shortest: timedelta
) -> list[Finding]:
    findings = []
    if longest > MAX_INTERVAL:
        findings.append(
            violation(
                rotation,
                f"{described} leaves up to {_days(longest)} days between rotations; "
                "Secrets Manager allows 1 to 1000 days, so rotate more often",
            )
        )
    if shortest < MIN_INTERVAL:
        findings.append(
            violation(
                rotation,
                f"{described} rotates again after {shortest}; rotate at most once a day "
                "(1 to 1000 days apart)",
            )
        )
    return findings


def _cron_findings(
    rotation: ResourceView,
    expression: str,
    schedule: CronSchedule,
    window_length: timedelta | None,
    settings: EventSettings,
) -> list[Finding]:
    freeze = settings.freeze
    first = (freeze[0] - timedelta(days=1)).date() if freeze else date.today()
    starts = list(schedule.starts(first, HORIZON_DAYS))
    described = f"schedule {expression}"
    gaps = longest_and_shortest_gap(starts)
    if gaps is None:
        findings = [
            violation(
                rotation,
                f"{described} starts fewer than two rotations in the four years from {first}; "
                "list days of the month so that it rotates at least every 1000 days",
            )
        ]
    else:
        findings = _interval_findings(rotation, described, *gaps)

    if freeze is None:
        findings.append(cannot_check(rotation, f"the freeze: {settings.missing_window()}"))
        return findings
    frozen = sorted(
        {
            start.date()
            for start in starts
            if _overlaps(rotation_window(start, window_length), freeze)
        }
    )
    if frozen:
        days = ", ".join(day.isoformat() for day in frozen)
        numbers = ", ".join(str(day.day) for day in frozen)
        noun = "day" if len(frozen) == 1 else "days"
        findings.append(
            violation(
                rotation,
                f"{described} rotates on {days} (UTC), inside the freeze from the pre-sync "
                f"start {_utc(freeze[0])} to the close {_utc(freeze[1])}; drop {noun} {numbers} "
                f"from the schedule ({SCHEDULE_FIX} that skips frozen days)",
            )
        )
    return findings


def _overlaps(window: tuple[datetime, datetime], freeze: tuple[datetime, datetime]) -> bool:
    return window[0] < freeze[1] and window[1] > freeze[0]


def _days(span: timedelta) -> str:
    return f"{span / timedelta(days=1):g}"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
