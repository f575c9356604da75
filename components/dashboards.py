"""Dashboards and alarms: one CloudWatch board, alarms to one SNS topic, a Grafana board."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.checkout import METRICS_NAMESPACE
from components.context import EventContext
from components.naming import k8s_labels

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# The queue may hold an order this long before the on-call is paged.
OLDEST_MESSAGE_ALARM_SECONDS = 300
CHECKOUT_ERRORS_PER_MINUTE = 5

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
    """SNS alert topic, CloudWatch alarms and dashboard, and a Grafana dashboard ConfigMap."""

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
        alerts = context.spec.alerts

        if alerts.topic_arn:
            self.topic_arn: pulumi.Input[str] = alerts.topic_arn
        else:
            topic = aws.sns.Topic(
                f"{name}-alerts",
                name=context.name("sns", "alerts"),
                kms_master_key_id="alias/aws/sns",
                tags=context.tags,
                opts=child,
            )
            aws.sns.TopicSubscription(
                f"{name}-alerts-email",
                topic=topic.arn,
                protocol="email",
                endpoint=alerts.email,
                opts=child,
            )
            self.topic_arn = topic.arn

        self.alarms = self._create_alarms(name, context, targets)

        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-board",
            dashboard_name=context.name("cloudwatch", "board"),
            dashboard_body=pulumi.Output.all(*[a.arn for a in self.alarms]).apply(
                lambda arns: render_json(
                    "cloudwatch_dashboard.json.j2",
                    alarm_arns=sorted(arns),
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
