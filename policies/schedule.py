"""Secrets Manager rotation schedules: parse them and list when rotations may run.

A schedule is `cron(minutes hours day-of-month month day-of-week year)` or
`rate(N days|hours)`, the EventBridge forms Secrets Manager accepts, or a plain
AutomaticallyAfterDays count. Only cron schedules fix the days a rotation runs on;
the other two count from the previous rotation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

_MONTHS = {
    name: number
    for number, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
# EventBridge numbers days of the week from 1 (Sunday) to 7 (Saturday).
_WEEKDAYS = {
    name: number for number, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)
}
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(day|days|hour|hours)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_DURATION = re.compile(r"^(\d+)h$")


class ScheduleError(ValueError):
    """A schedule expression that is invalid or uses syntax this module does not evaluate."""


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron() expression; a None field matches every value."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None
    months: frozenset[int] | None
    days_of_week: frozenset[int] | None
    years: frozenset[int] | None

    def runs_on(self, day: date) -> bool:
        """Return whether the schedule starts a rotation on this UTC day."""
        weekday = (day.weekday() + 1) % 7 + 1
        return (
            (self.days_of_month is None or day.day in self.days_of_month)
            and (self.months is None or day.month in self.months)
            and (self.days_of_week is None or weekday in self.days_of_week)
            and (self.years is None or day.year in self.years)
        )

    def starts(self, first: date, days: int) -> Iterator[datetime]:
        """Yield each rotation start in UTC on the `days` days from `first`, in order."""
        for offset in range(days):
            day = first + timedelta(days=offset)
            if not self.runs_on(day):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    yield datetime.combine(day, time(hour, minute), tzinfo=UTC)


@dataclass(frozen=True)
class FixedInterval:
    """A schedule that rotates a fixed time after the previous rotation."""

    interval: timedelta


def parse_schedule(expression: str) -> CronSchedule | FixedInterval:
    """Parse a cron() or rate() expression; raise ScheduleError naming the bad part."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        count, unit = int(rate[1]), rate[2]
        if count < 1:
            raise ScheduleError(f"{expression!r} has a rate of 0; use 1 or more")
        step = timedelta(days=count) if unit.startswith("day") else timedelta(hours=count)
        return FixedInterval(step)
    cron = _CRON.match(text)
    if not cron:
        raise ScheduleError(f"{expression!r} is neither cron(...) nor rate(...)")
    fields = cron[1].split()
    if len(fields) != 6:
        raise ScheduleError(
            f"{expression!r} has {len(fields)} fields; cron() takes six: "
            "minutes hours day-of-month month day-of-week year"
        )
    minutes, hours, days_of_month, months, days_of_week, years = fields
    if (days_of_month == "?") == (days_of_week == "?"):
        raise ScheduleError(
            f"{expression!r} must have '?' in exactly one of day-of-month and day-of-week"
        )
    return CronSchedule(
        minutes=_parse_field(minutes, 0, 59, {}, "minutes") or frozenset(range(60)),
        hours=_parse_field(hours, 0, 23, {}, "hours") or frozenset(range(24)),
        days_of_month=_parse_field(days_of_month, 1, 31, {}, "day-of-month"),
        months=_parse_field(months, 1, 12, _MONTHS, "month"),
        days_of_week=_parse_field(days_of_week, 1, 7, _WEEKDAYS, "day-of-week"),
        years=_parse_field(years, 1970, 2199, {}, "year"),
    )


def _parse_field(
    text: str, low: int, high: int, names: dict[str, int], label: str
) -> frozenset[int] | None:
    """Parse one cron field into the values it matches, or None for `*` and `?`."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()
    for part in text.upper().split(","):
        base, _, step_text = part.partition("/")
        step = _number(step_text, 1, high, {}, label) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            start, end = base.split("-", 1)
            first, last = (
                _number(start, low, high, names, label),
                _number(end, low, high, names, label),
            )
        else:
            first = _number(base, low, high, names, label)
            last = high if step_text else first
        if first > last:
            raise ScheduleError(f"{label} range {part!r} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _number(text: str, low: int, high: int, names: dict[str, int], label: str) -> int:
    if text in names:
        return names[text]
    if any(mark in text for mark in ("L", "W", "#")):
        raise ScheduleError(
            f"{label} {text!r} uses L, W or #, which this check does not evaluate; "
            "list the values instead"
        )
    if not text.isdigit():
        raise ScheduleError(f"{label} value {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"{label} value {value} is outside {low}..{high}")
    return value


def parse_duration(duration: str | None) -> timedelta | None:
    """Parse a rotation window length such as `3h`; None means the window ends with the UTC day."""
    if duration is None:
        return None
    match = _DURATION.match(duration.strip())
    if not match or not 1 <= int(match[1]) <= 24:
        raise ScheduleError(f"duration {duration!r} is not 1h to 24h")
    return timedelta(hours=int(match[1]))


def rotation_window(start: datetime, duration: timedelta | None) -> tuple[datetime, datetime]:
    """Return the interval a rotation started at `start` may run in.

    Secrets Manager never lets a window run into the next UTC day, and without a
    duration a daily schedule's window closes at the end of the UTC day (Secrets
    Manager API reference, RotationRulesType.Duration).
    """
    day_end = datetime.combine(start.date() + timedelta(days=1), time(0), tzinfo=UTC)
    end = day_end if duration is None else min(start + duration, day_end)
    return start, end


def longest_and_shortest_gap(starts: list[datetime]) -> tuple[timedelta, timedelta] | None:
    """Return the longest and shortest time between consecutive starts, or None for fewer than 2."""
    if len(starts) < 2:
        return None
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    return max(gaps), min(gaps)
