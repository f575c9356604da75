"""The offline plan: the resource tree by part, counts, dependency depth and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from components.spec import EXPORT_VERIFIED_KEY, NAMESPACE, StackFile, load_stack_file
from policies.rules import RuleResult, evaluate_recording
from popstack.mockrun import (
    PLAN_ACCOUNT_ID,
    SECRET_MASK,
    RecordedResource,
    Recording,
    record_program,
)

EVENT_STACK_TYPE = "popstack:index:EventStack"


@dataclass
class Plan:
    """The report of `popstack plan` for one stack file."""

    stack_file: StackFile
    recording: Recording
    parts: dict[str, list[RecordedResource]]
    depth: int
    critical_path: list[RecordedResource]
    policy_results: list[RuleResult] = field(default_factory=list)

    @property
    def resource_count(self) -> int:
        return len(self.recording.resources)

    @property
    def mandatory_failures(self) -> list[RuleResult]:
        return [r for r in self.policy_results if not r.passed and r.enforcement == "mandatory"]

    def to_json(self) -> dict[str, Any]:
        spec = self.stack_file.spec
        return {
            "stack": self.stack_file.stack,
            "stackFile": str(self.stack_file.path),
            "event": {
                "id": spec.id,
                "title": spec.title,
                "opens": spec.window.opens.isoformat(),
                "closes": spec.window.closes.isoformat(),
                "timeZone": spec.window.time_zone,
                "expiresAt": spec.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "accountId": PLAN_ACCOUNT_ID,
            "resourceCount": self.resource_count,
            "dependencyDepth": self.depth,
            "criticalPath": [r.name for r in self.critical_path],
            "parts": {
                part: [resource_summary(r) for r in resources]
                for part, resources in self.parts.items()
            },
            "outputs": self.recording.outputs,
            "secretOutputs": self.recording.secret_outputs,
            "logs": self.recording.logs,
            "config": masked_config(self.stack_file),
            "policies": [r.to_json() for r in self.policy_results],
        }


def physical_name(resource: RecordedResource) -> str:
    """Return the name the resource gets in AWS or Kubernetes, as far as inputs fix it."""
    inputs = resource.inputs
    for key in ("name", "bucket", "ruleName", "dashboardName", "userId", "userGroupId"):
        if isinstance(inputs.get(key), str):
            return inputs[key]
    if isinstance(inputs.get("namePrefix"), str):
        return inputs["namePrefix"] + "*"
    metadata = inputs.get("metadata")
    if isinstance(metadata, dict) and metadata.get("name"):
        namespace = metadata.get("namespace")
        return f"{namespace}/{metadata['name']}" if namespace else metadata["name"]
    return ""


def resource_summary(resource: RecordedResource) -> dict[str, Any]:
    return {
        "type": resource.type,
        "name": resource.name,
        "physicalName": physical_name(resource),
        "protect": resource.protect,
        "retainOnDelete": resource.retain_on_delete,
    }


def masked_config(stack_file: StackFile) -> dict[str, Any]:
    """Return the stack's config with every secure value replaced by the mask."""
    return {
        key: SECRET_MASK if key in stack_file.secret_keys else value
        for key, value in sorted(stack_file.config.items())
    }


def group_by_part(recording: Recording) -> dict[str, list[RecordedResource]]:
    """Group resources under the EventStack child (the part) they descend from."""
    by_urn = recording.by_urn()
    root = next((r.urn for r in recording.resources if r.type == EVENT_STACK_TYPE), "")

    def part_of(resource: RecordedResource) -> RecordedResource | None:
        current = resource
        while current.parent and current.parent != root:
            parent = by_urn.get(current.parent)
            if parent is None:
                return None
            current = parent
        return current if current.parent == root else None

    parts: dict[str, list[RecordedResource]] = {}
    for resource in recording.resources:
        if resource.urn == root:
            continue
        part = part_of(resource)
        if part is None:
            continue
        label = part.type.split(":")[1] if part.type.startswith("popstack:") else part.short_type
        if part is resource and not resource.custom:
            parts.setdefault(label, [])
            continue
        parts.setdefault(label, []).append(resource)
    return {label: sorted(found, key=lambda r: r.urn) for label, found in sorted(parts.items())}


def dependency_chain(recording: Recording) -> list[RecordedResource]:
    """Return the longest chain of resources that must be created one after another.

    A dependency on a component stands for its custom descendants, as in the engine.
    """
    by_urn = recording.by_urn()
    children: dict[str, list[str]] = {}
    for resource in recording.resources:
        children.setdefault(resource.parent, []).append(resource.urn)

    def custom_descendants(urn: str) -> list[str]:
        found = []
        for child in children.get(urn, []):
            if by_urn[child].custom:
                found.append(child)
            found.extend(custom_descendants(child))
        return found

    def direct(urn: str) -> set[str]:
        resolved: set[str] = set()
        for dependency in by_urn[urn].dependencies:
            target = by_urn.get(dependency)
            if target is None:
                continue
            if target.custom:
                resolved.add(dependency)
            else:
                resolved.update(custom_descendants(dependency))
        resolved.discard(urn)
        return resolved

    @cache
    def longest(urn: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for dependency in sorted(direct(urn)):
            chain = longest(dependency)
            if len(chain) > len(best):
                best = chain
        return best + (urn,)

    chains = [longest(r.urn) for r in recording.resources if r.custom]
    # Registration order varies between runs; sorting makes the chosen chain stable.
    winner = max(sorted(chains), key=len, default=())
    return [by_urn[urn] for urn in winner]


def build_plan(stack_file: StackFile | str, run_policies: bool = True) -> Plan:
    """Load a stack file (or take a parsed one), run the program under mocks and analyse it."""
    if not isinstance(stack_file, StackFile):
        stack_file = load_stack_file(stack_file)
    recording = record_program(stack_file)
    chain = dependency_chain(recording)
    plan = Plan(
        stack_file=stack_file,
        recording=recording,
        parts=group_by_part(recording),
        depth=len(chain),
        critical_path=chain,
    )
    if run_policies:
        plan.policy_results = evaluate_policies(plan)
    return plan


def evaluate_policies(plan: Plan) -> list[RuleResult]:
    """Run the policy pack's rules over the recorded resources, as the pack does in a preview."""
    export_verified = bool(plan.stack_file.config.get(f"{NAMESPACE}:{EXPORT_VERIFIED_KEY}"))
    return evaluate_recording(plan.recording, plan.stack_file.spec, export_verified=export_verified)
