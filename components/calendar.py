"""Times the event window drives: pre-sync, doors, rotation freeze and teardown deadline.

Secrets must not rotate while doors are open or during the pre-sync before
them, so the rotation schedule is a cron expression whose days of the month
skip every UTC day that the freeze touches, and a secret whose rotation day
falls in the freeze rotates once right after close instead.

Every time here is an aware datetime in UTC. The spec's window edges each keep
their own UTC offset, so converting them to UTC is exact across a DST change,
and durations (pre-sync hours, grace hours) count elapsed time, not wall-clock
time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from components.spec import EventSpec, Window

# Rotations start at this UTC hour and may take up to ROTATION_DURATION_HOURS.
ROTATION_HOUR_UTC = 3
ROTATION_DURATION_HOURS = 3
# A rotation that the freeze held back starts this long after doors close, so it
# does not race the close action that turns checkout off.
ROTATION_AFTER_CLOSE = timedelta(minutes=5)
# Teardown warnings go out this long before the teardown deadline (expires-at),
# each with the suffix of its schedule's name. A warning that would fall before
# doors close is left out, because the stack cannot be torn down while they are open.
TEARDOWN_WARNINGS: tuple[tuple[timedelta, str], ...] = (
    (timedelta(hours=24), "teardown-24h"),
    (timedelta(hours=2), "teardown-2h"),
    (timedelta(0), "teardown-due"),
)


@dataclass(frozen=True)
class RotationSchedule:
    """A Secrets Manager rotation rule: cron expression, window length, rotation days."""

    expression: str
    duration: str
    days_of_month: tuple[int, ...]


@dataclass(frozen=True)
class TeardownWarning:
    """One warning before the teardown deadline: when it goes out and how long is left."""

    at: datetime
    before_deadline: timedelta
    suffix: str


def utc(moment: datetime) -> datetime:
    """Return an aware datetime converted to UTC."""
    return moment.astimezone(UTC)


def freeze_interval(window: Window) -> tuple[datetime, datetime]:
    """Return the UTC interval in which no secret may rotate: pre-sync start to close."""
    return utc(window.pre_sync_starts), utc(window.closes)


def frozen_days(window: Window) -> set[int]:
    """Return the days of the month whose rotation window overlaps the freeze."""
    start, end = freeze_interval(window)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    days: set[int] = set()
    while day <= end:
        rotation_start = day.replace(hour=ROTATION_HOUR_UTC)
        rotation_end = rotation_start + timedelta(hours=ROTATION_DURATION_HOURS)
        if rotation_start < end and rotation_end > start:
            days.add(day.day)
        day += timedelta(days=1)
    return days


def nominal_rotation_days(rotation_days: int) -> set[int]:
    """Return the days of the month a secret rotates on before the freeze is applied.

    They are 1, 1 + n, 1 + 2n, ... up to 31, with n capped at 31. A month
    shorter than the last listed day skips it, and the gap to the 1st of the
    next month is then still at most n days.
    """
    step = min(rotation_days, 31)
    return set(range(1, 32, step))


def rotation_schedule(window: Window, rotation_days: int) -> RotationSchedule:
    """Build the rotation rule for a secret that must rotate every `rotation_days`.

    The nominal days (`nominal_rotation_days`) that the freeze touches are
    dropped. Each dropped day is replaced by the nearest free day before the
    freeze, so the secret is fresh when the pre-sync starts, and the
    after-close rotation (`rotates_after_close`) makes up for the day itself.
    So the longest gap between rotations is about the longer of n days and the
    freeze plus a day, not their sum. When no free day precedes the freeze in
    the month, the nearest free day after it is used instead.

    Raises ValueError when the freeze touches every day of the month.
    """
    candidates = nominal_rotation_days(rotation_days)
    blocked = frozen_days(window)
    if len(blocked) == 31:
        start, end = freeze_interval(window)
        raise ValueError(
            f"the rotation freeze from {start.isoformat()} to {end.isoformat()} touches every "
            "day of the month, so no secret can rotate on a day-of-month schedule; shorten "
            "popstack:window or its preSyncHours"
        )
    days = candidates - blocked
    for day in sorted(candidates & blocked):
        before = next((d for d in range(day - 1, 0, -1) if d not in blocked), None)
        after = next((d for d in range(day + 1, 32) if d not in blocked), None)
        days.add(before if before is not None else after)
    listed = ",".join(str(d) for d in sorted(days))
    return RotationSchedule(
        expression=f"cron(0 {ROTATION_HOUR_UTC} {listed} * ? *)",
        duration=f"{ROTATION_DURATION_HOURS}h",
        days_of_month=tuple(sorted(days)),
    )


def rotates_after_close(window: Window, rotation_days: int) -> bool:
    """Return whether a nominal rotation day of the secret falls in the freeze."""
    return bool(nominal_rotation_days(rotation_days) & frozen_days(window))


def rotation_after_close(window: Window) -> datetime:
    """Return when the rotations the freeze held back start, in UTC."""
    return utc(window.closes) + ROTATION_AFTER_CLOSE


def teardown_warnings(spec: EventSpec) -> list[TeardownWarning]:
    """Return the teardown warnings that fall at or after doors close, earliest first."""
    closes = utc(spec.window.closes)
    warnings = [
        TeardownWarning(spec.expires_at - before, before, suffix)
        for before, suffix in TEARDOWN_WARNINGS
    ]
    return sorted((warning for warning in warnings if warning.at >= closes), key=lambda w: w.at)


def at_expression(moment: datetime) -> str:
    """Render a one-time EventBridge Scheduler expression for `moment`, in UTC.

    The schedule that carries it must set its expression time zone to UTC.
    Scheduler's at() takes whole seconds and no offset.
    """
    return f"at({utc(moment).strftime('%Y-%m-%dT%H:%M:%S')})"


def minute_of_year_cron(moment: datetime) -> str:
    """Render a five-field cron schedule (minute hour day month weekday) for `moment` in UTC.

    It fires once a year at that minute. Seconds are dropped, so it fires up to 59 s
    early for a `moment` with seconds.
    """
    at = utc(moment)
    return f"{at.minute} {at.hour} {at.day} {at.month} *"
