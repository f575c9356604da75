"""Tests for `popstack plan`: the JSON for CI and the text for a person at a terminal."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
from typer.testing import CliRunner

from components import program
from popstack.cli import app

# The plan runs the program in-process, and pulumi_aws submodules warn about their
# own deprecated classes on first import.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

REPO = Path(__file__).resolve().parent.parent
POPSTACK = Path(sys.executable).with_name("popstack")
EVENT_STACK = "popstack:index:EventStack"
# Each part of the stack and a resource type it must contain.
PART_MARKERS = {
    "queues": "aws:sqs/queue:Queue",
    "orders": "aws:dynamodb/table:Table",
    "receipts": "aws:s3/bucket:Bucket",
    "exports": "aws:iam/role:Role",
    "flags": "aws:appconfig/application:Application",
    "secrets": "popstack:secrets:RotatedSecret",
    "cache": "aws:elasticache/serverlessCache:ServerlessCache",
    "checkout": "kubernetes:apps/v1:Deployment",
    "dashboards": "aws:cloudwatch/dashboard:Dashboard",
    "observability": "aws:xray/samplingRule:SamplingRule",
    "schedules": "aws:scheduler/schedule:Schedule",
    "kubernetes": "pulumi:providers:kubernetes",
}


def invoke_plan(*arguments: str) -> Any:
    """Run `popstack plan` in-process from the repository root."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        return CliRunner().invoke(app, ["plan", *arguments])


@pytest.fixture(scope="module")
def lisbon_result() -> Any:
    return invoke_plan("lisbon-popup", "--json")


@pytest.fixture(scope="module")
def lisbon_plan(lisbon_result: Any) -> dict[str, Any]:
    assert lisbon_result.exit_code == 0, lisbon_result.output
    return json.loads(lisbon_result.stdout)


@pytest.fixture(scope="module")
def lisbon_process_plan() -> dict[str, Any]:
    """Run `popstack plan lisbon-popup --json` in a fresh process, as CI does."""
    completed = subprocess.run(
        [str(POPSTACK), "plan", "lisbon-popup", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def lisbon_text() -> str:
    """Run the installed CLI as a terminal user would, wide enough that no line wraps."""
    completed = subprocess.run(
        [str(POPSTACK), "plan", "lisbon-popup"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "300"},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    return completed.stdout


# --- JSON -------------------------------------------------------------------------


def test_plan_json_exits_zero(lisbon_result: Any) -> None:
    assert lisbon_result.exit_code == 0, lisbon_result.output
    assert lisbon_result.stderr == ""


def test_plan_json_describes_event(lisbon_plan: dict[str, Any]) -> None:
    assert lisbon_plan["stack"] == "lisbon-popup"
    assert lisbon_plan["stackFile"] == "stacks/Pulumi.lisbon-popup.yaml"
    assert lisbon_plan["accountId"] == "123456789012"
    assert lisbon_plan["event"] == {
        "id": "lisbon-popup-27",
        "title": "Sardinha & Co spring pop-up",
        "opens": "2027-03-26T10:00:00+00:00",
        "closes": "2027-03-28T19:00:00+01:00",
        "timeZone": "Europe/Lisbon",
        "expiresAt": "2027-03-31T18:00:00Z",
    }


def test_resource_count_matches_recording(lisbon_plan: dict[str, Any], recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    root = [r for r in recording.resources if r.type == EVENT_STACK]
    assert len(root) == 1
    part_components = [r for r in recording.resources if r.parent == root[0].urn and not r.custom]

    listed = sum(len(resources) for resources in lisbon_plan["parts"].values())

    assert lisbon_plan["resourceCount"] == len(recording.resources)
    # Every resource is listed under its part, except the root and the part components.
    assert listed + 1 + len(part_components) == lisbon_plan["resourceCount"]


def test_plan_json_has_every_part(lisbon_plan: dict[str, Any]) -> None:
    parts = lisbon_plan["parts"]

    assert set(parts) == set(PART_MARKERS)
    for part, marker in PART_MARKERS.items():
        types = [resource["type"] for resource in parts[part]]
        assert marker in types, f"part {part} has no {marker}: {types}"
    assert [r["type"] for r in parts["kubernetes"]] == ["pulumi:providers:kubernetes"]
    # The spec's two secrets are under secrets, and the cache's AUTH secret is under cache.
    rotated = {
        part: sorted(r["name"] for r in parts[part] if r["type"] == PART_MARKERS["secrets"])
        for part in ("secrets", "cache")
    }
    assert rotated == {
        "secrets": [
            "lisbon-popup-27-secrets-inventory-api",
            "lisbon-popup-27-secrets-payment-webhook",
        ],
        "cache": ["lisbon-popup-27-cache-auth"],
    }


def test_plan_json_physical_names_and_flags(lisbon_plan: dict[str, Any]) -> None:
    parts = lisbon_plan["parts"]
    queues = {r["physicalName"]: r for r in parts["queues"] if r["type"] == "aws:sqs/queue:Queue"}
    exports = {r["type"]: r for r in parts["exports"]}

    assert set(queues) == {"ps-lisbon-popup-27-orders", "ps-lisbon-popup-27-orders-dlq"}
    assert all(queue["protect"] for queue in queues.values())
    assert parts["orders"][0]["physicalName"] == "ps-lisbon-popup-27-orders"
    assert parts["orders"][0]["protect"] is True
    assert (
        exports["aws:s3/bucket:Bucket"]["physicalName"] == "ps-lisbon-popup-27-exports-123456789012"
    )
    assert exports["aws:s3/bucket:Bucket"]["retainOnDelete"] is True
    assert exports["aws:s3/bucket:Bucket"]["protect"] is False


def test_critical_path_follows_dependencies(lisbon_plan: dict[str, Any], recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    by_urn = recording.by_urn()
    path = lisbon_plan["criticalPath"]

    def ancestors(urn: str) -> set[str]:
        found = set()
        while urn:
            found.add(urn)
            urn = by_urn[urn].parent if urn in by_urn else ""
        return found

    assert lisbon_plan["dependencyDepth"] >= 3
    assert len(path) == lisbon_plan["dependencyDepth"]
    steps = []
    for name in path:
        matches = [r for r in recording.resources if r.name == name and r.custom]
        assert len(matches) == 1, f"{name} names {len(matches)} custom resources"
        steps.append(matches[0])
    for before, after in itertools.pairwise(steps):
        # A dependency on a component stands for every resource under it.
        assert ancestors(before.urn) & set(after.dependencies), (
            f"{after.urn} does not depend on {before.urn}"
        )


def test_plan_json_outputs_match_recording(lisbon_plan: dict[str, Any], recorded: Any) -> None:
    recording = recorded("lisbon-popup")

    assert lisbon_plan["outputs"] == recording.outputs
    assert lisbon_plan["outputs"]["eventId"] == "lisbon-popup-27"
    assert lisbon_plan["secretOutputs"] == []


def test_plan_json_same_in_any_process(lisbon_process_plan: dict[str, Any], recorded: Any) -> None:
    # Pulumi registers resources in an order that depends on what the process ran
    # before, so a plan after another recording must still list the same path and parts.
    for stack in ("flash-drop", "demo", "lisbon-popup"):
        recorded(stack)

    results = [invoke_plan("lisbon-popup", "--json") for _ in range(2)]

    for result in results:
        assert result.exit_code == 0, result.output
        plan = json.loads(result.stdout)
        assert plan["criticalPath"] == lisbon_process_plan["criticalPath"]
        assert plan["parts"] == lisbon_process_plan["parts"]


def test_plan_json_lists_several_stacks() -> None:
    result = invoke_plan("lisbon-popup", "flash-drop", "--json")

    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)
    assert [plan["stack"] for plan in plans] == ["lisbon-popup", "flash-drop"]
    assert plans[1]["event"]["id"] == "kicks-drop-0412"


# --- text -------------------------------------------------------------------------


def test_plan_text_shows_tree(lisbon_text: str, lisbon_plan: dict[str, Any]) -> None:
    lines = [line.rstrip() for line in lisbon_text.splitlines()]

    assert f"EventStack lisbon-popup-27  ({lisbon_plan['resourceCount']} resources)" in lines
    for part, resources in lisbon_plan["parts"].items():
        assert any(re.fullmatch(rf"[├└]── {part}  {len(resources)}", line) for line in lines), part
    assert any(
        "aws:dynamodb/table:Table  ps-lisbon-popup-27-orders  (protected)" in line for line in lines
    )
    assert any(
        "aws:s3/bucket:Bucket  ps-lisbon-popup-27-exports-123456789012  (kept on destroy)" in line
        for line in lines
    )


def test_plan_text_shows_critical_path(
    lisbon_text: str, lisbon_process_plan: dict[str, Any], recorded: Any
) -> None:
    recording = recorded("lisbon-popup")
    types = {r.name: r.short_type for r in recording.resources if r.custom}
    chain = " -> ".join(types[name] for name in lisbon_process_plan["criticalPath"])

    assert f"dependency depth {lisbon_process_plan['dependencyDepth']}: {chain}" in lisbon_text


def test_plan_text_shows_outputs(lisbon_text: str, lisbon_plan: dict[str, Any]) -> None:
    lines = [line.rstrip() for line in lisbon_text.splitlines()]
    outputs = {k: v for k, v in lisbon_plan["outputs"].items() if isinstance(v, str)}

    assert len(outputs) > 15
    for key, value in outputs.items():
        pattern = rf"{re.escape(key)}\s+{re.escape(value)}"
        assert any(re.fullmatch(pattern, line) for line in lines), f"output {key}={value} missing"


def test_plan_text_shows_secret_output_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    run = program.run

    def run_with_secret() -> Any:
        event = run()
        pulumi.export("probeToken", pulumi.Output.secret("probe-secret-value"))
        return event

    monkeypatch.setattr(program, "run", run_with_secret)

    result = invoke_plan("lisbon-popup")

    assert result.exit_code == 0, result.output
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert any(re.fullmatch(r"probeToken\s+\[secret\]", line) for line in lines)
    assert "probe-secret-value" not in result.stdout


# Records a stack whose dashboard fails to render, then flash-drop, in one process.
RECORD_AFTER_FAILURE = """
import sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
from components import dashboards
from components.spec import load_stack_file
from popstack.mockrun import record_program
render = dashboards.render_json
def broken(template, **values):
    raise ValueError("template failed on purpose")
dashboards.render_json = broken
try:
    record_program(load_stack_file("stacks/Pulumi.lisbon-popup.yaml"))
except ValueError as error:
    print("first run failed:", "template failed on purpose" in str(error))
dashboards.render_json = render
recording = record_program(load_stack_file("stacks/Pulumi.flash-drop.yaml"))
print("second run registered", len(recording.resources))
"""


def test_failed_run_leaves_next_intact() -> None:
    # `popstack plan a b` records several stacks in one process, so a failure in one
    # must not fail the next. It runs in a child so a leftover task cannot reach other tests.
    completed = subprocess.run(
        [sys.executable, "-c", RECORD_AFTER_FAILURE],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )

    lines = completed.stdout.splitlines()
    assert lines[:1] == ["first run failed: True"], completed.stderr[-2000:]
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert re.fullmatch(r"second run registered \d{2,}", lines[1])


def test_plan_reports_every_bad_file(tmp_path: Path) -> None:
    sample = (REPO / "stacks" / "Pulumi.lisbon-popup.yaml").read_text(encoding="utf-8")
    first = tmp_path / "Pulumi.first.yaml"
    second = tmp_path / "Pulumi.second.yaml"
    first.write_text(sample.replace("minReplicas: 2", "minReplicas: 9"), encoding="utf-8")
    second.write_text(sample.replace("currency: EUR", "currency: EUX"), encoding="utf-8")

    result = CliRunner().invoke(app, ["plan", str(first), str(second), "--json"])

    assert result.exit_code == 2
    assert "popstack:checkout.minReplicas: minReplicas (9) is greater" in result.stderr
    assert "popstack:currency: 'EUX' is not an ISO 4217 currency code" in result.stderr
    assert result.stdout == ""
