"""The real policy pack, started the way the Pulumi CLI starts it, over its gRPC Analyzer API.

The CLI runs `python -u -m pulumi.policy <engine address> .` in the pack directory,
with the stack config in PULUMI_CONFIG. The pack prints its port and serves the
Analyzer service on 127.0.0.1; these tests call GetAnalyzerInfo, Analyze (one
resource's inputs) and AnalyzeStack (every resource's outputs) with the resources
that the program registers under mocks, as the engine would send them.
"""

from __future__ import annotations

import copy
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.deserialize import serialize_properties
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from components.spec import load_stack_file
from policies.rules import MANDATORY, RULES
from popstack.mockrun import RecordedResource, Recording, flat_config

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR = REPO_ROOT / "policies"
LISBON = REPO_ROOT / "stacks" / "Pulumi.lisbon-popup.yaml"
START_TIMEOUT_SECONDS = 60
DESCRIPTIONS = {rule.id: rule.description for rule in RULES}


@dataclass
class RunningPack:
    process: subprocess.Popen
    channel: grpc.Channel
    stub: analyzer_pb2_grpc.AnalyzerStub


def read_port(process: subprocess.Popen, stderr_path: Path) -> int:
    """Wait for the first stdout line, the port, and fail with the pack's stderr otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline().strip()
            if line.isdigit():
                return int(line)
            pytest.fail(
                f"policy pack printed {line!r} instead of a port: {stderr_path.read_text()}"
            )
        if process.poll() is not None:
            pytest.fail(f"policy pack exited with {process.returncode}: {stderr_path.read_text()}")
    pytest.fail(f"policy pack printed no port in {START_TIMEOUT_SECONDS} s")


def start_pack(
    command: list[str], cwd: Path, stack_config: dict[str, str] | None, stderr_path: Path
) -> RunningPack:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PULUMI_")}
    if stack_config is not None:
        # What the engine sets for a policy pack process (constructEnv in the engine's
        # pkg/resource/plugin/analyzer_plugin.go).
        env["PULUMI_CONFIG"] = json.dumps(stack_config)
        env.update(PULUMI_PROJECT="popstack", PULUMI_STACK="lisbon-popup", PULUMI_DRY_RUN="true")
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    port = read_port(process, stderr_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT_SECONDS)
    return RunningPack(process, channel, analyzer_pb2_grpc.AnalyzerStub(channel))


def stop_pack(pack: RunningPack) -> None:
    pack.channel.close()
    pack.process.terminate()
    try:
        pack.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pack.process.kill()
        pack.process.wait(timeout=10)
    assert pack.process.stdout is not None
    pack.process.stdout.close()


CLI_COMMAND = [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", "."]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPack]:
    """The pack as `pulumi preview --policy-pack policies` runs it for the lisbon-popup stack."""
    config, _ = flat_config(load_stack_file(LISBON))
    stderr_path = tmp_path_factory.mktemp("pack") / "stderr.txt"
    running = start_pack(CLI_COMMAND, PACK_DIR, config, stderr_path)
    yield running
    stop_pack(running)


@pytest.fixture
def unconfigured_pack(tmp_path: Path) -> Iterator[RunningPack]:
    """The pack without stack config, as when the engine passes none."""
    running = start_pack(CLI_COMMAND, PACK_DIR, None, tmp_path / "stderr.txt")
    yield running
    stop_pack(running)


@pytest.fixture
def lisbon(recorded) -> Recording:
    return copy.deepcopy(recorded("lisbon-popup"))


def to_struct(props: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(serialize_properties(props))
    return struct


def named(recording: Recording, name: str) -> RecordedResource:
    return next(resource for resource in recording.resources if resource.name == name)


def outputs_of(resource: RecordedResource) -> dict[str, Any]:
    """Return what the engine would hold as the resource's outputs after the mock run."""
    outputs = copy.deepcopy({**resource.state, **resource.inputs})
    if resource.id:
        outputs.setdefault("id", resource.id)
    return outputs


def analyze(pack: RunningPack, resource: RecordedResource, inputs: dict | None = None) -> list:
    request = analyzer_pb2.AnalyzeRequest(
        type=resource.type,
        name=resource.name,
        urn=resource.urn,
        properties=to_struct(resource.inputs if inputs is None else inputs),
        options=analyzer_pb2.AnalyzerResourceOptions(
            protect=resource.protect, parent=resource.parent
        ),
    )
    return list(pack.stub.Analyze(request, timeout=30).diagnostics)


def analyze_stack(
    pack: RunningPack, recording: Recording, outputs: dict[str, dict] | None = None
) -> list:
    """Send every custom resource, with `outputs` replacing the outputs of named resources."""
    replaced = outputs or {}
    resources = [
        analyzer_pb2.AnalyzerResource(
            type=resource.type,
            name=resource.name,
            urn=resource.urn,
            properties=to_struct(replaced.get(resource.name) or outputs_of(resource)),
            parent=resource.parent,
            dependencies=resource.dependencies,
        )
        for resource in recording.resources
        if resource.custom
    ]
    request = analyzer_pb2.AnalyzeStackRequest(resources=resources)
    return list(pack.stub.AnalyzeStack(request, timeout=60).diagnostics)


def summary(diagnostic) -> tuple[str, int, str]:
    return diagnostic.policyName, diagnostic.enforcementLevel, diagnostic.urn


def test_analyzer_info_lists_rules(pack: RunningPack) -> None:
    info = pack.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "popstack"
    assert info.supportsConfig is True
    assert [policy.name for policy in info.policies] == [rule.id for rule in RULES]
    for policy, rule in zip(info.policies, RULES, strict=True):
        level = analyzer_pb2.MANDATORY if rule.enforcement == MANDATORY else analyzer_pb2.ADVISORY
        kind = (
            analyzer_pb2.POLICY_TYPE_RESOURCE
            if rule.check_resource is not None
            else analyzer_pb2.POLICY_TYPE_STACK
        )
        assert policy.description == rule.description
        assert policy.enforcementLevel == level, rule.id
        assert policy.policy_type == kind, rule.id
    autoscaler = next(policy for policy in info.policies if policy.name == "hpa-max-replicas")
    schema = dict(autoscaler.configSchema.properties)
    assert schema["rpsPerReplica"]["default"] == 50
    assert schema["maxReplicaHeadroom"]["default"] == 4


def test_clean_sample_has_no_diagnostics(pack: RunningPack, lisbon: Recording) -> None:
    custom = [resource for resource in lisbon.resources if resource.custom]
    assert len(custom) > 60
    for resource in custom:
        assert analyze(pack, resource) == [], resource.name
    assert analyze_stack(pack, lisbon) == []


def test_queue_without_tags_is_mandatory(pack: RunningPack, lisbon: Recording) -> None:
    queue = named(lisbon, "lisbon-popup-27-queues-queue")
    inputs = {key: value for key, value in queue.inputs.items() if key != "tags"}
    diagnostics = analyze(pack, queue, inputs)
    assert [summary(d) for d in diagnostics] == [("event-tags", analyzer_pb2.MANDATORY, queue.urn)]
    assert diagnostics[0].policyPackName == "popstack"
    assert diagnostics[0].message == (
        DESCRIPTIONS["event-tags"] + "\n"
        'Queue "lisbon-popup-27-queues-queue": has no tags; pass tags=context.tags '
        "(components.context.EventContext.tags)"
    )


def test_run_as_non_root_false_is_mandatory(pack: RunningPack, lisbon: Recording) -> None:
    deployment = named(lisbon, "lisbon-popup-27-checkout-deployment")
    inputs = copy.deepcopy(deployment.inputs)
    inputs["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    diagnostics = analyze(pack, deployment, inputs)
    assert [summary(d) for d in diagnostics] == [
        ("container-non-root", analyzer_pb2.MANDATORY, deployment.urn)
    ]
    assert diagnostics[0].message.endswith(
        'container "checkout" sets runAsNonRoot false; set securityContext.runAsNonRoot: true '
        "on the pod or the container"
    )


def test_wildcard_action_is_mandatory(pack: RunningPack, lisbon: Recording) -> None:
    policy = named(lisbon, "lisbon-popup-27-exports-finance-read")
    document = json.loads(policy.inputs["policy"])
    document["Statement"].append(
        {"Sid": "All", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    )
    diagnostics = analyze(pack, policy, {**policy.inputs, "policy": json.dumps(document)})
    assert [summary(d) for d in diagnostics] == [
        ("iam-least-privilege", analyzer_pb2.MANDATORY, policy.urn),
        ("iam-least-privilege", analyzer_pb2.MANDATORY, policy.urn),
    ]
    assert diagnostics[0].message.endswith(
        'policy statement All allows action "s3:*"; list only the actions it needs'
    )


def test_pdb_min_available_in_stack_analysis(pack: RunningPack, lisbon: Recording) -> None:
    budget = named(lisbon, "lisbon-popup-27-checkout-pdb")
    outputs = outputs_of(budget)
    del outputs["spec"]["maxUnavailable"]
    outputs["spec"]["minAvailable"] = 2
    diagnostics = analyze_stack(pack, lisbon, {budget.name: outputs})
    assert [summary(d) for d in diagnostics] == [
        ("pdb-allows-eviction", analyzer_pb2.MANDATORY, budget.urn)
    ]
    assert "minAvailable 2 keeps all 2 pods" in diagnostics[0].message


def test_rotation_in_freeze_uses_stack_config(pack: RunningPack, lisbon: Recording) -> None:
    # The freeze comes from popstack:window in PULUMI_CONFIG: 2027-03-26T04:00Z to 28T18:00Z.
    rotation = named(lisbon, "lisbon-popup-27-secrets-payment-webhook-rotation")
    outputs = outputs_of(rotation)
    outputs["rotationRules"]["scheduleExpression"] = "cron(0 3 1,28 * ? *)"
    diagnostics = analyze_stack(pack, lisbon, {rotation.name: outputs})
    assert [summary(d) for d in diagnostics] == [
        ("secret-rotation", analyzer_pb2.MANDATORY, rotation.urn)
    ]
    assert "rotates on 2027-03-28 (UTC), inside the freeze" in diagnostics[0].message


def test_unknown_input_is_advisory(pack: RunningPack, lisbon: Recording) -> None:
    policy = named(lisbon, "lisbon-popup-27-checkout-role-policy")
    diagnostics = analyze(pack, policy, {**policy.inputs, "policy": UNKNOWN_STRING_VALUE})
    assert [(d.policyName, d.enforcementLevel) for d in diagnostics] == [
        ("iam-least-privilege", analyzer_pb2.ADVISORY)
    ]
    # pulumi_policy words the first part; the rest is the rule's finding.
    message = diagnostics[0].message
    assert message.startswith("can't run policy 'iam-least-privilege' from policy pack 'popstack@v")
    assert message.endswith(
        'during preview: RolePolicy "lisbon-popup-27-checkout-role-policy": cannot check until '
        "known: policy is computed during the update"
    )


def test_unknown_redrive_still_finds_dead_letter_queue(
    pack: RunningPack, lisbon: Recording
) -> None:
    queue = named(lisbon, "lisbon-popup-27-queues-queue")
    outputs = outputs_of(queue)
    outputs["redrivePolicy"] = UNKNOWN_STRING_VALUE
    # The engine's dependencies point the unknown redrive policy at the DLQ.
    assert analyze_stack(pack, lisbon, {queue.name: outputs}) == []


def test_hpa_above_headroom_is_advisory(pack: RunningPack, lisbon: Recording) -> None:
    autoscaler = named(lisbon, "lisbon-popup-27-checkout-hpa")
    inputs = copy.deepcopy(autoscaler.inputs)
    inputs["spec"]["maxReplicas"] = 13
    diagnostics = analyze(pack, autoscaler, inputs)
    assert [summary(d) for d in diagnostics] == [
        ("hpa-max-replicas", analyzer_pb2.ADVISORY, autoscaler.urn)
    ]
    assert "maxReplicas 13 is more than 4 times the 3 replicas" in diagnostics[0].message


def test_policy_config_sets_threshold(pack: RunningPack, lisbon: Recording) -> None:
    autoscaler = named(lisbon, "lisbon-popup-27-checkout-hpa")
    properties = struct_pb2.Struct()
    properties.update({"rpsPerReplica": 1000})
    request = analyzer_pb2.ConfigureAnalyzerRequest(
        policyConfig={
            "hpa-max-replicas": analyzer_pb2.PolicyConfig(
                enforcementLevel=analyzer_pb2.ADVISORY, properties=properties
            )
        }
    )
    pack.stub.Configure(request, timeout=30)
    try:
        # 120 requests/s at 1000 per replica needs 1 replica; maxReplicas 6 is above 4 x 1.
        diagnostics = analyze(pack, autoscaler)
    finally:
        pack.stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest(), timeout=30)
    assert [summary(d) for d in diagnostics] == [
        ("hpa-max-replicas", analyzer_pb2.ADVISORY, autoscaler.urn)
    ]
    assert "the 1 replicas that peakRps 120 needs at 1000 requests/s" in diagnostics[0].message
    assert analyze(pack, autoscaler) == []


def test_window_from_policy_config(unconfigured_pack: RunningPack, lisbon: Recording) -> None:
    queue = named(lisbon, "lisbon-popup-27-queues-queue")
    diagnostics = analyze(unconfigured_pack, queue)
    assert [(d.policyName, d.enforcementLevel) for d in diagnostics] == [
        ("event-tags", analyzer_pb2.ADVISORY)
    ]
    assert "tag popstack:expires-at: the event window is unknown" in diagnostics[0].message

    properties = struct_pb2.Struct()
    properties.update(
        {
            "eventId": "lisbon-popup-27",
            "windowOpens": "2027-03-26T10:00:00+00:00",
            "windowCloses": "2027-03-28T19:00:00+01:00",
            "graceHours": 72,
        }
    )
    request = analyzer_pb2.ConfigureAnalyzerRequest(
        policyConfig={
            "event-tags": analyzer_pb2.PolicyConfig(
                enforcementLevel=analyzer_pb2.MANDATORY, properties=properties
            )
        }
    )
    unconfigured_pack.stub.Configure(request, timeout=30)
    assert analyze(unconfigured_pack, queue) == []
    late = copy.deepcopy(queue.inputs)
    late["tags"]["popstack:expires-at"] = "2027-04-01T00:00:00Z"
    diagnostics = analyze(unconfigured_pack, queue, late)
    assert [summary(d) for d in diagnostics] == [("event-tags", analyzer_pb2.MANDATORY, queue.urn)]
    assert "is after the window close plus 72 h of grace" in diagnostics[0].message


def test_main_runs_from_repository_root(tmp_path: Path) -> None:
    command = [sys.executable, "-u", str(PACK_DIR / "__main__.py")]
    running = start_pack(command, REPO_ROOT, None, tmp_path / "stderr.txt")
    try:
        info = running.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    finally:
        stop_pack(running)
    assert info.name == "popstack"
    assert len(info.policies) == len(RULES)
