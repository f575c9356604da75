"""The seam between popstack's operator commands and the Pulumi engine.

`Engine` is the small interface the lifecycle and teardown code use. `AutomationEngine`
implements it on the Pulumi Automation API, which drives the Pulumi CLI. `RecordingEngine`
is an in-memory model of the same behaviour for tests: it records every call and can be
set to fail an operation.

Stack config lives in the stack file (`<stackConfigDir>/Pulumi.<stack>.yaml`), as it
does for the Pulumi CLI. A secret config entry is always reported by its ciphertext (the
`secure:` value of the stack file), never by its plain text.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from io import StringIO
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

SECRET_MASK = "[secret]"
STACK_RESOURCE_TYPE = "pulumi:pulumi:Stack"
PROJECT_FILE = "Pulumi.yaml"
# The deployment format version that `pulumi stack export` writes.
DEPLOYMENT_VERSION = 3

OnOutput = Callable[[str], None]


@dataclass(frozen=True)
class ConfigEntry:
    """One stack config value. For a secret, `value` is its ciphertext from the stack file."""

    value: str
    secret: bool


@dataclass(frozen=True)
class OperationResult:
    """The outcome of a preview, update or destroy; secret outputs are masked."""

    ok: bool
    kind: str
    summary: dict[str, int]
    message: str
    outputs: dict[str, Any]


class EngineError(Exception):
    """The engine could not run a command: CLI missing, stack not found, command failed."""


class Engine(Protocol):
    def stack_names(self) -> list[str]: ...

    def exists(self, stack: str) -> bool: ...

    def outputs(self, stack: str) -> dict[str, Any]: ...

    def get_config(self, stack: str) -> dict[str, ConfigEntry]: ...

    def set_config(self, stack: str, key: str, value: str, secret: bool = False) -> None: ...

    def remove_config(self, stack: str, key: str) -> None: ...

    def export_state(self, stack: str) -> dict[str, Any]: ...

    def import_state(self, stack: str, state: dict[str, Any]) -> None: ...

    def preview(self, stack: str, policy_pack: str | None = None) -> OperationResult: ...

    def up(self, stack: str, on_output: OnOutput | None = None) -> OperationResult: ...

    def destroy(self, stack: str, on_output: OnOutput | None = None) -> OperationResult: ...


# --- stack files -----------------------------------------------------------------------


def round_trip_yaml() -> YAML:
    """Return a ruamel round-trip loader and dumper in the layout of the stack files."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def stack_config_dir(work_dir: Path) -> Path:
    """Return the directory of the project's stack files (`stackConfigDir` of Pulumi.yaml)."""
    project_file = work_dir / PROJECT_FILE
    try:
        project = YAML(typ="safe").load(project_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return work_dir
    except YAMLError as error:
        raise EngineError(f"{project_file}: invalid YAML ({error}); fix the project file") from None
    if isinstance(project, Mapping) and isinstance(project.get("stackConfigDir"), str):
        return work_dir / project["stackConfigDir"]
    return work_dir


def stack_file_path(work_dir: Path, stack: str) -> Path:
    """Return the path of a stack's config file, `<stackConfigDir>/Pulumi.<stack>.yaml`."""
    return stack_config_dir(work_dir) / f"Pulumi.{stack}.yaml"


def load_stack_document(path: Path) -> CommentedMap:
    """Read a stack file for round-trip editing; a missing file reads as an empty one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CommentedMap()
    try:
        document = round_trip_yaml().load(text)
    except YAMLError as error:
        raise EngineError(f"{path}: invalid YAML ({error}); fix the stack file") from None
    if document is None:
        return CommentedMap()
    if not isinstance(document, CommentedMap):
        raise EngineError(f"{path}: expected a mapping with a `config:` key at the top level")
    return document


def dump_stack_document(document: CommentedMap) -> str:
    stream = StringIO()
    round_trip_yaml().dump(document, stream)
    return stream.getvalue()


def write_stack_document(path: Path, document: CommentedMap) -> None:
    """Write a stack file atomically, so a crash never leaves half a config behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dump_stack_document(document)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def plain_value(node: Any) -> Any:
    """Convert ruamel nodes into JSON-ready dicts, lists and scalars.

    Unquoted YAML timestamps become ISO 8601 text, which is what the Pulumi CLI reads
    them as.
    """
    if isinstance(node, Mapping):
        return {str(key): plain_value(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [plain_value(value) for value in node]
    if isinstance(node, datetime | date):
        return node.isoformat()
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def is_secure(value: Any) -> bool:
    """Return whether a config value is, or contains, a `secure:` ciphertext."""
    if isinstance(value, Mapping):
        if set(value) == {"secure"}:
            return True
        return any(is_secure(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(is_secure(item) for item in value)
    return False


def config_entry(value: Any) -> ConfigEntry:
    """Turn one stack-file config value into the text form the Pulumi CLI reports."""
    plain = plain_value(value)
    if isinstance(plain, Mapping) and set(plain) == {"secure"}:
        return ConfigEntry(value=str(plain["secure"]), secret=True)
    if isinstance(plain, dict | list):
        return ConfigEntry(value=json.dumps(plain), secret=is_secure(plain))
    if isinstance(plain, bool):
        return ConfigEntry(value="true" if plain else "false", secret=False)
    if plain is None:
        return ConfigEntry(value="", secret=False)
    return ConfigEntry(value=str(plain), secret=False)


def read_config_entries(path: Path) -> dict[str, ConfigEntry]:
    """Read the `config:` mapping of a stack file; secrets keep their ciphertext."""
    config = load_stack_document(path).get("config") or {}
    if not isinstance(config, Mapping):
        raise EngineError(f"{path}: `config:` is not a mapping; write one key per line under it")
    return {str(key): config_entry(value) for key, value in config.items()}


# --- the Automation API ------------------------------------------------------------------

CLI_MISSING = (
    "the Pulumi CLI is not on PATH; install it (https://www.pulumi.com/docs/install/) "
    "or run `popstack plan` for the offline checks"
)


def describe_command_error(error: Exception) -> str:
    """Return the useful tail of a failed Pulumi CLI command: its stderr, else its stdout.

    The Automation API's CommandError text is "code: N / stdout: ... / stderr: ...". The
    CLI masks secret values in what it prints, so the tail is safe to show.
    """
    text = str(error)
    stdout, _, stderr = text.partition("\n stderr: ")
    stdout = stdout.partition("\n stdout: ")[2]
    for stream in (stderr, stdout):
        lines = [line.rstrip() for line in stream.splitlines() if line.strip()]
        if lines:
            return "\n".join(lines[-15:])
    return text.strip() or type(error).__name__


def _change_summary(changes: Mapping[Any, int] | None) -> dict[str, int]:
    summary: dict[str, int] = {}
    for operation, count in (changes or {}).items():
        summary[str(getattr(operation, "value", operation))] = int(count)
    return summary


class AutomationEngine:
    """The Engine on the Pulumi Automation API, for the project in `work_dir`.

    It needs the Pulumi CLI on PATH and uses whatever backend and secrets provider the
    environment selects (PULUMI_BACKEND_URL, PULUMI_CONFIG_PASSPHRASE, `pulumi login`).
    `env` adds environment variables for the CLI processes only.
    """

    def __init__(self, work_dir: Path, env: Mapping[str, str] | None = None):
        self.work_dir = Path(work_dir).resolve()
        self.env = dict(env or {})
        self._workspace: Any = None

    def _local_workspace(self) -> Any:
        if self._workspace is None:
            from pulumi import automation

            try:
                self._workspace = automation.LocalWorkspace(
                    work_dir=str(self.work_dir), env_vars=self.env
                )
            except FileNotFoundError:
                raise EngineError(CLI_MISSING) from None
            except automation.InvalidVersionError as error:
                raise EngineError(f"unsupported Pulumi CLI: {error}; upgrade the CLI") from None
            except automation.CommandError as error:
                raise EngineError(describe_command_error(error)) from None
        return self._workspace

    def _run(self, args: list[str]) -> str:
        """Run one Pulumi CLI command in the project directory and return its stdout."""
        from pulumi import automation

        workspace = self._local_workspace()
        try:
            result = workspace.pulumi_command.run(list(args), str(self.work_dir), self.env)
        except automation.StackNotFoundError:
            raise EngineError(f"stack not found: pulumi {' '.join(args)}") from None
        except automation.CommandError as error:
            raise EngineError(describe_command_error(error)) from None
        except FileNotFoundError:
            raise EngineError(CLI_MISSING) from None
        return result.stdout

    def _stack(self, stack: str, create: bool = False) -> Any:
        from pulumi import automation

        workspace = self._local_workspace()
        try:
            if create:
                return automation.Stack.create_or_select(stack, workspace)
            return automation.Stack.select(stack, workspace)
        except automation.StackNotFoundError:
            raise EngineError(
                f"stack {stack!r} not found in the backend; create it with `popstack up {stack}`"
            ) from None
        except automation.CommandError as error:
            raise EngineError(describe_command_error(error)) from None

    def stack_names(self) -> list[str]:
        from pulumi import automation

        try:
            summaries = self._local_workspace().list_stacks()
        except automation.CommandError as error:
            raise EngineError(describe_command_error(error)) from None
        return sorted(summary.name for summary in summaries)

    def exists(self, stack: str) -> bool:
        # Pulumi Cloud may list a stack as "<org>/<stack>" or "<org>/<project>/<stack>".
        return any(name == stack or name.endswith(f"/{stack}") for name in self.stack_names())

    def outputs(self, stack: str) -> dict[str, Any]:
        from pulumi import automation

        try:
            values = self._stack(stack).outputs()
        except automation.CommandError as error:
            raise EngineError(describe_command_error(error)) from None
        return {key: SECRET_MASK if value.secret else value.value for key, value in values.items()}

    def get_config(self, stack: str) -> dict[str, ConfigEntry]:
        # Read the stack file rather than `pulumi config --show-secrets`, which is what
        # the Automation API's get_all_config runs and which decrypts every secret.
        return read_config_entries(stack_file_path(self.work_dir, stack))

    def set_config(self, stack: str, key: str, value: str, secret: bool = False) -> None:
        from pulumi import automation

        try:
            self._local_workspace().set_config(stack, key, automation.ConfigValue(value, secret))
        except automation.CommandError as error:
            raise EngineError(describe_command_error(error)) from None

    def remove_config(self, stack: str, key: str) -> None:
        from pulumi import automation

        try:
            self._local_workspace().remove_config(stack, key)
        except automation.CommandError as error:
            raise EngineError(describe_command_error(error)) from None

    def export_state(self, stack: str) -> dict[str, Any]:
        # Not Stack.export_stack: it passes --show-secrets, which would put decrypted
        # secrets into the exported state. Without it, secrets stay as ciphertext.
        text = self._run(["stack", "export", "--stack", stack])
        try:
            state = json.loads(text)
        except json.JSONDecodeError as error:
            raise EngineError(f"`pulumi stack export` printed invalid JSON: {error}") from None
        if not isinstance(state, dict):
            raise EngineError("`pulumi stack export` printed JSON that is not an object")
        return state

    def import_state(self, stack: str, state: dict[str, Any]) -> None:
        _check_deployment(state)
        handle, path = tempfile.mkstemp(prefix="popstack-state-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(state, stream)
            self._run(["stack", "import", "--file", path, "--stack", stack])
        finally:
            Path(path).unlink(missing_ok=True)

    def preview(self, stack: str, policy_pack: str | None = None) -> OperationResult:
        from pulumi import automation

        handle = self._stack(stack)
        try:
            result = handle.preview(
                policy_packs=[policy_pack] if policy_pack else None, color="never"
            )
        except automation.CommandError as error:
            return OperationResult(False, "preview", {}, describe_command_error(error), {})
        return OperationResult(True, "preview", _change_summary(result.change_summary), "", {})

    def up(self, stack: str, on_output: OnOutput | None = None) -> OperationResult:
        from pulumi import automation

        handle = self._stack(stack, create=True)
        try:
            result = handle.up(on_output=on_output, show_secrets=False, color="never")
        except automation.CommandError as error:
            return OperationResult(False, "update", {}, describe_command_error(error), {})
        outputs = {
            key: SECRET_MASK if value.secret else value.value
            for key, value in result.outputs.items()
        }
        summary = result.summary
        return OperationResult(
            ok=summary.result == "succeeded",
            kind="update",
            summary=_change_summary(summary.resource_changes),
            message=summary.message or "",
            outputs=outputs,
        )

    def destroy(self, stack: str, on_output: OnOutput | None = None) -> OperationResult:
        from pulumi import automation

        handle = self._stack(stack)
        try:
            result = handle.destroy(on_output=on_output, show_secrets=False, color="never")
        except automation.CommandError as error:
            return OperationResult(False, "destroy", {}, describe_command_error(error), {})
        summary = result.summary
        return OperationResult(
            ok=summary.result == "succeeded",
            kind="destroy",
            summary=_change_summary(summary.resource_changes),
            message=summary.message or "",
            outputs={},
        )


def _check_deployment(state: Mapping[str, Any]) -> None:
    """Raise EngineError unless `state` has the shape `pulumi stack export` writes."""
    if not isinstance(state.get("version"), int):
        raise EngineError("state to import has no integer `version`; use a `stack export` file")
    deployment = state.get("deployment")
    if not isinstance(deployment, Mapping):
        raise EngineError("state to import has no `deployment` object; use a `stack export` file")
    if not isinstance(deployment.get("resources", []), list):
        raise EngineError("state to import has `deployment.resources` that is not a list")


# --- the recording stand-in ------------------------------------------------------------

# A program for RecordingEngine: stack name and config in, stack outputs out.
Program = Callable[[str, dict[str, ConfigEntry]], Mapping[str, Any]]


@dataclass
class RecordedUpdate:
    """One `up` of a RecordingEngine: the program's directory, its git revision (None
    outside a git checkout), the config it read, and whether it succeeded."""

    stack: str
    work_dir: Path | None
    revision: str | None
    config: dict[str, ConfigEntry]
    ok: bool


@dataclass
class _StackState:
    resources: list[dict[str, Any]] = field(default_factory=list)
    sequence: int = 0

    @property
    def outputs(self) -> dict[str, Any]:
        for resource in self.resources:
            if resource.get("type") == STACK_RESOURCE_TYPE:
                return dict(resource.get("outputs") or {})
        return {}


@dataclass
class _Backend:
    """The state that every RecordingEngine made by `at` shares: stacks, calls, failures."""

    stacks: dict[str, _StackState] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[RecordedUpdate] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)
    config_documents: dict[str, str] = field(default_factory=dict)


class RecordingEngine:
    """An in-memory Engine for tests that models what the Pulumi engine does.

    - Stacks live in a backend that `at(work_dir)` shares with an engine for another
      checkout, as one Pulumi backend serves every checkout of a project.
    - Config lives in `<work_dir>/<stackConfigDir>/Pulumi.<stack>.yaml` as for the CLI,
      or in memory when `work_dir` is None. A secret set here is stored as a SHA-256
      digest under `secure:`, so no plain text is ever written.
    - `up` creates the stack if needed, runs `program(stack, config)` for the outputs,
      stores them on the root stack resource and adds one to the state's sequence.
      A failed `up` also adds one, as a partly applied update writes state.
    - `destroy` removes every resource and so every output.
    - `fail_next(operation, message)` makes the next call of that operation fail:
      preview, up and destroy return ok=False, every other method raises EngineError.
      A program that raises EngineError fails the preview or update the same way.

    Every call is appended to `calls` as (method, stack, ...); secret values appear
    there only as the mask.
    """

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        program: Program | None = None,
        backend: _Backend | None = None,
    ):
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.program = program
        self._backend = backend or _Backend()

    @property
    def calls(self) -> list[tuple[Any, ...]]:
        return self._backend.calls

    @property
    def updates(self) -> list[RecordedUpdate]:
        return self._backend.updates

    def at(self, work_dir: Path) -> RecordingEngine:
        """Return an engine for the project checkout in `work_dir` on the same backend."""
        return RecordingEngine(work_dir, program=self.program, backend=self._backend)

    def fail_next(self, operation: str, message: str) -> None:
        if not callable(getattr(Engine, operation, None)):
            raise ValueError(f"{operation!r} is not an Engine method")
        self._backend.failures.setdefault(operation, []).append(message)

    def seed(self, stack: str, outputs: Mapping[str, Any] | None = None) -> None:
        """Create a stack as if it had been deployed once, without recording a call."""
        state = self._backend.stacks.setdefault(stack, _StackState())
        state.resources = [_stack_resource(stack, dict(outputs or {}))]
        state.sequence += 1

    def _record(self, *call: Any) -> str | None:
        self._backend.calls.append(call)
        queued = self._backend.failures.get(call[0])
        return queued.pop(0) if queued else None

    def _raise_if_failing(self, *call: Any) -> None:
        message = self._record(*call)
        if message is not None:
            raise EngineError(message)

    def _require(self, stack: str) -> _StackState:
        state = self._backend.stacks.get(stack)
        if state is None:
            raise EngineError(f"stack {stack!r} not found in the backend")
        return state

    # Config documents: a stack file under work_dir, or text kept in the backend.

    def _config_path(self, stack: str) -> Path | None:
        return stack_file_path(self.work_dir, stack) if self.work_dir is not None else None

    def _load_document(self, stack: str) -> CommentedMap:
        path = self._config_path(stack)
        if path is not None:
            return load_stack_document(path)
        text = self._backend.config_documents.get(stack)
        return round_trip_yaml().load(text) if text else CommentedMap()

    def _save_document(self, stack: str, document: CommentedMap) -> None:
        path = self._config_path(stack)
        if path is not None:
            write_stack_document(path, document)
        else:
            self._backend.config_documents[stack] = dump_stack_document(document)

    def _config(self, stack: str) -> dict[str, ConfigEntry]:
        config = self._load_document(stack).get("config") or {}
        return {str(key): config_entry(value) for key, value in config.items()}

    # The Engine interface.

    def stack_names(self) -> list[str]:
        self._raise_if_failing("stack_names")
        return sorted(self._backend.stacks)

    def exists(self, stack: str) -> bool:
        self._raise_if_failing("exists", stack)
        return stack in self._backend.stacks

    def outputs(self, stack: str) -> dict[str, Any]:
        self._raise_if_failing("outputs", stack)
        return self._require(stack).outputs

    def get_config(self, stack: str) -> dict[str, ConfigEntry]:
        self._raise_if_failing("get_config", stack)
        return self._config(stack)

    def set_config(self, stack: str, key: str, value: str, secret: bool = False) -> None:
        self._raise_if_failing("set_config", stack, key, SECRET_MASK if secret else value, secret)
        self._require(stack)
        document = self._load_document(stack)
        config = document.setdefault("config", CommentedMap())
        if secret:
            digest = hashlib.sha256(f"{stack}\0{key}\0{value}".encode()).hexdigest()
            config[key] = CommentedMap(secure=f"recorded:{digest}")
        else:
            config[key] = value
        self._save_document(stack, document)

    def remove_config(self, stack: str, key: str) -> None:
        self._raise_if_failing("remove_config", stack, key)
        self._require(stack)
        document = self._load_document(stack)
        config = document.get("config")
        if isinstance(config, CommentedMap) and key in config:
            del config[key]
            self._save_document(stack, document)

    def export_state(self, stack: str) -> dict[str, Any]:
        self._raise_if_failing("export_state", stack)
        state = self._require(stack)
        return {
            "version": DEPLOYMENT_VERSION,
            "deployment": {
                "manifest": {"magic": "popstack-recording", "sequence": state.sequence},
                "resources": copy.deepcopy(state.resources),
            },
        }

    def import_state(self, stack: str, state: dict[str, Any]) -> None:
        self._raise_if_failing("import_state", stack, state.get("version"))
        current = self._require(stack)
        _check_deployment(state)
        current.resources = copy.deepcopy(list(state["deployment"].get("resources", [])))
        current.sequence += 1

    def preview(self, stack: str, policy_pack: str | None = None) -> OperationResult:
        failure = self._record("preview", stack, policy_pack)
        state = self._require(stack)
        if failure is not None:
            return OperationResult(False, "preview", {}, failure, state.outputs)
        try:
            outputs = self._run_program(stack)
        except EngineError as error:
            return OperationResult(False, "preview", {}, str(error), state.outputs)
        return OperationResult(True, "preview", {_change(state, outputs): 1}, "", state.outputs)

    def up(self, stack: str, on_output: OnOutput | None = None) -> OperationResult:
        failure = self._record("up", stack)
        state = self._backend.stacks.setdefault(stack, _StackState())
        config = self._config(stack)
        revision = _git_revision(self.work_dir)
        emit = on_output or (lambda line: None)
        emit(f"Updating ({stack}):")
        state.sequence += 1
        if failure is not None:
            emit(f"error: {failure}")
            self.updates.append(RecordedUpdate(stack, self.work_dir, revision, config, False))
            return OperationResult(False, "update", {}, failure, state.outputs)
        try:
            outputs = self._run_program(stack, config)
        except EngineError as error:
            emit(f"error: {error}")
            self.updates.append(RecordedUpdate(stack, self.work_dir, revision, config, False))
            return OperationResult(False, "update", {}, str(error), state.outputs)
        change = _change(state, outputs)
        state.resources = [_stack_resource(stack, outputs)]
        emit(f"Resources: 1 {change}")
        self.updates.append(RecordedUpdate(stack, self.work_dir, revision, config, True))
        return OperationResult(True, "update", {change: 1}, "", dict(outputs))

    def destroy(self, stack: str, on_output: OnOutput | None = None) -> OperationResult:
        failure = self._record("destroy", stack)
        state = self._require(stack)
        if failure is not None:
            return OperationResult(False, "destroy", {}, failure, state.outputs)
        deleted = len(state.resources)
        state.resources = []
        state.sequence += 1
        if on_output is not None:
            on_output(f"Destroying ({stack}): {deleted} deleted")
        return OperationResult(True, "destroy", {"delete": deleted}, "", {})

    def _run_program(
        self, stack: str, config: dict[str, ConfigEntry] | None = None
    ) -> dict[str, Any]:
        if self.program is None:
            return {}
        return dict(self.program(stack, config if config is not None else self._config(stack)))


def _change(state: _StackState, outputs: dict[str, Any]) -> str:
    """Return the step the root stack resource takes: create, same or update."""
    if not state.resources:
        return "create"
    return "same" if outputs == state.outputs else "update"


def _stack_resource(stack: str, outputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "urn": f"urn:pulumi:{stack}::popstack::{STACK_RESOURCE_TYPE}::popstack-{stack}",
        "type": STACK_RESOURCE_TYPE,
        "custom": False,
        "outputs": outputs,
    }


def _git_revision(work_dir: Path | None) -> str | None:
    if work_dir is None:
        return None
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work_dir, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None
