"""Operator side of the kill switches: parse `KEY=VALUE`, name the operator, sync the schema.

The AppConfig reads and writes live in ``lambdas.flagstore``, which the stack's
calendar Lambda shares.

The Pulumi program owns the flag schema (which flags exist, their names and
descriptions) and their initial values. Operators own the live values.
The program writes only the initial hosted version and ignores later changes to it
(components/flags.py), so `pulumi up` never deploys the stack file's values over an
operator's flip. When the schema changes (a location added or removed),
`schema_update` carries the live values over into a document with the new schema,
and `popstack up` writes it as a new version after a successful update.
"""

from __future__ import annotations

import difflib
import getpass
import os
from collections.abc import Mapping, Sequence
from typing import Any

from components.spec import CONTROL
from lambdas.flagstore import FlagError, flag_names, flag_values

TRUE_WORDS = ("on", "true", "yes", "1")
FALSE_WORDS = ("off", "false", "no", "0")
MAX_REASON = 500
NO_REASON = "no reason given"
MAX_OPERATOR = 100

OPERATOR_VARIABLE = "POPSTACK_OPERATOR"


def parse_value(flag: str, text: str) -> bool:
    """Parse one flag's new value; raise FlagError naming the accepted words."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise FlagError(
        f"{flag}={text}: {flag} is an on/off switch; write {flag}=on or {flag}=off "
        f"(accepted: {', '.join(TRUE_WORDS)} / {', '.join(FALSE_WORDS)})"
    )


def parse_assignments(items: Sequence[str], valid: Sequence[str] | None) -> dict[str, bool]:
    """Parse `KEY=VALUE` arguments against the stack's flag keys.

    Every problem is collected, so one run names each bad argument; the error lists
    the valid keys. With ``valid`` None, only the form and the values are checked,
    which needs no AWS call.
    """
    if not items:
        raise FlagError("no flag given; write KEY=on or KEY=off, for example checkout_enabled=off")
    problems: list[str] = []
    values: dict[str, bool] = {}
    unknown: set[str] = set()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{item!r} is not KEY=VALUE; write for example checkout_enabled=off")
            continue
        if valid is not None and key not in valid:
            if key in unknown:
                continue
            unknown.add(key)
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{key!r} is not a flag of this stack{hint}")
            continue
        if key in values:
            problems.append(f"{key} is given more than once; give each flag once")
            continue
        try:
            values[key] = parse_value(key, text)
        except FlagError as error:
            problems.append(str(error))
    if problems:
        if valid is not None:
            problems.append("valid flags: " + ", ".join(valid))
        raise FlagError("\n".join(problems))
    return values


def check_reason(reason: str | None) -> str:
    """Return the reason for a change, "no reason given" if none; raise FlagError if too long.

    Runs of white space become one space. Other control characters are rejected, because
    the reason is printed to terminals by `flags show` and kept in the export.
    """
    text = " ".join((reason or "").split())
    if CONTROL.search(text):
        raise FlagError(
            "--reason contains a control character (such as an escape sequence); write it "
            "as plain text"
        )
    if not text:
        return NO_REASON
    if len(text) > MAX_REASON:
        raise FlagError(
            f"--reason is {len(text)} characters; keep it to {MAX_REASON}, and put the "
            "details in the incident channel"
        )
    return text


def operator_name(environ: Mapping[str, str] = os.environ) -> str:
    """Return the name of the person changing flags: $POPSTACK_OPERATOR, else the login.

    Control characters are dropped and the name is cut to MAX_OPERATOR characters, as it
    goes into audit records and checkpoints.
    """
    named = environ.get(OPERATOR_VARIABLE, "")
    if not named.strip():
        try:
            named = getpass.getuser()
        except (KeyError, OSError):
            named = "unknown"
    cleaned = " ".join(CONTROL.sub(" ", named).split())[:MAX_OPERATOR]
    return cleaned or "unknown"


def actor(sts_client: Any, environ: Mapping[str, str] = os.environ) -> str:
    """Return who is acting: the operator's name and the AWS identity the CLI runs as."""
    name = operator_name(environ)
    try:
        arn = sts_client.get_caller_identity()["Arn"]
    except Exception as error:  # noqa: BLE001 - the name alone still identifies the operator
        return f"{name} (AWS identity unknown: {type(error).__name__})"
    return f"{name} ({arn})"


def schema_update(
    live: Mapping[str, Any], program: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]] | None:
    """Return the program's schema with the live values, or None if the schema is unchanged.

    Flags the live document has keep their live values; flags new in the program start
    with the program's initial values; flags the program no longer has are dropped.
    Returns the new document with the added and removed flag keys.
    """
    live_names = flag_names(live)
    program_names = flag_names(program)
    if live_names == program_names and live.get("flags") == program.get("flags"):
        return None
    live_values = flag_values(live)
    document = {
        "version": program.get("version", "1"),
        "flags": dict(program["flags"]),
        "values": {
            name: {"enabled": live_values.get(name, bool(program["values"][name]["enabled"]))}
            for name in program_names
        },
    }
    added = [name for name in program_names if name not in live_names]
    removed = [name for name in live_names if name not in program_names]
    return document, added, removed
