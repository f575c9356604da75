"""A private, encrypted, versioned S3 bucket: the building block for receipts and exports."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.context import EventContext, policy_document


@dataclass
class PrivateBucket:
    """The bucket and the resources that lock it down."""

    bucket: aws.s3.Bucket
    public_access_block: aws.s3.BucketPublicAccessBlock
    encryption: aws.s3.BucketServerSideEncryptionConfiguration
    versioning: aws.s3.BucketVersioning
    ownership: aws.s3.BucketOwnershipControls
    policy: aws.s3.BucketPolicy


def private_bucket(
    name: str,
    bucket_name: str,
    context: EventContext,
    opts: pulumi.ResourceOptions,
    object_lock: bool = False,
) -> PrivateBucket:
    """Create a bucket that blocks public access, encrypts at rest and rejects plain HTTP."""
    child = pulumi.ResourceOptions(parent=opts.parent, retain_on_delete=opts.retain_on_delete)

    bucket = aws.s3.Bucket(
        name,
        bucket=bucket_name,
        object_lock_enabled=object_lock or None,
        tags=context.tags,
        opts=opts,
    )

    public_access_block = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )

    encryption = aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption",
        bucket=bucket.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                "bucket_key_enabled": True,
            }
        ],
        opts=child,
    )

    versioning = aws.s3.BucketVersioning(
        f"{name}-versioning",
        bucket=bucket.id,
        versioning_configuration={"status": "Enabled"},
        opts=child,
    )

    ownership = aws.s3.BucketOwnershipControls(
        f"{name}-ownership",
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},
        opts=child,
    )

    policy = aws.s3.BucketPolicy(
        f"{name}-tls-only",
        bucket=bucket.id,
        policy=bucket.arn.apply(
            lambda arn: policy_document(
                {
                    "Sid": "DenyPlainHttp",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [arn, f"{arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            )
        ),
        opts=pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[public_access_block])
        ),
    )

    return PrivateBucket(bucket, public_access_block, encryption, versioning, ownership, policy)
