"""Kubernetes objects of the stack, validated offline against the Kubernetes schemas.

kubernetes-validate ships the JSON schemas of each Kubernetes release, and its
strict variant rejects unknown fields. The object is rebuilt from the recorded inputs,
with apiVersion and kind taken from the resource's type token.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest

from popstack.mockrun import RecordedResource

# An older release than the newest one kubernetes-validate ships (1.37), so a field
# that only recent clusters accept fails here. NOTE: keep it at the oldest minor
# release of the clusters the events run on.
KUBERNETES_VERSION = "1.31"
SECURITY_GROUP_POLICY = "kubernetes:vpcresources.k8s.aws/v1beta1:SecurityGroupPolicy"
BUILT_IN_KINDS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "ConfigMap": "v1",
    "CronJob": "batch/v1",
}


def manifest(resource: RecordedResource) -> dict[str, Any]:
    """Rebuild the object the provider would send, from the type token and inputs."""
    _, group_version, kind = resource.type.split(":")
    api_version = group_version.removeprefix("core/")
    document: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    for key in ("metadata", "spec", "data"):
        if key in resource.inputs:
            document[key] = copy.deepcopy(resource.inputs[key])
    assert resource.inputs.get("apiVersion", api_version) == api_version, resource.urn
    assert resource.inputs.get("kind", kind) == kind, resource.urn
    return document


def kubernetes_objects(recording: Any) -> list[RecordedResource]:
    return [
        r
        for r in recording.resources
        if r.type.startswith("kubernetes:") and r.type != SECURITY_GROUP_POLICY
    ]


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop", "demo"])
def test_objects_match_kubernetes_schemas(recorded: Any, stack: str) -> None:
    objects = [manifest(r) for r in kubernetes_objects(recorded(stack))]

    assert {document["kind"]: document["apiVersion"] for document in objects} == BUILT_IN_KINDS
    for document in objects:
        name = f"{document['kind']}/{document['metadata']['name']}"
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{stack}: {name} is invalid at {path}: {error.message}")


def lisbon_deployment(recorded: Any) -> dict[str, Any]:
    found = recorded("lisbon-popup").of_type("kubernetes:apps/v1:Deployment")
    assert len(found) == 1
    return manifest(found[0])


def test_validator_accepts_lisbon_deployment(recorded: Any) -> None:
    document = lisbon_deployment(recorded)

    assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == "1.31"


def test_validator_rejects_string_replicas(recorded: Any) -> None:
    document = lisbon_deployment(recorded)
    document["spec"]["replicas"] = "3"

    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)

    assert list(caught.value.path) == ["spec", "replicas"]


def test_validator_rejects_unknown_field(recorded: Any) -> None:
    document = lisbon_deployment(recorded)
    container = document["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container["livenessProbe"]

    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)

    assert list(caught.value.path) == ["spec", "template", "spec", "containers", 0]
    assert "livenesProbe" in caught.value.message


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_security_group_policy_shape(recorded: Any, stack: str) -> None:
    # SecurityGroupPolicy is a custom resource of the AWS VPC resource controller.
    # kubernetes-validate has no schema for it, so its shape is checked here. One
    # policy attaches the cache client group to checkout pods, one to pre-sync pods.
    recording = recorded(stack)
    found = recording.of_type(SECURITY_GROUP_POLICY)
    assert len(found) == 2
    policies = {manifest(r)["metadata"]["name"]: manifest(r) for r in found}
    deployment = recording.of_type("kubernetes:apps/v1:Deployment")[0].inputs
    cron_job = recording.of_type("kubernetes:batch/v1:CronJob")[0].inputs
    pod_labels = {
        "checkout": deployment["spec"]["template"]["metadata"]["labels"],
        "inventory-pre-sync": cron_job["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
            "labels"
        ],
    }
    checkout_group = [
        r
        for r in recording.of_type("aws:ec2/securityGroup:SecurityGroup")
        if r.name.endswith("-checkout-sg")
    ]
    assert len(checkout_group) == 1

    assert set(policies) == set(pod_labels)
    assert pod_labels["checkout"] != pod_labels["inventory-pre-sync"]
    for name, policy in policies.items():
        assert set(policy) == {"apiVersion", "kind", "metadata", "spec"}, name
        assert policy["apiVersion"] == "vpcresources.k8s.aws/v1beta1", name
        assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"], name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        assert set(policy["spec"]) == {"podSelector", "securityGroups"}, name
        assert policy["spec"]["podSelector"] == {"matchLabels": pod_labels[name]}, name
        group_ids = policy["spec"]["securityGroups"]["groupIds"]
        assert group_ids == [checkout_group[0].id], name
        assert all(re.fullmatch(r"sg-[0-9a-f]{8,17}", group) for group in group_ids), name


def test_demo_stack_has_no_security_group_policy(recorded: Any) -> None:
    # The emulator stack has no cache, so no pod security group to attach.
    assert recorded("demo").of_type(SECURITY_GROUP_POLICY) == []
