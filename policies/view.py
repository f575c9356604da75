"""The neutral resource view that every rule reads, and the findings rules return.

Both callers build the same view: the policy pack from the engine's Analyze and
AnalyzeStack requests, and `popstack plan` from the resources the mock run records.
Properties keep the camelCase names the engine uses. A value the engine computes
during the update (an ARN or id in a preview) is the `UNKNOWN` marker, so each rule
decides what an unknown input means instead of failing on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi.output import Unknown as OutputUnknown
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
)

# The strings Pulumi's wire format uses for values that are unknown during a preview.
UNKNOWN_SENTINELS = frozenset(
    {
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_STRING_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_OBJECT_VALUE,
    }
)


class Unknown:
    """A value that the engine computes during the update, so a preview cannot see it."""

    _instance: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


def to_plain(value: Any) -> Any:
    """Copy a property value into plain dicts and lists, with unknowns as `UNKNOWN`.

    Unknowns arrive as the wire format's sentinel strings from the engine and as
    `pulumi.output.Unknown` from a mock run. The wire format carries every number as
    a double, so whole floats become ints, as the program wrote them. Secret wrappers
    are replaced by the value they wrap, because rules compare values. Messages never
    quote a value that could be secret.
    """
    if isinstance(value, OutputUnknown):
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return UNKNOWN if value in UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        if value.get(SPECIAL_SIG_KEY) == SPECIAL_SECRET_SIG:
            return to_plain(value.get("value"))
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    return value


def lookup(value: Any, *path: str | int) -> Any:
    """Return the value at `path`, None when a step is absent, or UNKNOWN when a step is unknown."""
    current = value
    for step in path:
        if current is UNKNOWN:
            return UNKNOWN
        if isinstance(step, int):
            if not isinstance(current, list) or not -len(current) <= step < len(current):
                return None
            current = current[step]
        elif isinstance(current, Mapping):
            current = current.get(step)
        else:
            return None
    return current


def parse_json(value: Any) -> Any:
    """Parse a JSON document property: UNKNOWN stays UNKNOWN, a dict or list passes through.

    Raises ValueError when the text is not valid JSON.
    """
    if value is UNKNOWN or isinstance(value, dict | list):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a JSON document, got {type(value).__name__}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON at character {error.pos}: {error.msg}") from None


@dataclass(frozen=True)
class ResourceView:
    """One resource as the rules see it: type token, names, properties and dependencies.

    `props` are the inputs for resource rules and the outputs for stack rules, as in
    the engine. `property_dependencies` maps a property to the URNs its value came from.
    """

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def short_type(self) -> str:
        return self.type.rsplit(":", 1)[-1]

    @property
    def label(self) -> str:
        """The resource as messages name it: short type and logical name."""
        return f'{self.short_type} "{self.name}"'

    def get(self, *path: str | int) -> Any:
        return lookup(self.props, *path)

    def sources_of(self, prop: str) -> tuple[str, ...]:
        """Return the URNs the value of `prop` came from, or all dependencies when none are listed.

        A mock run records only the resource's dependencies, not those of each property.
        """
        return self.property_dependencies.get(prop) or self.dependencies


@dataclass(frozen=True)
class Finding:
    """One violation of a rule by one resource, or a check that must wait for unknown values."""

    urn: str
    message: str
    known: bool = True


def violation(view: ResourceView, problem: str) -> Finding:
    """Return a finding whose message names the resource, the problem and the fix."""
    return Finding(view.urn, f"{view.label}: {problem}")


def cannot_check(view: ResourceView, reason: str) -> Finding:
    """Return a finding for a check that needs a value the preview does not know yet."""
    return Finding(view.urn, f"{view.label}: cannot check until known: {reason}", known=False)


def resolve_reference(
    source: ResourceView,
    prop: str,
    reference: Any,
    candidates: list[ResourceView],
    identities: tuple[str, ...],
) -> ResourceView | Unknown | None:
    """Find the resource among `candidates` that `source.prop` refers to.

    A known `reference` matches a candidate whose property in `identities` (for example
    `arn` or `bucket`) has the same value. Otherwise the dependencies of `prop` decide
    when exactly one candidate is among them, which is how an unknown reference in a
    preview still finds its target. Returns None when a known reference matches nothing
    in the stack, and UNKNOWN when an unknown one cannot be resolved.
    """
    known = reference is not UNKNOWN and reference is not None
    if known:
        for candidate in candidates:
            for identity in identities:
                if candidate.get(identity) == reference:
                    return candidate
        sources = set(source.property_dependencies.get(prop, ()))
    else:
        sources = set(source.sources_of(prop))
    matches = [candidate for candidate in candidates if candidate.urn in sources]
    if len(matches) == 1:
        return matches[0]
    return None if known else UNKNOWN
