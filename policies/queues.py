"""Every order queue moves failed messages to a dead-letter queue of its own type."""

from __future__ import annotations

from typing import Any

from policies.settings import EventSettings
from policies.view import (
    UNKNOWN,
    Finding,
    ResourceView,
    cannot_check,
    parse_json,
    resolve_reference,
    violation,
)

QUEUE = "aws:sqs/queue:Queue"
REDRIVE_POLICY = "aws:sqs/redrivePolicy:RedrivePolicy"


def _is_fifo(queue: ResourceView) -> bool:
    name = queue.get("name")
    return queue.get("fifoQueue") is True or (isinstance(name, str) and name.endswith(".fifo"))


def _kind(fifo: bool) -> str:
    return "FIFO" if fifo else "standard"


def check_dead_letter_queues(views: list[ResourceView], settings: EventSettings) -> list[Finding]:
    """Check that every queue that is no dead-letter queue redrives to one of its own type.

    The redrive policy is the queue's `redrivePolicy` or a separate RedrivePolicy
    resource. A queue that another queue's redrive policy targets is a dead-letter
    queue and needs none itself.
    """
    queues = [view for view in views if view.type == QUEUE]
    policies: dict[str, tuple[ResourceView, Any]] = {}
    for queue in queues:
        value = queue.get("redrivePolicy")
        if value is not None:
            policies[queue.urn] = (queue, value)
    findings: list[Finding] = []
    for resource in (view for view in views if view.type == REDRIVE_POLICY):
        target = resolve_reference(
            resource, "queueUrl", resource.get("queueUrl"), queues, ("url", "id")
        )
        if target is UNKNOWN:
            findings.append(
                cannot_check(resource, "the queue whose redrive policy this sets is not known")
            )
        elif isinstance(target, ResourceView):
            policies[target.urn] = (resource, resource.get("redrivePolicy"))

    dead_letter_queues: set[str] = set()
    unresolved = False
    for queue in queues:
        if queue.urn not in policies:
            continue
        source, value = policies[queue.urn]
        redrive_findings, target = _check_redrive(queue, source, value, queues)
        findings.extend(redrive_findings)
        if target is UNKNOWN:
            unresolved = True
        elif isinstance(target, ResourceView):
            dead_letter_queues.add(target.urn)

    for queue in queues:
        if queue.urn in policies or queue.urn in dead_letter_queues:
            continue
        if unresolved:
            findings.append(
                cannot_check(
                    queue,
                    "it has no redrive policy, and it may be the dead-letter queue of a "
                    "queue whose redrive policy is computed during the update",
                )
            )
            continue
        findings.append(
            violation(
                queue,
                f"has no redrive policy and is no queue's dead-letter queue; set redrive_policy "
                f"with deadLetterTargetArn of a {_kind(_is_fifo(queue))} dead-letter queue and "
                "maxReceiveCount (components.queues.OrderQueues does)",
            )
        )
    return findings


def _check_redrive(
    queue: ResourceView, source: ResourceView, value: Any, queues: list[ResourceView]
) -> tuple[list[Finding], Any]:
    """Check one redrive policy; return its findings and the dead-letter queue it names.

    The queue is a ResourceView, None for a queue outside the stack or an invalid
    policy, or UNKNOWN when the preview cannot tell.
    """
    fifo = _is_fifo(queue)
    if value is UNKNOWN:
        target = resolve_reference(source, "redrivePolicy", UNKNOWN, queues, ("arn",))
        if not isinstance(target, ResourceView):
            return [cannot_check(source, "redrivePolicy is computed during the update")], UNKNOWN
        return _type_findings(source, queue, fifo, target.label, _is_fifo(target)), target
    try:
        document = parse_json(value)
    except ValueError as error:
        return [violation(source, f"redrivePolicy is not a JSON document: {error}")], None
    arn = document.get("deadLetterTargetArn") if isinstance(document, dict) else None
    if not arn:
        problem = "redrivePolicy has no deadLetterTargetArn; name the dead-letter queue's ARN"
        return [violation(source, problem)], None

    findings: list[Finding] = []
    if not document.get("maxReceiveCount"):
        findings.append(
            violation(source, "redrivePolicy has no maxReceiveCount; set it, for example to 5")
        )
    target = resolve_reference(source, "redrivePolicy", arn, queues, ("arn",))
    if not isinstance(target, ResourceView):
        # The target's own ARN is unknown while it is being created or replaced, but
        # the ARN in the redrive policy ends with the queue's name.
        queue_name = str(arn).rsplit(":", 1)[-1]
        target = next((q for q in queues if q.get("name") == queue_name), None)
    if target is None:
        outside_fifo = str(arn).endswith(".fifo")
        findings.extend(_type_findings(source, queue, fifo, f"queue {arn}", outside_fifo))
        return findings, None
    if target.urn == queue.urn:
        findings.append(
            violation(
                source, "redrivePolicy names the queue itself; name a separate dead-letter queue"
            )
        )
    findings.extend(_type_findings(source, queue, fifo, target.label, _is_fifo(target)))
    return findings, target


def _type_findings(
    source: ResourceView, queue: ResourceView, fifo: bool, target_label: str, target_fifo: bool
) -> list[Finding]:
    if fifo == target_fifo:
        return []
    subject = (
        "is" if source.urn == queue.urn else f"sets the redrive policy of {queue.label}, which is"
    )
    return [
        violation(
            source,
            f"{subject} {_kind(fifo)} but its dead-letter queue {target_label} is "
            f"{_kind(target_fifo)}; SQS needs both of the same type, so use a "
            f"{_kind(fifo)} dead-letter queue",
        )
    ]
