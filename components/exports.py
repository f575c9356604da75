"""The export location: outlives the stack so finance can fetch exports after teardown."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.buckets import private_bucket
from components.context import EventContext, allow, policy_document

EXPORTS_PREFIX = "exports/"


class ExportLocation(pulumi.ComponentResource):
    """A versioned, object-locked bucket and a read-only finance role, both kept on destroy."""

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:exports:ExportLocation", name, None, opts)
        settings = context.spec.exports
        # retain_on_delete: `pulumi destroy` drops these from state and leaves them in AWS.
        kept = pulumi.ResourceOptions(parent=self, retain_on_delete=True)

        self.storage = private_bucket(
            f"{name}-bucket",
            context.name("s3", f"exports-{context.account_id}"),
            context,
            kept,
            object_lock=True,
        )
        self.bucket = self.storage.bucket

        # Every object version is locked for the retention period, so neither a
        # teardown bug nor a person can delete an export early.
        self.retention = aws.s3.BucketObjectLockConfiguration(
            f"{name}-retention",
            bucket=self.bucket.id,
            rule={
                "default_retention": {
                    "mode": settings.object_lock_mode,
                    "days": settings.retention_days,
                }
            },
            opts=pulumi.ResourceOptions(
                parent=self, retain_on_delete=True, depends_on=[self.storage.versioning]
            ),
        )

        self.finance_role = aws.iam.Role(
            f"{name}-finance-reader",
            name=context.name("iam", "finance-reader"),
            description=f"Read-only access to the exports of event {context.event_id}",
            assume_role_policy=policy_document(
                {
                    "Sid": "AccountPrincipals",
                    "Effect": "Allow",
                    "Principal": {"AWS": context.arn("iam", "root", region=False)},
                    "Action": "sts:AssumeRole",
                }
            ),
            tags=context.tags,
            opts=kept,
        )

        self.finance_policy = aws.iam.RolePolicy(
            f"{name}-finance-read",
            role=self.finance_role.id,
            policy=self.bucket.arn.apply(
                lambda arn: policy_document(
                    allow(["s3:ListBucket", "s3:GetBucketVersioning"], [arn], "ListExports"),
                    allow(
                        ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"],
                        [f"{arn}/{EXPORTS_PREFIX}*"],
                        "ReadExports",
                    ),
                )
            ),
            opts=kept,
        )

        self.register_outputs(
            {
                "bucketName": self.bucket.bucket,
                "bucketArn": self.bucket.arn,
                "prefix": EXPORTS_PREFIX,
                "financeRoleArn": self.finance_role.arn,
            }
        )
