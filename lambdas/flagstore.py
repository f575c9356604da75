"""The event's kill switches in AWS AppConfig: read them, change them, record who did.

A change reads the profile's latest hosted configuration version, writes a new hosted
version with the changed ``enabled`` values and starts a deployment of it with the
stack's all-at-once strategy. No Pulumi update and no code deploy is involved.

The new version's description carries the audit record of the change: who made it,
when, why, and each flag's old and new value. AppConfig stores it with the version,
so a change made through this module cannot happen without its record. Teardown
exports the records with the versions (`audit_log`).

Every hosted version popstack writes carries a version label from ``POPSTACK_LABELS``.
Only the initial version belongs to the Pulumi program; AppConfig rejects deleting a
configuration profile that still has hosted versions, so teardown deletes the others
before `pulumi destroy`.

The AppConfig calls are split over two clients, which are the same client in
production. ``content_client`` creates, reads and deletes hosted versions;
``control_client`` lists hosted versions and starts and lists deployments. moto 5.2
implements only the first group, so tests send the second group to botocore's Stubber.

This module runs in two places: in the operator CLI and in the stack's calendar
Lambda, which packages it with its handler. It needs only the standard library and
the boto3 clients it is given.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LABEL_FLAG = "popstack-flag"
LABEL_TEARDOWN = "popstack-teardown"
LABEL_CALENDAR = "popstack-calendar"
LABEL_SCHEMA = "popstack-schema"
POPSTACK_LABELS = (LABEL_FLAG, LABEL_TEARDOWN, LABEL_CALENDAR, LABEL_SCHEMA)
CONTENT_TYPE = "application/json"

# AppConfig's limit on a hosted version's and a deployment's description.
MAX_DESCRIPTION = 1024
AUDIT_FORMAT = 1
# A change retries this many times when another writer created a version between
# its read of the latest version and its own write.
WRITE_ATTEMPTS = 3


class FlagError(Exception):
    """A flag change that cannot go ahead; the message names the value and the fix."""


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
class Change:
    """One flag's value before and after a change."""

    flag: str
    old: bool
    new: bool


@dataclass(frozen=True)
class ChangeResult:
    """The outcome of `set_flags`: what changed, the new version and its deployment.

    ``version`` is None when every flag already had the requested value. ``redeployed``
    is True when nothing changed but the latest version had never been deployed (an
    earlier change whose deployment failed), so this call deployed it.
    """

    changes: tuple[Change, ...]
    unchanged: tuple[str, ...]
    base_version: int
    version: int | None
    deployment: int | None
    deployment_state: str | None
    redeployed: bool = False
    missing: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class AuditRecord:
    """The record of one change: actor, time, reason, and each flag's old and new value.

    It is kept in the description of the version the change wrote.
    """

    actor: str
    at: str
    reason: str
    changes: dict[str, tuple[bool, bool]] = field(default_factory=dict)

    def description(self) -> str:
        """Encode the record as the version description; raise FlagError if too long."""
        text = json.dumps(
            {
                "audit": AUDIT_FORMAT,
                "actor": self.actor,
                "at": self.at,
                "reason": self.reason,
                "changes": {flag: list(pair) for flag, pair in sorted(self.changes.items())},
            },
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        if len(text) > MAX_DESCRIPTION:
            over = len(text) - MAX_DESCRIPTION
            raise FlagError(
                f"the audit record (operator, reason and changed flags) is {over} characters "
                f"over AppConfig's {MAX_DESCRIPTION}-character limit for a version "
                "description; shorten the reason or change fewer flags at once"
            )
        return text

    @classmethod
    def parse(cls, description: str | None) -> AuditRecord | None:
        """Read a record written by `description`; None for any other description."""
        if not description or not description.startswith("{"):
            return None
        try:
            data = json.loads(description)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("audit") != AUDIT_FORMAT:
            return None
        raw_changes = data.get("changes")
        if not isinstance(raw_changes, dict):
            return None
        changes = {
            str(flag): (pair[0], pair[1])
            for flag, pair in raw_changes.items()
            if isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(value, bool) for value in pair)
        }
        return cls(
            actor=str(data.get("actor", "")),
            at=str(data.get("at", "")),
            reason=str(data.get("reason", "")),
            changes=changes,
        )


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
                "valid feature-flag document with `popstack flags set` or the AppConfig console"
            ) from None
        if not isinstance(document, dict):
            raise FlagError(
                f"hosted configuration version {number} is JSON but not a feature-flag "
                "document (an object with flags and values); create a valid one with "
                "`popstack flags set` or the AppConfig console"
            )
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
        latest = self.read(summaries[-1]["VersionNumber"])
        check_document(latest.document, latest.number)
        return latest

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
                Description=description[:MAX_DESCRIPTION],
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
    """Return a flag's ``enabled`` value; raise FlagError naming the known flags if absent.

    A flag with no value entry is off, as AppConfig treats it.
    """
    names = flag_names(document)
    if flag not in names:
        known = ", ".join(names) if names else "none"
        raise FlagError(f"{flag!r} is not a flag of this stack; valid flags: {known}")
    value = _enabled(document, flag)
    if value is None:
        raise FlagError(
            f"flag {flag} has an enabled value that is not true or false in the latest "
            "AppConfig version; correct it in the AppConfig console, or set the flag with "
            "`popstack flags set`"
        )
    return value


def _enabled(document: Mapping[str, Any], flag: str) -> bool | None:
    """Return a flag's ``enabled`` value, None when it is not a boolean."""
    values = document.get("values")
    entry = values.get(flag) if isinstance(values, Mapping) else None
    if entry is None:
        return False
    if not isinstance(entry, Mapping):
        return None
    enabled = entry.get("enabled", False)
    return enabled if isinstance(enabled, bool) else None


def flag_values(document: Mapping[str, Any]) -> dict[str, bool]:
    """Return every flag's ``enabled`` value, by flag key."""
    return {name: flag_value(document, name) for name in flag_names(document)}


def check_document(document: Mapping[str, Any], number: int) -> None:
    """Raise FlagError unless ``document`` is a feature-flag document popstack can change."""
    flags = document.get("flags")
    values = document.get("values", {})
    problem = None
    if not isinstance(flags, Mapping) or not all(
        isinstance(entry, Mapping) for entry in flags.values()
    ):
        problem = "its flags are not an object of flag objects"
    elif not isinstance(values, Mapping):
        problem = "its values are not an object"
    else:
        bad = [name for name in flags if _enabled(document, name) is None]
        if bad:
            problem = f"enabled is not true or false for {', '.join(sorted(bad))}"
    if problem:
        raise FlagError(
            f"hosted configuration version {number} is not a valid feature-flag document "
            f"({problem}); correct it in the AppConfig console, then run the command again"
        )


def with_flags(document: Mapping[str, Any], values: Mapping[str, bool]) -> dict[str, Any]:
    """Return a copy of ``document`` with the given flags' ``enabled`` values set."""
    updated = copy.deepcopy(dict(document))
    entries = updated.setdefault("values", {})
    for flag, enabled in values.items():
        flag_value(document, flag)
        entry = dict(entries.get(flag) or {})
        entry["enabled"] = enabled
        entries[flag] = entry
    return updated


def utc_now() -> datetime:
    return datetime.now(UTC)


def set_flags(
    store: FlagStore,
    changes: Mapping[str, bool],
    *,
    actor: str,
    reason: str,
    label: str,
    clock: Callable[[], datetime] | None = None,
    skip_missing: bool = False,
) -> ChangeResult:
    """Set flags in one new hosted version, with its audit record, and deploy it at once.

    Flags that already have the requested value are left out of the record; when none
    is left, nothing is written or deployed. If another writer created a version between
    this call's read and its write, the new version could undo that writer's change, so
    it is deleted and the change is made again on top of the newer version.

    With ``skip_missing``, flags the document lacks are left out and named in the
    result's ``missing`` instead of failing the whole change, so an automatic action
    still sets the flags it can.
    """
    if not changes:
        raise FlagError("no flag given; name at least one as KEY=on or KEY=off")
    for _ in range(WRITE_ATTEMPTS):
        latest = store.latest()
        names = flag_names(latest.document)
        missing = tuple(sorted(f for f in changes if f not in names)) if skip_missing else ()
        requested = {flag: value for flag, value in changes.items() if flag not in missing}
        old = {flag: flag_value(latest.document, flag) for flag in requested}
        to_change = {flag: bool(value) for flag, value in requested.items() if old[flag] != value}
        unchanged = tuple(sorted(flag for flag in requested if flag not in to_change))
        if not to_change:
            result = _deploy_if_pending(store, latest.number, unchanged, label, actor)
            return dataclasses.replace(result, missing=missing)
        record = AuditRecord(
            actor=actor,
            at=(clock or utc_now)().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            reason=reason,
            changes={flag: (old[flag], value) for flag, value in to_change.items()},
        )
        version = store.create(with_flags(latest.document, to_change), label, record.description())
        between = [
            summary["VersionNumber"]
            for summary in store.version_summaries()
            if latest.number < summary["VersionNumber"] < version
        ]
        if not between:
            break
        store.delete(version)
    else:
        raise FlagError(
            f"other changes to the flags kept arriving while this one was written "
            f"({WRITE_ATTEMPTS} attempts); check `popstack flags show` and run the command again"
        )
    summary = ", ".join(f"{flag} {_state(value)}" for flag, value in sorted(to_change.items()))
    deployment = store.deploy(version, f"{label} by {actor}: {summary}")
    number, state = deployment if deployment else (None, None)
    result_changes = tuple(
        Change(flag, old[flag], value) for flag, value in sorted(to_change.items())
    )
    return ChangeResult(
        result_changes, unchanged, latest.number, version, number, state, missing=missing
    )


def _deploy_if_pending(
    store: FlagStore, number: int, unchanged: tuple[str, ...], label: str, actor: str
) -> ChangeResult:
    """Deploy version ``number`` if no deployment of it exists; report no change either way.

    The result carries the newest existing deployment of that version, if there is one.
    """
    if store.target.environment_id is None:
        return ChangeResult((), unchanged, number, None, None, None)
    for item in reversed(store.deployments()):
        if str(item.get("ConfigurationVersion")) == str(number):
            existing = int(item["DeploymentNumber"]), item.get("State")
            return ChangeResult((), unchanged, number, None, *existing)
    started = store.deploy(number, f"{label} by {actor}: deploy version {number}, never deployed")
    deployment, state = started if started else (None, None)
    return ChangeResult((), unchanged, number, None, deployment, state, redeployed=True)


def _state(enabled: bool) -> str:
    return "on" if enabled else "off"


@dataclass(frozen=True)
class AuditEntry:
    """One flag change in the profile's history, from the versions and their records."""

    version: int
    label: str | None
    at: str | None
    actor: str
    reason: str
    flag: str
    old: bool | None
    new: bool | None
    deployment: int | None
    deployment_state: str | None


def audit_log(
    versions: list[HostedVersion], deployments: list[Mapping[str, Any]]
) -> list[AuditEntry]:
    """Return every flag change, oldest first, by comparing each version with the one before.

    The values come from the documents themselves, so a change made outside popstack (in
    the console, say) is listed too, with an unknown actor. The first version's values
    are listed with no old value: they are the stack file's initial values. An audit
    record is read only from a version with a popstack label. A value that is not true
    or false is listed as None, so an odd version never stops the log.
    """
    deployed: dict[str, Mapping[str, Any]] = {}
    for item in deployments:
        deployed.setdefault(str(item.get("ConfigurationVersion")), item)
    entries: list[AuditEntry] = []
    previous: dict[str, bool | None] | None = None
    for version in sorted(versions, key=lambda v: v.number):
        values = {name: _enabled(version.document, name) for name in flag_names(version.document)}
        record = (
            AuditRecord.parse(version.description) if version.label in POPSTACK_LABELS else None
        )
        if record is not None:
            actor, reason, at = record.actor, record.reason, record.at or None
        elif previous is None:
            actor, reason, at = "pulumi up", version.description or "", None
        else:
            actor, reason, at = "unknown (not made with popstack)", version.description or "", None
        deployment = deployed.get(str(version.number))
        for flag, value in values.items():
            old = None if previous is None else previous.get(flag)
            if previous is not None and old == value:
                continue
            entries.append(
                AuditEntry(
                    version=version.number,
                    label=version.label,
                    at=at,
                    actor=actor,
                    reason=reason,
                    flag=flag,
                    old=old,
                    new=value,
                    deployment=None if deployment is None else int(deployment["DeploymentNumber"]),
                    deployment_state=None if deployment is None else deployment.get("State"),
                )
            )
        previous = values
    return entries
