"""Event secrets that rotate themselves through a Lambda packaged from this repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.calendar import freeze_interval, rotates_after_close, rotation_schedule
from components.context import EventContext, allow, policy_document

ROTATION_CODE = Path(__file__).resolve().parent.parent / "lambdas" / "rotation"
ROTATION_RUNTIME = "python3.12"
# Deleted secrets stay recoverable this long; teardown schedules deletion with it.
RECOVERY_WINDOW_DAYS = 7


def rotation_code() -> pulumi.AssetArchive:
    """Package the rotation handler; only the handler module goes into the Lambda."""
    return pulumi.AssetArchive({"handler.py": pulumi.FileAsset(str(ROTATION_CODE / "handler.py"))})


class RotatedSecret(pulumi.ComponentResource):
    """A Secrets Manager secret with its rotation Lambda, schedule and a role for it alone.

    `kind` selects the rotation strategy in the handler: `token` for an event
    token that consumers read themselves, `cache-auth` for the cache user's
    password. `render_value` turns the generated initial password into the
    secret's JSON value. `extra_statements` grants the Lambda what the
    strategy's set step needs.

    The schedule skips the event's freeze (components.calendar). When one of
    the secret's nominal rotation days falls in the freeze, `rotates_after_close`
    is True and the event calendar rotates it right after doors close. The
    Lambda's ROTATION_FREEZE_START and ROTATION_FREEZE_END are the same freeze,
    so the handler rejects a rotation started inside it by any other route.
    """

    def __init__(
        self,
        name: str,
        context: EventContext,
        secret_name: str,
        rotation_days: int,
        kind: str,
        render_value: Callable[[str], str],
        password_length: int = 43,
        description: str = "",
        extra_statements: list[pulumi.Input[dict]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("popstack:secrets:RotatedSecret", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = {**context.tags, "popstack:secret-kind": kind}
        function_name = context.name("lambda", f"rot-{secret_name}")
        schedule = rotation_schedule(context.spec.window, rotation_days)
        freeze_start, freeze_end = freeze_interval(context.spec.window)
        self.secret_name = secret_name
        self.rotation_days = rotation_days
        self.rotates_after_close = rotates_after_close(context.spec.window, rotation_days)

        # A name prefix gives each deployment a fresh name, because Secrets Manager
        # blocks a deleted secret's name for its whole recovery window.
        self.secret = aws.secretsmanager.Secret(
            f"{name}-secret",
            name_prefix=context.name("secretsmanager", f"{secret_name}-"),
            description=description or f"{secret_name} for event {context.event_id}",
            recovery_window_in_days=RECOVERY_WINDOW_DAYS,
            tags=tags,
            opts=child,
        )

        # The random provider keeps the generated value in state, encrypted as a secret.
        self.initial_password = random.RandomPassword(
            f"{name}-initial-password", length=password_length, special=False, opts=child
        )

        # Rotation replaces the value after the first deploy; ignore_changes keeps
        # a later `pulumi up` from writing the initial value back.
        self.initial_version = aws.secretsmanager.SecretVersion(
            f"{name}-initial",
            secret_id=self.secret.id,
            secret_string=pulumi.Output.secret(self.initial_password.result.apply(render_value)),
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["secretString", "versionStages"]
            ),
        )

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{function_name}",
            retention_in_days=30,
            tags=context.tags,
            opts=child,
        )

        self.role = aws.iam.Role(
            f"{name}-role",
            name=context.name("iam", f"rot-{secret_name}"),
            assume_role_policy=policy_document(
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ),
            tags=context.tags,
            opts=child,
        )

        statements = pulumi.Output.all(
            self.secret.arn, self.log_group.arn, *(extra_statements or [])
        ).apply(
            lambda values: policy_document(
                allow(
                    [
                        "secretsmanager:DescribeSecret",
                        "secretsmanager:GetSecretValue",
                        "secretsmanager:PutSecretValue",
                        "secretsmanager:UpdateSecretVersionStage",
                    ],
                    [values[0]],
                    "RotateThisSecretOnly",
                ),
                allow(
                    ["logs:CreateLogStream", "logs:PutLogEvents"],
                    [f"{values[1]}:*"],
                    "WriteOwnLogs",
                ),
                *values[2:],
            )
        )
        self.role_policy = aws.iam.RolePolicy(
            f"{name}-policy", role=self.role.id, policy=statements, opts=child
        )

        self.function = aws.lambda_.Function(
            f"{name}-rotate",
            name=function_name,
            runtime=ROTATION_RUNTIME,
            handler="handler.lambda_handler",
            code=rotation_code(),
            role=self.role.arn,
            # The cache-auth test step polls the user for up to 30 s after setSecret.
            timeout=90,
            memory_size=128,
            environment={
                "variables": {
                    "ROTATION_FREEZE_START": freeze_start.isoformat(),
                    "ROTATION_FREEZE_END": freeze_end.isoformat(),
                    "POPSTACK_EVENT_ID": context.event_id,
                }
            },
            tags=context.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group, self.role_policy]),
        )

        self.permission = aws.lambda_.Permission(
            f"{name}-invoke",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal="secretsmanager.amazonaws.com",
            source_arn=self.secret.arn,
            source_account=context.account_id,
            opts=child,
        )

        self.rotation = aws.secretsmanager.SecretRotation(
            f"{name}-rotation",
            secret_id=self.secret.id,
            rotation_lambda_arn=self.function.arn,
            rotation_rules={
                "schedule_expression": schedule.expression,
                "duration": schedule.duration,
            },
            rotate_immediately=False,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.permission, self.initial_version]
            ),
        )

        self.register_outputs(
            {
                "secretArn": self.secret.arn,
                "functionArn": self.function.arn,
                "schedule": schedule.expression,
                "rotatesAfterClose": self.rotates_after_close,
            }
        )


def token_value(token: str) -> str:
    """Render a token in the JSON format the rotation handler writes."""
    return json.dumps({"token": token})


class EventSecrets(pulumi.ComponentResource):
    """The event-scoped tokens the spec lists, each rotating on its own schedule."""

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:secrets:EventSecrets", name, None, opts)

        self.secrets: dict[str, RotatedSecret] = {}
        for secret in context.spec.secrets:
            self.secrets[secret.name] = RotatedSecret(
                f"{name}-{secret.name}",
                context,
                secret_name=secret.name,
                rotation_days=secret.rotation_days,
                kind="token",
                render_value=token_value,
                description=secret.description,
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.register_outputs(
            {"secretArns": {key: value.secret.arn for key, value in self.secrets.items()}}
        )
