"""The engine seam: RecordingEngine's model of the Pulumi engine, and what AutomationEngine
does without the Pulumi CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pulumi.automation import CommandError
from pulumi.automation._cmd import CommandResult

from popstack.engine import (
    CLI_MISSING,
    SECRET_MASK,
    AutomationEngine,
    ConfigEntry,
    EngineError,
    RecordingEngine,
    describe_command_error,
    read_config_entries,
    stack_file_path,
)

STACK_FILE = """\
# staging copy of the event
encryptionsalt: v1:c2FsdC1mb3ItdGVzdHM=
config:
  aws:region: eu-west-1
  popstack:peakRps: 120
  popstack:flags:
    checkoutEnabled: true
    locations:
      chiado: false
  popstack:window:
    opens: 2027-03-26T10:00:00+00:00
  popstack:kubeconfig:
    secure: v1:Y2lwaGVydGV4dC1vbmx5
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(
        "name: popstack\nruntime: python\nstackConfigDir: stacks\n"
    )
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.staging.yaml").write_text(STACK_FILE)
    return tmp_path


def test_stack_file_path_follows_stack_config_dir(project: Path) -> None:
    assert stack_file_path(project, "staging") == project / "stacks" / "Pulumi.staging.yaml"


def test_stack_file_path_without_config_dir(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: other\nruntime: python\n")
    assert stack_file_path(tmp_path, "dev") == tmp_path / "Pulumi.dev.yaml"


def test_config_entries_keep_ciphertext(project: Path) -> None:
    entries = read_config_entries(project / "stacks" / "Pulumi.staging.yaml")
    assert entries["popstack:kubeconfig"] == ConfigEntry("v1:Y2lwaGVydGV4dC1vbmx5", True)
    assert entries["aws:region"] == ConfigEntry("eu-west-1", False)
    assert entries["popstack:peakRps"] == ConfigEntry("120", False)
    flags = json.loads(entries["popstack:flags"].value)
    assert flags == {"checkoutEnabled": True, "locations": {"chiado": False}}
    window = json.loads(entries["popstack:window"].value)
    assert window == {"opens": "2027-03-26T10:00:00+00:00"}


def test_automation_engine_config_needs_no_cli(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(project))
    engine = AutomationEngine(project)
    config = engine.get_config("staging")
    assert config["popstack:kubeconfig"].secret is True
    assert config["popstack:kubeconfig"].value == "v1:Y2lwaGVydGV4dC1vbmx5"


def test_automation_engine_without_cli(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(project))
    engine = AutomationEngine(project)
    with pytest.raises(EngineError) as raised:
        engine.up("staging")
    assert str(raised.value) == CLI_MISSING
    with pytest.raises(EngineError, match="Pulumi CLI is not on PATH"):
        engine.stack_names()


def test_command_error_message_uses_stderr_tail() -> None:
    result = CommandResult(
        stdout="Updating (staging)\n  + aws:sqs:Queue orders creating",
        stderr="warning: slow\nerror: update failed\n  sqs: AccessDenied",
        code=255,
    )
    message = describe_command_error(CommandError(result))
    assert message == "warning: slow\nerror: update failed\n  sqs: AccessDenied"


def test_command_error_message_falls_back_to_stdout() -> None:
    result = CommandResult(stdout="error: no stack named 'x' found", stderr="", code=255)
    assert describe_command_error(CommandError(result)) == "error: no stack named 'x' found"


# --- RecordingEngine ----------------------------------------------------------------------


def outputs_from_config(stack: str, config: dict[str, ConfigEntry]) -> dict[str, object]:
    return {"stack": stack, "peakRps": config["popstack:peakRps"].value, "token": SECRET_MASK}


def test_up_creates_stack_and_sets_outputs(project: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    assert engine.exists("staging") is False
    lines: list[str] = []
    result = engine.up("staging", on_output=lines.append)
    assert result.ok is True
    assert result.kind == "update"
    assert result.summary == {"create": 1}
    assert result.outputs == {"stack": "staging", "peakRps": "120", "token": SECRET_MASK}
    assert engine.outputs("staging") == result.outputs
    assert engine.stack_names() == ["staging"]
    assert lines[0] == "Updating (staging):"
    assert engine.calls == [
        ("exists", "staging"),
        ("up", "staging"),
        ("outputs", "staging"),
        ("stack_names",),
    ]


def test_up_bumps_state_sequence(project: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    engine.up("staging")
    first = engine.export_state("staging")
    second_result = engine.up("staging")
    second = engine.export_state("staging")
    assert first["version"] == 3
    assert first["deployment"]["manifest"]["sequence"] == 1
    assert second["deployment"]["manifest"]["sequence"] == 2
    assert second_result.summary == {"same": 1}
    resources = second["deployment"]["resources"]
    assert [resource["type"] for resource in resources] == ["pulumi:pulumi:Stack"]
    assert resources[0]["outputs"]["peakRps"] == "120"


def test_up_records_revision_and_config(project: Path) -> None:
    engine = RecordingEngine(project)
    engine.up("staging")
    update = engine.updates[-1]
    assert update.stack == "staging"
    assert update.work_dir == project
    assert update.revision is None
    assert update.config["popstack:kubeconfig"] == ConfigEntry("v1:Y2lwaGVydGV4dC1vbmx5", True)
    assert update.ok is True


def test_failed_up_keeps_outputs_and_writes_state(project: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    engine.up("staging")
    engine.fail_next("up", "creating queue: AccessDenied")
    result = engine.up("staging")
    assert result.ok is False
    assert result.message == "creating queue: AccessDenied"
    assert result.outputs["peakRps"] == "120"
    assert engine.export_state("staging")["deployment"]["manifest"]["sequence"] == 2
    assert engine.updates[-1].ok is False
    assert engine.up("staging").ok is True


def test_destroy_empties_resources_and_outputs(project: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    engine.up("staging")
    result = engine.destroy("staging")
    assert result.ok is True
    assert result.summary == {"delete": 1}
    assert engine.outputs("staging") == {}
    assert engine.export_state("staging")["deployment"]["resources"] == []
    assert engine.exists("staging") is True


def test_destroy_unknown_stack_raises(project: Path) -> None:
    engine = RecordingEngine(project)
    with pytest.raises(EngineError, match="stack 'prod' not found"):
        engine.destroy("prod")


def test_fail_next_raises_for_other_methods(project: Path) -> None:
    engine = RecordingEngine(project)
    engine.seed("staging", {"a": 1})
    engine.fail_next("export_state", "backend unreachable")
    with pytest.raises(EngineError, match="backend unreachable"):
        engine.export_state("staging")
    assert engine.export_state("staging")["deployment"]["resources"][0]["outputs"] == {"a": 1}


def test_fail_next_rejects_unknown_operation(project: Path) -> None:
    with pytest.raises(ValueError, match="'deploy' is not an Engine method"):
        RecordingEngine(project).fail_next("deploy", "x")


def test_failed_preview_and_destroy_return_not_ok(project: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    engine.up("staging")
    engine.fail_next("preview", "plugin crashed")
    engine.fail_next("destroy", "resource protected")
    preview = engine.preview("staging", policy_pack="policies")
    destroy = engine.destroy("staging")
    assert (preview.ok, preview.message) == (False, "plugin crashed")
    assert (destroy.ok, destroy.message) == (False, "resource protected")
    assert engine.outputs("staging")["stack"] == "staging"
    assert ("preview", "staging", "policies") in engine.calls


def test_preview_reports_update_when_outputs_change(project: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    engine.up("staging")
    assert engine.preview("staging").summary == {"same": 1}
    engine.set_config("staging", "popstack:peakRps", "300")
    assert engine.preview("staging").summary == {"update": 1}
    assert engine.outputs("staging")["peakRps"] == "120"


def test_set_config_writes_stack_file(project: Path) -> None:
    engine = RecordingEngine(project)
    engine.seed("staging")
    engine.set_config("staging", "popstack:peakRps", "300")
    engine.set_config("staging", "popstack:kubeconfig", "apiVersion: v1-not-real", secret=True)
    engine.remove_config("staging", "aws:region")
    text = (project / "stacks" / "Pulumi.staging.yaml").read_text()
    assert "popstack:peakRps: '300'" in text
    assert "apiVersion: v1-not-real" not in text
    assert "# staging copy of the event" in text
    assert "aws:region" not in text
    config = engine.get_config("staging")
    assert config["popstack:kubeconfig"].secret is True
    assert config["popstack:kubeconfig"].value.startswith("recorded:")
    assert ("set_config", "staging", "popstack:kubeconfig", SECRET_MASK, True) in engine.calls
    assert all("apiVersion: v1-not-real" not in repr(call) for call in engine.calls)


def test_set_config_needs_existing_stack(project: Path) -> None:
    engine = RecordingEngine(project)
    with pytest.raises(EngineError, match="not found in the backend"):
        engine.set_config("staging", "popstack:peakRps", "1")


def test_config_in_memory_without_work_dir() -> None:
    engine = RecordingEngine()
    engine.seed("demo")
    engine.set_config("demo", "popstack:teardownVerifiedExport", "s3://exports/demo.json")
    assert engine.get_config("demo") == {
        "popstack:teardownVerifiedExport": ConfigEntry("s3://exports/demo.json", False)
    }
    assert RecordingEngine().get_config("demo") == {}


def test_import_state_replaces_resources(project: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    engine.up("staging")
    saved = engine.export_state("staging")
    engine.destroy("staging")
    engine.import_state("staging", saved)
    assert engine.outputs("staging")["peakRps"] == "120"
    assert engine.export_state("staging")["deployment"]["manifest"]["sequence"] == 3
    assert ("import_state", "staging", 3) in engine.calls


def test_import_state_rejects_other_shapes(project: Path) -> None:
    engine = RecordingEngine(project)
    engine.seed("staging")
    with pytest.raises(EngineError, match="no `deployment` object"):
        engine.import_state("staging", {"version": 3})
    with pytest.raises(EngineError, match="no integer `version`"):
        engine.import_state("staging", {"deployment": {}})


def test_at_shares_backend_and_calls(project: Path, tmp_path: Path) -> None:
    engine = RecordingEngine(project, program=outputs_from_config)
    engine.up("staging")
    other_checkout = tmp_path / "other"
    (other_checkout / "stacks").mkdir(parents=True)
    (other_checkout / "Pulumi.yaml").write_text("name: popstack\nstackConfigDir: stacks\n")
    (other_checkout / "stacks" / "Pulumi.staging.yaml").write_text(
        "config:\n  popstack:peakRps: 80\n"
    )
    sibling = engine.at(other_checkout)
    result = sibling.up("staging")
    assert result.summary == {"update": 1}
    assert engine.outputs("staging")["peakRps"] == "80"
    assert engine.updates[-1].work_dir == other_checkout
    assert engine.calls is sibling.calls
