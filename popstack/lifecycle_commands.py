"""The operator lifecycle commands: up, rollback, promote, expire and checkpoints.

Each command prompts for confirmation before a destructive step unless `--yes` is given,
and rejects the step when stdin is not a terminal and `--yes` is missing. With `--json`
the result is one JSON document on stdout and progress goes to stderr.

Exit status: 0 done, 1 an operation failed or was cancelled, 2 invalid input,
3 a mandatory policy violation.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from components.spec import EventSpec
from popstack.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointStore,
    check_checkpoint_id,
    check_stack_name,
    open_store,
)
from popstack.engine import AutomationEngine, Engine, EngineError
from popstack.flags import operator_name
from popstack.freeze import Emergency, FreezeError, emergency_from_options
from popstack.lifecycle import (
    BUCKET_ORDER,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXPIRED,
    LATER,
    WITHIN_2H,
    WITHIN_24H,
    Approval,
    DeployOutcome,
    LifecycleError,
    Promotion,
    apply_promotion,
    check_promotion_freeze,
    find_project_dir,
    format_summary,
    list_deadlines,
    prepare_promotion,
    rollback_shell_command,
    run_rollback,
    run_up,
    teardown_expired,
)


@dataclass(frozen=True)
class EngineOptions:
    """The engine's settings: the project checkout it deploys from."""

    work_dir: Path


def engine_for(options: EngineOptions) -> Engine:
    """Return the engine for a project checkout; tests replace this to inject one."""
    return AutomationEngine(options.work_dir)


def _open_engine(work_dir: Path) -> Engine:
    # Looks `engine_for` up at call time, so a replaced factory also serves rollback's
    # temporary worktree.
    return engine_for(EngineOptions(work_dir))


YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Confirm every destructive step without asking (CI).")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")
]
EmergencyOption = Annotated[
    bool,
    typer.Option(
        "--emergency",
        help="Update although doors are open (the change freeze); needs --reason.",
    ),
]
ReasonOption = Annotated[
    str | None,
    typer.Option(
        "--reason",
        metavar="TEXT",
        help="Why an --emergency update cannot wait; kept in the checkpoint.",
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint-store",
        metavar="URI",
        help="Where checkpoints are kept: s3://bucket/prefix or a directory "
        "(default: .popstack/checkpoints in the project).",
    ),
]


class _Output:
    """Human-readable lines go to stdout, or to stderr when the JSON result owns stdout."""

    def __init__(self, as_json: bool):
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        typer.echo(text, err=self.as_json)

    def progress(self, text: str) -> None:
        typer.echo(text, err=self.as_json)

    def error(self, text: str) -> None:
        typer.echo(f"error: {text}", err=True)

    def note(self, text: str) -> None:
        """Print a line that follows an error, on stderr."""
        typer.echo(text, err=True)

    def result(self, payload: dict[str, Any]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _ask(question: str) -> bool:
    if not _stdin_is_terminal():
        raise LifecycleError(
            f"confirmation needed but stdin is not a terminal: {question} "
            "Rerun with --yes to confirm.",
            EXIT_BAD_INPUT,
        )
    return typer.confirm(question, default=False, err=True)


def _approval(yes: bool) -> Approval:
    return Approval(yes=yes, ask=_ask)


def _now() -> datetime:
    """Return the current time, read through popstack.lifecycle so tests can set it."""
    from popstack import lifecycle

    return lifecycle.utc_now()


def _emergency(emergency: bool, reason: str | None) -> Emergency | None:
    try:
        return emergency_from_options(emergency, reason, operator_name())
    except FreezeError as error:
        raise LifecycleError(str(error), EXIT_BAD_INPUT) from None


def _run(command: str, output: _Output, action: Callable[[], tuple[dict[str, Any], int]]) -> None:
    """Run a command body, print its JSON result, and exit with its code.

    The body prints its own messages and returns its JSON fields and exit code. An
    error it raises is printed here and becomes the result's `error`.
    """
    try:
        payload, code = action()
    except LifecycleError as error:
        payload, code = {"error": str(error), **error.details}, error.exit_code
        output.error(str(error))
    except CheckpointNotFoundError as error:
        payload, code = {"error": str(error)}, EXIT_BAD_INPUT
        output.error(str(error))
    except (CheckpointError, EngineError) as error:
        payload, code = {"error": str(error)}, EXIT_FAILED
        output.error(str(error))
    output.result({"command": command, "ok": code == 0, "exitCode": code, **payload})
    raise typer.Exit(code)


def _checkpoint_json(checkpoint: Checkpoint, store: CheckpointStore) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "status": checkpoint.status,
        "operation": checkpoint.operation,
        "revision": checkpoint.revision,
        "dirty": checkpoint.dirty,
        "location": store.location,
    }


def make_flag_store(outputs: dict[str, Any]) -> Any:
    """Return the FlagStore of a deployed stack; tests replace this to use moto."""
    from lambdas.flagstore import FlagStore, FlagTarget
    from teardown.aws import Clients

    clients = Clients()
    return FlagStore(
        FlagTarget.from_outputs(outputs), clients("appconfig"), clients("appconfig-control")
    )


def _sync_flag_schema(stack: str, outcome: DeployOutcome, spec: EventSpec) -> dict[str, Any]:
    """After a good update, bring AppConfig to the stack file's flag schema.

    A failed AppConfig call does not fail the command, because the update itself
    succeeded: it becomes a warning that names `popstack flags sync`. Skipped when the
    outputs name no flag profile.
    """
    outputs = outcome.result.outputs
    if not outcome.ok or not outputs.get("flagsProfileId"):
        return {"synced": False}
    from botocore.exceptions import BotoCoreError, ClientError

    from lambdas.flagstore import FlagError
    from popstack.flag_commands import sync_schema

    try:
        version, added, removed = sync_schema(
            make_flag_store(outputs), spec, f"popstack up ({operator_name()})"
        )
    except (FlagError, ClientError, BotoCoreError) as error:
        outcome.warnings.append(
            f"the flag schema was not brought up to date ({error}); run "
            f"`popstack flags sync {stack}`"
        )
        return {"synced": False}
    return {"synced": True, "version": version or None, "added": added, "removed": removed}


def _warn_missed_pre_sync(outcome: DeployOutcome, spec: EventSpec, now: datetime) -> None:
    """Warn when an update lands after the pre-sync start but before doors open.

    Kubernetes does not run a CronJob's start that passed before the CronJob existed,
    so the operator starts the pre-sync by hand.
    """
    outputs = outcome.result.outputs
    job, namespace = outputs.get("preSyncCronJob"), outputs.get("checkoutNamespace")
    window = spec.window
    if not outcome.ok or not job or not namespace:
        return
    if window.pre_sync_starts <= now < window.opens:
        outcome.warnings.append(
            f"the pre-sync start ({window.pre_sync_starts.astimezone(UTC):%Y-%m-%d %H:%M} UTC) "
            "has passed and doors are not open yet; if the pre-sync job has not run, start "
            f"it with `kubectl -n {namespace} create job pre-sync-manual "
            f"--from=cronjob/{job}`"
        )


def _report_deploy(
    stack: str,
    outcome: DeployOutcome,
    store: CheckpointStore,
    store_option: str | None,
    output: _Output,
    declared: Emergency | None = None,
) -> tuple[dict[str, Any], int]:
    """Print the end of a checkpointed update and return its JSON fields and exit code."""
    checkpoint = outcome.checkpoint
    if declared is not None and checkpoint.emergency is None:
        outcome.warnings.append(
            "no change freeze was in force, so --emergency was not needed and is not "
            "recorded in the checkpoint"
        )
    if checkpoint.dirty:
        outcome.warnings.append(
            f"the program had uncommitted changes ({', '.join(checkpoint.dirty_paths)}); "
            f"a rollback to {checkpoint.id} redeploys revision {checkpoint.revision[:12]} "
            "without them"
        )
    payload: dict[str, Any] = {
        "stack": stack,
        "checkpoint": _checkpoint_json(checkpoint, store),
        "summary": outcome.result.summary,
        "outputs": outcome.result.outputs,
        "message": outcome.result.message,
        "warnings": outcome.warnings,
        "rollbackCommand": None,
    }
    for warning in outcome.warnings:
        output.line(f"warning: {warning}")
    if outcome.ok:
        output.line(
            f"stack {stack} updated ({format_summary(outcome.result.summary)}); checkpoint "
            f"{checkpoint.id} marked good in {store.location}"
        )
        return payload, 0

    output.error(f"update of stack {stack} failed: {outcome.result.message}")
    output.note(
        f"checkpoint {checkpoint.id} (the state before this update) is marked failed in "
        f"{store.location}"
    )
    target = outcome.rollback_target
    if target is None:
        output.note(
            f"stack {stack} has no earlier good checkpoint to roll back to; fix the cause and "
            f"rerun `popstack up {stack}`, or tear the stack down"
        )
    else:
        command = rollback_shell_command(stack, target.id, store_option)
        payload["rollbackCommand"] = command
        output.note(f"roll back to the last good deployment with: {command}")
    payload["error"] = f"update of stack {stack} failed: {outcome.result.message}"
    return payload, EXIT_FAILED


def up_command(
    stack: Annotated[str, typer.Argument(help="Stack name (stacks/Pulumi.<stack>.yaml).")],
    yes: YesOption = False,
    as_json: JsonOption = False,
    checkpoint_store: StoreOption = None,
    emergency: EmergencyOption = False,
    reason: ReasonOption = None,
) -> None:
    """Plan and policy-check offline, save a checkpoint, then deploy with `pulumi up`.

    Refused while doors are open (the change freeze) unless --emergency --reason.
    """
    output = _Output(as_json)

    def action() -> tuple[dict[str, Any], int]:
        check_stack_name(stack)
        declared = _emergency(emergency, reason)
        project_dir = find_project_dir(Path.cwd())
        store = open_store(checkpoint_store, project_dir)
        outcome = run_up(
            stack,
            project_dir=project_dir,
            engine=_open_engine(project_dir),
            store=store,
            approval=_approval(yes),
            on_output=output.progress,
            emergency=declared,
            now=_now,
        )
        schema = _sync_flag_schema(stack, outcome.deploy, outcome.plan.stack_file.spec)
        _warn_missed_pre_sync(outcome.deploy, outcome.plan.stack_file.spec, _now())
        payload, code = _report_deploy(
            stack, outcome.deploy, store, checkpoint_store, output, declared
        )
        payload["flagSchema"] = schema
        payload["plan"] = {
            "resourceCount": outcome.plan.resource_count,
            "policies": [result.to_json() for result in outcome.plan.policy_results],
        }
        return payload, code

    _run("up", output, action)


def rollback_command(
    stack: Annotated[str, typer.Argument(help="Stack name.")],
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="CHECKPOINT", help="Checkpoint id (default: newest good)."),
    ] = None,
    import_state: Annotated[
        bool,
        typer.Option(
            "--import-state",
            help="Import the state recorded after that checkpoint's update instead of "
            "redeploying; changes no cloud resource.",
        ),
    ] = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
    checkpoint_store: StoreOption = None,
    emergency: EmergencyOption = False,
    reason: ReasonOption = None,
) -> None:
    """Return a stack to a good checkpoint by redeploying its revision and config.

    A redeploy is refused while doors are open unless --emergency --reason.
    """
    output = _Output(as_json)

    def action() -> tuple[dict[str, Any], int]:
        check_stack_name(stack)
        declared = _emergency(emergency, reason)
        if to is not None:
            check_checkpoint_id(to)
        project_dir = find_project_dir(Path.cwd())
        store = open_store(checkpoint_store, project_dir)

        outcome = run_rollback(
            stack,
            project_dir=project_dir,
            store=store,
            open_engine=_open_engine,
            approval=_approval(yes),
            to=to,
            import_state=import_state,
            on_output=output.progress,
            emergency=declared,
            now=_now,
        )

        target = outcome.target
        base = {
            "stack": stack,
            "mode": "import-state" if import_state else "redeploy",
            "target": {
                "id": target.id,
                "revision": target.revision,
                "createdAt": target.created_at.isoformat(),
            },
        }
        if outcome.backup is not None:
            output.line(
                f"stack {stack}: imported the state recorded after checkpoint {target.id}; "
                f"the state before the import is saved in checkpoint {outcome.backup.id}"
            )
            output.line(
                f"stacks/Pulumi.{stack}.yaml is unchanged; its config may differ from "
                f"checkpoint {target.id}"
            )
            return {**base, "checkpoint": _checkpoint_json(outcome.backup, store)}, 0

        assert outcome.deploy is not None
        payload, code = _report_deploy(
            stack, outcome.deploy, store, checkpoint_store, output, declared
        )
        if code == 0:
            output.line(
                f"stack {stack} runs revision {target.revision[:12]} with the config of "
                f"checkpoint {target.id}; stacks/Pulumi.{stack}.yaml in this checkout is "
                "unchanged, so revert it before the next `popstack up`"
            )
        return {**base, **payload}, code

    _run("rollback", output, action)


def promote_command(
    source: Annotated[str, typer.Argument(metavar="FROM", help="Source stack (committed spec).")],
    target: Annotated[str, typer.Argument(metavar="TO", help="Target stack to update.")],
    event: Annotated[
        str | None,
        typer.Option("--event", help="Expected event id of the source stack; reject others."),
    ] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
    checkpoint_store: StoreOption = None,
    emergency: EmergencyOption = False,
    reason: ReasonOption = None,
) -> None:
    """Copy the committed event spec of FROM into TO's stack file and deploy TO.

    Per-environment keys (aws:*, kubernetes:*, popstack:id, cluster, alerts, kubeconfig,
    emulator, teardownVerifiedExport) keep TO's values; secure values are never copied
    in plain text. Refused while TO's doors are open unless --emergency --reason.
    """
    output = _Output(as_json)

    def action() -> tuple[dict[str, Any], int]:
        check_stack_name(source)
        check_stack_name(target)
        declared = _emergency(emergency, reason)
        project_dir = find_project_dir(Path.cwd())
        store = open_store(checkpoint_store, project_dir)
        promotion = prepare_promotion(
            source, target, project_dir=project_dir, store=store, event=event
        )
        _print_promotion(promotion, output)
        # Checked again by apply_promotion; here it refuses before asking.
        check_promotion_freeze(promotion, project_dir, store, declared, _now)

        approval = _approval(yes)
        approval.require(
            f"Write stacks/Pulumi.{target}.yaml ({len(promotion.changes)} key(s) changed) "
            f"and update stack {target}?"
        )
        outcome = apply_promotion(
            promotion,
            project_dir=project_dir,
            engine=_open_engine(project_dir),
            store=store,
            on_output=output.progress,
            emergency=declared,
            now=_now,
        )

        assert promotion.plan is not None
        schema = _sync_flag_schema(target, outcome, promotion.plan.stack_file.spec)
        payload, code = _report_deploy(target, outcome, store, checkpoint_store, output, declared)
        payload["flagSchema"] = schema
        payload["warnings"] = [*promotion.warnings, *payload["warnings"]]
        assert promotion.plan is not None
        return {
            **promotion.to_json(),
            **payload,
            "plan": {
                "resourceCount": promotion.plan.resource_count,
                "policies": [result.to_json() for result in promotion.plan.policy_results],
            },
        }, code

    _run("promote", output, action)


def _print_promotion(promotion: Promotion, output: _Output) -> None:
    output.line(f"promote {promotion.source_stack} -> {promotion.target_stack}")
    if promotion.changes:
        output.line("spec keys:")
        for change in promotion.changes:
            output.line(f"  {change.change:8} {change.key}")
    else:
        output.line("spec keys: no changes")
    if promotion.diff:
        output.line(promotion.diff.rstrip("\n"))
    output.line("flags:" if promotion.flags else "flags: no changes")
    for flag in promotion.flags:
        output.line(f"  {flag['flag']}: {flag['before']} -> {flag['after']}")
    secrets = promotion.secrets
    labels = {
        "specSecretsAdded": "secrets added",
        "specSecretsRemoved": "secrets removed",
        "secureKeysKept": "secure keys kept from the target",
        "secureKeysCopiedEncrypted": "secure keys copied (still encrypted)",
    }
    for key, label in labels.items():
        if secrets.get(key):
            output.line(f"{label}: {', '.join(secrets[key])}")
    for warning in promotion.warnings:
        output.line(f"warning: {warning}")


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise LifecycleError(
            f"--at {text!r} is not an ISO 8601 time; write it as 2027-03-31T18:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        raise LifecycleError(f"--at {text!r} has no UTC offset; add one, such as +00:00")
    return moment.astimezone(UTC)


_BUCKET_TITLES = {
    EXPIRED: "expired",
    WITHIN_2H: "expiring within 2 h",
    WITHIN_24H: "expiring within 24 h",
    LATER: "later",
}


def expire_command(
    teardown: Annotated[
        bool, typer.Option("--teardown", help="Run teardown on every expired, deployed stack.")
    ] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Evaluate deadlines at this ISO 8601 time."),
    ] = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """List stacks past their expires-at (close + grace) and those due within 24 h and 2 h."""
    output = _Output(as_json)

    def action() -> tuple[dict[str, Any], int]:
        now = _parse_at(at)
        project_dir = find_project_dir(Path.cwd())
        deadlines, invalid = list_deadlines(project_dir, now)
        for bucket in BUCKET_ORDER:
            members = [deadline for deadline in deadlines if deadline.bucket == bucket]
            if bucket == LATER:
                output.line(f"{_BUCKET_TITLES[bucket]}: {len(members)} stack(s)")
                continue
            output.line(f"{_BUCKET_TITLES[bucket]} ({len(members)}):")
            for deadline in members:
                hours = deadline.remaining.total_seconds() / 3600
                when = f"{-hours:.1f} h ago" if hours <= 0 else f"in {hours:.1f} h"
                output.line(
                    f"  {deadline.stack}  event {deadline.event_id}  expires "
                    f"{deadline.expires_at:%Y-%m-%dT%H:%M:%SZ} ({when})"
                )
        for item in invalid:
            output.error(f"stack {item.stack} skipped, its stack file is invalid:\n{item.message}")

        records = []
        if teardown:
            records = teardown_expired(
                deadlines, engine=_open_engine(project_dir), approval=_approval(yes)
            )
            for record in records:
                state = "ok" if record.ok else "FAILED"
                output.line(f"teardown {record.stack}: {state}: {record.message}")
        payload = {
            "now": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stacks": [deadline.to_json() for deadline in deadlines],
            "invalid": [{"stack": item.stack, "error": item.message} for item in invalid],
            "teardown": [record.to_json() for record in records],
        }
        if any(not record.ok for record in records):
            failed = ", ".join(record.stack for record in records if not record.ok)
            output.error(f"teardown failed for {failed}")
            return {**payload, "error": f"teardown failed for {failed}"}, EXIT_FAILED
        if invalid:
            names = ", ".join(item.stack for item in invalid)
            return {**payload, "error": f"invalid stack file(s): {names}"}, EXIT_BAD_INPUT
        return payload, 0

    _run("expire", output, action)


def checkpoints_command(
    stack: Annotated[str, typer.Argument(help="Stack name.")],
    as_json: JsonOption = False,
    checkpoint_store: StoreOption = None,
) -> None:
    """List a stack's checkpoints, oldest first, with status and program revision."""
    output = _Output(as_json)

    def action() -> tuple[dict[str, Any], int]:
        check_stack_name(stack)
        project_dir = find_project_dir(Path.cwd())
        store = open_store(checkpoint_store, project_dir)
        listed = [store.load(stack, checkpoint_id) for checkpoint_id in store.list_ids(stack)]
        if not listed:
            output.line(f"stack {stack} has no checkpoints in {store.location}")
        for checkpoint in listed:
            output.line(
                f"{checkpoint.id}  {checkpoint.status:8}  {checkpoint.operation:12}  "
                f"revision {checkpoint.revision[:12]}{' (dirty)' if checkpoint.dirty else ''}"
            )
        return {
            "stack": stack,
            "location": store.location,
            "checkpoints": [_checkpoint_json(checkpoint, store) for checkpoint in listed],
        }, 0

    _run("checkpoints", output, action)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("up")(up_command)
    app.command("rollback")(rollback_command)
    app.command("promote")(promote_command)
    app.command("expire")(expire_command)
    app.command("checkpoints")(checkpoints_command)
