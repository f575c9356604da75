"""The event calendar: one-time EventBridge Scheduler schedules that the window drives.

At doors open a calendar Lambda turns the `elevated_sampling` flag on and raises the
X-Ray sampling rate. At doors close it turns `checkout_enabled` and
`elevated_sampling` off and lowers the rate again. Five minutes after close, each
secret whose rotation day the freeze held back is rotated through Scheduler's
universal target for Secrets Manager. Before the teardown deadline the alert topic
gets a warning that names the stack and the teardown command. The inventory
pre-sync before doors open is a Kubernetes CronJob (components/checkout.py).

Every schedule is `at(...)` in UTC, computed from the window edges with their own
offsets (components/calendar.py), with no flexible window. Each keeps
ActionAfterCompletion NONE: with DELETE, Scheduler would delete a schedule once it
has fired, and the next `pulumi up` would create it again and fire it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pulumi
import pulumi_aws as aws

from components.calendar import (
    at_expression,
    rotation_after_close,
    teardown_warnings,
    utc,
)
from components.context import EventContext, allow, policy_document
from components.flags import FeatureFlags
from components.observability import (
    BASE_RATE,
    BASE_RESERVOIR,
    ELEVATED_RATE,
    ELEVATED_RESERVOIR,
    Tracing,
)
from components.secrets import ROTATION_RUNTIME, RotatedSecret

REPO = Path(__file__).resolve().parent.parent
# The calendar handler imports lambdas.flagstore, so the archive keeps the
# repository's package paths and the handler is named by its dotted path.
CALENDAR_FILES = (
    "lambdas/__init__.py",
    "lambdas/flagstore.py",
    "lambdas/calendar/__init__.py",
    "lambdas/calendar/handler.py",
)
CALENDAR_HANDLER = "lambdas.calendar.handler.handle"
SCHEDULE_TIME_ZONE = "UTC"
# Scheduler gives up on an invocation that has failed for this long (its maximum).
MAX_EVENT_AGE_SECONDS = 86400
# A teardown warning delivered more than an hour late would be misleading.
WARNING_EVENT_AGE_SECONDS = 3600
# Scheduler's default and maximum retry count. The event age ends the retries first.
MAX_RETRY_ATTEMPTS = 185
# The IAM name suffix of the Scheduler role. The alert topic's key policy names the role too.
SCHEDULER_ROLE_SUFFIX = "calendar-scheduler"


def calendar_code() -> pulumi.AssetArchive:
    """Package the calendar handler with the flag store it imports, at their repository paths."""
    return pulumi.AssetArchive(
        {path: pulumi.FileAsset(str(REPO / path)) for path in CALENDAR_FILES}
    )


@dataclass(frozen=True)
class CalendarTargets:
    """The resources the calendar acts on: flags, sampling rule, alert topic and secrets.

    `tracing` is None in an emulator stack, which has no X-Ray sampling rule.
    `topic_key_arn` is the ARN of the KMS key that encrypts the alert topic, or None
    when the stack does not create that key.
    """

    flags: FeatureFlags
    tracing: Tracing | None
    topic_arn: pulumi.Input[str]
    secrets: list[RotatedSecret]
    stack: str
    topic_key_arn: pulumi.Input[str] | None = None


class EventCalendar(pulumi.ComponentResource):
    """The calendar Lambda, its schedule group and one-time schedules, and their two roles.

    An emulator stack leaves out the schedule group, the schedules and the Scheduler
    role, because moto stores schedules but never runs them. The Lambda stays, so it
    can be invoked by hand.
    """

    def __init__(
        self,
        name: str,
        context: EventContext,
        targets: CalendarTargets,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("popstack:schedules:EventCalendar", name, None, opts)
        self.context = context
        self.targets = targets
        child = pulumi.ResourceOptions(parent=self)
        self.function_name = context.name("lambda", "calendar")
        self.group_name = context.name("scheduler")
        self.rotated_after_close = [s for s in targets.secrets if s.rotates_after_close]

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{self.function_name}",
            retention_in_days=30,
            tags=context.tags,
            opts=child,
        )
        self.function_role, self.function_policy = self._create_function_role(name)
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=self.function_name,
            runtime=ROTATION_RUNTIME,
            handler=CALENDAR_HANDLER,
            code=calendar_code(),
            role=self.function_role.arn,
            timeout=60,
            memory_size=128,
            environment={"variables": self._function_environment()},
            tags=context.tags,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.log_group, self.function_policy]
            ),
        )
        self.errors_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-errors",
            name=context.name("alarm", "calendar-errors"),
            alarm_description=(
                "The event calendar failed to open or close the doors; check its log, then "
                "set the flags with `popstack flags set`"
            ),
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": self.function_name},
            statistic="Sum",
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            evaluation_periods=1,
            period=60,
            treat_missing_data="notBreaching",
            alarm_actions=[targets.topic_arn],
            ok_actions=[targets.topic_arn],
            tags=context.tags,
            opts=child,
        )

        self.group: aws.scheduler.ScheduleGroup | None = None
        self.scheduler_role: aws.iam.Role | None = None
        self.schedules: dict[str, aws.scheduler.Schedule] = {}
        if not context.spec.emulator:
            self.group = aws.scheduler.ScheduleGroup(
                f"{name}-group", name=self.group_name, tags=context.tags, opts=child
            )
            self.scheduler_role, self.scheduler_policy = self._create_scheduler_role(name)
            self._create_schedules(name)

        self.register_outputs(
            {
                "scheduleGroup": self.group.name if self.group else None,
                "functionName": self.function.name,
                "times": self.times(),
            }
        )

    def times(self) -> dict[str, str]:
        """Return when each calendar action runs, in UTC, by the suffix of its schedule name."""
        spec = self.context.spec
        times: dict[str, datetime] = {}
        if spec.window.pre_sync_hours > 0:
            times["pre-sync"] = spec.window.pre_sync_starts
        times["doors-open"] = spec.window.opens
        times["doors-close"] = spec.window.closes
        if self.rotated_after_close:
            times["rotate-after-close"] = rotation_after_close(spec.window)
        for warning in teardown_warnings(spec):
            times[warning.suffix] = warning.at
        return {key: _utc_text(moment) for key, moment in times.items()}

    # --- the calendar Lambda ---------------------------------------------------------

    def _function_environment(self) -> dict[str, pulumi.Input[str]]:
        context, targets = self.context, self.targets
        window = context.spec.window
        flags = targets.flags
        variables: dict[str, pulumi.Input[str]] = {
            "POPSTACK_EVENT_ID": context.event_id,
            "WINDOW_OPENS": window.opens.isoformat(),
            "WINDOW_CLOSES": window.closes.isoformat(),
            "FLAGS_APPLICATION_ID": flags.application.id,
            "FLAGS_PROFILE_ID": flags.profile.configuration_profile_id,
        }
        if flags.environment is not None and flags.strategy is not None:
            variables["FLAGS_ENVIRONMENT_ID"] = flags.environment.environment_id
            variables["FLAGS_STRATEGY_ID"] = flags.strategy.id
        if targets.tracing is not None:
            variables.update(
                {
                    "SAMPLING_RULE_NAME": targets.tracing.sampling_rule.rule_name,
                    "SAMPLING_BASE_RATE": str(BASE_RATE),
                    "SAMPLING_BASE_RESERVOIR": str(BASE_RESERVOIR),
                    "SAMPLING_ELEVATED_RATE": str(ELEVATED_RATE),
                    "SAMPLING_ELEVATED_RESERVOIR": str(ELEVATED_RESERVOIR),
                }
            )
        return variables

    def _create_function_role(self, name: str) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        context, targets = self.context, self.targets
        flags = targets.flags
        role = aws.iam.Role(
            f"{name}-function-role",
            name=context.name("iam", "calendar"),
            description=f"Calendar Lambda of event {context.event_id}",
            assume_role_policy=policy_document(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ),
            tags=context.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        policy = pulumi.Output.all(
            logs=self.log_group.arn,
            application=flags.application.id,
            profile=flags.profile.configuration_profile_id,
            environment=flags.environment.environment_id if flags.environment else None,
            strategy=flags.strategy.id if flags.strategy else None,
            rule=targets.tracing.sampling_rule.arn if targets.tracing else None,
        ).apply(lambda ids: policy_document(*function_statements(context, ids)))
        role_policy = aws.iam.RolePolicy(
            f"{name}-function-policy",
            role=role.id,
            policy=policy,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role, role_policy

    # --- EventBridge Scheduler -------------------------------------------------------

    def _create_scheduler_role(self, name: str) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        context = self.context
        sources = [
            context.arn("scheduler", f"schedule-group/{self.group_name}"),
            context.arn("scheduler", f"schedule/{self.group_name}/*"),
        ]
        role = aws.iam.Role(
            f"{name}-scheduler-role",
            name=context.name("iam", SCHEDULER_ROLE_SUFFIX),
            description=f"EventBridge Scheduler role of the event {context.event_id} calendar",
            # The conditions stop Scheduler from assuming the role for another
            # account's or another group's schedules (the confused deputy problem).
            # NOTE: whether Scheduler sends the group's or the schedule's ARN as
            # aws:SourceArn is not verified here, so both are allowed, for this group only.
            assume_role_policy=policy_document(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "scheduler.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {
                        "StringEquals": {"aws:SourceAccount": context.account_id},
                        "ArnLike": {"aws:SourceArn": sources},
                    },
                }
            ),
            tags=context.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        rotated = self.rotated_after_close
        policy = pulumi.Output.all(
            calendar=self.function.arn,
            topic=self.targets.topic_arn,
            topic_key=self.targets.topic_key_arn,
            secrets=pulumi.Output.all(*[secret.secret.arn for secret in rotated]),
            rotation_functions=pulumi.Output.all(*[secret.function.arn for secret in rotated]),
        ).apply(lambda arns: policy_document(*scheduler_statements(arns)))
        role_policy = aws.iam.RolePolicy(
            f"{name}-scheduler-policy",
            role=role.id,
            policy=policy,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role, role_policy

    def _create_schedules(self, name: str) -> None:
        spec = self.context.spec
        window = spec.window
        open_age = int((window.closes - window.opens).total_seconds())
        self._schedule(
            name,
            "doors-open",
            window.opens,
            target_arn=self.function.arn,
            target_input=json.dumps({"action": "open"}),
            description=f"Doors open at {window.opens.isoformat()}: elevated sampling on",
            # Retries stop at close, because a late open would raise sampling again.
            # The handler skips an open after close as well.
            event_age=min(max(open_age, 60), MAX_EVENT_AGE_SECONDS),
        )
        self._schedule(
            name,
            "doors-close",
            window.closes,
            target_arn=self.function.arn,
            target_input=json.dumps({"action": "close"}),
            description=(
                f"Doors close at {window.closes.isoformat()}: checkout and elevated sampling off"
            ),
        )
        rotate_at = rotation_after_close(window)
        for secret in self.rotated_after_close:
            self._schedule(
                name,
                f"rotate-{secret.secret_name}",
                rotate_at,
                target_arn=self._universal_target("secretsmanager", "rotateSecret"),
                target_input=secret.secret.arn.apply(lambda arn: json.dumps({"SecretId": arn})),
                description=(
                    f"Rotate {secret.secret_name}, whose rotation day fell while doors were open"
                ),
            )
        for warning in teardown_warnings(spec):
            self._schedule(
                name,
                warning.suffix,
                warning.at,
                target_arn=self._universal_target("sns", "publish"),
                target_input=pulumi.Output.from_input(self.targets.topic_arn).apply(
                    lambda topic, before=warning.before_deadline: json.dumps(
                        teardown_message(spec.id, self.targets.stack, spec.expires_at, before)
                        | {"TopicArn": topic},
                        sort_keys=True,
                    )
                ),
                description=f"Teardown warning: {_hours(warning.before_deadline)} h before expiry",
                event_age=WARNING_EVENT_AGE_SECONDS,
            )

    def _schedule(
        self,
        name: str,
        suffix: str,
        moment: datetime,
        target_arn: pulumi.Input[str],
        target_input: pulumi.Input[str],
        description: str,
        event_age: int = MAX_EVENT_AGE_SECONDS,
    ) -> None:
        assert self.group is not None and self.scheduler_role is not None
        self.schedules[suffix] = aws.scheduler.Schedule(
            f"{name}-{suffix}",
            name=self.context.name("scheduler", suffix),
            group_name=self.group.name,
            description=description,
            schedule_expression=at_expression(moment),
            schedule_expression_timezone=SCHEDULE_TIME_ZONE,
            flexible_time_window={"mode": "OFF"},
            action_after_completion="NONE",
            state="ENABLED",
            target={
                "arn": target_arn,
                "role_arn": self.scheduler_role.arn,
                "input": target_input,
                "retry_policy": {
                    "maximum_event_age_in_seconds": event_age,
                    "maximum_retry_attempts": MAX_RETRY_ATTEMPTS,
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.scheduler_policy]),
        )

    def _universal_target(self, service: str, action: str) -> str:
        """Return the ARN of Scheduler's universal target for one AWS API action."""
        return f"arn:{self.context.partition}:scheduler:::aws-sdk:{service}:{action}"


def function_statements(context: EventContext, ids: dict) -> list[dict]:
    """Build the calendar Lambda's statements, scoped to this event's flags and sampling rule."""
    application = context.arn("appconfig", f"application/{ids['application']}")
    profile = f"{application}/configurationprofile/{ids['profile']}"
    statements = [
        allow(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{ids['logs']}:*"], "WriteOwnLogs"),
        # set_flags deletes its own new version when another writer got in first.
        allow(
            [
                "appconfig:ListHostedConfigurationVersions",
                "appconfig:GetHostedConfigurationVersion",
                "appconfig:CreateHostedConfigurationVersion",
                "appconfig:DeleteHostedConfigurationVersion",
            ],
            [application, profile, f"{profile}/hostedconfigurationversion/*"],
            "WriteFlagVersions",
        ),
    ]
    if ids["environment"] and ids["strategy"]:
        statements.append(
            allow(
                ["appconfig:StartDeployment", "appconfig:ListDeployments"],
                [
                    application,
                    profile,
                    f"{application}/environment/{ids['environment']}",
                    context.arn("appconfig", f"deploymentstrategy/{ids['strategy']}"),
                ],
                "DeployFlags",
            )
        )
    if ids["rule"]:
        statements.append(allow(["xray:UpdateSamplingRule"], [ids["rule"]], "SetSamplingRate"))
    return statements


def scheduler_statements(arns: dict) -> list[dict]:
    """Build the Scheduler role's statements: only the targets of this event's schedules."""
    statements = [
        allow(["lambda:InvokeFunction"], [arns["calendar"]], "InvokeCalendar"),
        allow(["sns:Publish"], [arns["topic"]], "WarnBeforeTeardown"),
    ]
    if arns["topic_key"]:
        # SNS encrypts each published message with the topic's key, using the
        # publisher's permissions.
        statements.append(
            allow(
                ["kms:Decrypt", "kms:GenerateDataKey"],
                [arns["topic_key"]],
                "EncryptTeardownWarnings",
            )
        )
    if arns["secrets"]:
        statements.append(
            allow(["secretsmanager:RotateSecret"], list(arns["secrets"]), "RotateAfterClose")
        )
        # RotateSecret also needs permission to invoke the secret's rotation function.
        statements.append(
            allow(
                ["lambda:InvokeFunction"],
                list(arns["rotation_functions"]),
                "InvokeRotationFunctions",
            )
        )
    return statements


def teardown_message(
    event_id: str, stack: str, expires_at: datetime, before_deadline: timedelta
) -> dict[str, str]:
    """Build the Subject and Message of one teardown warning for the alert topic."""
    deadline = _utc_text(expires_at)
    command = f"popstack teardown {stack} --settlements REPORT.csv"
    if before_deadline:
        hours = _hours(before_deadline)
        subject = f"popstack: tear down stack {stack} within {hours} hours"
        lead = (
            f"Stack {stack} (event {event_id}) must be torn down by {deadline}, in {hours} hours."
        )
    else:
        subject = f"popstack: stack {stack} is past its teardown deadline"
        lead = f"Stack {stack} (event {event_id}) reached its teardown deadline {deadline}."
    # SNS accepts a subject of up to 100 ASCII characters.
    return {"Subject": subject[:100], "Message": f"{lead}\nRun: {command}\n"}


def _hours(span: timedelta) -> str:
    return f"{span / timedelta(hours=1):g}"


def _utc_text(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
