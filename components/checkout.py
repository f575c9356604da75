"""The checkout service on the existing cluster, with an IAM role scoped to this event.

The inventory pre-sync runs here too, as a CronJob in the same namespace with the
checkout's service account, environment and pod security, because it needs what
checkout needs: the event's AWS resources and the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.calendar import minute_of_year_cron
from components.context import EventContext, allow, policy_document
from components.naming import k8s_labels

SERVICE_ACCOUNT = "checkout"
RUN_AS_USER = 10001
METRICS_NAMESPACE = "Popstack/Checkout"
# The CronJob controller evaluates the pre-sync schedule in this zone. UTC has no
# repeated or skipped hours, so a pre-sync start in a venue's DST change is exact.
PRE_SYNC_TIME_ZONE = "Etc/UTC"
# Pods a failed pre-sync Job starts again before the Job fails.
PRE_SYNC_BACKOFF_LIMIT = 3


@dataclass(frozen=True)
class CacheAccess:
    """Cache connection details for checkout: endpoint, ARNs, AUTH secret, pod security group."""

    endpoint: pulumi.Input[str]
    cache_arn: pulumi.Input[str]
    user_arn: pulumi.Input[str]
    auth_secret_arn: pulumi.Input[str]
    security_group_id: pulumi.Input[str]


@dataclass(frozen=True)
class CheckoutDependencies:
    """ARNs and endpoints of the stack's other parts that checkout reads or writes."""

    table_arn: pulumi.Input[str]
    table_name: pulumi.Input[str]
    queue_arn: pulumi.Input[str]
    queue_url: pulumi.Input[str]
    receipts_bucket_arn: pulumi.Input[str]
    receipts_bucket_name: pulumi.Input[str]
    secret_arns: dict[str, pulumi.Input[str]]
    appconfig_application_id: pulumi.Input[str]
    appconfig_profile_id: pulumi.Input[str]
    # None in a stack for the emulator, which has no cache and no AppConfig environments.
    appconfig_environment_id: pulumi.Input[str] | None
    cache: CacheAccess | None


class CheckoutService(pulumi.ComponentResource):
    """Namespace, service account (IRSA), Deployment, Service, HPA and PDB for checkout."""

    def __init__(
        self,
        name: str,
        context: EventContext,
        provider: k8s.Provider,
        deps: CheckoutDependencies,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("popstack:checkout:CheckoutService", name, None, opts)
        self.context = context
        self.k8s_opts = pulumi.ResourceOptions(parent=self, provider=provider)
        self.labels = k8s_labels(context.event_id, "checkout")
        # Distinct from the checkout labels, so that the Service, HPA and PDB never
        # select pre-sync pods.
        self.pre_sync_labels = k8s_labels(context.event_id, "inventory-pre-sync")
        self.namespace_name = context.name("k8s")
        self.deployment_name = context.name("k8s", "checkout")
        self.pre_sync_name = context.name("cronjob", "pre-sync")

        self.role = self._create_role(name, deps)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": self.namespace_name, "labels": self.labels},
            opts=self.k8s_opts,
        )
        ns_opts = pulumi.ResourceOptions.merge(
            self.k8s_opts, pulumi.ResourceOptions(depends_on=[self.namespace])
        )

        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={
                "name": SERVICE_ACCOUNT,
                "namespace": self.namespace_name,
                "labels": self.labels,
                "annotations": {"eks.amazonaws.com/role-arn": self.role.arn},
            },
            opts=ns_opts,
        )

        # Security groups for pods (VPC CNI): the cache accepts only this group.
        self.security_group_policy = None
        if deps.cache is not None:
            self.security_group_policy = self._create_security_group_policy(
                name, deps.cache, ns_opts
            )

        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={
                "name": self.deployment_name,
                "namespace": self.namespace_name,
                "labels": self.labels,
            },
            spec=self._deployment_spec(deps),
            opts=pulumi.ResourceOptions.merge(
                ns_opts, pulumi.ResourceOptions(depends_on=[self.service_account])
            ),
        )

        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": "checkout", "namespace": self.namespace_name, "labels": self.labels},
            spec={
                "type": "ClusterIP",
                "selector": self.labels,
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=ns_opts,
        )

        checkout = context.spec.checkout
        self.autoscaler = k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata={"name": "checkout", "namespace": self.namespace_name, "labels": self.labels},
            spec={
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": self.deployment_name,
                },
                "minReplicas": checkout.min_replicas,
                "maxReplicas": checkout.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": checkout.target_cpu_percent,
                            },
                        },
                    }
                ],
            },
            opts=ns_opts,
        )

        # maxUnavailable 1 permits one eviction whatever the replica count, and
        # AlwaysAllow lets an unready pod be evicted too, so a node drain waits
        # for pods to become ready but is not blocked by the budget itself.
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": "checkout", "namespace": self.namespace_name, "labels": self.labels},
            spec={
                "maxUnavailable": 1,
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
                "selector": {"matchLabels": self.labels},
            },
            opts=ns_opts,
        )

        self.pre_sync: k8s.batch.v1.CronJob | None = None
        self.pre_sync_security_group_policy = None
        if context.spec.window.pre_sync_hours > 0:
            self.pre_sync = self._create_pre_sync(name, deps, ns_opts)
            if deps.cache is not None:
                self.pre_sync_security_group_policy = self._create_security_group_policy(
                    f"{name}-pre-sync", deps.cache, ns_opts, self.pre_sync_labels
                )
        else:
            pulumi.log.warn(
                "window.preSyncHours is 0, so there is no pre-sync window and the "
                "inventory pre-sync command never runs; set preSyncHours to 1 or more",
                resource=self,
            )

        self.register_outputs(
            {
                "namespace": self.namespace_name,
                "serviceHost": f"checkout.{self.namespace_name}.svc.cluster.local",
                "roleArn": self.role.arn,
                "preSyncCronJob": self.pre_sync_name if self.pre_sync else None,
            }
        )

    def _create_security_group_policy(
        self,
        name: str,
        cache: CacheAccess,
        opts: pulumi.ResourceOptions,
        pod_labels: dict[str, str] | None = None,
    ) -> k8s.apiextensions.CustomResource:
        """Attach the cache's client security group to the pods with `pod_labels`."""
        labels = pod_labels or self.labels
        return k8s.apiextensions.CustomResource(
            f"{name}-sg-policy",
            api_version="vpcresources.k8s.aws/v1beta1",
            kind="SecurityGroupPolicy",
            metadata={
                "name": labels["app.kubernetes.io/name"],
                "namespace": self.namespace_name,
                "labels": labels,
            },
            spec={
                "podSelector": {"matchLabels": labels},
                "securityGroups": {"groupIds": [cache.security_group_id]},
            },
            opts=opts,
        )

    def _create_pre_sync(
        self, name: str, deps: CheckoutDependencies, opts: pulumi.ResourceOptions
    ) -> k8s.batch.v1.CronJob:
        """Create the CronJob that runs the inventory pre-sync command at the pre-sync start.

        The schedule names a minute of the year in UTC, so it fires once a year. The
        stack expires days after the event, and teardown deletes the CronJob before the
        date comes round again. startingDeadlineSeconds is the pre-sync window, so a
        start that the controller missed (while it was down, say) still runs until doors
        open and never after.

        NOTE: Kubernetes' CronJob controller counts missed starts only from the
        CronJob's creation (mostRecentScheduleTime in pkg/controller/cronjob/utils.go),
        so a stack deployed after the pre-sync start never runs it. Start it by hand:
        `kubectl -n NAMESPACE create job NAME-manual --from=cronjob/NAME`.
        """
        context = self.context
        window = context.spec.window
        inventory = context.spec.inventory
        pre_sync_seconds = window.pre_sync_hours * 3600
        pod = self._pod_spec(
            deps,
            container={
                "name": "pre-sync",
                "image": inventory.pre_sync_image or context.spec.checkout.image,
                "command": list(inventory.pre_sync_command),
            },
            labels=self.pre_sync_labels,
        )
        pod["spec"]["restartPolicy"] = "Never"
        return k8s.batch.v1.CronJob(
            f"{name}-pre-sync",
            metadata={
                "name": self.pre_sync_name,
                "namespace": self.namespace_name,
                "labels": self.pre_sync_labels,
            },
            spec={
                "schedule": minute_of_year_cron(window.pre_sync_starts),
                "timeZone": PRE_SYNC_TIME_ZONE,
                "startingDeadlineSeconds": pre_sync_seconds,
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 1,
                "failedJobsHistoryLimit": 1,
                "jobTemplate": {
                    "metadata": {"labels": self.pre_sync_labels},
                    "spec": {
                        "backoffLimit": PRE_SYNC_BACKOFF_LIMIT,
                        # A pre-sync still running when the window ends is stopped.
                        "activeDeadlineSeconds": pre_sync_seconds,
                        "template": pod,
                    },
                },
            },
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[self.service_account])
            ),
        )

    def _create_role(self, name: str, deps: CheckoutDependencies) -> aws.iam.Role:
        context = self.context
        issuer = context.spec.cluster.oidc_issuer
        subject = f"system:serviceaccount:{context.name('k8s')}:{SERVICE_ACCOUNT}"
        role = aws.iam.Role(
            f"{name}-role",
            name=context.name("iam", "checkout-role"),
            description=f"Checkout pods of event {context.event_id} (IRSA)",
            assume_role_policy=policy_document(
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": context.spec.cluster.oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{issuer}:sub": subject,
                            f"{issuer}:aud": "sts.amazonaws.com",
                        }
                    },
                }
            ),
            tags=context.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

        app_arn = pulumi.Output.concat(
            context.arn("appconfig", "application/"), deps.appconfig_application_id
        )
        cache = deps.cache
        secret_arns = list(deps.secret_arns.values())
        if cache is not None:
            secret_arns.append(cache.auth_secret_arn)
        policy = pulumi.Output.all(
            table=deps.table_arn,
            queue=deps.queue_arn,
            bucket=deps.receipts_bucket_arn,
            cache=pulumi.Output.all(cache.cache_arn, cache.user_arn) if cache else [],
            app=app_arn,
            secrets=pulumi.Output.all(*secret_arns),
        ).apply(lambda arns: policy_document(*_checkout_statements(arns)))
        self.role_policy = aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=role.id,
            policy=policy,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role

    def _environment(self, deps: CheckoutDependencies) -> list[dict]:
        """Return the container environment of checkout, which the pre-sync shares."""
        context = self.context
        environment = {
            "POPSTACK_EVENT_ID": context.event_id,
            "AWS_REGION": context.region,
            "ORDERS_TABLE": deps.table_name,
            "ORDER_QUEUE_URL": deps.queue_url,
            "RECEIPTS_BUCKET": deps.receipts_bucket_name,
            "APPCONFIG_APPLICATION": deps.appconfig_application_id,
            "APPCONFIG_PROFILE": deps.appconfig_profile_id,
            # The service passes this to StartConfigurationSession as
            # RequiredMinimumPollIntervalInSeconds, so a flag flip reaches every
            # pod within this many seconds.
            "APPCONFIG_POLL_INTERVAL_SECONDS": str(context.spec.flags.poll_interval_seconds),
            "CHECKOUT_CURRENCY": context.spec.currency,
            "CHECKOUT_LOCATIONS": ",".join(location.id for location in context.spec.locations),
            "METRICS_NAMESPACE": METRICS_NAMESPACE,
            "AWS_XRAY_TRACING_NAME": self.deployment_name,
        }
        if deps.appconfig_environment_id is not None:
            environment["APPCONFIG_ENVIRONMENT"] = deps.appconfig_environment_id
        if deps.cache is not None:
            environment["CACHE_ENDPOINT"] = deps.cache.endpoint
            environment["CACHE_AUTH_SECRET_ARN"] = deps.cache.auth_secret_arn
        for secret_name, arn in sorted(deps.secret_arns.items()):
            environment["SECRET_ARN_" + secret_name.upper().replace("-", "_")] = arn
        return [{"name": key, "value": value} for key, value in environment.items()]

    def _pod_spec(
        self, deps: CheckoutDependencies, container: dict, labels: dict[str, str]
    ) -> dict:
        """Build a pod template that runs `container` as checkout runs: same identity,
        environment, resources and security context."""
        checkout = self.context.spec.checkout
        return {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
                "automountServiceAccountToken": True,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS_USER,
                    "runAsGroup": RUN_AS_USER,
                    "fsGroup": RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        **container,
                        "env": self._environment(deps),
                        "resources": {
                            "requests": {
                                "cpu": checkout.cpu_request,
                                "memory": checkout.memory_request,
                            },
                            "limits": {
                                "cpu": checkout.cpu_limit,
                                "memory": checkout.memory_limit,
                            },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }

    def _deployment_spec(self, deps: CheckoutDependencies) -> dict:
        checkout = self.context.spec.checkout
        probe = {"port": "http"}
        template = self._pod_spec(
            deps,
            container={
                "name": "checkout",
                "image": checkout.image,
                "ports": [{"name": "http", "containerPort": checkout.port, "protocol": "TCP"}],
                "readinessProbe": {
                    "httpGet": {"path": checkout.ready_path, **probe},
                    "periodSeconds": 5,
                    "failureThreshold": 3,
                },
                "livenessProbe": {
                    "httpGet": {"path": checkout.health_path, **probe},
                    "initialDelaySeconds": 10,
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                },
            },
            labels=self.labels,
        )
        template["spec"]["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": self.labels},
            },
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": self.labels},
            },
        ]
        return {
            "selector": {"matchLabels": self.labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "template": template,
        }


def _checkout_statements(arns: dict) -> list[dict]:
    """Build the checkout role's statements, each scoped to this event's resources by ARN."""
    statements = [
        allow(
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:Query",
                "dynamodb:ConditionCheckItem",
            ],
            [arns["table"]],
            "WriteOrders",
        ),
        allow(
            ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            [arns["queue"]],
            "PublishOrderEvents",
        ),
        allow(["s3:PutObject"], [f"{arns['bucket']}/receipts/*"], "UploadReceipts"),
        allow(
            ["appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration"],
            [f"{arns['app']}/*"],
            "ReadFlags",
        ),
        # X-Ray and PutMetricData have no resource-level permissions; the
        # metric namespace condition keeps the latter to checkout's metrics.
        allow(["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"], "SendTraces"),
        allow(
            ["cloudwatch:PutMetricData"],
            ["*"],
            "PublishCheckoutMetrics",
            Condition={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        ),
    ]
    if arns["secrets"]:
        statements.append(
            allow(
                ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                list(arns["secrets"]),
                "ReadEventSecrets",
            )
        )
    if arns["cache"]:
        statements.append(allow(["elasticache:Connect"], list(arns["cache"]), "ConnectCache"))
    return statements
