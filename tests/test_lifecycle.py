"""Lifecycle commands (up, rollback, promote, expire) against RecordingEngine, in a
temporary git repository, through the typer CLI."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import popstack.plan
from popstack import lifecycle, lifecycle_commands
from popstack.checkpoints import (
    CHECKPOINT_ID,
    Checkpoint,
    CheckpointError,
    CheckpointNotFoundError,
    LocalCheckpointStore,
    S3CheckpointStore,
    latest_good,
    new_checkpoint_id,
    open_store,
)
from popstack.engine import ConfigEntry, RecordingEngine, load_stack_document
from popstack.lifecycle import (
    EXPIRED,
    LATER,
    WITHIN_2H,
    WITHIN_24H,
    deadline_bucket,
    merge_promotion,
)

# pulumi_aws 7 warns about its deprecated resource classes when the offline plan first
# imports one of its submodules, and `filterwarnings = error` would fail the test.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

STAGING_CIPHER = "v1:c3RhZ2luZy1rdWJlY29uZmlnLWNpcGhlcg=="
PROD_CIPHER = "v1:cHJvZC1rdWJlY29uZmlnLWNpcGhlcg=="
STAGING_SALT = "v1:c3RhZ2luZy1zYWx0"
PROD_SALT = "v1:cHJvZC1zYWx0"

PROJECT_FILE = """\
name: popstack
runtime:
  name: python
  options:
    toolchain: pip
    virtualenv: .venv
stackConfigDir: stacks
"""

STAGING = f"""\
# Staging copy of the spring pop-up; promote copies its spec to prod.
encryptionsalt: {STAGING_SALT}
config:
  aws:region: eu-west-1
  popstack:id: spring-stg
  popstack:title: Spring pop-up
  popstack:brand: Sardinha & Co
  popstack:owner: retail-platform
  popstack:costCentre: CC-4410
  popstack:currency: EUR
  popstack:window:
    opens: "2027-03-26T10:00:00+00:00"
    closes: "2027-03-28T19:00:00+01:00"
    timeZone: Europe/Lisbon
  popstack:graceHours: 72
  popstack:locations:
    - id: chiado
      name: Chiado flagship
    - id: alfama
      name: Alfama kiosk
  popstack:peakRps: 120
  popstack:checkout:
    image: ghcr.io/sardinha/checkout:1.4.2
    minReplicas: 2
    maxReplicas: 6
  popstack:queues:
    retentionHours: 48
  popstack:flags:
    checkoutEnabled: true
    inventoryReadOnly: false
  popstack:secrets:
    - name: payment-webhook
      rotationDays: 7
  popstack:alerts:
    email: staging-alerts@example.com
  popstack:inventory:
    preSyncCommand: ["/app/bin/inventory-sync"]
  popstack:escalation:
    - level: 1
      name: Duty manager
      role: Store operations
      when: A till or terminal fails
      phone: "+351 210 000 001"
  popstack:cluster:
    context: retail-eks-staging
    oidcProviderArn: arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/5A
    oidcIssuer: oidc.eks.eu-west-1.amazonaws.com/id/5A
    vpcId: vpc-0a1b2c3d4e5f60718
    subnetIds:
      - subnet-0aa11bb22cc33dd44
  popstack:kubeconfig:
    secure: {STAGING_CIPHER}
"""

PROD = f"""\
# Production stack of the spring pop-up.
encryptionsalt: {PROD_SALT}
config:
  aws:region: eu-west-3  # production runs in Paris
  aws:profile: retail-prod
  popstack:id: spring-prod
  popstack:title: Spring pop-up
  popstack:brand: Sardinha & Co
  popstack:owner: retail-platform
  popstack:costCentre: CC-4410
  popstack:currency: EUR
  popstack:window:
    opens: "2027-03-26T10:00:00+00:00"
    closes: "2027-03-28T19:00:00+01:00"
    timeZone: Europe/Lisbon
  popstack:graceHours: 72
  popstack:locations:
    - id: chiado
      name: Chiado flagship
    - id: alfama
      name: Alfama kiosk
  popstack:peakRps: 100
  popstack:checkout:
    image: ghcr.io/sardinha/checkout:1.4.1
    minReplicas: 2
    maxReplicas: 6
  popstack:queues:
    retentionHours: 48
  popstack:flags:
    checkoutEnabled: true
    inventoryReadOnly: false
  popstack:secrets:
    - name: payment-webhook
      rotationDays: 7
  # On-call for production is the retail rota.
  popstack:alerts:
    email: oncall-retail@example.com
  popstack:inventory:
    preSyncCommand: ["/app/bin/inventory-sync"]
  popstack:escalation:
    - level: 1
      name: Duty manager
      role: Store operations
      when: A till or terminal fails
      phone: "+351 210 000 001"
  popstack:cluster:
    context: retail-eks-prod
    oidcProviderArn: arn:aws:iam::444455556666:oidc-provider/oidc.eks.eu-west-3.amazonaws.com/id/9
    oidcIssuer: oidc.eks.eu-west-3.amazonaws.com/id/9
    vpcId: vpc-0fedcba9876543210
    subnetIds:
      - subnet-0ffeeddccbbaa9988
      - subnet-0112233445566778a
  popstack:kubeconfig:
    secure: {PROD_CIPHER}
"""


# --- fixtures ------------------------------------------------------------------------------


class Repo:
    """A throwaway git repository holding a popstack project."""

    def __init__(self, path: Path):
        self.path = path

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=self.path, capture_output=True, text=True, check=True
        )
        return result.stdout

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text(encoding="utf-8")

    def edit(self, relative: str, old: str, new: str) -> None:
        text = self.read(relative)
        assert old in text, f"{old!r} not in {relative}"
        self.write(relative, text.replace(old, new))

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "popstack tests")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "tests@example.com")
    project = Repo(tmp_path / "project")
    project.path.mkdir()
    project.git("init", "-q", "-b", "main")
    project.write("Pulumi.yaml", PROJECT_FILE)
    project.write(".gitignore", "/.popstack/\n.venv/\n")
    project.write("__main__.py", "# program revision 1\n")
    project.write("stacks/Pulumi.staging.yaml", STAGING)
    project.write("stacks/Pulumi.prod.yaml", PROD)
    project.commit("Add the spring pop-up stacks")
    monkeypatch.chdir(project.path)
    return project


def outputs_from_config(stack: str, config: dict[str, ConfigEntry]) -> dict[str, Any]:
    """Stack outputs as the program would derive them from the config it was given."""
    flags = json.loads(config["popstack:flags"].value)
    return {
        "eventId": config["popstack:id"].value,
        "peakRps": config["popstack:peakRps"].value,
        "checkoutEnabled": flags.get("checkoutEnabled", True),
        "kubeconfig": "[secret]",
    }


@pytest.fixture
def engine(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> RecordingEngine:
    """The engine every command gets: one backend, an engine per checkout."""
    recording = RecordingEngine(repo.path, program=outputs_from_config)
    monkeypatch.setattr(
        lifecycle_commands, "engine_for", lambda options: recording.at(options.work_dir)
    )
    return recording


@pytest.fixture
def cli() -> Callable[..., Any]:
    app = typer.Typer()
    lifecycle_commands.register(app)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Any:
        return runner.invoke(app, list(args), input=input)

    return invoke


@dataclass
class Verdict:
    """A policy result with the interface of policies.rules.RuleResult."""

    rule: str
    enforcement: str
    messages: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.messages

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "enforcement": self.enforcement,
            "passed": self.passed,
            "messages": self.messages,
        }


MAX_RETENTION_SECONDS = 72 * 3600


@pytest.fixture
def retention_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add a mandatory rule: no order queue keeps messages longer than 72 h."""
    original = popstack.plan.evaluate_policies

    def evaluate(plan: Any) -> list[Any]:
        messages = [
            f"{resource.name} keeps messages {resource.inputs['messageRetentionSeconds']} s"
            for resource in plan.recording.of_type("aws:sqs/queue:Queue")
            if not resource.name.endswith("dlq")
            and resource.inputs.get("messageRetentionSeconds", 0) > MAX_RETENTION_SECONDS
        ]
        return [*original(plan), Verdict("queue-retention-72h", "mandatory", messages)]

    monkeypatch.setattr(popstack.plan, "evaluate_policies", evaluate)


def checkpoint_files(repo: Repo, stack: str) -> list[Path]:
    return sorted((repo.path / ".popstack" / "checkpoints" / stack).glob("*.json"))


def read_checkpoint(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# --- up --------------------------------------------------------------------------------------


def test_up_saves_checkpoint_before_update(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.seed("staging", {"eventId": "spring-stg", "peakRps": "100"})
    original_save = LocalCheckpointStore.save

    def save(store: LocalCheckpointStore, checkpoint: Checkpoint) -> None:
        engine.calls.append(("checkpoint_save", checkpoint.status))
        original_save(store, checkpoint)

    monkeypatch.setattr(LocalCheckpointStore, "save", save)

    result = cli("up", "staging", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert engine.calls == [
        ("exists", "staging"),
        ("export_state", "staging"),
        ("checkpoint_save", "pending"),
        ("up", "staging"),
        ("export_state", "staging"),
        ("checkpoint_save", "good"),
    ]
    payload = json.loads(result.stdout)
    files = checkpoint_files(repo, "staging")
    assert len(files) == 1
    assert files[0].stem == payload["checkpoint"]["id"]
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-" + repo.head()[:12], files[0].stem)
    saved = read_checkpoint(files[0])
    assert saved["status"] == "good"
    assert saved["operation"] == "up"
    assert saved["program"] == {"revision": repo.head(), "dirty": False, "dirtyPaths": []}
    assert saved["state"]["deployment"]["manifest"]["sequence"] == 1
    assert saved["state"]["deployment"]["resources"][0]["outputs"]["peakRps"] == "100"
    assert saved["deployedState"]["deployment"]["manifest"]["sequence"] == 2
    assert saved["config"]["popstack:kubeconfig"] == {"secure": STAGING_CIPHER}
    assert saved["config"]["popstack:peakRps"] == 120
    assert saved["config"]["popstack:window"]["closes"] == "2027-03-28T19:00:00+01:00"
    assert saved["secretKeys"] == ["popstack:kubeconfig"]
    assert saved["stackSettings"] == {"encryptionsalt": STAGING_SALT}
    assert saved["outputs"]["peakRps"] == "120"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600


def test_up_of_new_stack_checkpoints_no_state(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("up", "staging", "--yes", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is True
    assert payload["summary"] == {"create": 1}
    assert payload["outputs"]["eventId"] == "spring-stg"
    assert payload["plan"]["resourceCount"] > 50
    saved = read_checkpoint(checkpoint_files(repo, "staging")[0])
    assert saved["state"] is None
    assert engine.calls[:2] == [("exists", "staging"), ("up", "staging")]


def test_up_records_dirty_program(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    repo.write("__main__.py", "# program revision 1, edited\n")
    repo.edit("stacks/Pulumi.staging.yaml", "peakRps: 120", "peakRps: 150")
    result = cli("up", "staging", "--yes")
    assert result.exit_code == 0, result.output
    saved = read_checkpoint(checkpoint_files(repo, "staging")[0])
    assert saved["program"]["dirty"] is True
    assert saved["program"]["dirtyPaths"] == ["__main__.py"]
    assert saved["config"]["popstack:peakRps"] == 150
    assert "uncommitted changes (__main__.py)" in result.output


def test_failed_up_prints_rollback_command(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    assert cli("up", "staging", "--yes").exit_code == 0
    good_id = checkpoint_files(repo, "staging")[0].stem
    repo.edit("stacks/Pulumi.staging.yaml", "checkoutEnabled: true", "checkoutEnabled: false")
    repo.commit("Close checkout in staging")
    engine.fail_next("up", "creating SQS queue ps-spring-stg-orders: AccessDenied")

    result = cli("up", "staging", "--yes")

    assert result.exit_code == 1
    assert "update of stack staging failed: creating SQS queue" in result.stderr
    assert f"popstack rollback staging --to {good_id}\n" in result.stderr
    failed = [read_checkpoint(path) for path in checkpoint_files(repo, "staging")][-1]
    assert failed["status"] == "failed"
    assert failed["message"] == "creating SQS queue ps-spring-stg-orders: AccessDenied"
    assert failed["config"]["popstack:flags"]["checkoutEnabled"] is False


def test_failed_up_json_has_rollback_command(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    assert cli("up", "staging", "--yes").exit_code == 0
    good_id = checkpoint_files(repo, "staging")[0].stem
    engine.fail_next("up", "timeout")
    result = cli("up", "staging", "--yes", "--json")
    payload = json.loads(result.stdout)
    assert result.exit_code == 1
    assert payload["ok"] is False
    assert payload["rollbackCommand"] == f"popstack rollback staging --to {good_id}"
    assert payload["checkpoint"]["status"] == "failed"


def test_first_failed_up_has_no_rollback_target(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    engine.fail_next("up", "quota exceeded")
    result = cli("up", "staging", "--yes")
    assert result.exit_code == 1
    assert "no earlier good checkpoint" in result.stderr
    assert "popstack rollback" not in result.stderr


def test_up_rejects_policy_violation(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], retention_rule: None
) -> None:
    repo.edit("stacks/Pulumi.staging.yaml", "retentionHours: 48", "retentionHours: 96")
    result = cli("up", "staging", "--yes", "--json")
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["policies"][0]["rule"] == "queue-retention-72h"
    assert "keeps messages 345600 s" in payload["error"]
    assert engine.calls == []
    assert checkpoint_files(repo, "staging") == []


def test_up_rejects_invalid_spec(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    repo.edit("stacks/Pulumi.staging.yaml", "currency: EUR", "currency: EURO")
    result = cli("up", "staging", "--yes")
    assert result.exit_code == 2
    assert "popstack:currency" in result.stderr
    assert "ISO 4217" in result.stderr
    assert engine.calls == []


def test_up_without_yes_or_terminal_rejects(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("up", "staging")
    assert result.exit_code == 2
    assert "stdin is not a terminal" in result.stderr
    assert "Rerun with --yes" in result.stderr
    assert ("up", "staging") not in engine.calls
    assert checkpoint_files(repo, "staging") == []


def test_up_asks_with_preview_summary(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.seed("staging", {"eventId": "spring-stg"})
    monkeypatch.setattr(lifecycle_commands, "_stdin_is_terminal", lambda: True)

    declined = cli("up", "staging", input="n\n")
    assert declined.exit_code == 1
    assert "Update stack staging (1 update)?" in declined.output
    assert "cancelled; nothing was changed" in declined.stderr
    assert ("preview", "staging", None) in engine.calls
    assert ("up", "staging") not in engine.calls

    accepted = cli("up", "staging", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert ("up", "staging") in engine.calls


def test_up_with_s3_checkpoint_store(
    repo: Repo,
    engine: RecordingEngine,
    cli: Callable[..., Any],
    moto_endpoint_env: str,
    aws_client: Callable[..., Any],
    moto_reset: None,
) -> None:
    s3 = aws_client("s3")
    s3.create_bucket(Bucket="popstack-checkpoints")
    store = "s3://popstack-checkpoints/events/"
    assert cli("up", "staging", "--yes", "--checkpoint-store", store).exit_code == 0
    engine.fail_next("up", "throttled")

    result = cli("up", "staging", "--yes", "--checkpoint-store", store)

    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="popstack-checkpoints")["Contents"]]
    assert len(keys) == 2
    assert all(key.startswith("events/staging/") and key.endswith(".json") for key in keys)
    good_id = sorted(keys)[0].removeprefix("events/staging/").removesuffix(".json")
    expected = f"popstack rollback staging --to {good_id} --checkpoint-store {store}"
    assert expected in result.stderr
    body = s3.get_object(Bucket="popstack-checkpoints", Key=sorted(keys)[0])["Body"].read()
    assert json.loads(body)["config"]["popstack:kubeconfig"] == {"secure": STAGING_CIPHER}


# --- checkpoint stores ------------------------------------------------------------------------


def make_checkpoint(stack: str = "staging", status: str = "good", seconds: int = 0) -> Checkpoint:
    created = datetime(2027, 3, 20, 9, 0, tzinfo=UTC) + timedelta(seconds=seconds)
    revision = "0123456789abcdef0123456789abcdef01234567"
    return Checkpoint(
        id=new_checkpoint_id(created, revision),
        stack=stack,
        operation="up",
        created_at=created,
        revision=revision,
        dirty=False,
        dirty_paths=[],
        config={"popstack:kubeconfig": {"secure": STAGING_CIPHER}, "popstack:peakRps": 120},
        stack_settings={"encryptionsalt": STAGING_SALT},
        state={"version": 3, "deployment": {"resources": []}},
        status=status,
    )


def test_checkpoint_id_format() -> None:
    checkpoint = make_checkpoint()
    assert checkpoint.id == "20270320T090000.000000Z-0123456789ab"
    assert CHECKPOINT_ID.match(checkpoint.id)


def test_local_store_round_trip(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    first, second = make_checkpoint(seconds=0), make_checkpoint(status="failed", seconds=5)
    store.save(second)
    store.save(first)
    assert store.list_ids("staging") == [first.id, second.id]
    loaded = store.load("staging", first.id)
    assert loaded.to_json() == first.to_json()
    assert latest_good(store, "staging") is not None
    assert latest_good(store, "staging").id == first.id  # type: ignore[union-attr]
    assert latest_good(store, "staging", exclude=(first.id,)) is None


def test_local_store_missing_checkpoint(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="popstack checkpoints staging"):
        store.load("staging", "20270320T090000.000000Z-0123456789ab")


def test_store_rejects_path_like_names(tmp_path: Path) -> None:
    store = LocalCheckpointStore(tmp_path)
    with pytest.raises(CheckpointError, match="invalid stack name"):
        store.list_ids("../etc")
    with pytest.raises(CheckpointError, match="invalid checkpoint id"):
        store.load("staging", "../../secrets")


def test_s3_store_round_trip(aws_client: Callable[..., Any], moto_reset: None) -> None:
    s3 = aws_client("s3")
    s3.create_bucket(Bucket="popstack-checkpoints")
    store = S3CheckpointStore("popstack-checkpoints", "prod/", client_factory=lambda: s3)
    checkpoint = make_checkpoint()
    store.save(checkpoint)
    store.save(make_checkpoint(stack="other"))
    assert store.list_ids("staging") == [checkpoint.id]
    assert store.load("staging", checkpoint.id).to_json() == checkpoint.to_json()
    head = s3.head_object(Bucket="popstack-checkpoints", Key=f"prod/staging/{checkpoint.id}.json")
    assert head["ContentType"] == "application/json"
    with pytest.raises(CheckpointNotFoundError):
        store.load("staging", "20991231T000000.000000Z-0123456789ab")


def test_s3_store_reports_missing_bucket(aws_client: Callable[..., Any], moto_reset: None) -> None:
    store = S3CheckpointStore("no-such-bucket", client_factory=lambda: aws_client("s3"))
    with pytest.raises(CheckpointError, match="could not write checkpoint s3://no-such-bucket/"):
        store.save(make_checkpoint())


def test_open_store_parses_locations(tmp_path: Path) -> None:
    default = open_store(None, tmp_path)
    assert isinstance(default, LocalCheckpointStore)
    assert default.root == tmp_path / ".popstack" / "checkpoints"
    s3 = open_store("s3://popstack-checkpoints/a/b", tmp_path)
    assert isinstance(s3, S3CheckpointStore)
    assert (s3.bucket, s3.prefix, s3.location) == (
        "popstack-checkpoints",
        "a/b/",
        "s3://popstack-checkpoints/a/b/",
    )
    with pytest.raises(CheckpointError, match="not an S3 bucket name"):
        open_store("s3://Bad_Bucket/x", tmp_path)


def test_checkpoints_command_lists(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    assert cli("up", "staging", "--yes").exit_code == 0
    engine.fail_next("up", "boom")
    cli("up", "staging", "--yes")
    result = cli("checkpoints", "staging", "--json")
    assert result.exit_code == 0
    listed = json.loads(result.stdout)["checkpoints"]
    assert [item["status"] for item in listed] == ["good", "failed"]
    assert {item["revision"] for item in listed} == {repo.head()}


# --- rollback ----------------------------------------------------------------------------------


def deploy_then_fail(repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]) -> str:
    """Deploy revision 1 with an uncommitted peakRps of 150, then fail an update of
    revision 2 (checkout closed); return revision 1."""
    first = repo.head()
    repo.edit("stacks/Pulumi.staging.yaml", "peakRps: 120", "peakRps: 150")
    assert cli("up", "staging", "--yes").exit_code == 0
    repo.write("__main__.py", "# program revision 2\n")
    repo.edit("stacks/Pulumi.staging.yaml", "checkoutEnabled: true", "checkoutEnabled: false")
    repo.commit("Program revision 2, checkout closed")
    engine.fail_next("up", "update failed halfway")
    assert cli("up", "staging", "--yes").exit_code == 1
    return first


def test_rollback_redeploys_checkpoint_revision_and_config(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    first = deploy_then_fail(repo, engine, cli)
    good = read_checkpoint(checkpoint_files(repo, "staging")[0])
    stack_file_before = repo.read("stacks/Pulumi.staging.yaml")

    result = cli("rollback", "staging", "--yes", "--json")

    assert result.exit_code == 0, result.output
    update = engine.updates[-1]
    assert update.ok is True
    assert update.revision == first
    assert update.work_dir != repo.path
    assert update.work_dir is not None and not update.work_dir.exists()
    assert update.config["popstack:peakRps"] == ConfigEntry("150", False)
    assert json.loads(update.config["popstack:flags"].value)["checkoutEnabled"] is True
    assert update.config["popstack:kubeconfig"] == ConfigEntry(STAGING_CIPHER, True)
    assert engine.outputs("staging")["checkoutEnabled"] is True
    payload = json.loads(result.stdout)
    assert payload["mode"] == "redeploy"
    assert payload["target"]["id"] == good["id"]
    rollback = read_checkpoint(checkpoint_files(repo, "staging")[-1])
    assert rollback["operation"] == "rollback"
    assert rollback["rollbackOf"] == good["id"]
    assert rollback["status"] == "good"
    assert rollback["program"]["revision"] == first
    assert rollback["config"] == good["config"]
    assert repo.read("stacks/Pulumi.staging.yaml") == stack_file_before
    assert repo.git("worktree", "list").count("\n") == 1


def test_rollback_links_virtualenv_into_worktree(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo.path / ".venv" / "bin").mkdir(parents=True)
    deploy_then_fail(repo, engine, cli)
    seen: list[bool] = []

    class VenvCheckingEngine(RecordingEngine):
        def up(self, stack: str, on_output: Any = None) -> Any:
            assert self.work_dir is not None
            seen.append((self.work_dir / ".venv" / "bin").is_dir())
            return super().up(stack, on_output)

    monkeypatch.setattr(
        lifecycle_commands,
        "engine_for",
        lambda options: VenvCheckingEngine(
            options.work_dir, program=outputs_from_config, backend=engine._backend
        ),
    )
    assert cli("rollback", "staging", "--yes").exit_code == 0
    assert seen == [True]


def test_rollback_to_named_checkpoint(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    first = repo.head()
    assert cli("up", "staging", "--yes").exit_code == 0
    repo.edit("stacks/Pulumi.staging.yaml", "peakRps: 120", "peakRps: 200")
    second = repo.commit("Raise peak")
    assert cli("up", "staging", "--yes").exit_code == 0
    first_id, second_id = [path.stem for path in checkpoint_files(repo, "staging")]

    assert cli("rollback", "staging", "--to", first_id, "--yes").exit_code == 0
    assert engine.updates[-1].revision == first
    assert engine.updates[-1].config["popstack:peakRps"].value == "120"

    assert cli("rollback", "staging", "--to", second_id, "--yes").exit_code == 0
    assert engine.updates[-1].revision == second
    assert engine.updates[-1].config["popstack:peakRps"].value == "200"


def test_rollback_rejects_failed_checkpoint(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    deploy_then_fail(repo, engine, cli)
    good_id, failed_id = [path.stem for path in checkpoint_files(repo, "staging")]
    updates = len(engine.updates)
    result = cli("rollback", "staging", "--to", failed_id, "--yes")
    assert result.exit_code == 2
    assert f"checkpoint {failed_id} is failed, not good" in result.stderr
    assert good_id in result.stderr
    assert len(engine.updates) == updates


def test_rollback_unknown_checkpoint(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("rollback", "staging", "--to", "20270320T090000.000000Z-0123456789ab", "--yes")
    assert result.exit_code == 2
    assert "not found" in result.stderr


def test_rollback_without_good_checkpoint(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("rollback", "staging", "--yes")
    assert result.exit_code == 2
    assert "no good checkpoint of stack staging" in result.stderr


def test_rollback_import_state(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    deploy_then_fail(repo, engine, cli)
    good = read_checkpoint(checkpoint_files(repo, "staging")[0])
    updates = len(engine.updates)

    result = cli("rollback", "staging", "--import-state", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert len(engine.updates) == updates
    assert ("import_state", "staging", 3) in engine.calls
    imported = engine.export_state("staging")["deployment"]["resources"]
    assert imported == good["deployedState"]["deployment"]["resources"]
    backup = read_checkpoint(checkpoint_files(repo, "staging")[-1])
    assert backup["status"] == "recorded"
    assert backup["operation"] == "import-state"
    assert backup["rollbackOf"] == good["id"]
    assert backup["state"]["deployment"]["manifest"]["sequence"] == 2
    assert json.loads(result.stdout)["mode"] == "import-state"


def test_rollback_import_state_needs_confirmation(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    deploy_then_fail(repo, engine, cli)
    result = cli("rollback", "staging", "--import-state")
    assert result.exit_code == 2
    assert "Replace the backend state of stack staging" in result.stderr
    assert not any(call[0] == "import_state" for call in engine.calls)


# --- promote -----------------------------------------------------------------------------------


def stage_release(repo: Repo) -> None:
    """Commit a staging spec that differs from prod in event keys only."""
    repo.edit("stacks/Pulumi.staging.yaml", "peakRps: 120", "peakRps: 300")
    repo.edit("stacks/Pulumi.staging.yaml", "checkout:1.4.2", "checkout:1.5.0")
    repo.edit(
        "stacks/Pulumi.staging.yaml",
        "inventoryReadOnly: false",
        "inventoryReadOnly: true\n    locations:\n      alfama: false",
    )
    repo.edit(
        "stacks/Pulumi.staging.yaml",
        "      rotationDays: 7\n",
        "      rotationDays: 7\n    - name: inventory-api\n      rotationDays: 2\n",
    )
    repo.commit("Stage the 1.5.0 release")


def test_promote_keeps_per_environment_keys(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    stage_release(repo)

    result = cli("promote", "staging", "prod", "--yes", "--json")

    assert result.exit_code == 0, result.output
    promoted = repo.read("stacks/Pulumi.prod.yaml")
    document = load_stack_document(repo.path / "stacks" / "Pulumi.prod.yaml")
    config = document["config"]
    assert config["aws:region"] == "eu-west-3"
    assert config["aws:profile"] == "retail-prod"
    assert config["popstack:id"] == "spring-prod"
    assert config["popstack:alerts"]["email"] == "oncall-retail@example.com"
    assert config["popstack:cluster"]["context"] == "retail-eks-prod"
    assert config["popstack:kubeconfig"]["secure"] == PROD_CIPHER
    assert document["encryptionsalt"] == PROD_SALT
    assert config["popstack:peakRps"] == 300
    assert config["popstack:checkout"]["image"] == "ghcr.io/sardinha/checkout:1.5.0"
    assert config["popstack:flags"]["inventoryReadOnly"] is True
    assert [secret["name"] for secret in config["popstack:secrets"]] == [
        "payment-webhook",
        "inventory-api",
    ]
    assert "# Production stack of the spring pop-up." in promoted
    assert "# production runs in Paris" in promoted
    assert "# On-call for production is the retail rota." in promoted
    assert STAGING_CIPHER not in promoted
    assert STAGING_SALT not in promoted

    payload = json.loads(result.stdout)
    changes = {item["key"]: item["change"] for item in payload["changes"]}
    assert changes == {
        "popstack:peakRps": "changed",
        "popstack:checkout": "changed",
        "popstack:flags": "changed",
        "popstack:secrets": "changed",
    }
    assert {"flag": "inventoryReadOnly", "before": False, "after": True} in payload["flags"]
    assert {"flag": "locations.alfama", "before": True, "after": False} in payload["flags"]
    assert payload["secrets"]["specSecretsAdded"] == ["inventory-api"]
    assert payload["secrets"]["secureKeysKept"] == []
    assert "+  popstack:peakRps: 300" in payload["diff"]
    assert "-  popstack:peakRps: 100" in payload["diff"]
    assert PROD_CIPHER not in result.output
    assert STAGING_CIPHER not in result.output
    assert payload["checkpoint"]["status"] == "good"
    assert engine.updates[-1].stack == "prod"
    assert engine.updates[-1].config["popstack:peakRps"].value == "300"
    assert engine.updates[-1].config["popstack:kubeconfig"] == ConfigEntry(PROD_CIPHER, True)


def test_promote_text_output_shows_diff(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    stage_release(repo)
    result = cli("promote", "staging", "prod", "--yes")
    assert result.exit_code == 0, result.output
    assert "promote staging -> prod" in result.stdout
    assert "  changed  popstack:peakRps" in result.stdout
    assert "  inventoryReadOnly: False -> True" in result.stdout
    assert "secrets added: inventory-api" in result.stdout
    assert "stack prod updated" in result.stdout


def test_promote_uses_committed_source(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    stage_release(repo)
    repo.edit("stacks/Pulumi.staging.yaml", "peakRps: 300", "peakRps: 999")
    result = cli("promote", "staging", "prod", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert "popstack:peakRps: 300" in repo.read("stacks/Pulumi.prod.yaml")
    warnings = json.loads(result.stdout)["warnings"]
    assert any("uncommitted changes; promote used the committed version" in w for w in warnings)
    assert any("no good checkpoint" in w for w in warnings)


def test_promote_rejects_policy_violation(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], retention_rule: None
) -> None:
    repo.edit("stacks/Pulumi.staging.yaml", "retentionHours: 48", "retentionHours: 96")
    repo.commit("Keep orders four days")
    before = repo.read("stacks/Pulumi.prod.yaml")

    result = cli("promote", "staging", "prod", "--yes", "--json")

    assert result.exit_code == 3
    assert "stacks/Pulumi.prod.yaml: 1 mandatory policy violation" in result.stderr
    assert json.loads(result.stdout)["policies"][0]["rule"] == "queue-retention-72h"
    assert repo.read("stacks/Pulumi.prod.yaml") == before
    assert engine.calls == []


def test_promote_restores_target_file_when_no_update_ran(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    stage_release(repo)
    before = repo.read("stacks/Pulumi.prod.yaml")
    engine.fail_next("exists", "the Pulumi CLI is not on PATH")

    result = cli("promote", "staging", "prod", "--yes", "--json")

    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert error.startswith("could not export the state of stack prod")
    assert error.endswith("; stacks/Pulumi.prod.yaml is restored")
    assert repo.read("stacks/Pulumi.prod.yaml") == before
    assert [call for call in engine.calls if call[0] == "up"] == []


def test_promote_blocks_secure_key_across_salts(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    repo.edit(
        "stacks/Pulumi.staging.yaml",
        "  popstack:kubeconfig:",
        "  popstack:paymentToken:\n    secure: v1:cGF5bWVudC10b2tlbi1jaXBoZXI=\n"
        "  popstack:kubeconfig:",
    )
    repo.commit("Add a payment token")
    before = repo.read("stacks/Pulumi.prod.yaml")

    result = cli("promote", "staging", "prod", "--yes")

    assert result.exit_code == 2
    assert "secure key(s) popstack:paymentToken" in result.stderr
    assert "pulumi config set --secret --stack prod <key>" in result.stderr
    assert "cGF5bWVudC10b2tlbi1jaXBoZXI" not in result.output
    assert repo.read("stacks/Pulumi.prod.yaml") == before
    assert engine.calls == []


def test_merge_copies_ciphertext_with_shared_salt() -> None:
    from popstack.engine import round_trip_yaml

    yaml = round_trip_yaml()
    source = yaml.load(
        "encryptionsalt: v1:shared\nconfig:\n  popstack:peakRps: 5\n"
        "  popstack:paymentToken:\n    secure: v1:dG9rZW4=\n"
    )
    target = yaml.load(
        "encryptionsalt: v1:shared\nconfig:\n  aws:region: eu-west-1\n  popstack:peakRps: 1\n"
        "  popstack:stale: true\n  popstack:kubeconfig:\n    secure: v1:a3ViZQ==\n"
    )
    promotion = merge_promotion(source, target, "staging", "prod")
    config = promotion.document["config"]
    assert config["popstack:paymentToken"] == {"secure": "v1:dG9rZW4="}
    assert config["popstack:kubeconfig"] == {"secure": "v1:a3ViZQ=="}
    assert "popstack:stale" not in config
    assert list(config) == [
        "aws:region",
        "popstack:peakRps",
        "popstack:paymentToken",
        "popstack:kubeconfig",
    ]
    assert promotion.secrets["secureKeysCopiedEncrypted"] == ["popstack:paymentToken"]
    assert promotion.blocked == []
    assert "v1:dG9rZW4=" not in promotion.diff
    assert "[secret]" in promotion.diff


def test_merge_never_replaces_target_secret() -> None:
    from popstack.engine import round_trip_yaml

    yaml = round_trip_yaml()
    source = yaml.load("config:\n  popstack:apiKey: plain-in-staging\n")
    target = yaml.load("config:\n  popstack:apiKey:\n    secure: v1:cHJvZA==\n")
    promotion = merge_promotion(source, target, "staging", "prod")
    assert promotion.document["config"]["popstack:apiKey"] == {"secure": "v1:cHJvZA=="}
    assert promotion.secrets["secureKeysKept"] == ["popstack:apiKey"]
    assert promotion.changes == []


def test_per_environment_keys() -> None:
    for key in (
        "aws:region",
        "aws:endpoints",
        "kubernetes:context",
        "pulumi:tags",
        "popstack:id",
        "popstack:cluster",
        "popstack:alerts",
        "popstack:kubeconfig",
        "popstack:emulator",
        "popstack:teardownVerifiedExport",
    ):
        assert lifecycle.is_per_environment(key), key
    for key in ("popstack:window", "popstack:flags", "popstack:secrets", "popstack:checkout"):
        assert not lifecycle.is_per_environment(key), key


def test_promote_rejects_other_event(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("promote", "staging", "prod", "--event", "autumn-stg", "--yes")
    assert result.exit_code == 2
    assert "stack staging is event 'spring-stg', not 'autumn-stg'" in result.stderr


def test_promote_needs_committed_source(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    repo.write("stacks/Pulumi.qa.yaml", STAGING)
    result = cli("promote", "qa", "prod", "--yes")
    assert result.exit_code == 2
    assert "stacks/Pulumi.qa.yaml is not committed at HEAD" in result.stderr


def test_promote_needs_target_file(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("promote", "staging", "eu-prod", "--yes")
    assert result.exit_code == 2
    assert "stacks/Pulumi.eu-prod.yaml not found" in result.stderr


def test_promote_without_yes_shows_diff_then_rejects(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    stage_release(repo)
    before = repo.read("stacks/Pulumi.prod.yaml")
    result = cli("promote", "staging", "prod")
    assert result.exit_code == 2
    assert "changed  popstack:peakRps" in result.stdout
    assert "stdin is not a terminal" in result.stderr
    assert repo.read("stacks/Pulumi.prod.yaml") == before
    assert engine.calls == []


# --- expire ------------------------------------------------------------------------------------


NOW = datetime(2027, 6, 10, 12, 0, tzinfo=UTC)


def event_file(event_id: str, closes: datetime, grace_hours: int) -> str:
    opens = closes - timedelta(hours=8)
    return "\n".join(
        [
            "config:",
            "  aws:region: eu-west-1",
            f"  popstack:id: {event_id}",
            "  popstack:title: Expiry test",
            "  popstack:brand: Test brand",
            "  popstack:owner: retail-platform",
            "  popstack:costCentre: CC-1",
            "  popstack:currency: EUR",
            "  popstack:window:",
            f'    opens: "{opens.isoformat()}"',
            f'    closes: "{closes.isoformat()}"',
            "    timeZone: UTC",
            f"  popstack:graceHours: {grace_hours}",
            "  popstack:locations:",
            "    - id: web",
            "      name: Web",
            "  popstack:peakRps: 10",
            "  popstack:checkout:",
            "    image: ghcr.io/example/checkout:1.0.0",
            "  popstack:alerts:",
            "    email: alerts@example.com",
            "  popstack:inventory:",
            '    preSyncCommand: ["/app/bin/inventory-sync"]',
            "  popstack:escalation:",
            "    - {level: 1, name: Duty manager, role: Store operations, when: A till fails,",
            '       phone: "+351 210 000 001"}',
            "  popstack:cluster:",
            "    oidcProviderArn: arn:aws:iam::111122223333:oidc-provider/x",
            "    oidcIssuer: x",
            "    vpcId: vpc-1",
            "    subnetIds: [subnet-1]",
            "",
        ]
    )


@pytest.fixture
def events(repo: Repo) -> None:
    """Four stacks whose expires-at (close + grace) falls in each deadline bucket."""
    for path in (repo.path / "stacks").glob("*.yaml"):
        path.unlink()
    repo.write("stacks/Pulumi.gone.yaml", event_file("gone", NOW - timedelta(hours=30), 24))
    repo.write("stacks/Pulumi.soon.yaml", event_file("soon", NOW - timedelta(hours=23), 24))
    repo.write("stacks/Pulumi.today.yaml", event_file("today", NOW - timedelta(hours=4), 24))
    repo.write("stacks/Pulumi.later.yaml", event_file("later", NOW, 48))


def test_deadline_bucket_edges() -> None:
    assert deadline_bucket(NOW, NOW) == EXPIRED
    assert deadline_bucket(NOW - timedelta(seconds=1), NOW) == EXPIRED
    assert deadline_bucket(NOW + timedelta(seconds=1), NOW) == WITHIN_2H
    assert deadline_bucket(NOW + timedelta(hours=2), NOW) == WITHIN_2H
    assert deadline_bucket(NOW + timedelta(hours=2, seconds=1), NOW) == WITHIN_24H
    assert deadline_bucket(NOW + timedelta(hours=24), NOW) == WITHIN_24H
    assert deadline_bucket(NOW + timedelta(hours=24, seconds=1), NOW) == LATER


def test_expire_lists_deadline_buckets(
    repo: Repo, events: None, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("expire", "--at", NOW.isoformat(), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    buckets = {item["stack"]: item["bucket"] for item in payload["stacks"]}
    assert buckets == {
        "gone": "expired",
        "soon": "within-2h",
        "today": "within-24h",
        "later": "later",
    }
    by_stack = {item["stack"]: item for item in payload["stacks"]}
    assert by_stack["gone"]["expiresAt"] == "2027-06-10T06:00:00Z"
    assert by_stack["gone"]["hoursLeft"] == -6.0
    assert by_stack["soon"]["hoursLeft"] == 1.0
    assert payload["now"] == "2027-06-10T12:00:00Z"
    assert payload["teardown"] == []
    assert engine.calls == []


def test_expire_text_output(
    repo: Repo, events: None, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("expire", "--at", "2027-06-10T13:00:00+01:00")
    assert result.exit_code == 0, result.output
    assert "expired (1):\n  gone  event gone  expires 2027-06-10T06:00:00Z (6.0 h ago)" in (
        result.stdout
    )
    assert "expiring within 2 h (1):\n  soon" in result.stdout
    assert "expiring within 24 h (1):\n  today" in result.stdout
    assert "later: 1 stack(s)" in result.stdout


def test_expire_reports_invalid_stack_file(
    repo: Repo, events: None, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    repo.write("stacks/Pulumi.broken.yaml", "config:\n  popstack:id: Broken_Id\n")
    result = cli("expire", "--at", NOW.isoformat(), "--json")
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert [item["stack"] for item in payload["invalid"]] == ["broken"]
    assert len(payload["stacks"]) == 4


@pytest.fixture
def teardown_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def record(stack: str, engine: Any, *, yes: bool, reason: str | None) -> Any:
        calls.append({"stack": stack, "engine": engine, "yes": yes, "reason": reason})
        engine.destroy(stack)
        return types.SimpleNamespace(ok=stack != "broken", message=f"{stack} torn down")

    monkeypatch.setattr(lifecycle, "run_teardown", record)
    yield calls


def test_expire_teardown_runs_on_expired_stacks(
    repo: Repo,
    events: None,
    engine: RecordingEngine,
    cli: Callable[..., Any],
    teardown_calls: list[dict[str, Any]],
) -> None:
    engine.seed("gone", {"eventId": "gone"})
    engine.seed("soon", {"eventId": "soon"})
    repo.write(
        "stacks/Pulumi.undeployed.yaml", event_file("undeployed", NOW - timedelta(days=9), 24)
    )

    result = cli("expire", "--teardown", "--yes", "--json", "--at", NOW.isoformat())

    assert result.exit_code == 0, result.output
    assert [(call["stack"], call["yes"], call["reason"]) for call in teardown_calls] == [
        ("gone", True, None)
    ]
    assert teardown_calls[0]["engine"].work_dir == repo.path
    assert engine.outputs("gone") == {}
    assert engine.outputs("soon") == {"eventId": "soon"}
    records = {item["stack"]: item for item in json.loads(result.stdout)["teardown"]}
    assert records["gone"] == {"stack": "gone", "ok": True, "message": "gone torn down"}
    assert records["undeployed"]["message"] == "not deployed; nothing to tear down"


def test_expire_teardown_failure_continues(
    repo: Repo,
    events: None,
    engine: RecordingEngine,
    cli: Callable[..., Any],
    teardown_calls: list[dict[str, Any]],
) -> None:
    repo.write("stacks/Pulumi.broken.yaml", event_file("broken", NOW - timedelta(days=3), 24))
    engine.seed("broken")
    engine.seed("gone")
    result = cli("expire", "--teardown", "--yes", "--json", "--at", NOW.isoformat())
    assert result.exit_code == 1
    assert [call["stack"] for call in teardown_calls] == ["broken", "gone"]
    payload = json.loads(result.stdout)
    assert payload["error"] == "teardown failed for broken"
    assert "teardown failed for broken" in result.stderr


def test_expire_teardown_needs_confirmation(
    repo: Repo,
    events: None,
    engine: RecordingEngine,
    cli: Callable[..., Any],
    teardown_calls: list[dict[str, Any]],
) -> None:
    engine.seed("gone")
    result = cli("expire", "--teardown", "--at", NOW.isoformat())
    assert result.exit_code == 2
    assert "Tear down 1 expired stack(s): gone?" in result.stderr
    assert teardown_calls == []


def test_expire_rejects_time_without_offset(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any]
) -> None:
    result = cli("expire", "--at", "2027-06-10T12:00:00")
    assert result.exit_code == 2
    assert "has no UTC offset" in result.stderr


def test_run_teardown_imports_teardown_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, bool, str | None]] = []
    module = types.ModuleType("teardown.steps")

    def run_teardown(stack: str, engine: Any, *, yes: bool, reason: str | None) -> Any:
        seen.append((stack, yes, reason))
        return types.SimpleNamespace(ok=True)

    module.run_teardown = run_teardown  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "teardown.steps", module)
    result = lifecycle.run_teardown("gone", RecordingEngine(), yes=True, reason=None)
    assert result.ok is True
    assert seen == [("gone", True, None)]


def test_run_teardown_without_approval() -> None:
    engine = RecordingEngine()

    outcome = lifecycle.run_teardown("gone", engine, yes=False, reason=None)

    assert outcome.ok is False
    assert outcome.message == "teardown of gone needs approval; rerun with --yes"
    assert engine.calls == []
