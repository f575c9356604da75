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

    The days of the month are 1, 1 + n, 1 + 2n, ... up to 31 (n capped at 31).
    A month shorter than the last listed day skips it, and the gap to the 1st
    of the next month is then still at most n days. A listed day that the
    freeze touches is replaced by the nearest free days before and after the
    freeze, so only a freeze longer than n days stretches a gap beyond n.
    """
    step = min(rotation_days, 31)
    candidates = set(range(1, 32, step))
    blocked = frozen_days(window)
    days = candidates - blocked
    for day in sorted(candidates & blocked):
        before = next((d for d in range(day - 1, 0, -1) if d not in blocked), None)
        after = next((d for d in range(day + 1, 32) if d not in blocked), None)
        days.update(d for d in (before, after) if d is not None)
    listed = ",".join(str(d) for d in sorted(days))
    return RotationSchedule(
        expression=f"cron(0 {ROTATION_HOUR_UTC} {listed} * ? *)",
        duration=f"{ROTATION_DURATION_HOURS}h",
        days_of_month=tuple(sorted(days)),
    )
