"""The GitHub Actions workflows: triggers, paths, environments and the commands they run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"
# An action reference pinned to a major version tag, such as actions/checkout@v5.
MAJOR_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+@v[0-9]+$")


def load(name: str) -> dict[str, Any]:
    # YAML 1.2 (ruamel's default) keeps the `on:` key a string; YAML 1.1 reads it as True.
    document = YAML(typ="safe").load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{name} is not a mapping"
    return document


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def run_text(workflow: dict[str, Any], job: str) -> str:
    return "\n".join(step.get("run", "") for step in steps(workflow, job))


def all_uses(workflow: dict[str, Any]) -> list[str]:
    return [
        step["uses"]
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if "uses" in step
    ]


@pytest.mark.parametrize("name", ["plan.yml", "promote.yml", "expire.yml", "integration.yml"])
def test_workflow_actions_pinned_to_major(name: str) -> None:
    uses = all_uses(load(name))
    assert uses, f"{name} uses no actions"
    for reference in uses:
        assert MAJOR_PIN.match(reference), f"{name}: {reference} is not pinned to a major version"


@pytest.mark.parametrize("name", ["plan.yml", "promote.yml", "expire.yml", "integration.yml"])
def test_workflow_names_every_step_or_action(name: str) -> None:
    for job_name, job in load(name)["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", job_name
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"{name}/{job_name}: {step}"


def test_plan_triggers_on_spec_paths() -> None:
    workflow = load("plan.yml")
    assert list(workflow["on"]) == ["pull_request"]
    assert workflow["on"]["pull_request"]["paths"] == [
        "stacks/**",
        "components/**",
        "templates/**",
        "policies/**",
    ]
    assert workflow["permissions"] == {"contents": "read"}


def test_plan_offline_job_plans_changed_stacks() -> None:
    workflow = load("plan.yml")
    job = workflow["jobs"]["offline-plan"]
    assert "permissions" not in job
    assert "secrets." not in str(job)
    checkout = steps(workflow, "offline-plan")[0]
    assert checkout["uses"] == "actions/checkout@v5"
    assert checkout["with"]["fetch-depth"] == 0
    script = run_text(workflow, "offline-plan")
    assert 'git diff --name-only "$BASE_SHA...$HEAD_SHA"' in script
    assert '.venv/bin/popstack plan "$stack" --json' in script
    assert "^(components|templates|policies)/" in script
    assert job["outputs"]["stacks"] == "${{ steps.changed.outputs.stacks }}"


def test_plan_preview_job_is_guarded_and_comments() -> None:
    workflow = load("plan.yml")
    job = workflow["jobs"]["preview"]
    assert job["needs"] == "offline-plan"
    assert "vars.PULUMI_PREVIEW_ROLE_ARN != ''" in job["if"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]
    assert job["permissions"]["pull-requests"] == "write"
    assert job["permissions"]["id-token"] == "write"
    script = run_text(workflow, "preview")
    assert 'pulumi preview --stack "$stack" --policy-pack policies' in script
    assert "get.pulumi.com" in script
    comment = next(
        s
        for s in steps(workflow, "preview")
        if s.get("uses", "").startswith("actions/github-script@")
    )
    assert comment["if"] == "always()"
    assert "createComment" in comment["with"]["script"]
    assert "updateComment" in comment["with"]["script"]


def test_promote_is_dispatched_into_production() -> None:
    workflow = load("promote.yml")
    assert list(workflow["on"]) == ["workflow_dispatch"]
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert sorted(inputs) == ["event", "from", "to"]
    assert all(item["required"] is True for item in inputs.values())
    job = workflow["jobs"]["promote"]
    assert job["environment"] == "production"
    assert job["env"]["FROM"] == "${{ inputs.from }}"
    assert job["env"]["TO"] == "${{ inputs.to }}"
    assert job["env"]["EVENT"] == "${{ inputs.event }}"
    script = run_text(workflow, "promote")
    assert '.venv/bin/popstack promote "$FROM" "$TO" --event "$EVENT" --yes --json' in script
    assert "gh pr create" in script


def test_workflow_inputs_pass_through_env() -> None:
    # Inputs expanded inside `run:` would be shell code; they pass through env instead.
    for name in ("promote.yml", "plan.yml", "expire.yml", "integration.yml"):
        workflow = load(name)
        for job in workflow["jobs"]:
            script = run_text(workflow, job)
            assert "${{ inputs." not in script, name
            assert "${{ github.event" not in script, name


def test_expire_runs_on_schedule_with_teardown() -> None:
    workflow = load("expire.yml")
    assert sorted(workflow["on"]) == ["schedule", "workflow_dispatch"]
    assert workflow["on"]["schedule"] == [{"cron": "17 * * * *"}]
    script = run_text(workflow, "expire")
    assert ".venv/bin/popstack expire --teardown --yes --json" in script
    assert workflow["concurrency"]["cancel-in-progress"] is False


def test_integration_runs_demo_against_moto() -> None:
    workflow = load("integration.yml")
    assert "pull_request" in workflow["on"]
    assert "get.pulumi.com" in run_text(workflow, "tests")
    assert ".venv/bin/python -m pytest" in run_text(workflow, "tests")
    demo = run_text(workflow, "demo")
    assert ".venv/bin/moto_server -H 127.0.0.1 -p 5000" in demo
    assert "PULUMI_BACKEND_URL=file://" in demo
    commands = [
        ".venv/bin/popstack up demo --yes --json",
        ".venv/bin/popstack teardown demo --yes",
        "pulumi destroy --stack demo --yes",
    ]
    positions = [demo.index(command) for command in commands]
    assert positions == sorted(positions)
    env = workflow["jobs"]["demo"]["env"]
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert env["AWS_ACCESS_KEY_ID"] == "testing"


def test_pulumi_cli_version_matches_sdk_floor() -> None:
    pyproject = (WORKFLOWS.parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    floor = re.search(r'"pulumi>=([0-9.]+),', pyproject)
    assert floor is not None
    for name in ("plan.yml", "promote.yml", "expire.yml", "integration.yml"):
        assert load(name)["env"]["PULUMI_VERSION"] == f"{floor.group(1)}.0", name
