"""Kill-switch flips through AWS AppConfig, without a deploy.

A flip reads the profile's latest hosted configuration version, changes one flag's
``enabled`` value, stores the result as a new hosted version and starts a deployment
of it with the stack's all-at-once strategy. `popstack flag` and teardown's first step
(closing checkout) both use ``flip``.

Every hosted version popstack creates carries a version label from ``POPSTACK_LABELS``,
so teardown can find and delete them before `pulumi destroy`. AppConfig rejects deleting
a configuration profile that still has hosted versions, and only the initial version
belongs to the Pulumi program.

The AppConfig calls are split over two clients, which are the same client in
production. ``content_client`` creates, reads and deletes hosted versions;
``control_client`` lists hosted versions and starts and lists deployments. moto 5.2
implements only the first group, so tests send the second group to botocore's Stubber.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LABEL_FLAG = "popstack-flag"
LABEL_TEARDOWN = "popstack-teardown"
POPSTACK_LABELS = (LABEL_FLAG, LABEL_TEARDOWN)
CONTENT_TYPE = "application/json"
STATES = {"on": True, "off": False}


class FlagError(Exception):
    """A flag flip that cannot go ahead; the message names the value and the fix."""


@dataclass(frozen=True)
class FlagTarget:
    """The AppConfig ids of one stack's kill switches, read from its stack outputs.

    ``environment_id`` and ``strategy_id`` are None for an emulator stack, which has
    no AppConfig environment (moto does not implement them).
    """

    application_id: str
    profile_id: str
    environment_id: str | None = None
    strategy_id: str | None = None

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any]) -> FlagTarget:
        """Build the target from the `flags*Id` stack outputs."""
        missing = [key for key in ("flagsApplicationId", "flagsProfileId") if not outputs.get(key)]
        if missing:
            raise FlagError(
                f"stack output {', '.join(missing)} is missing; run `pulumi up` for the "
                "stack so its AppConfig profile exists"
            )
        return cls(
            application_id=str(outputs["flagsApplicationId"]),
            profile_id=str(outputs["flagsProfileId"]),
            environment_id=_optional(outputs.get("flagsEnvironmentId")),
            strategy_id=_optional(outputs.get("flagsStrategyId")),
        )


def _optional(value: Any) -> str | None:
    return str(value) if value else None


@dataclass(frozen=True)
class HostedVersion:
    """One hosted configuration version and its parsed feature-flag document."""

    number: int
    label: str | None
    description: str | None
    document: dict[str, Any]


@dataclass(frozen=True)
class FlipResult:
    """The outcome of a flip: the flag's old and new value, the new version and deployment."""

    flag: str
    old: bool
    new: bool
    base_version: int
    version: int | None
    deployment: int | None
    deployment_state: str | None

    @property
    def changed(self) -> bool:
        return self.old != self.new


class FlagStore:
    """AppConfig reads and writes for one stack's flag profile."""

    def __init__(self, target: FlagTarget, content_client: Any, control_client: Any = None):
        self.target = target
        self.content = content_client
        self.control = control_client if control_client is not None else content_client

    def version_summaries(self) -> list[dict[str, Any]]:
        """Return every hosted version's summary (no content), lowest number first."""
        paginator = self.control.get_paginator("list_hosted_configuration_versions")
        items: list[dict[str, Any]] = []
        pages = paginator.paginate(
            ApplicationId=self.target.application_id,
            ConfigurationProfileId=self.target.profile_id,
        )
        for page in pages:
            items.extend(page.get("Items", []))
        return sorted(items, key=lambda item: item["VersionNumber"])

    def read(self, number: int) -> HostedVersion:
        """Read one hosted version and parse its JSON document."""
        response = self.content.get_hosted_configuration_version(
            ApplicationId=self.target.application_id,
            ConfigurationProfileId=self.target.profile_id,
            VersionNumber=number,
        )
        raw = response["Content"].read()
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as error:
            raise FlagError(
                f"hosted configuration version {number} is not JSON ({error}); create a "
                "valid feature-flag document with `popstack flag` or the AppConfig console"
            ) from None
        return HostedVersion(
            number=number,
            label=response.get("VersionLabel"),
            description=response.get("Description"),
            document=document,
        )

    def latest(self) -> HostedVersion:
        """Read the hosted version with the highest number."""
        summaries = self.version_summaries()
        if not summaries:
            raise FlagError(
                f"AppConfig profile {self.target.profile_id} has no hosted configuration "
                "version; run `pulumi up` for the stack, which creates the initial one"
            )
        return self.read(summaries[-1]["VersionNumber"])

    def create(self, document: Mapping[str, Any], label: str, description: str) -> int:
        """Store ``document`` as a new hosted version and return its number."""
        response = self.content.create_hosted_configuration_version(
            ApplicationId=self.target.application_id,
            ConfigurationProfileId=self.target.profile_id,
            Content=serialise(document),
            ContentType=CONTENT_TYPE,
            VersionLabel=label,
            Description=description,
        )
        return int(response["VersionNumber"])

    def deploy(self, version: int, description: str) -> tuple[int, str] | None:
        """Start an all-at-once deployment of ``version``; return its number and state.

        Returns None when the stack has no AppConfig environment (an emulator stack).
        """
        if self.target.environment_id is None or self.target.strategy_id is None:
            return None
        try:
            response = self.control.start_deployment(
                ApplicationId=self.target.application_id,
                EnvironmentId=self.target.environment_id,
                DeploymentStrategyId=self.target.strategy_id,
                ConfigurationProfileId=self.target.profile_id,
                ConfigurationVersion=str(version),
                Description=description,
            )
        except self.control.exceptions.ConflictException as error:
            raise FlagError(
                f"AppConfig rejected the deployment of version {version} because another "
                f"deployment to environment {self.target.environment_id} is in progress "
                f"({error.response['Error'].get('Message', '')}); wait for it to finish and "
                "run the command again"
            ) from None
        return int(response["DeploymentNumber"]), str(response["State"])

    def deployments(self) -> list[dict[str, Any]]:
        """Return this profile's deployments to the stack's environment, oldest first."""
        if self.target.environment_id is None:
            return []
        paginator = self.control.get_paginator("list_deployments")
        items: list[dict[str, Any]] = []
        pages = paginator.paginate(
            ApplicationId=self.target.application_id,
            EnvironmentId=self.target.environment_id,
        )
        for page in pages:
            items.extend(page.get("Items", []))
        mine = [
            item
            for item in items
            if item.get("ConfigurationProfileId") in (None, self.target.profile_id)
        ]
        return sorted(mine, key=lambda item: item["DeploymentNumber"])

    def delete(self, number: int) -> None:
        """Delete one hosted version."""
        self.content.delete_hosted_configuration_version(
            ApplicationId=self.target.application_id,
            ConfigurationProfileId=self.target.profile_id,
            VersionNumber=number,
        )


def serialise(document: Mapping[str, Any]) -> bytes:
    """Encode a flag document the way the Pulumi program writes the initial version."""
    return json.dumps(document, sort_keys=True).encode("utf-8")


def flag_names(document: Mapping[str, Any]) -> list[str]:
    """Return the flag keys of a feature-flag document, sorted."""
    flags = document.get("flags")
    if not isinstance(flags, Mapping):
        return []
    return sorted(flags)


def flag_value(document: Mapping[str, Any], flag: str) -> bool:
    """Return a flag's ``enabled`` value; raise FlagError naming the known flags if absent."""
    names = flag_names(document)
    if flag not in names:
        known = ", ".join(names) if names else "none"
        raise FlagError(f"flag {flag!r} is not in the stack's flag document; known flags: {known}")
    value = (document.get("values") or {}).get(flag, {})
    return bool(value.get("enabled", False))


def with_flag(document: Mapping[str, Any], flag: str, enabled: bool) -> dict[str, Any]:
    """Return a copy of ``document`` with one flag's ``enabled`` value set."""
    flag_value(document, flag)
    updated = copy.deepcopy(dict(document))
    values = updated.setdefault("values", {})
    entry = dict(values.get(flag) or {})
    entry["enabled"] = enabled
    values[flag] = entry
    return updated


def parse_state(text: str) -> bool:
    """Parse `on` or `off` into the flag's ``enabled`` value."""
    try:
        return STATES[text.strip().lower()]
    except KeyError:
        raise FlagError(f"flag state {text!r} is invalid; use on or off") from None


def flip(
    store: FlagStore,
    flag: str,
    enabled: bool,
    *,
    label: str = LABEL_FLAG,
    description: str | None = None,
) -> FlipResult:
    """Set one flag in a new hosted version and deploy it all at once.

    When the latest version already has the requested value, nothing is created or
    deployed and the result's ``version`` is None.
    """
    latest = store.latest()
    old = flag_value(latest.document, flag)
    if old == enabled:
        return FlipResult(flag, old, enabled, latest.number, None, None, None)
    text = description or f"{flag} {state_name(old)} -> {state_name(enabled)}"
    version = store.create(with_flag(latest.document, flag, enabled), label, text)
    deployment = store.deploy(version, text)
    number, state = deployment if deployment else (None, None)
    return FlipResult(flag, old, enabled, latest.number, version, number, state)


def state_name(enabled: bool) -> str:
    return "on" if enabled else "off"
