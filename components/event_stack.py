"""EventStack: every part of one event's environment, as children of one component."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.cache import Cache
from components.checkout import CacheAccess, CheckoutDependencies, CheckoutService
from components.context import EventContext
from components.dashboards import Dashboards, DashboardTargets
from components.exports import ExportLocation
from components.flags import FeatureFlags
from components.observability import Tracing
from components.orders_table import OrdersTable
from components.queues import OrderQueues
from components.receipts import ReceiptsIntake
from components.schedules import CalendarTargets, EventCalendar
from components.secrets import EventSecrets
from components.spec import EMULATOR_OMITS


class EventStack(pulumi.ComponentResource):
    """One retail event: checkout, cache, queues, orders, receipts, flags, secrets, boards
    and the calendar that acts on them at the window's times."""

    def __init__(
        self,
        name: str,
        context: EventContext,
        stack: str,
        kubeconfig: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("popstack:index:EventStack", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = context.spec

        self.cluster = k8s.Provider(
            f"{name}-cluster",
            context=spec.cluster.context,
            kubeconfig=kubeconfig,
            render_yaml_to_directory=spec.cluster.render_yaml_to,
            enable_server_side_apply=True,
            opts=child,
        )

        self.queues = OrderQueues(f"{name}-queues", context, opts=child)
        self.orders = OrdersTable(f"{name}-orders", context, opts=child)
        self.receipts = ReceiptsIntake(f"{name}-receipts", context, opts=child)
        self.exports = ExportLocation(f"{name}-exports", context, opts=child)
        self.flags = FeatureFlags(f"{name}-flags", context, opts=child)
        self.secrets = EventSecrets(f"{name}-secrets", context, opts=child)
        self.cache: Cache | None = None
        self.tracing: Tracing | None = None
        cache_access: CacheAccess | None = None
        if spec.emulator:
            pulumi.log.warn(
                "emulator stack: leaving out " + "; ".join(EMULATOR_OMITS), resource=self
            )
        else:
            self.cache = Cache(f"{name}-cache", context, opts=child)
            self.tracing = Tracing(f"{name}-tracing", context, opts=child)
            cache_access = CacheAccess(
                endpoint=self.cache.endpoint,
                cache_arn=self.cache.cache.arn,
                user_arn=self.cache.user.arn,
                auth_secret_arn=self.cache.auth.secret.arn,
                security_group_id=self.cache.checkout_security_group.id,
            )

        self.checkout = CheckoutService(
            f"{name}-checkout",
            context,
            provider=self.cluster,
            deps=CheckoutDependencies(
                table_arn=self.orders.table.arn,
                table_name=self.orders.table.name,
                queue_arn=self.queues.queue.arn,
                queue_url=self.queues.queue.url,
                receipts_bucket_arn=self.receipts.bucket.arn,
                receipts_bucket_name=self.receipts.bucket.bucket,
                secret_arns={k: v.secret.arn for k, v in self.secrets.secrets.items()},
                appconfig_application_id=self.flags.application.id,
                appconfig_profile_id=self.flags.profile.configuration_profile_id,
                appconfig_environment_id=(
                    self.flags.environment.environment_id if self.flags.environment else None
                ),
                cache=cache_access,
            ),
            opts=child,
        )

        self.dashboards = Dashboards(
            f"{name}-dashboards",
            context,
            targets=DashboardTargets(
                queue_name=context.name("sqs", "orders" + self._fifo_suffix(context)),
                dead_letter_queue_name=context.name(
                    "sqs", "orders-dlq" + self._fifo_suffix(context)
                ),
                cache_name=context.name("elasticache", "cache"),
                namespace=self.checkout.namespace_name,
                stack=stack,
            ),
            provider=self.cluster,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.checkout.namespace]),
        )

        rotated = list(self.secrets.secrets.values())
        if self.cache is not None:
            rotated.append(self.cache.auth)
        self.calendar = EventCalendar(
            f"{name}-calendar",
            context,
            targets=CalendarTargets(
                flags=self.flags,
                tracing=self.tracing,
                topic_arn=self.dashboards.topic_arn,
                topic_key_arn=self.dashboards.topic_key_arn,
                secrets=rotated,
                stack=stack,
            ),
            opts=child,
        )

        self.outputs: dict[str, pulumi.Input] = {
            "eventId": spec.id,
            "expiresAt": spec.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "checkoutNamespace": self.checkout.namespace_name,
            "checkoutService": f"checkout.{self.checkout.namespace_name}.svc.cluster.local",
            "checkoutRoleArn": self.checkout.role.arn,
            "ordersTable": self.orders.table.name,
            "orderQueueUrl": self.queues.queue.url,
            "deadLetterQueueUrl": self.queues.dead_letter_queue.url,
            "receiptsBucket": self.receipts.bucket.bucket,
            "exportsBucket": self.exports.bucket.bucket,
            "financeRoleArn": self.exports.finance_role.arn,
            "flagsApplicationId": self.flags.application.id,
            "flagsProfileId": self.flags.profile.configuration_profile_id,
            "secretArns": {k: v.secret.arn for k, v in self.secrets.secrets.items()},
            "alertTopicArn": self.dashboards.topic_arn,
            "dashboardName": self.dashboards.dashboard.dashboard_name,
            "calendarFunction": self.calendar.function.name,
            # When each calendar action runs, in UTC, for the runbook to print.
            "calendarTimes": self.calendar.times(),
        }
        if self.calendar.group is not None:
            self.outputs["scheduleGroup"] = self.calendar.group.name
        if self.checkout.pre_sync is not None:
            self.outputs["preSyncCronJob"] = self.checkout.pre_sync_name
        if self.flags.environment and self.flags.strategy:
            self.outputs["flagsEnvironmentId"] = self.flags.environment.environment_id
            self.outputs["flagsStrategyId"] = self.flags.strategy.id
        if self.cache and self.tracing:
            self.outputs["cacheEndpoint"] = self.cache.endpoint
            self.outputs["cacheAuthSecretArn"] = self.cache.auth.secret.arn
            self.outputs["samplingRule"] = self.tracing.sampling_rule.rule_name
        self.register_outputs(self.outputs)

    @staticmethod
    def _fifo_suffix(context: EventContext) -> str:
        return ".fifo" if context.spec.queues.type == "fifo" else ""
