"""`popstack flags show|set|sync`: the kill switches, changed without a deploy.

The commands get their engine and AWS clients from ``teardown_commands.make_engine``
and ``make_clients``, the factories tests replace.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.table import Table

from components.flag_schema import flag_document
from components.spec import EventSpec, SpecError, spec_from_values
from lambdas.flagstore import (
    LABEL_FLAG,
    LABEL_SCHEMA,
    AuditEntry,
    AuditRecord,
    ChangeResult,
    FlagError,
    FlagStore,
    FlagTarget,
    HostedVersion,
    audit_log,
    flag_names,
    flag_values,
    set_flags,
)
from popstack import teardown_commands as shared
from popstack.engine import Engine, EngineError
from popstack.flags import actor, check_reason, parse_assignments, schema_update

flags_app = typer.Typer(
    help="Show and flip the event's kill switches through AppConfig, without a deploy.",
    no_args_is_help=True,
)

StackArgument = Annotated[str, typer.Argument(help="The stack whose flags to read or change.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before changing.")]


def _open(stack: str) -> tuple[FlagStore, EventSpec | None]:
    """Return the stack's flag store and its event spec (None if the config is unreadable)."""
    engine = shared.make_engine()
    clients = shared.make_clients()
    outputs: dict[str, Any] = engine.outputs(stack)
    store = FlagStore(
        FlagTarget.from_outputs(outputs), clients("appconfig"), clients("appconfig-control")
    )
    return store, _spec(engine, stack)


def _spec(engine: Engine, stack: str) -> EventSpec | None:
    try:
        values = {key: entry.value for key, entry in engine.get_config(stack).items()}
        return spec_from_values(values, f"config of stack {stack}")
    except (SpecError, EngineError):
        return None


def _errors(run):
    """Run ``run`` and turn the expected failures into one error line and an exit code."""
    try:
        return run()
    except FlagError as error:
        raise shared._fail(str(error), shared.EXIT_BAD_INPUT) from None
    except EngineError as error:
        raise shared._fail(str(error), shared.EXIT_FAILED) from None
    except (ClientError, BotoCoreError) as error:
        raise shared._fail(f"AppConfig call failed: {error}", shared.EXIT_FAILED) from None


def _on_off(value: bool | None) -> str:
    if value is None:
        return "-"
    return "on" if value else "off"


@flags_app.command("show")
def show(
    stack: StackArgument,
    history: Annotated[
        int, typer.Option(min=0, help="How many of the latest flag changes to list.")
    ] = 10,
    as_json: JsonOption = False,
) -> None:
    """Show every flag's live value, the deployment that carries it, and recent changes."""

    def run() -> dict[str, Any]:
        store, spec = _open(stack)
        summaries = store.version_summaries()
        if not summaries:
            raise FlagError(
                f"AppConfig profile {store.target.profile_id} has no hosted configuration "
                "version; run `pulumi up` for the stack, which creates the initial one"
            )
        versions = [store.read(summary["VersionNumber"]) for summary in summaries]
        labelled = [
            HostedVersion(v.number, s.get("VersionLabel"), v.description, v.document)
            for v, s in zip(versions, summaries, strict=True)
        ]
        deployments = store.deployments()
        return _show_payload(stack, store, spec, labelled, deployments, history)

    payload = _errors(run)
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    _print_show(payload)


def _show_payload(
    stack: str,
    store: FlagStore,
    spec: EventSpec | None,
    versions: list[HostedVersion],
    deployments: list[dict[str, Any]],
    history: int,
) -> dict[str, Any]:
    latest = versions[-1]
    live = latest
    live_deployment: dict[str, Any] | None = None
    if store.target.environment_id is not None:
        done = [d for d in deployments if d.get("State") == "COMPLETE"]
        if done:
            live_deployment = done[-1]
            number = int(live_deployment["ConfigurationVersion"])
            live = next((v for v in versions if v.number == number), latest)
    names = latest.document.get("flags") or {}
    live_values = flag_values(live.document)
    latest_values = flag_values(latest.document)
    entries = audit_log(versions, deployments)
    return {
        "stack": stack,
        "liveVersion": live.number,
        "liveDeployment": None
        if live_deployment is None
        else int(live_deployment["DeploymentNumber"]),
        "latestVersion": latest.number,
        "pollIntervalSeconds": None if spec is None else spec.flags.poll_interval_seconds,
        "flags": [
            {
                "flag": flag,
                "name": (names.get(flag) or {}).get("name", flag),
                "live": live_values.get(flag),
                "latest": latest_values[flag],
            }
            for flag in flag_names(latest.document)
        ],
        "changes": [_entry_json(entry) for entry in entries[-history:]] if history else [],
    }


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "version": entry.version,
        "at": entry.at,
        "actor": entry.actor,
        "reason": entry.reason,
        "flag": entry.flag,
        "old": entry.old,
        "new": entry.new,
        "deployment": entry.deployment,
        "deploymentState": entry.deployment_state,
    }


def _print_show(payload: dict[str, Any]) -> None:
    console = shared.console
    table = Table(title=f"Flags of {payload['stack']}")
    for column in ("flag", "name", "live"):
        table.add_column(column)
    pending = payload["latestVersion"] != payload["liveVersion"]
    if pending:
        table.add_column(f"version {payload['latestVersion']} (not live)")
    for flag in payload["flags"]:
        row = [flag["flag"], flag["name"], _on_off(flag["live"])]
        if pending:
            row.append(_on_off(flag["latest"]))
        table.add_row(*row)
    console.print(table)
    where = (
        f"deployment {payload['liveDeployment']}"
        if payload["liveDeployment"] is not None
        else "no AppConfig environment; the latest version"
    )
    console.print(f"live: version {payload['liveVersion']} ({where})", highlight=False)
    if pending:
        console.print(
            f"version {payload['latestVersion']} is newer than the live version and not "
            "deployed; the next `popstack flags set` deploys it with its own change",
            highlight=False,
            soft_wrap=True,
        )
    if payload["changes"]:
        changes = Table(title="Latest changes")
        for column in ("version", "at", "who", "flag", "change", "reason"):
            changes.add_column(column)
        for entry in payload["changes"]:
            changes.add_row(
                str(entry["version"]),
                entry["at"] or "-",
                entry["actor"],
                entry["flag"],
                f"{_on_off(entry['old'])} -> {_on_off(entry['new'])}",
                entry["reason"],
            )
        console.print(changes)


@flags_app.command("set")
def set_command(
    stack: StackArgument,
    assignments: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE...",
            help="Flags to change, such as checkout_enabled=off location_chiado_enabled=on; "
            "`popstack flags show` lists the keys.",
        ),
    ],
    reason: Annotated[
        str | None,
        typer.Option(help="Why; kept with the change in the audit log that teardown exports."),
    ] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Change flags in one new AppConfig version and deploy it at once; no Pulumi update."""

    def prepare() -> tuple[FlagStore, EventSpec | None, dict[str, bool], str]:
        text = check_reason(reason)
        # The form and the values first, so a typo is reported without any AWS call. The
        # valid keys then come from the stack file, which the engine reads without the CLI.
        try:
            parse_assignments(assignments, None)
        except FlagError as error:
            offline = _spec(shared.make_engine(), stack)
            if offline is None:
                raise
            keys = ", ".join(flag_names(flag_document(offline)))
            raise FlagError(f"{error}\nvalid flags: {keys}") from None
        store, spec = _open(stack)
        valid = flag_names(store.latest().document)
        return store, spec, parse_assignments(assignments, valid), text

    store, spec, changes, text = _errors(prepare)
    listed = ", ".join(f"{flag}={_on_off(value)}" for flag, value in changes.items())
    shared._confirm(yes, f"Set {listed} for stack {stack}, effective at once?")

    def run() -> ChangeResult:
        operator = actor(shared.make_clients()("sts"))
        return set_flags(store, changes, actor=operator, reason=text, label=LABEL_FLAG)

    result = _errors(run)
    interval = None if spec is None else spec.flags.poll_interval_seconds
    if as_json:
        sys.stdout.write(json.dumps(_set_json(stack, result, interval), indent=2) + "\n")
        return
    _print_set(result, interval)


def _set_json(stack: str, result: ChangeResult, interval: int | None) -> dict[str, Any]:
    return {
        "stack": stack,
        "changed": result.changed,
        "changes": [{"flag": c.flag, "old": c.old, "new": c.new} for c in result.changes],
        "unchanged": list(result.unchanged),
        "version": result.version if result.changed else result.base_version,
        "deployment": result.deployment,
        "deploymentState": result.deployment_state,
        "redeployed": result.redeployed,
        "pollIntervalSeconds": interval,
    }


def _print_set(result: ChangeResult, interval: int | None) -> None:
    console = shared.console
    for flag in result.unchanged:
        console.print(f"{flag} is already as requested; not changed", highlight=False)
    if result.redeployed:
        console.print(
            f"version {result.base_version} already had these values but was never deployed; "
            f"deployment {result.deployment} {result.deployment_state} now carries it",
            highlight=False,
            soft_wrap=True,
        )
        return
    if not result.changed:
        console.print(f"nothing changed (version {result.base_version})", highlight=False)
        return
    for change in result.changes:
        console.print(
            f"{change.flag}: {_on_off(change.old)} -> {_on_off(change.new)}", highlight=False
        )
    if result.deployment is None:
        console.print(
            f"version {result.version} written; not deployed: the stack has no AppConfig "
            "environment",
            highlight=False,
            soft_wrap=True,
        )
        return
    reach = (
        f"; the checkout service picks it up within {interval} s" if interval is not None else ""
    )
    console.print(
        f"version {result.version}, deployment {result.deployment} "
        f"{result.deployment_state}{reach}",
        highlight=False,
        soft_wrap=True,
    )


def sync_schema(
    store: FlagStore, spec: EventSpec, operator: str
) -> tuple[int, list[str], list[str]]:
    """Bring the live flag document to the stack file's schema, keeping live values.

    Returns the new version and the added and removed flags; version 0 when the schema
    was already current.
    """
    latest = store.latest()
    update = schema_update(latest.document, flag_document(spec))
    if update is None:
        return 0, [], []
    document, added, removed = update
    parts = []
    if added:
        parts.append(f"added {', '.join(added)}")
    if removed:
        parts.append(f"removed {', '.join(removed)}")
    summary = "; ".join(parts) or "flag names or descriptions changed"
    record = AuditRecord(
        actor=operator,
        at=_now_text(),
        reason=f"flag schema of the stack file changed: {summary}",
    )
    version = store.create(document, LABEL_SCHEMA, record.description())
    store.deploy(version, f"{LABEL_SCHEMA}: {summary}")
    return version, added, removed


def _now_text() -> str:
    from lambdas.flagstore import utc_now

    return utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")


@flags_app.command("sync")
def sync_command(stack: StackArgument, yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Add the stack file's new flags to AppConfig and drop removed ones; live values stay.

    `popstack up` does this after every successful update; run it after a plain
    `pulumi up`.
    """
    shared._confirm(yes, f"Bring the AppConfig flags of stack {stack} to its stack file's schema?")

    def run() -> tuple[int, list[str], list[str]]:
        store, spec = _open(stack)
        if spec is None:
            raise FlagError(
                f"the config of stack {stack} is not a valid event spec; run "
                f"`popstack validate {stack}`"
            )
        return sync_schema(store, spec, actor(shared.make_clients()("sts")))

    version, added, removed = _errors(run)
    if as_json:
        payload = {"stack": stack, "version": version or None, "added": added, "removed": removed}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if not version:
        shared.console.print("the flag schema is current; nothing changed", highlight=False)
        return
    shared.console.print(
        f"version {version}: added {', '.join(added) or 'none'}, removed "
        f"{', '.join(removed) or 'none'}; every other flag keeps its live value",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add the flags group to the CLI."""
    app.add_typer(flags_app, name="flags")
