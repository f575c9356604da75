"""The orders table keeps its history, and the cache is TLS-only with bounded usage."""

from __future__ import annotations

from policies.settings import EventSettings
from policies.view import UNKNOWN, Finding, ResourceView, cannot_check, violation

TABLE = "aws:dynamodb/table:Table"
SERVERLESS_CACHE = "aws:elasticache/serverlessCache:ServerlessCache"
REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
CACHE_CLUSTER = "aws:elasticache/cluster:Cluster"


def check_table_recovery(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that a DynamoDB table has point-in-time recovery and deletion protection.

    Teardown turns deletion protection off only after it has verified the export
    (`popstack:teardownVerifiedExport` in the stack config), so then it may be off.
    """
    if view.type != TABLE:
        return []
    findings: list[Finding] = []
    recovery = view.get("pointInTimeRecovery", "enabled")
    if recovery is UNKNOWN:
        findings.append(cannot_check(view, "point_in_time_recovery is computed"))
    elif recovery is not True:
        findings.append(
            violation(
                view,
                "point-in-time recovery is off; set point_in_time_recovery={'enabled': True}",
            )
        )
    protection = view.get("deletionProtectionEnabled")
    if protection is UNKNOWN:
        findings.append(cannot_check(view, "deletion_protection_enabled is computed"))
    elif protection is not True and not settings.export_verified:
        findings.append(
            violation(
                view,
                "deletion protection is off but no verified export exists; set "
                "deletion_protection_enabled=True until teardown has verified the export",
            )
        )
    return findings


def check_cache_tls(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Check that an ElastiCache cache accepts TLS connections only.

    ElastiCache Serverless has no plain-text port, so it always passes. Node-based
    replication groups and clusters need transit encryption, and a replication
    group's transit_encryption_mode must be `required` when set.
    """
    if view.type not in (REPLICATION_GROUP, CACHE_CLUSTER):
        return []
    enabled = view.get("transitEncryptionEnabled")
    mode = view.get("transitEncryptionMode")
    if enabled is UNKNOWN or mode is UNKNOWN:
        return [cannot_check(view, "transit encryption settings are computed")]
    fix = (
        "set transit_encryption_enabled=True and transit_encryption_mode='required', or use "
        "ElastiCache Serverless, which accepts TLS only"
    )
    if enabled is not True:
        return [violation(view, f"transit encryption is off; {fix}")]
    if mode is not None and mode != "required":
        return [
            violation(view, f'transit_encryption_mode is "{mode}", which allows plain text; {fix}')
        ]
    return []


def check_cache_usage_limits(view: ResourceView, settings: EventSettings) -> list[Finding]:
    """Report serverless caches whose usage caps are missing or above the cost thresholds."""
    if view.type != SERVERLESS_CACHE:
        return []
    limits = view.get("cacheUsageLimits")
    if limits is UNKNOWN:
        return [cannot_check(view, "cache_usage_limits are computed")]
    thresholds = settings.thresholds
    if not isinstance(limits, dict):
        return [
            violation(
                view,
                "has no cache_usage_limits, so its ECPU and storage and the bill are unbounded; "
                "set cache.maxEcpuPerSecond and cache.maxDataStorageGb in the stack file",
            )
        ]

    findings: list[Finding] = []
    storage = view.get("cacheUsageLimits", "dataStorage", "maximum")
    unit = view.get("cacheUsageLimits", "dataStorage", "unit")
    if storage is UNKNOWN or unit is UNKNOWN:
        findings.append(cannot_check(view, "the data storage limit is computed"))
    elif storage is None:
        findings.append(violation(view, "has no data storage maximum; set cache.maxDataStorageGb"))
    elif unit == "GB" and storage > thresholds.max_data_storage_gb:
        findings.append(
            violation(
                view,
                f"data storage maximum {storage} GB is above the "
                f"{thresholds.max_data_storage_gb} GB cost threshold; lower "
                "cache.maxDataStorageGb, or raise maxDataStorageGb in the policy config if the "
                "event needs it",
            )
        )

    ecpu_limits = view.get("cacheUsageLimits", "ecpuPerSeconds")
    maxima = [
        view.get("cacheUsageLimits", "ecpuPerSeconds", index, "maximum")
        for index in range(len(ecpu_limits) if isinstance(ecpu_limits, list) else 0)
    ]
    if ecpu_limits is UNKNOWN or UNKNOWN in maxima:
        findings.append(cannot_check(view, "the ECPU limit is computed"))
    elif not any(isinstance(maximum, int | float) for maximum in maxima):
        findings.append(
            violation(view, "has no ECPU per second maximum; set cache.maxEcpuPerSecond")
        )
    else:
        highest = max(maximum for maximum in maxima if isinstance(maximum, int | float))
        if highest > thresholds.max_ecpu_per_second:
            findings.append(
                violation(
                    view,
                    f"ECPU per second maximum {highest} is above the "
                    f"{thresholds.max_ecpu_per_second} cost threshold; lower "
                    "cache.maxEcpuPerSecond, or raise maxEcpuPerSecond in the policy config "
                    "if the event needs it",
                )
            )
    return findings
