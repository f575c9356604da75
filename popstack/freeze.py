"""The change freeze: no stack update while the event's doors are open.

From the moment doors open up to, but not including, the moment they close, `popstack
up`, `rollback` and `promote` refuse to update the stack unless the operator declares
an emergency with a reason. Kill switches (`popstack flags set`) are not updates and
stay available. The reason and the operator are kept in the update's checkpoint.

The window is read from the stack file being deployed and from the config of the
stack's good checkpoints, back to the last one made outside an emergency. So moving
the window in the stack file does not lift a freeze in force for the deployed event.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from components.spec import CONTROL, Window

MAX_REASON = 500


@dataclass(frozen=True)
class Emergency:
    """An update the operator declared urgent enough to break the change freeze."""

    reason: str
    operator: str

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "operator": self.operator}


class FreezeError(Exception):
    """An update refused by the change freeze, or a malformed emergency declaration."""


def doors_open(window: Window, now: datetime) -> bool:
    """Return whether ``now`` is inside the window: opens <= now < closes."""
    return window.opens <= now < window.closes


def emergency_from_options(emergency: bool, reason: str | None, operator: str) -> Emergency | None:
    """Check the --emergency and --reason options together."""
    text = (reason or "").strip()
    if not emergency:
        if text:
            raise FreezeError(
                "--reason is only for an emergency update; add --emergency, or leave out --reason"
            )
        return None
    if not text:
        raise FreezeError(
            '--emergency needs --reason "TEXT" saying why the update cannot wait until '
            "doors close; it is kept in the checkpoint"
        )
    if len(text) > MAX_REASON:
        raise FreezeError(f"--reason is {len(text)} characters; keep it to {MAX_REASON}")
    if CONTROL.search(text):
        raise FreezeError(
            "--reason contains a control character (such as a newline or an escape "
            "sequence); write it on one line as plain text"
        )
    return Emergency(reason=text, operator=operator)


# A stack file may give spec keys without the namespace (components/spec.py).
WINDOW_KEYS = ("popstack:window", "window")


def checkpoint_window(config: dict[str, Any], source: str) -> Window | None:
    """Return the window recorded in a checkpoint's config, or None if it has none.

    Raises FreezeError when the config has a window that is no longer valid, because
    the freeze cannot be judged without it.
    """
    key = next((key for key in WINDOW_KEYS if key in config), None)
    if key is None:
        return None
    raw = config[key]
    if isinstance(raw, dict) and set(raw) == {"value"}:
        raw = raw["value"]
    try:
        return Window.model_validate(raw)
    except ValidationError as error:
        problem = error.errors()[0].get("msg", "invalid")
        raise FreezeError(
            f"the event window recorded in {source} is invalid ({problem}), so the change "
            "freeze cannot be checked; if this update cannot wait, rerun with --emergency "
            '--reason "TEXT"'
        ) from None


def check_freeze(
    stack: str,
    windows: Iterable[tuple[str, Window]],
    now: datetime,
    emergency: Emergency | None,
) -> Emergency | None:
    """Refuse an update while doors are open, unless it is a declared emergency.

    ``windows`` pairs each window with where it was read from. Returns the emergency
    when the freeze was in force and broken by it, None when no freeze applied.
    """
    for source, window in windows:
        if not doors_open(window, now):
            continue
        if emergency is not None:
            return emergency
        raise FreezeError(
            f"stack {stack} is in its change freeze: doors are open from "
            f"{_moment(window.opens, window.time_zone)} to "
            f"{_moment(window.closes, window.time_zone)} ({source}), and it is now "
            f"{now.astimezone(UTC):%Y-%m-%d %H:%M} UTC. A kill switch needs no update: "
            f"use `popstack flags set {stack} KEY=VALUE --reason TEXT`. If this update "
            'cannot wait until doors close, rerun with --emergency --reason "TEXT"'
        )
    return None


def _moment(moment: datetime, time_zone: str) -> str:
    local = moment.astimezone(ZoneInfo(time_zone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({moment.astimezone(UTC):%H:%M} UTC)"
