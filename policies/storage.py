"""S3 buckets: private and encrypted, and the export location versioned with retention.

In pulumi-aws 7 a bucket's public access block, encryption, versioning and object
lock settings are resources of their own, joined to the bucket through their
`bucket` input, so these are stack rules. The deprecated inline arguments of the
bucket count as well.
"""

from __future__ import annotations

from typing import Any

from policies.settings import EventSettings
from policies.view import UNKNOWN, Finding, ResourceView, cannot_check, resolve_reference, violation

BUCKET_TYPES = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION_TYPES = frozenset(
    {
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    }
)
VERSIONING_TYPES = frozenset(
    {"aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2"}
)
OBJECT_LOCK_TYPES = frozenset(
    {
        "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
        "aws:s3/bucketObjectLockConfigurationV2:BucketObjectLockConfigurationV2",
    }
)
PUBLIC_ACCESS_SETTINGS = (
    ("blockPublicAcls", "block_public_acls"),
    ("blockPublicPolicy", "block_public_policy"),
    ("ignorePublicAcls", "ignore_public_acls"),
    ("restrictPublicBuckets", "restrict_public_buckets"),
)
SSE_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
FIX_WITH_HELPER = "components.buckets.private_bucket creates it"


class BucketParts:
    """The sub-resources of each bucket, and those whose bucket the preview cannot tell."""

    def __init__(self, views: list[ResourceView], types: frozenset[str]):
        self.buckets = [view for view in views if view.type in BUCKET_TYPES]
        self.by_bucket: dict[str, list[ResourceView]] = {b.urn: [] for b in self.buckets}
        self.unresolved: list[ResourceView] = []
        for view in views:
            if view.type not in types:
                continue
            bucket = resolve_reference(
                view, "bucket", view.get("bucket"), self.buckets, ("bucket", "id")
            )
            if isinstance(bucket, ResourceView):
                self.by_bucket[bucket.urn].append(view)
            elif bucket is UNKNOWN:
                self.unresolved.append(view)

    def of(self, bucket: ResourceView) -> list[ResourceView]:
        return self.by_bucket.get(bucket.urn, [])


def check_private_encrypted(views: list[ResourceView], settings: EventSettings) -> list[Finding]:
    """Check that each bucket blocks all public access and encrypts objects by default."""
    blocks = BucketParts(views, frozenset({PUBLIC_ACCESS_BLOCK}))
    encryption = BucketParts(views, ENCRYPTION_TYPES)
    findings: list[Finding] = []
    for bucket in blocks.buckets:
        findings.extend(_public_access_findings(bucket, blocks))
        findings.extend(_encryption_findings(bucket, encryption))
    return findings


def _public_access_findings(bucket: ResourceView, blocks: BucketParts) -> list[Finding]:
    attached = blocks.of(bucket)
    if not attached:
        if blocks.unresolved:
            return [cannot_check(bucket, "the bucket of a public access block is not known")]
        return [
            violation(
                bucket,
                "has no BucketPublicAccessBlock; add one with all four settings True "
                f"({FIX_WITH_HELPER})",
            )
        ]
    findings: list[Finding] = []
    for block in attached:
        values = {prop: block.get(prop) for prop, _ in PUBLIC_ACCESS_SETTINGS}
        if any(value is UNKNOWN for value in values.values()):
            findings.append(cannot_check(block, "a public access setting is computed"))
            continue
        off = [arg for prop, arg in PUBLIC_ACCESS_SETTINGS if values[prop] is not True]
        if off:
            findings.append(
                violation(
                    block,
                    f"leaves {', '.join(off)} of {bucket.label} off; set all four "
                    "public access settings to True",
                )
            )
    return findings


def _encryption_findings(bucket: ResourceView, encryption: BucketParts) -> list[Finding]:
    inline = bucket.get(
        "serverSideEncryptionConfiguration", "rule", "applyServerSideEncryptionByDefault"
    )
    algorithms: list[Any] = [_get_algorithm(inline)] if inline is not None else []
    for configuration in encryption.of(bucket):
        rules = configuration.get("rules")
        if rules is UNKNOWN:
            algorithms.append(UNKNOWN)
            continue
        for rule in rules if isinstance(rules, list) else []:
            algorithms.append(_get_algorithm(rule.get("applyServerSideEncryptionByDefault")))
    if any(algorithm in SSE_ALGORITHMS for algorithm in algorithms):
        return []
    if UNKNOWN in algorithms or (not algorithms and encryption.unresolved):
        return [cannot_check(bucket, "its server-side encryption settings are computed")]
    return [
        violation(
            bucket,
            "has no default server-side encryption; add a BucketServerSideEncryptionConfiguration "
            f"with sse_algorithm aws:kms or AES256 ({FIX_WITH_HELPER})",
        )
    ]


def _get_algorithm(default: Any) -> Any:
    if default is UNKNOWN:
        return UNKNOWN
    return default.get("sseAlgorithm") if isinstance(default, dict) else None


def check_export_location(views: list[ResourceView], settings: EventSettings) -> list[Finding]:
    """Check that each object-locked bucket (the export location) is versioned with retention."""
    versioning = BucketParts(views, VERSIONING_TYPES)
    locks = BucketParts(views, OBJECT_LOCK_TYPES)
    findings: list[Finding] = []
    for bucket in versioning.buckets:
        locked = bucket.get("objectLockEnabled")
        inline_lock = bucket.get("objectLockConfiguration", "objectLockEnabled")
        if locked is UNKNOWN or inline_lock is UNKNOWN:
            findings.append(cannot_check(bucket, "object_lock_enabled is computed"))
            continue
        if locked is not True and inline_lock != "Enabled":
            continue
        findings.extend(_versioning_findings(bucket, versioning))
        findings.extend(_retention_findings(bucket, locks))
    return findings


def _versioning_findings(bucket: ResourceView, versioning: BucketParts) -> list[Finding]:
    states = [bucket.get("versioning", "enabled")]
    for part in versioning.of(bucket):
        status = part.get("versioningConfiguration", "status")
        states.append(UNKNOWN if status is UNKNOWN else status == "Enabled")
    if True in states:
        return []
    if UNKNOWN in states or (not versioning.of(bucket) and versioning.unresolved):
        return [cannot_check(bucket, "its versioning status is computed")]
    return [
        violation(
            bucket,
            "is the export location (object lock on) but versioning is not enabled; add a "
            f'BucketVersioning with status "Enabled" ({FIX_WITH_HELPER})',
        )
    ]


def _retention_findings(bucket: ResourceView, locks: BucketParts) -> list[Finding]:
    retentions = [bucket.get("objectLockConfiguration", "rule", "defaultRetention")]
    retentions += [part.get("rule", "defaultRetention") for part in locks.of(bucket)]
    known = [retention for retention in retentions if retention is not UNKNOWN]
    if any(_retains(retention) for retention in known):
        return []
    if len(known) < len(retentions) or (not locks.of(bucket) and locks.unresolved):
        return [cannot_check(bucket, "its object lock retention is computed")]
    return [
        violation(
            bucket,
            "is the export location (object lock on) but has no default retention; add a "
            "BucketObjectLockConfiguration with rule.default_retention mode and days "
            "(components.exports.ExportLocation does)",
        )
    ]


def _retains(retention: Any) -> bool:
    if not isinstance(retention, dict):
        return False
    mode = retention.get("mode")
    period = [retention.get("days"), retention.get("years")]
    has_period = any(isinstance(value, int | float) and value > 0 for value in period)
    return mode in ("GOVERNANCE", "COMPLIANCE") and has_period
