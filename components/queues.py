"""The order-events queue and its dead-letter queue."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.context import EventContext

# SQS keeps a message for at most 14 days, and dead letters get all 14. The spec
# caps the order queue's retention at 335 hours, so dead letters always outlive it.
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600


class OrderQueues(pulumi.ComponentResource):
    """An order queue whose failed messages move to a dead-letter queue of the same type."""

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:queues:OrderQueues", name, None, opts)
        queues = context.spec.queues
        fifo = queues.type == "fifo"
        suffix = ".fifo" if fifo else ""
        fifo_args = (
            {
                "fifo_queue": True,
                "deduplication_scope": "messageGroup",
                "fifo_throughput_limit": "perMessageGroupId",
            }
            if fifo
            else {}
        )

        self.dead_letter_queue = aws.sqs.Queue(
            f"{name}-dlq",
            name=context.name("sqs", f"orders-dlq{suffix}"),
            message_retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            tags=context.tags,
            opts=context.stateful(self),
            **fifo_args,
        )

        self.queue = aws.sqs.Queue(
            f"{name}-queue",
            name=context.name("sqs", f"orders{suffix}"),
            message_retention_seconds=queues.retention_hours * 3600,
            visibility_timeout_seconds=queues.visibility_timeout_seconds,
            receive_wait_time_seconds=20,
            sqs_managed_sse_enabled=True,
            redrive_policy=self.dead_letter_queue.arn.apply(
                lambda arn: json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": queues.max_receive_count}
                )
            ),
            tags=context.tags,
            opts=context.stateful(self),
            **fifo_args,
        )

        # Only the order queue may move messages into this dead-letter queue.
        self.redrive_allow = aws.sqs.RedriveAllowPolicy(
            f"{name}-dlq-allow",
            queue_url=self.dead_letter_queue.url,
            redrive_allow_policy=self.queue.arn.apply(
                lambda arn: json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [arn]})
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.register_outputs(
            {
                "queueUrl": self.queue.url,
                "queueArn": self.queue.arn,
                "deadLetterQueueUrl": self.dead_letter_queue.url,
                "deadLetterQueueArn": self.dead_letter_queue.arn,
            }
        )
