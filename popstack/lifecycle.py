"""Operator lifecycle: checkpointed update, rollback, promotion between stacks, expiry.

Every function here talks to Pulumi only through `popstack.engine.Engine` and to the
checkpoint store only through `popstack.checkpoints.CheckpointStore`, so tests run
them against `RecordingEngine` and a temporary git repository. Printing, prompts and
exit codes belong to `popstack.lifecycle_commands`.
"""

from __future__ import annotations

import copy
import difflib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from components.spec import Flags, SpecError, Window, load_stack_file
from popstack.checkpoints import (
    FAILED,
    GOOD,
    RECORDED,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    latest_good,
    new_checkpoint_id,
)
from popstack.engine import (
    PROJECT_FILE,
    SECRET_MASK,
    Engine,
    EngineError,
    OnOutput,
    OperationResult,
    dump_stack_document,
    is_secure,
    load_stack_document,
    plain_value,
    round_trip_yaml,
    stack_config_dir,
    stack_file_path,
    write_stack_document,
)
from popstack.freeze import Emergency, FreezeError, check_freeze, checkpoint_window
from popstack.plan import Plan, build_plan
from popstack.scaffold import placeholder_keys

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_POLICY = 3
EXIT_REFUSED = 4

# Top-level keys of a stack file that record how its secure values are encrypted.
STACK_SETTINGS_KEYS = ("secretsprovider", "encryptedkey", "encryptionsalt")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class LifecycleError(Exception):
    """A lifecycle command stopped; `exit_code` is the CLI's exit status for it."""

    def __init__(
        self, message: str, exit_code: int = EXIT_BAD_INPUT, details: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details or {}


@dataclass
class Approval:
    """The consent for destructive steps: `--yes` for all of them, else `ask(question)`."""

    yes: bool
    ask: Callable[[str], bool]

    def require(self, question: str) -> None:
        """Return if the step is approved; raise LifecycleError if the operator declines."""
        if self.yes:
            return
        if not self.ask(question):
            raise LifecycleError("cancelled; nothing was changed", EXIT_FAILED)


# --- project and git ---------------------------------------------------------------------


def find_project_dir(start: Path) -> Path:
    """Return the nearest directory at or above `start` that contains Pulumi.yaml."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    raise LifecycleError(
        f"no {PROJECT_FILE} in {start} or any parent directory; run popstack inside the "
        "project repository"
    )


def git(args: list[str], cwd: Path) -> str:
    """Run git and return its stdout; raise LifecycleError with git's message on failure."""
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise LifecycleError("git is not on PATH; install git", EXIT_FAILED) from None
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        raise LifecycleError(f"git {' '.join(args)} failed in {cwd}: {message}")
    return result.stdout


@dataclass(frozen=True)
class ProgramRevision:
    """The program's git revision, and the changed paths outside the stack files."""

    revision: str
    dirty: bool
    dirty_paths: tuple[str, ...] = ()


def program_revision(project_dir: Path) -> ProgramRevision:
    """Return HEAD and whether the tree differs from it.

    Stack files do not count as changes, because the checkpoint stores their config.
    """
    try:
        revision = git(["rev-parse", "HEAD"], project_dir).strip()
    except LifecycleError as error:
        raise LifecycleError(
            f"{error}; a checkpoint records the program's git revision, so run popstack from a "
            "git checkout with at least one commit"
        ) from None
    stack_dir = os.path.relpath(stack_config_dir(project_dir), project_dir)
    pattern = "Pulumi.*.yaml" if stack_dir == "." else f"{stack_dir}/Pulumi.*.yaml"
    status = git(
        [
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=normal",
            "--",
            ".",
            f":(exclude,glob){pattern}",
        ],
        project_dir,
    )
    paths: list[str] = []
    entries = iter(status.split("\0"))
    for entry in entries:
        if not entry:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            next(entries, None)
    return ProgramRevision(revision, bool(paths), tuple(sorted(paths)))


def policy_pack_dir(project_dir: Path) -> str | None:
    """Return the policy pack directory for `pulumi preview --policy-pack`, if it exists."""
    pack = project_dir / "policies"
    return str(pack) if (pack / "PulumiPolicy.yaml").is_file() else None


# --- the offline plan gate ---------------------------------------------------------------


def plan_stack(path: Path, shown_path: Path | None = None) -> Plan:
    """Run the offline plan and policies; raise LifecycleError on a bad spec (exit 2)
    or a mandatory policy violation (exit 3). `shown_path` replaces `path` in messages."""
    try:
        plan = build_plan(path)
    except SpecError as error:
        message = str(error)
        if shown_path is not None:
            message = message.replace(str(path), str(shown_path))
        raise LifecycleError(message, EXIT_BAD_INPUT) from None
    placeholders = placeholder_keys(plan.stack_file)
    if placeholders:
        raise LifecycleError(
            f"{shown_path or path}: still has `popstack new` placeholder values at "
            f"{', '.join(placeholders)}; replace them before deploying",
            EXIT_BAD_INPUT,
        )
    failures = plan.mandatory_failures
    if failures:
        lines = [f"{result.rule}: {'; '.join(result.messages)}" for result in failures]
        raise LifecycleError(
            f"{shown_path or path}: {len(failures)} mandatory policy violation(s); "
            "fix them before deploying:\n  " + "\n  ".join(lines),
            EXIT_POLICY,
            details={"policies": [result.to_json() for result in failures]},
        )
    return plan


# --- round-trip YAML edits --------------------------------------------------------------

# The slot of ruamel's comment list that keeps the comment after an entry: slot 2 for a
# mapping key, slot 0 for a sequence item. Full-line comments before the next key of a
# stack file are stored there, on the deepest last entry of the value before them.
_MAPPING_SLOT = 2
_SEQUENCE_SLOT = 0


def _last_entry(node: Any) -> tuple[Any, Any, int] | None:
    """Return (container, key, slot) of the deepest last entry of a mapping or sequence."""
    if isinstance(node, CommentedMap) and len(node):
        key = list(node)[-1]
        return _last_entry(node[key]) or (node, key, _MAPPING_SLOT)
    if isinstance(node, CommentedSeq) and len(node):
        index = len(node) - 1
        return _last_entry(node[index]) or (node, index, _SEQUENCE_SLOT)
    return None


def _pop_trailing_comment(node: Any) -> Any:
    """Remove and return the comment that follows a value (None if it has none)."""
    entry = _last_entry(node)
    if entry is None:
        return None
    container, key, slot = entry
    comments = container.ca.items.get(key)
    if not comments or comments[slot] is None:
        return None
    token = comments[slot]
    comments[slot] = None
    return token


def _attach_trailing_comment(node: Any, token: Any) -> bool:
    entry = _last_entry(node)
    if entry is None:
        return False
    container, key, slot = entry
    comments = container.ca.items.setdefault(key, [None, None, None, None])
    comments[slot] = token
    return True


def replace_config_value(config: CommentedMap, key: str, value: Any) -> None:
    """Set `config[key]` to a copy of `value`, keeping the comment lines that follow the
    old value in the file (they describe the next key) and dropping those that came
    with `value` from another file."""
    old = config.get(key)
    new = copy.deepcopy(value)
    _pop_trailing_comment(new)
    token = _pop_trailing_comment(old) if key in config else None
    config[key] = new
    if token is not None and not _attach_trailing_comment(new, token):
        comments = config.ca.items.setdefault(key, [None, None, None, None])
        if comments[_MAPPING_SLOT] is None:
            comments[_MAPPING_SLOT] = token


# --- the checkpointed update -------------------------------------------------------------


def snapshot_config(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Return a stack file's config (secure values still encrypted) and its
    encryption settings, as plain JSON values."""
    try:
        document = load_stack_document(path)
    except EngineError as error:
        raise LifecycleError(str(error)) from None
    config = plain_value(document.get("config") or {})
    if not isinstance(config, dict):
        raise LifecycleError(f"{path}: `config:` is not a mapping")
    settings = {key: str(document[key]) for key in STACK_SETTINGS_KEYS if key in document}
    return config, settings


@dataclass
class DeployOutcome:
    """One checkpointed update: its checkpoint, the engine's result, and when it failed,
    the newest other good checkpoint to roll back to (None if there is none)."""

    checkpoint: Checkpoint
    result: OperationResult
    rollback_target: Checkpoint | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result.ok


def _new_checkpoint(
    stack: str,
    operation: str,
    revision: Any,
    config: Any,
    settings: Any,
    state: Any,
    created_at: datetime,
    **fields: Any,
) -> Checkpoint:
    """Build a checkpoint of the stack's state and config at the program revision."""
    return Checkpoint(
        id=new_checkpoint_id(created_at, revision.revision),
        stack=stack,
        operation=operation,
        created_at=created_at,
        revision=revision.revision,
        dirty=revision.dirty,
        dirty_paths=list(revision.dirty_paths),
        config=config,
        stack_settings=settings,
        state=state,
        **fields,
    )


def deploy(
    stack: str,
    *,
    project_dir: Path,
    engine: Engine,
    store: CheckpointStore,
    operation: str,
    on_output: OnOutput | None = None,
    now: Clock = utc_now,
    revision: ProgramRevision | None = None,
    rollback_of: str | None = None,
    emergency: Emergency | None = None,
) -> DeployOutcome:
    """Save a checkpoint, run `up`, and mark the checkpoint good or failed.

    Nothing is deployed unless the checkpoint was saved first.
    """
    revision = revision or program_revision(project_dir)
    config, settings = snapshot_config(stack_file_path(project_dir, stack))
    try:
        state = engine.export_state(stack) if engine.exists(stack) else None
    except EngineError as error:
        raise LifecycleError(
            f"could not export the state of stack {stack}, so no checkpoint was saved and "
            f"nothing was changed: {error}",
            EXIT_FAILED,
            details={"updated": False},
        ) from None
    checkpoint = _new_checkpoint(
        stack,
        operation,
        revision,
        config,
        settings,
        state,
        now(),
        rollback_of=rollback_of,
        emergency=None if emergency is None else emergency.to_json(),
    )
    try:
        store.save(checkpoint)
    except CheckpointError as error:
        raise LifecycleError(
            f"{error}; nothing was deployed", EXIT_FAILED, details={"updated": False}
        ) from None

    try:
        result = engine.up(stack, on_output=on_output)
    except EngineError as error:
        result = OperationResult(False, "update", {}, str(error), {})
    checkpoint.finished_at = now()
    checkpoint.summary = dict(result.summary)
    checkpoint.message = result.message
    outcome = DeployOutcome(checkpoint, result)
    if result.ok:
        checkpoint.status = GOOD
        checkpoint.outputs = dict(result.outputs)
        try:
            checkpoint.deployed_state = engine.export_state(stack)
        except EngineError as error:
            outcome.warnings.append(
                f"the state after the update could not be exported ({error}), so "
                f"`--import-state` cannot use checkpoint {checkpoint.id}"
            )
    else:
        checkpoint.status = FAILED
    try:
        store.save(checkpoint)
    except CheckpointError as error:
        verdict = "succeeded" if result.ok else f"failed ({result.message})"
        raise LifecycleError(
            f"the update of stack {stack} {verdict}, but checkpoint {checkpoint.id} could not "
            f"be marked {checkpoint.status}: {error}",
            EXIT_FAILED,
        ) from None
    if not result.ok:
        outcome.rollback_target = latest_good(store, stack, exclude=(checkpoint.id,))
    return outcome


def rollback_shell_command(stack: str, checkpoint_id: str, store_option: str | None) -> str:
    """Return the shell command that rolls `stack` back to a checkpoint."""
    import shlex

    command = f"popstack rollback {shlex.quote(stack)} --to {checkpoint_id}"
    if store_option is not None:
        command += f" --checkpoint-store {shlex.quote(store_option)}"
    return command


@dataclass
class UpOutcome:
    plan: Plan
    deploy: DeployOutcome
    preview: OperationResult | None = None


def format_summary(summary: Mapping[str, int]) -> str:
    """Format resource step counts as "1 create, 2 update, 5 unchanged"."""
    parts = [
        f"{count} {'unchanged' if operation == 'same' else operation}"
        for operation, count in sorted(summary.items(), key=lambda item: item[0] == "same")
        if count
    ]
    return ", ".join(parts) or "no changes"


def run_up(
    stack: str,
    *,
    project_dir: Path,
    engine: Engine,
    store: CheckpointStore,
    approval: Approval,
    on_output: OnOutput | None = None,
    now: Clock = utc_now,
    emergency: Emergency | None = None,
) -> UpOutcome:
    """Check the change freeze, plan and policy-check the stack file offline, ask, then
    run a checkpointed update."""
    path = stack_file_path(project_dir, stack)
    emergency = enforce_freeze(stack, [path], store, now(), emergency)
    plan = plan_stack(path, shown_path=path.relative_to(project_dir))
    preview = None
    if not approval.yes:
        try:
            exists = engine.exists(stack)
            if exists:
                preview = engine.preview(stack, policy_pack=policy_pack_dir(project_dir))
        except EngineError as error:
            raise LifecycleError(f"preview of stack {stack} failed: {error}", EXIT_FAILED) from None
        if preview is not None and not preview.ok:
            raise LifecycleError(
                f"preview of stack {stack} failed, nothing was changed: {preview.message}",
                EXIT_FAILED,
            )
        if preview is not None:
            question = f"Update stack {stack} ({format_summary(preview.summary)})?"
        else:
            question = f"Create stack {stack} with {plan.resource_count} resources?"
        approval.require(question)
    outcome = deploy(
        stack,
        project_dir=project_dir,
        engine=engine,
        store=store,
        operation="up",
        on_output=on_output,
        now=now,
        emergency=emergency,
    )
    return UpOutcome(plan=plan, deploy=outcome, preview=preview)


def enforce_freeze(
    stack: str,
    paths: list[Path],
    store: CheckpointStore,
    now: datetime,
    emergency: Emergency | None,
    extra: list[tuple[str, Window]] | None = None,
) -> Emergency | None:
    """Raise LifecycleError (exit 4) if doors are open and this is no declared emergency.

    The windows come from the given stack files and from the stack's good
    checkpoints (deployed_checkpoints). Returns the emergency if it broke a freeze
    in force, else None.
    """
    try:
        windows = list(extra or [])
        for path in paths:
            try:
                windows.append((path.name, load_stack_file(path).spec.window))
            except SpecError:
                continue  # The plan reports the file's problems; the checkpoints still count.
        for checkpoint in deployed_checkpoints(store, stack):
            source = f"deployed with checkpoint {checkpoint.id}"
            window = checkpoint_window(checkpoint.config, f"checkpoint {checkpoint.id}")
            if window is not None:
                windows.append((source, window))
        return check_freeze(stack, windows, now, emergency)
    except FreezeError as error:
        raise LifecycleError(str(error), EXIT_REFUSED) from None
    except CheckpointError as error:
        raise LifecycleError(
            f"{error}; the change freeze cannot be checked without it", EXIT_FAILED
        ) from None


def _checkpoint_windows(checkpoint: Checkpoint) -> list[tuple[str, Window]]:
    try:
        window = checkpoint_window(checkpoint.config, f"checkpoint {checkpoint.id}")
    except FreezeError as error:
        raise LifecycleError(str(error), EXIT_REFUSED) from None
    return [] if window is None else [(f"checkpoint {checkpoint.id}", window)]


def deployed_checkpoints(store: CheckpointStore, stack: str) -> list[Checkpoint]:
    """Return the good checkpoints whose windows the freeze must honour, newest first.

    That is the newest good checkpoint and, when it was an emergency update, each good
    one before it back to the last update made outside an emergency. So an emergency
    that moved the window does not lift the freeze for the updates after it.
    """
    found: list[Checkpoint] = []
    for checkpoint_id in reversed(store.list_ids(stack)):
        checkpoint = store.load(stack, checkpoint_id)
        if checkpoint.status != GOOD:
            continue
        found.append(checkpoint)
        if checkpoint.emergency is None:
            break
    return found


# --- rollback ----------------------------------------------------------------------------


@contextmanager
def program_worktree(project_dir: Path, revision: str) -> Iterator[Path]:
    """Check out `revision` into a temporary git worktree and yield its project directory.

    The project's virtualenv (Pulumi.yaml `runtime.options.virtualenv`) is untracked, so
    it is linked into the worktree for the Pulumi CLI to find. The worktree is removed
    on exit.
    """
    top = Path(git(["rev-parse", "--show-toplevel"], project_dir).strip())
    relative = project_dir.resolve().relative_to(top.resolve())
    try:
        git(["cat-file", "-e", f"{revision}^{{commit}}"], top)
    except LifecycleError:
        raise LifecycleError(
            f"revision {revision} is not in this repository; fetch it first "
            f"(git fetch origin {revision}) and rerun the rollback"
        ) from None
    scratch = Path(tempfile.mkdtemp(prefix="popstack-rollback-"))
    tree = scratch / "tree"
    git(["worktree", "add", "--detach", str(tree), revision], top)
    try:
        tree_project = tree / relative
        _link_virtualenv(project_dir, tree_project)
        yield tree_project
    finally:
        try:
            git(["worktree", "remove", "--force", str(tree)], top)
        except LifecycleError:
            git(["worktree", "prune"], top)
        shutil.rmtree(scratch, ignore_errors=True)


def _link_virtualenv(project_dir: Path, tree_project: Path) -> None:
    try:
        project = round_trip_yaml().load((project_dir / PROJECT_FILE).read_text(encoding="utf-8"))
    except (OSError, YAMLError):
        return
    runtime = project.get("runtime") if isinstance(project, Mapping) else None
    options = runtime.get("options") if isinstance(runtime, Mapping) else None
    virtualenv = options.get("virtualenv") if isinstance(options, Mapping) else None
    if not isinstance(virtualenv, str) or os.path.isabs(virtualenv):
        return
    source = project_dir / virtualenv
    target = tree_project / virtualenv
    if source.exists() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source.resolve(), target_is_directory=True)


def restore_config(path: Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint's config and encryption settings into a stack file.

    Keys and comments of the existing file are kept where the values agree, so the
    file differs from the checkpoint's revision only where the config did.
    """
    try:
        document = load_stack_document(path)
    except EngineError as error:
        raise LifecycleError(str(error)) from None
    for key in STACK_SETTINGS_KEYS:
        if key in checkpoint.stack_settings:
            document[key] = checkpoint.stack_settings[key]
        elif key in document:
            del document[key]
    config = document.get("config")
    if not isinstance(config, CommentedMap):
        config = CommentedMap()
        document["config"] = config
    for key in list(config):
        if key not in checkpoint.config:
            del config[key]
    for key, value in checkpoint.config.items():
        if key not in config or plain_value(config[key]) != value:
            replace_config_value(config, key, value)
    write_stack_document(path, document)


@dataclass
class RollbackOutcome:
    target: Checkpoint
    deploy: DeployOutcome | None = None
    backup: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return self.deploy.ok if self.deploy is not None else self.backup is not None


def rollback_target(store: CheckpointStore, stack: str, to: str | None) -> Checkpoint:
    """Return the checkpoint to roll back to: `to`, or the newest good one."""
    if to is None:
        target = latest_good(store, stack)
        if target is None:
            raise LifecycleError(
                f"no good checkpoint of stack {stack} in {store.location}; a stack gets one "
                f"when `popstack up {stack}` succeeds"
            )
        return target
    target = store.load(stack, to)
    if target.status != GOOD:
        good = [
            checkpoint_id
            for checkpoint_id in store.list_ids(stack)
            if store.load(stack, checkpoint_id).status == GOOD
        ]
        choices = ", ".join(good[-5:]) if good else "none"
        raise LifecycleError(
            f"checkpoint {to} is {target.status}, not good, so its revision and config never "
            f"deployed successfully; choose a good one (newest: {choices})"
        )
    return target


def run_rollback(
    stack: str,
    *,
    project_dir: Path,
    store: CheckpointStore,
    open_engine: Callable[[Path], Engine],
    approval: Approval,
    to: str | None = None,
    import_state: bool = False,
    on_output: OnOutput | None = None,
    now: Clock = utc_now,
    emergency: Emergency | None = None,
) -> RollbackOutcome:
    """Return the stack to a good checkpoint.

    By default this redeploys the checkpoint's program revision from a temporary git
    worktree with the checkpoint's config, so resources change through the normal
    update path. The live flag values stay as operators set them (popstack.flags).
    `import_state` instead replaces the backend's state with the state recorded after
    that checkpoint's update, and changes no cloud resource, so the change freeze does
    not hold it back.

    The offline plan does not run again: it would run this checkout's components rather
    than the checkpoint revision's, and that revision and config deployed successfully.
    """
    target = rollback_target(store, stack, to)
    if import_state:
        return _import_checkpoint_state(
            stack,
            target,
            project_dir=project_dir,
            store=store,
            engine=open_engine(project_dir),
            approval=approval,
            now=now,
        )

    emergency = enforce_freeze(
        stack,
        [stack_file_path(project_dir, stack)],
        store,
        now(),
        emergency,
        extra=_checkpoint_windows(target),
    )
    approval.require(
        f"Redeploy stack {stack} from checkpoint {target.id} (revision {target.revision[:12]}, "
        f"deployed {target.created_at:%Y-%m-%d %H:%M} UTC) with that checkpoint's config?"
    )
    with program_worktree(project_dir, target.revision) as tree:
        revision = ProgramRevision(target.revision, dirty=False)
        restore_config(stack_file_path(tree, stack), target)
        outcome = deploy(
            stack,
            project_dir=tree,
            engine=open_engine(tree),
            store=store,
            operation="rollback",
            on_output=on_output,
            now=now,
            revision=revision,
            rollback_of=target.id,
            emergency=emergency,
        )
    return RollbackOutcome(target=target, deploy=outcome)


def _import_checkpoint_state(
    stack: str,
    target: Checkpoint,
    *,
    project_dir: Path,
    store: CheckpointStore,
    engine: Engine,
    approval: Approval,
    now: Clock,
) -> RollbackOutcome:
    if target.deployed_state is None:
        raise LifecycleError(
            f"checkpoint {target.id} has no state recorded after its update, so there is "
            "nothing to import; roll back without --import-state"
        )

    approval.require(
        f"Replace the backend state of stack {stack} with the state recorded after checkpoint "
        f"{target.id}? No cloud resource changes: resources created since then are forgotten "
        "by Pulumi and must be deleted by hand."
    )

    revision = program_revision(project_dir)
    config, settings = snapshot_config(stack_file_path(project_dir, stack))
    try:
        current = engine.export_state(stack) if engine.exists(stack) else None
    except EngineError as error:
        raise LifecycleError(f"could not export the current state: {error}", EXIT_FAILED) from None
    backup = _new_checkpoint(
        stack,
        "import-state",
        revision,
        config,
        settings,
        current,
        now(),
        status=RECORDED,
        rollback_of=target.id,
        message=f"state before importing the state of checkpoint {target.id}",
    )
    store.save(backup)

    try:
        engine.import_state(stack, target.deployed_state)
    except EngineError as error:
        raise LifecycleError(
            f"state import failed: {error}; the state before it is in checkpoint {backup.id}",
            EXIT_FAILED,
        ) from None
    backup.finished_at = now()
    store.save(backup)
    return RollbackOutcome(target=target, backup=backup)


# --- promote -----------------------------------------------------------------------------

# Keys of the popstack namespace that stay as they are in the target stack file, because
# they describe the environment rather than the event:
# - id: every physical name derives from it, so two stacks in one account and region
#   need different ids, and changing a deployed stack's id replaces every resource.
# - cluster: the Kubernetes cluster, its OIDC provider, VPC and subnets of that account.
# - alerts: who is paged differs (a staging channel, the production on-call).
# - escalation: likewise the people on-site staff call; a staging rehearsal has its own.
# - kubeconfig: the secret credentials of that cluster.
# - emulator: only a stack aimed at a local emulator sets it.
# - teardownVerifiedExport: written by teardown of that stack once its export is verified.
PER_ENVIRONMENT_KEYS = (
    "popstack:id",
    "popstack:cluster",
    "popstack:alerts",
    "popstack:escalation",
    "popstack:kubeconfig",
    "popstack:emulator",
    "popstack:teardownVerifiedExport",
)
# Every key outside the popstack namespace is per environment too: aws:* (region,
# endpoints, credentials, assumed role), kubernetes:*, pulumi:* and any other provider's
# settings describe where a stack deploys, not the event.
SPEC_NAMESPACE = "popstack:"


def is_per_environment(key: str) -> bool:
    """Return whether promote keeps the target's value of a config key."""
    return not key.startswith(SPEC_NAMESPACE) or key in PER_ENVIRONMENT_KEYS


def committed_stack_document(project_dir: Path, stack: str) -> tuple[CommentedMap, str]:
    """Return the stack file as committed at HEAD (`git show HEAD:<path>`) and its text."""
    path = stack_file_path(project_dir, stack)
    relative = os.path.relpath(path, project_dir)
    try:
        text = git(["show", f"HEAD:./{relative}"], project_dir)
    except LifecycleError:
        raise LifecycleError(
            f"{relative} is not committed at HEAD; promote copies the committed spec of the "
            "source stack, so commit it first"
        ) from None
    try:
        document = round_trip_yaml().load(text)
    except YAMLError as error:
        raise LifecycleError(f"HEAD:{relative}: invalid YAML ({error})") from None
    if not isinstance(document, CommentedMap) or not isinstance(
        document.get("config"), CommentedMap
    ):
        raise LifecycleError(f"HEAD:{relative}: no `config:` mapping")
    return document, text


@dataclass
class KeyChange:
    key: str
    change: str  # added, changed or removed


@dataclass
class Promotion:
    """The target stack file after promotion, and what changes in it."""

    source_stack: str
    target_stack: str
    document: CommentedMap
    changes: list[KeyChange]
    diff: str
    flags: list[dict[str, Any]]
    secrets: dict[str, list[str]]
    blocked: list[str]
    plan: Plan | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.source_stack,
            "to": self.target_stack,
            "changes": [{"key": c.key, "change": c.change} for c in self.changes],
            "diff": self.diff,
            "flags": self.flags,
            "secrets": self.secrets,
            "warnings": self.warnings,
        }


def _masked_text(document: CommentedMap) -> str:
    """Dump a stack document with every ciphertext replaced by the mask."""
    masked = copy.deepcopy(document)

    def walk(node: Any) -> None:
        if isinstance(node, CommentedMap):
            for key in list(node):
                value = node[key]
                if isinstance(value, Mapping) and set(value) == {"secure"}:
                    value["secure"] = SECRET_MASK
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(masked)
    if "encryptedkey" in masked:
        masked["encryptedkey"] = SECRET_MASK
    return dump_stack_document(masked)


def _effective_flags(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the flags' initial values with the spec's defaults filled in, flattened."""
    raw = plain_value(config.get("popstack:flags") or {})
    try:
        flags = Flags.model_validate(raw, by_alias=True).model_dump(by_alias=True)
    except ValidationError:
        flags = dict(raw) if isinstance(raw, dict) else {}
    values = {key: value for key, value in flags.items() if key != "locations"}
    location_flags = flags.get("locations") or {}
    locations = plain_value(config.get("popstack:locations") or [])
    ids = [item.get("id") for item in locations if isinstance(item, dict)]
    for location_id in sorted({*ids, *location_flags}):
        values[f"locations.{location_id}"] = location_flags.get(location_id, True)
    return values


def _secret_names(config: Mapping[str, Any]) -> set[str]:
    secrets = plain_value(config.get("popstack:secrets") or [])
    return {item["name"] for item in secrets if isinstance(item, dict) and "name" in item}


def merge_promotion(
    source: CommentedMap, target: CommentedMap, source_stack: str, target_stack: str
) -> Promotion:
    """Copy the event spec of `source` into a copy of `target`.

    Per-environment keys keep the target's value. A secure value in the target is never
    replaced. A secure value of the source is copied, still encrypted, only when both
    files use the same secrets provider and salt. Otherwise its key goes to `blocked`.
    """
    source_config: CommentedMap = source["config"]
    merged = copy.deepcopy(target)
    if not isinstance(merged.get("config"), CommentedMap):
        merged["config"] = CommentedMap()
    config: CommentedMap = merged["config"]
    before = copy.deepcopy(config)
    same_encryption = all(source.get(key) == target.get(key) for key in STACK_SETTINGS_KEYS)

    changes: list[KeyChange] = []
    kept_secrets: list[str] = []
    copied_secrets: list[str] = []
    blocked: list[str] = []

    for key in list(config):
        if is_per_environment(key) or key in source_config:
            continue
        if is_secure(config[key]):
            kept_secrets.append(key)
            continue
        del config[key]
        changes.append(KeyChange(key, "removed"))

    previous: str | None = None
    for key, value in source_config.items():
        if is_per_environment(key):
            continue
        if key in config and is_secure(config[key]):
            kept_secrets.append(key)
            previous = key
            continue
        if is_secure(value):
            if not same_encryption:
                blocked.append(key)
                continue
            copied_secrets.append(key)
        if key in config:
            if plain_value(config[key]) != plain_value(value):
                replace_config_value(config, key, value)
                changes.append(KeyChange(key, "changed"))
        else:
            position = list(config).index(previous) + 1 if previous in config else len(config)
            added = copy.deepcopy(value)
            _pop_trailing_comment(added)
            config.insert(position, key, added)
            changes.append(KeyChange(key, "added"))
        previous = key

    flags_before = _effective_flags(before)
    flags_after = _effective_flags(config)
    flags = [
        {"flag": name, "before": flags_before.get(name), "after": flags_after.get(name)}
        for name in sorted({*flags_before, *flags_after})
        if flags_before.get(name) != flags_after.get(name)
    ]
    names_before, names_after = _secret_names(before), _secret_names(config)
    secrets = {
        "specSecretsAdded": sorted(names_after - names_before),
        "specSecretsRemoved": sorted(names_before - names_after),
        "secureKeysKept": sorted(set(kept_secrets)),
        "secureKeysCopiedEncrypted": sorted(copied_secrets),
        "secureKeysBlocked": sorted(blocked),
    }
    diff = "".join(
        difflib.unified_diff(
            _masked_text(target).splitlines(keepends=True),
            _masked_text(merged).splitlines(keepends=True),
            fromfile=f"Pulumi.{target_stack}.yaml (current)",
            tofile=f"Pulumi.{target_stack}.yaml (promoted from {source_stack})",
        )
    )
    return Promotion(
        source_stack=source_stack,
        target_stack=target_stack,
        document=merged,
        changes=changes,
        diff=diff,
        flags=flags,
        secrets=secrets,
        blocked=blocked,
    )


def prepare_promotion(
    source_stack: str,
    target_stack: str,
    *,
    project_dir: Path,
    store: CheckpointStore | None = None,
    event: str | None = None,
) -> Promotion:
    """Merge the committed spec of `source_stack` into `target_stack`'s stack file in
    memory, then plan and policy-check the result. Writes nothing."""
    if source_stack == target_stack:
        raise LifecycleError("promote needs two different stacks; name the source and target")
    source, source_text = committed_stack_document(project_dir, source_stack)
    target_path = stack_file_path(project_dir, target_stack)
    shown_target = target_path.relative_to(project_dir)
    if not target_path.is_file():
        raise LifecycleError(
            f"{shown_target} not found; create it with `popstack new` and set its "
            f"per-environment keys ({', '.join(PER_ENVIRONMENT_KEYS)}, aws:*), then rerun"
        )
    source_id = plain_value(source["config"].get("popstack:id"))
    if event is not None and source_id != event:
        raise LifecycleError(
            f"stack {source_stack} is event {source_id!r}, not {event!r}; check the event and "
            "stack names"
        )
    try:
        target = load_stack_document(target_path)
    except EngineError as error:
        raise LifecycleError(str(error)) from None

    promotion = merge_promotion(source, target, source_stack, target_stack)
    if promotion.blocked:
        keys = ", ".join(promotion.blocked)
        raise LifecycleError(
            f"{shown_target} has no value for the secure key(s) {keys}, and the two stack "
            "files use different secrets providers or encryption salts (secretsprovider, "
            "encryptedkey, encryptionsalt), so the encrypted values cannot be copied. Set "
            f"each one with `pulumi config set --secret --stack {target_stack} <key>`, or give "
            "both stacks the same secrets provider, then rerun promote",
            details={"secrets": promotion.secrets},
        )

    source_path = stack_file_path(project_dir, source_stack)
    if source_path.is_file() and source_path.read_text(encoding="utf-8") != source_text:
        promotion.warnings.append(
            f"{source_path.relative_to(project_dir)} has uncommitted changes; promote used "
            "the committed version"
        )
    if store is not None and latest_good(store, source_stack) is None:
        promotion.warnings.append(
            f"stack {source_stack} has no good checkpoint in {store.location}, so this spec "
            f"was never deployed there with `popstack up {source_stack}`"
        )

    with tempfile.TemporaryDirectory(prefix="popstack-promote-") as scratch:
        candidate = Path(scratch) / target_path.name
        write_stack_document(candidate, promotion.document)
        promotion.plan = plan_stack(candidate, shown_path=shown_target)
    return promotion


def check_promotion_freeze(
    promotion: Promotion,
    project_dir: Path,
    store: CheckpointStore,
    emergency: Emergency | None,
    now: Clock = utc_now,
) -> Emergency | None:
    """Apply the change freeze to a promotion, with the target's and the promoted window."""
    promoted = (
        [("the promoted spec", promotion.plan.stack_file.spec.window)]
        if promotion.plan is not None
        else []
    )
    target_path = stack_file_path(project_dir, promotion.target_stack)
    return enforce_freeze(
        promotion.target_stack, [target_path], store, now(), emergency, extra=promoted
    )


def apply_promotion(
    promotion: Promotion,
    *,
    project_dir: Path,
    engine: Engine,
    store: CheckpointStore,
    on_output: OnOutput | None = None,
    now: Clock = utc_now,
    emergency: Emergency | None = None,
) -> DeployOutcome:
    """Check the target's change freeze, write the promoted stack file and run a
    checkpointed update of the target stack."""
    emergency = check_promotion_freeze(promotion, project_dir, store, emergency, now)
    path = stack_file_path(project_dir, promotion.target_stack)
    original = path.read_bytes()
    write_stack_document(path, promotion.document)
    try:
        return deploy(
            promotion.target_stack,
            project_dir=project_dir,
            engine=engine,
            store=store,
            operation="promote",
            on_output=on_output,
            now=now,
            emergency=emergency,
        )
    except LifecycleError as error:
        if error.details.get("updated") is False:
            # No update ran, so the target's stack file goes back to what it was.
            path.write_bytes(original)
            raise LifecycleError(
                f"{error}; {path.relative_to(project_dir)} is restored",
                error.exit_code,
                error.details,
            ) from None
        raise


# --- expiry ------------------------------------------------------------------------------

EXPIRED = "expired"
WITHIN_2H = "within-2h"
WITHIN_24H = "within-24h"
LATER = "later"
BUCKET_ORDER = (EXPIRED, WITHIN_2H, WITHIN_24H, LATER)


def deadline_bucket(expires_at: datetime, now: datetime) -> str:
    """Sort a teardown deadline into expired, within 2 h, within 24 h, or later."""
    remaining = expires_at - now
    if remaining <= timedelta(0):
        return EXPIRED
    if remaining <= timedelta(hours=2):
        return WITHIN_2H
    if remaining <= timedelta(hours=24):
        return WITHIN_24H
    return LATER


@dataclass
class Deadline:
    stack: str
    event_id: str
    expires_at: datetime
    bucket: str
    remaining: timedelta

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "event": self.event_id,
            "expiresAt": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bucket": self.bucket,
            "hoursLeft": round(self.remaining.total_seconds() / 3600, 2),
        }


@dataclass
class InvalidStackFile:
    stack: str
    message: str


def list_deadlines(
    project_dir: Path, now: datetime
) -> tuple[list[Deadline], list[InvalidStackFile]]:
    """Read every stack file's expires-at (window close + grace hours) and bucket it.

    A stack file that does not validate is returned in the second list, so one bad file
    does not hide the deadlines of the others.
    """
    deadlines: list[Deadline] = []
    invalid: list[InvalidStackFile] = []
    for path in sorted(stack_config_dir(project_dir).glob("Pulumi.*.yaml")):
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        try:
            spec = load_stack_file(path).spec
        except SpecError as error:
            invalid.append(InvalidStackFile(stack, str(error)))
            continue
        expires_at = spec.expires_at
        deadlines.append(
            Deadline(stack, spec.id, expires_at, deadline_bucket(expires_at, now), expires_at - now)
        )
    deadlines.sort(key=lambda item: (item.expires_at, item.stack))
    return deadlines, invalid


def run_teardown(stack: str, engine: Engine, *, yes: bool, reason: str | None) -> Any:
    """Run teardown for one stack; the result has `.ok` and `.message`."""
    from teardown.steps import run_teardown as teardown_stack

    return teardown_stack(stack, engine, yes=yes, reason=reason)


@dataclass
class TeardownRecord:
    stack: str
    ok: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "ok": self.ok, "message": self.message}


def teardown_expired(
    deadlines: list[Deadline], *, engine: Engine, approval: Approval
) -> list[TeardownRecord]:
    """Tear down every expired stack that exists in the backend, one after another.

    A failing teardown is recorded and the next stack still runs. No force reason is
    passed, so every export and verification step of teardown runs.
    """
    expired = [deadline for deadline in deadlines if deadline.bucket == EXPIRED]
    if not expired:
        return []
    try:
        deployed = set(engine.stack_names())
    except EngineError as error:
        raise LifecycleError(f"could not list the deployed stacks: {error}", EXIT_FAILED) from None
    records: list[TeardownRecord] = []
    targets = []
    for deadline in expired:
        if deadline.stack in deployed:
            targets.append(deadline)
        else:
            records.append(
                TeardownRecord(deadline.stack, True, "not deployed; nothing to tear down")
            )
    if not targets:
        return records
    approval.require(
        f"Tear down {len(targets)} expired stack(s): {', '.join(d.stack for d in targets)}? "
        "Teardown exports the event's data, then destroys its resources."
    )
    for deadline in targets:
        try:
            result = run_teardown(deadline.stack, engine, yes=approval.yes, reason=None)
        except LifecycleError:
            raise
        except Exception as error:
            # Teardown is another module's code; one stack's failure must not stop the rest.
            records.append(TeardownRecord(deadline.stack, False, f"teardown raised: {error}"))
            continue
        ok = bool(getattr(result, "ok", False))
        message = str(getattr(result, "message", "") or ("torn down" if ok else "teardown failed"))
        records.append(TeardownRecord(deadline.stack, ok, message))
    return records
