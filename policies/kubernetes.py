"""Rules for the Kubernetes objects of an event stack: labels, pods, disruption and scaling."""

from __future__ import annotations

import math
from typing import Any

from policies.settings import EventSettings, replicas_for
from policies.view import UNKNOWN, Finding, ResourceView, cannot_check, violation

EVENT_LABEL = "popstack.io/event"
LABEL_FIX = "add the labels of components.naming.k8s_labels"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA_TYPES = frozenset(
    {
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        "kubernetes:autoscaling/v1:HorizontalPodAutoscaler",
    }
)
# Path to the pod spec in each workload kind.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
RESOURCE_FIELDS = (
    ("requests", "cpu"),
    ("requests", "memory"),
    ("limits", "cpu"),
    ("limits", "memory"),
)


def _is_kubernetes_object(view: ResourceView) -> bool:
    """Return whether the view is a Kubernetes object rather than a provider or component."""
    return view.type.startswith("kubernetes:") and "metadata" in view.props


def check_event_label(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that a Kubernetes object carries the event's `popstack.io/event` label."""
    if not _is_kubernetes_object(view):
        return []
    labels = view.get("metadata", "labels")
    value = view.get("metadata", "labels", EVENT_LABEL)
    if labels is UNKNOWN or value is UNKNOWN:
        return [cannot_check(view, "metadata.labels are computed during the update")]
    if not value:
        return [violation(view, f"has no label {EVENT_LABEL}; {LABEL_FIX}")]
    if settings.event_id is not None and value != settings.event_id:
        return [
            violation(
                view,
                f'label {EVENT_LABEL} is "{value}" but the event is "{settings.event_id}"; '
                f"{LABEL_FIX}",
            )
        ]
    return []


def pod_spec(view: ResourceView) -> Any:
    """Return the pod spec of a workload, None for other objects, or UNKNOWN."""
    if not view.type.startswith("kubernetes:"):
        return None
    path = POD_SPEC_PATHS.get(view.short_type)
    return view.get(*path) if path else None


def _containers(spec: dict) -> list[tuple[str, Any]]:
    """Return (label, container) for each container and init container of a pod spec."""
    found: list[tuple[str, Any]] = []
    for field in ("initContainers", "containers"):
        entries = spec.get(field)
        if entries is UNKNOWN:
            found.append((field, UNKNOWN))
            continue
        for index, container in enumerate(entries if isinstance(entries, list) else []):
            name = container.get("name") if isinstance(container, dict) else None
            kind = "init container" if field == "initContainers" else "container"
            found.append((f'{kind} "{name or index}"', container))
    return found


def _pod_containers(view: ResourceView) -> tuple[dict | None, list[tuple[str, Any]], list[Finding]]:
    """Return the pod spec, its containers, and a finding when the spec is unknown."""
    spec = pod_spec(view)
    if spec is UNKNOWN:
        return None, [], [cannot_check(view, "the pod spec is computed during the update")]
    if not isinstance(spec, dict):
        return None, [], []
    return spec, _containers(spec), []


def check_container_resources(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that every container sets cpu and memory requests and limits."""
    _, containers, findings = _pod_containers(view)
    for label, container in containers:
        if container is UNKNOWN or not isinstance(container, dict):
            findings.append(cannot_check(view, f"{label} is computed"))
            continue
        resources = container.get("resources")
        if resources is UNKNOWN:
            findings.append(cannot_check(view, f"{label} resources are computed"))
            continue
        missing = [
            f"{group}.{name}"
            for group, name in RESOURCE_FIELDS
            if not _field(resources, group, name)
        ]
        if missing:
            findings.append(
                violation(
                    view,
                    f"{label} sets no resources {', '.join(missing)}; set requests and limits "
                    "for cpu and memory (checkout.cpuRequest, cpuLimit, memoryRequest and "
                    "memoryLimit in the stack file)",
                )
            )
    return findings


def _field(resources: Any, group: str, name: str) -> Any:
    section = resources.get(group) if isinstance(resources, dict) else None
    return section.get(name) if isinstance(section, dict) else None


def check_non_root(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that no container can run as root, from the pod and container security contexts.

    A container setting overrides the pod setting. The container passes when the
    effective runAsNonRoot is true or the effective runAsUser is non-zero, and fails
    when runAsNonRoot is explicitly false or runAsUser is 0.
    """
    spec, containers, findings = _pod_containers(view)
    if spec is None:
        return findings
    pod_context = spec.get("securityContext")
    if pod_context is UNKNOWN:
        return [cannot_check(view, "the pod securityContext is computed")]
    pod_context = pod_context if isinstance(pod_context, dict) else {}
    for label, container in containers:
        if container is UNKNOWN or not isinstance(container, dict):
            findings.append(cannot_check(view, f"{label} is computed"))
            continue
        own = container.get("securityContext")
        if own is UNKNOWN:
            findings.append(cannot_check(view, f"{label} securityContext is computed"))
            continue
        own = own if isinstance(own, dict) else {}
        non_root = own.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        user = own.get("runAsUser", pod_context.get("runAsUser"))
        if UNKNOWN in (non_root, user):
            findings.append(cannot_check(view, f"{label} runAsNonRoot or runAsUser is computed"))
        elif user == 0:
            findings.append(
                violation(view, f"{label} runs as user 0 (root); set runAsUser to a non-zero id")
            )
        elif non_root is False:
            findings.append(
                violation(
                    view,
                    f"{label} sets runAsNonRoot false; set securityContext.runAsNonRoot: true "
                    "on the pod or the container",
                )
            )
        elif non_root is not True and user is None:
            findings.append(
                violation(
                    view,
                    f"{label} may run as root: neither runAsNonRoot: true nor a non-zero "
                    "runAsUser is set on the pod or the container; set runAsNonRoot: true",
                )
            )
    return findings


def image_tag(image: str) -> tuple[str | None, str | None]:
    """Split an image reference into its tag and digest; either may be None."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    return tag or None, digest or None


def check_image_pinned(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that every container image names a tag other than `latest`, or a digest."""
    _, containers, findings = _pod_containers(view)
    for label, container in containers:
        image = container.get("image") if isinstance(container, dict) else UNKNOWN
        if image is UNKNOWN:
            findings.append(cannot_check(view, f"{label} image is computed"))
            continue
        if not isinstance(image, str) or not image:
            findings.append(violation(view, f"{label} has no image; set a pinned image"))
            continue
        tag, digest = image_tag(image)
        if digest is not None:
            continue
        if tag is None:
            findings.append(
                violation(
                    view,
                    f'{label} image "{image}" has no tag or digest; pin it as {image}:1.4.2 or '
                    "@sha256:<digest> (checkout.image in the stack file)",
                )
            )
        elif tag == "latest":
            findings.append(
                violation(
                    view,
                    f'{label} image "{image}" uses the tag latest; pin a version tag or '
                    "@sha256:<digest> (checkout.image in the stack file)",
                )
            )
    return findings


def _namespace(view: ResourceView) -> Any:
    return view.get("metadata", "namespace") or "default"


def _pod_labels(workload: ResourceView) -> Any:
    template = POD_SPEC_PATHS[workload.short_type][:-1]
    return workload.get(*template, "metadata", "labels")


def _matches(selector: dict, labels: Any) -> bool:
    return isinstance(labels, dict) and all(labels.get(k) == v for k, v in selector.items())


def _replica_floor(
    workload: ResourceView, autoscalers: list[ResourceView]
) -> tuple[int | Any, str]:
    """Return the fewest replicas the workload runs with, and where that number comes from."""
    name = workload.get("metadata", "name")
    for autoscaler in autoscalers:
        target = autoscaler.get("spec", "scaleTargetRef")
        if (
            isinstance(target, dict)
            and target.get("kind") == workload.short_type
            and target.get("name") == name
            and _namespace(autoscaler) == _namespace(workload)
        ):
            return autoscaler.get("spec", "minReplicas") or 1, f"minReplicas of {autoscaler.label}"
    replicas = workload.get("spec", "replicas")
    return (1 if replicas is None else replicas), f"replicas of {workload.label}"


def _budget_pods(value: Any, replicas: int, round_up: bool) -> int | None:
    """Turn a PDB count or percentage into pods, rounding as the disruption controller does."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        exact = int(value[:-1]) * replicas / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return None


def check_disruption_budgets(views: list[ResourceView], settings: EventSettings) -> list[Finding]:
    """Check that every PodDisruptionBudget lets at least one pod be evicted.

    maxUnavailable of 1 or more (or a percentage above 0, which Kubernetes rounds
    up) always allows an eviction. minAvailable must stay below the fewest replicas
    of each workload the budget selects: the HPA's minReplicas, or spec.replicas.
    """
    autoscalers = [view for view in views if view.type in HPA_TYPES]
    workloads = [
        view
        for view in views
        if view.type.startswith("kubernetes:")
        and view.short_type in POD_SPEC_PATHS
        and view.short_type != "Pod"
    ]
    fix = "use maxUnavailable: 1 (components.checkout.CheckoutService does)"
    findings: list[Finding] = []
    for budget in (view for view in views if view.type == PDB):
        spec = budget.get("spec")
        if spec is UNKNOWN:
            findings.append(cannot_check(budget, "spec is computed during the update"))
            continue
        spec = spec if isinstance(spec, dict) else {}
        max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
        if UNKNOWN in (max_unavailable, min_available):
            findings.append(cannot_check(budget, "maxUnavailable or minAvailable is computed"))
        elif max_unavailable is not None:
            pods = _budget_pods(max_unavailable, 1, round_up=True)
            if pods is None or pods < 1:
                findings.append(
                    violation(budget, f"maxUnavailable {max_unavailable} allows no eviction; {fix}")
                )
        elif min_available is not None:
            findings.extend(
                _min_available_findings(budget, min_available, workloads, autoscalers, fix)
            )
        else:
            findings.append(
                violation(budget, f"sets neither maxUnavailable nor minAvailable; {fix}")
            )
    return findings


def _min_available_findings(
    budget: ResourceView,
    min_available: Any,
    workloads: list[ResourceView],
    autoscalers: list[ResourceView],
    fix: str,
) -> list[Finding]:
    selector = budget.get("spec", "selector", "matchLabels")
    if selector is UNKNOWN:
        return [cannot_check(budget, "spec.selector is computed")]
    selected = []
    if isinstance(selector, dict):
        selected = [
            workload
            for workload in workloads
            if _namespace(workload) == _namespace(budget)
            and _matches(selector, _pod_labels(workload))
        ]
    if not selected:
        return [
            violation(
                budget,
                "selects no workload of the stack, so whether minAvailable "
                f"{min_available} allows an eviction cannot be told; {fix}",
            )
        ]
    findings: list[Finding] = []
    for workload in selected:
        floor, source = _replica_floor(workload, autoscalers)
        if floor is UNKNOWN:
            findings.append(cannot_check(budget, f"the {source} is computed"))
            continue
        required = _budget_pods(min_available, floor, round_up=True)
        if required is None:
            findings.append(
                violation(
                    budget, f"minAvailable {min_available} is not a count or percentage; {fix}"
                )
            )
        elif required >= floor:
            findings.append(
                violation(
                    budget,
                    f"minAvailable {min_available} keeps all {floor} pods of {workload.label} "
                    f"({source}), so no pod can be evicted and node drains block; {fix}, or "
                    "set minAvailable below that",
                )
            )
    return findings


def check_autoscaler_headroom(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Report an HPA whose maxReplicas is below, or far above, what the event's peakRps needs."""
    if view.type not in HPA_TYPES:
        return []
    maximum = view.get("spec", "maxReplicas")
    if maximum is UNKNOWN:
        return [cannot_check(view, "spec.maxReplicas is computed")]
    if not isinstance(maximum, int):
        return []
    if settings.peak_rps is None:
        return [
            cannot_check(view, "peakRps is unknown; set popstack:peakRps or the policy's peakRps")
        ]
    thresholds = settings.thresholds
    needed = replicas_for(settings.peak_rps, thresholds.rps_per_replica)
    limit = thresholds.max_replica_headroom * needed
    if maximum > limit:
        return [
            violation(
                view,
                f"maxReplicas {maximum} is more than {thresholds.max_replica_headroom:g} times "
                f"the {needed} replicas that peakRps {settings.peak_rps} needs at "
                f"{thresholds.rps_per_replica:g} requests/s per replica; lower "
                "checkout.maxReplicas, or set rpsPerReplica in the policy config to the "
                "load-tested rate",
            )
        ]
    if maximum < needed:
        return [
            violation(
                view,
                f"maxReplicas {maximum} is below the {needed} replicas that peakRps "
                f"{settings.peak_rps} needs at {thresholds.rps_per_replica:g} requests/s per "
                "replica, so checkout cannot scale to the expected peak; raise "
                "checkout.maxReplicas, or set rpsPerReplica in the policy config to the "
                "load-tested rate",
            )
        ]
    return []
