"""Times the event window drives: the rotation freeze and the rotation schedule.

Secrets must not rotate while doors are open or during the pre-sync before
them, so the rotation schedule is a cron expression whose days of the month
skip every UTC day that the freeze touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from components.spec import Window

# Rotations start at this UTC hour and may take up to ROTATION_DURATION_HOURS.
ROTATION_HOUR_UTC = 3
ROTATION_DURATION_HOURS = 3


@dataclass(frozen=True)
class RotationSchedule:
    """A Secrets Manager rotation rule: cron expression, window length, rotation days."""

    expression: str
    duration: str
    days_of_month: tuple[int, ...]


def freeze_interval(window: Window) -> tuple[datetime, datetime]:
    """Return the UTC interval in which no secret may rotate: pre-sync start to close."""
    return (
        window.pre_sync_starts.astimezone(UTC),
        window.closes.astimezone(UTC),
    )


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


def rotation_schedule(window: Window, rotation_days: int) -> RotationSchedule:
    """Build the rotation rule for a secret that must rotate every `rotation_days`.

    Rotation days repeat every month from the 1st, so the gap across a month end
    is at most `rotation_days`. Skipping frozen days can stretch one gap by the
    length of the freeze. An interval of 28 days or more rotates monthly, which
    is more often than asked for but never less.
    """
    step = min(rotation_days, 28)
    candidates = list(range(1, 29, step)) if step < 28 else [1]
    if step == 1:
        candidates = list(range(1, 32))
    blocked = frozen_days(window)
    days = [d for d in candidates if d not in blocked]
    if not days:
        # Every candidate day is frozen: rotate on the first free day instead.
        days = [next(d for d in range(1, 32) if d not in blocked)]
    listed = ",".join(str(d) for d in days)
    return RotationSchedule(
        expression=f"cron(0 {ROTATION_HOUR_UTC} {listed} * ? *)",
        duration=f"{ROTATION_DURATION_HOURS}h",
        days_of_month=tuple(days),
    )
