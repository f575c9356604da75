"""Dashboards and alarms: one CloudWatch board, alarms to one SNS topic, a Grafana board.

The alert topic is encrypted with a customer managed KMS key of its own. CloudWatch
alarms cannot publish to a topic encrypted with the AWS managed key alias/aws/sns,
because that key's policy does not let cloudwatch.amazonaws.com call kms:Decrypt and
kms:GenerateDataKey and cannot be edited (AWS knowledge center article
"cloudwatch-configure-alarm-sns").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.checkout import METRICS_NAMESPACE
from components.context import EventContext, allow, policy_document
from components.naming import SUFFIXES, k8s_labels, kms_alias
from components.schedules import SCHEDULER_ROLE_SUFFIX
from components.spec import EMULATOR_SERVICES

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# The queue may hold an order this long before the on-call is paged.
OLDEST_MESSAGE_ALARM_SECONDS = 300
CHECKOUT_ERRORS_PER_MINUTE = 5
# KMS waits this many days (its minimum) before it deletes a key scheduled for deletion.
KEY_DELETION_WINDOW_DAYS = 7
CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"
# Actions with which the account administers the alert topic's key, none of which
# encrypts or decrypts. In a key policy each applies to that key only.
KEY_ADMIN_ACTIONS = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
]
# Actions that SNS needs from a publisher's permissions to encrypt a message with the key.
KEY_PUBLISH_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


def render_json(template: str, **values) -> str:
    """Render a JSON template and return it re-serialised, so a template error fails here."""
    text = _environment.get_template(template).render(**values)
    return json.dumps(json.loads(text), sort_keys=True)


@dataclass(frozen=True)
class DashboardTargets:
    """Physical names the dashboards and alarms watch."""

    queue_name: str
    dead_letter_queue_name: str
    cache_name: str
    namespace: str
    stack: str


class Dashboards(pulumi.ComponentResource):
    """SNS alert topic and its KMS key, CloudWatch alarms and dashboard, and a Grafana
    dashboard ConfigMap."""

    def __init__(
        self,
        name: str,
        context: EventContext,
        targets: DashboardTargets,
        provider: k8s.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("popstack:dashboards:Dashboards", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # The ARN of the KMS key that encrypts the alert topic, when the stack creates both.
        self.topic_key_arn: pulumi.Output[str] | None = None
        if context.spec.alerts.topic_arn:
            # The spec names a topic that someone else owns, so the stack creates
            # neither the topic nor a key. For alarms and teardown warnings to arrive,
            # the topic's policy must let cloudwatch.amazonaws.com publish (on condition
            # that aws:SourceAccount is this account), and let this stack's Scheduler role
            # publish when the topic is in another account. An encrypted topic needs a customer
            # managed key, not alias/aws/sns, whose key policy lets cloudwatch.amazonaws.com
            # and the Scheduler role call kms:GenerateDataKey and kms:Decrypt.
            # NOTE: the Scheduler role gets no KMS statement for such a topic, because the
            # spec does not name its key. So the key policy must name the role itself as
            # principal, which is enough only when the key is in this account.
            self.topic_arn: pulumi.Input[str] = context.spec.alerts.topic_arn
        else:
            self.topic_arn = self._create_alert_topic(name, context)

        self.alarms = self._create_alarms(name, context, targets)

        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-board",
            dashboard_name=context.name("cloudwatch", "board"),
            # Every alarm of the event, the calendar's too, which components.schedules
            # creates later under the name that alarm_arns derives.
            dashboard_body=pulumi.Output.all(*[a.arn for a in self.alarms]).apply(
                lambda arns: render_json(
                    "cloudwatch_dashboard.json.j2",
                    alarm_arns=sorted(set(arns) | set(alarm_arns(context))),
                    **self._template_values(context, targets),
                )
            ),
            opts=child,
        )

        self.grafana = k8s.core.v1.ConfigMap(
            f"{name}-grafana",
            metadata={
                "name": "checkout-grafana-dashboard",
                "namespace": targets.namespace,
                "labels": {**k8s_labels(context.event_id, "dashboards"), "grafana_dashboard": "1"},
            },
            data={f"{context.event_id}.json": self.grafana_json(context, targets)},
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )

        self.register_outputs(
            {
                "dashboardName": self.dashboard.dashboard_name,
                "dashboardUrl": (
                    f"https://{context.region}.console.aws.amazon.com/cloudwatch/home"
                    f"?region={context.region}#dashboards/dashboard/"
                    f"{context.name('cloudwatch', 'board')}"
                ),
                "alertTopicArn": self.topic_arn,
                "alarmNames": [a.name for a in self.alarms],
            }
        )

    def _create_alert_topic(self, name: str, context: EventContext) -> pulumi.Output[str]:
        """Create the alert topic, its email subscription, access policy and KMS key."""
        child = pulumi.ResourceOptions(parent=self)
        # An emulator stack sends only the EMULATOR_SERVICES to the emulator, so without
        # kms among them a KMS call would go to AWS itself. Its topic stays unencrypted.
        if not context.spec.emulator or "kms" in EMULATOR_SERVICES:
            key = aws.kms.Key(
                f"{name}-alerts-key",
                description=f"Encrypts the alert topic of event {context.event_id}",
                enable_key_rotation=True,
                deletion_window_in_days=KEY_DELETION_WINDOW_DAYS,
                policy=policy_document(*key_policy_statements(context)),
                tags=context.tags,
                opts=child,
            )
            aws.kms.Alias(
                f"{name}-alerts-key-alias",
                name=kms_alias(context.event_id, "alerts"),
                target_key_id=key.id,
                opts=child,
            )
            # A key ARN is arn:PARTITION:kms:REGION:ACCOUNT:key/KEY_ID. Building it from the
            # key id, not reading the key's `arn` output, lets the offline plan's mocks show it.
            self.topic_key_arn = key.id.apply(lambda key_id: context.arn("kms", f"key/{key_id}"))

        topic = aws.sns.Topic(
            f"{name}-alerts",
            name=context.name("sns", "alerts"),
            kms_master_key_id=self.topic_key_arn,
            tags=context.tags,
            opts=child,
        )
        aws.sns.TopicPolicy(
            f"{name}-alerts-policy",
            arn=topic.arn,
            policy=topic.arn.apply(
                lambda arn: policy_document(topic_policy_statement(context, arn))
            ),
            opts=child,
        )
        aws.sns.TopicSubscription(
            f"{name}-alerts-email",
            topic=topic.arn,
            protocol="email",
            endpoint=context.spec.alerts.email,
            opts=child,
        )
        return topic.arn

    @staticmethod
    def _template_values(context: EventContext, targets: DashboardTargets) -> dict:
        window = context.spec.window
        return {
            "title": context.spec.title,
            "event_id": context.event_id,
            "stack": targets.stack,
            "region": context.region,
            "time_zone": window.time_zone,
            "window_opens": window.opens.isoformat(),
            "window_closes": window.closes.isoformat(),
            "queue_name": targets.queue_name,
            "dead_letter_queue_name": targets.dead_letter_queue_name,
            "cache_name": targets.cache_name,
            "metrics_namespace": METRICS_NAMESPACE,
        }

    @classmethod
    def grafana_json(cls, context: EventContext, targets: DashboardTargets) -> str:
        """Render the Grafana dashboard for the event."""
        sqs, cache, event = (
            {"QueueName": targets.queue_name},
            {"clusterId": targets.cache_name},
            {"EventId": context.event_id},
        )
        panels = [
            _panel("Order queue depth", "AWS/SQS", "ApproximateNumberOfMessagesVisible", sqs),
            _panel("Oldest order message", "AWS/SQS", "ApproximateAgeOfOldestMessage", sqs),
            _panel(
                "Dead letters",
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                {"QueueName": targets.dead_letter_queue_name},
            ),
            _panel("Cache ECPU", "AWS/ElastiCache", "ElastiCacheProcessingUnits", cache, "Sum"),
            _panel("Checkout errors", METRICS_NAMESPACE, "CheckoutErrors", event, "Sum"),
            _panel("Checkout latency p99", METRICS_NAMESPACE, "CheckoutLatency", event, "p99"),
        ]
        return render_json(
            "grafana_dashboard.json.j2",
            uid=context.name("k8s", "board")[:40],
            panels=panels,
            **cls._template_values(context, targets),
        )

    def _create_alarms(
        self, name: str, context: EventContext, targets: DashboardTargets
    ) -> list[aws.cloudwatch.MetricAlarm]:
        child = pulumi.ResourceOptions(parent=self)
        common = {
            "alarm_actions": [self.topic_arn],
            "ok_actions": [self.topic_arn],
            "period": 60,
            "tags": context.tags,
            "opts": child,
        }
        return [
            aws.cloudwatch.MetricAlarm(
                f"{name}-dead-letters",
                name=context.name("alarm", "dead-letters"),
                alarm_description="An order message failed processing and moved to the DLQ",
                namespace="AWS/SQS",
                metric_name="ApproximateNumberOfMessagesVisible",
                dimensions={"QueueName": targets.dead_letter_queue_name},
                statistic="Maximum",
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                evaluation_periods=1,
                treat_missing_data="notBreaching",
                **common,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-queue-age",
                name=context.name("alarm", "queue-age"),
                alarm_description="Orders wait too long in the queue: fulfilment is falling behind",
                namespace="AWS/SQS",
                metric_name="ApproximateAgeOfOldestMessage",
                dimensions={"QueueName": targets.queue_name},
                statistic="Maximum",
                comparison_operator="GreaterThanThreshold",
                threshold=OLDEST_MESSAGE_ALARM_SECONDS,
                evaluation_periods=3,
                treat_missing_data="notBreaching",
                **common,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-cache-throttling",
                name=context.name("alarm", "cache-throttling"),
                alarm_description="The cache throttles commands: raise maxEcpuPerSecond",
                namespace="AWS/ElastiCache",
                metric_name="ThrottledCmds",
                dimensions={"clusterId": targets.cache_name},
                statistic="Sum",
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                evaluation_periods=2,
                treat_missing_data="notBreaching",
                **common,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-checkout-errors",
                name=context.name("alarm", "checkout-errors"),
                alarm_description="Checkout returns errors: see the runbook",
                namespace=METRICS_NAMESPACE,
                metric_name="CheckoutErrors",
                dimensions={"EventId": context.event_id},
                statistic="Sum",
                comparison_operator="GreaterThanThreshold",
                threshold=CHECKOUT_ERRORS_PER_MINUTE,
                evaluation_periods=2,
                treat_missing_data="notBreaching",
                **common,
            ),
        ]


def alarm_arns(context: EventContext) -> list[str]:
    """Return the ARN of every alarm of the event, the four here and the calendar's."""
    return sorted(
        context.arn("cloudwatch", f"alarm:{context.name('alarm', suffix)}")
        for suffix in SUFFIXES["alarm"]
    )


def key_policy_statements(context: EventContext) -> list[dict]:
    """Build the alert topic key's policy: the account administers it, publishers use it.

    In a key policy the `*` resource is the key itself. The account principal lets
    IAM policies in the account grant the listed actions, so the Scheduler role also
    needs the key in its own policy (components/schedules.py).
    """
    account = context.arn("iam", "root", region=False)
    scheduler_role = context.arn(
        "iam", f"role/{context.name('iam', SCHEDULER_ROLE_SUFFIX)}", region=False
    )
    return [
        allow(KEY_ADMIN_ACTIONS, ["*"], "AdministerKey", Principal={"AWS": account}),
        allow(
            KEY_PUBLISH_ACTIONS,
            ["*"],
            "CloudWatchAlarmsPublish",
            Principal={"Service": CLOUDWATCH_PRINCIPAL},
            Condition={"StringEquals": {"aws:SourceAccount": context.account_id}},
        ),
        # The account principal with a condition, not the role's ARN as principal,
        # because KMS rejects a key policy that names a role that does not exist, and
        # nothing orders the key after the Scheduler role.
        allow(
            KEY_PUBLISH_ACTIONS,
            ["*"],
            "SchedulerPublishesWarnings",
            Principal={"AWS": account},
            Condition={"ArnEquals": {"aws:PrincipalArn": scheduler_role}},
        ),
    ]


def topic_policy_statement(context: EventContext, topic_arn: str) -> dict:
    """Build the topic policy statement that lets this event's alarms publish to the topic.

    A topic policy replaces the default one, and principals of the owning account,
    such as the Scheduler role, still publish through their IAM policies.
    """
    return allow(
        ["sns:Publish"],
        [topic_arn],
        "CloudWatchAlarmsPublish",
        Principal={"Service": CLOUDWATCH_PRINCIPAL},
        Condition={
            "StringEquals": {"aws:SourceAccount": context.account_id},
            "ArnLike": {"aws:SourceArn": alarm_arns(context)},
        },
    )


def _panel(
    title: str, namespace: str, metric: str, dimensions: dict, stat: str = "Maximum"
) -> dict:
    return {
        "title": title,
        "namespace": namespace,
        "metric": metric,
        "stat": stat,
        "dimensions": dimensions,
    }
