"""Stack tests under Pulumi mocks: the parts that hold event data.

Queues, the orders table and the two buckets, and how they are protected from
deletion before and after teardown has verified the export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.spec import SpecError, load_stack_file
from popstack.mockrun import RecordedResource

# One test runs the program itself, and pulumi_aws submodules warn about their own
# deprecated classes on first import.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

STACKS = Path(__file__).resolve().parent.parent / "stacks"
QUEUE = "aws:sqs/queue:Queue"
TABLE = "aws:dynamodb/table:Table"
BUCKET = "aws:s3/bucket:Bucket"
ROLE = "aws:iam/role:Role"
SQS_MAX_RETENTION_SECONDS = 14 * 24 * 3600
MANIFEST_URI = "s3://ps-lisbon-popup-27-exports-123456789012/exports/manifest.json"


def only(resources: list[RecordedResource], description: str) -> RecordedResource:
    assert len(resources) == 1, f"expected one {description}, got {[r.urn for r in resources]}"
    return resources[0]


def queues(recording: Any) -> tuple[RecordedResource, RecordedResource]:
    """Return the order queue and its dead-letter queue."""
    found = recording.of_type(QUEUE)
    main = only([q for q in found if q.name.endswith("-queues-queue")], "order queue")
    dead = only([q for q in found if q.name.endswith("-queues-dlq")], "dead-letter queue")
    return main, dead


def bucket(recording: Any, part: str) -> RecordedResource:
    """Return the bucket of one part (`receipts` or `exports`)."""
    found = [b for b in recording.of_type(BUCKET) if b.name.endswith(f"-{part}-bucket")]
    return only(found, f"{part} bucket")


def attached_to(recording: Any, bucket_resource: RecordedResource, type_token: str) -> Any:
    """Return the one resource of a type whose `bucket` input is this bucket."""
    found = [
        r for r in recording.of_type(type_token) if r.inputs.get("bucket") == bucket_resource.id
    ]
    return only(found, f"{type_token} of {bucket_resource.urn}")


def stateful(recording: Any) -> list[RecordedResource]:
    """Return the resources that hold event data and must survive until the export exists."""
    main, dead = queues(recording)
    table = only(recording.of_type(TABLE), "orders table")
    return [main, dead, table, bucket(recording, "receipts")]


def finance_role(recording: Any) -> RecordedResource:
    found = [r for r in recording.of_type(ROLE) if r.name.endswith("-exports-finance-reader")]
    return only(found, "finance role")


def with_export_record(directory: Path, record: str) -> Path:
    """Write lisbon-popup with `popstack:teardownVerifiedExport` set to `record`."""
    text = (STACKS / "Pulumi.lisbon-popup.yaml").read_text(encoding="utf-8")
    path = directory / "Pulumi.lisbon-verified.yaml"
    path.write_text(text + f"  popstack:teardownVerifiedExport: {record}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def verified(recorded: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Record lisbon-popup as it is after teardown wrote `popstack:teardownVerifiedExport`."""
    record = f"{MANIFEST_URI}#sha256={'0123456789abcdef' * 4}"
    return recorded(with_export_record(tmp_path_factory.mktemp("verified"), record))


# --- queues -----------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "max_receive_count"), [("lisbon-popup", 5), ("flash-drop", 3)])
def test_redrive_targets_dead_letter_queue(
    recorded: Any, stack: str, max_receive_count: int
) -> None:
    main, dead = queues(recorded(stack))

    policy = json.loads(main.inputs["redrivePolicy"])

    assert policy["deadLetterTargetArn"] == dead.state["arn"], main.urn
    assert policy["maxReceiveCount"] == max_receive_count, main.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_dead_letter_queue_accepts_only_order_queue(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    main, dead = queues(recording)
    allow = only(recording.of_type("aws:sqs/redriveAllowPolicy:RedriveAllowPolicy"), "allow")

    policy = json.loads(allow.inputs["redriveAllowPolicy"])

    assert allow.inputs["queueUrl"] == dead.state["url"], allow.urn
    assert policy == {"redrivePermission": "byQueue", "sourceQueueArns": [main.state["arn"]]}


def test_flash_drop_queues_are_fifo(recorded: Any) -> None:
    main, dead = queues(recorded("flash-drop"))

    for queue in (main, dead):
        assert queue.inputs["name"].endswith(".fifo"), queue.urn
        assert queue.inputs["fifoQueue"] is True, queue.urn
    assert main.inputs["name"] == "ps-kicks-drop-0412-orders.fifo"
    assert dead.inputs["name"] == "ps-kicks-drop-0412-orders-dlq.fifo"


def test_lisbon_queues_are_standard(recorded: Any) -> None:
    main, dead = queues(recorded("lisbon-popup"))

    for queue in (main, dead):
        assert not queue.inputs["name"].endswith(".fifo"), queue.urn
        assert not queue.inputs.get("fifoQueue", False), queue.urn
    assert main.inputs["name"] == "ps-lisbon-popup-27-orders"


@pytest.mark.parametrize(("stack", "retention_hours"), [("lisbon-popup", 96), ("flash-drop", 48)])
def test_dead_letters_outlive_orders(recorded: Any, stack: str, retention_hours: int) -> None:
    main, dead = queues(recorded(stack))

    assert main.inputs["messageRetentionSeconds"] == retention_hours * 3600, main.urn
    assert dead.inputs["messageRetentionSeconds"] == SQS_MAX_RETENTION_SECONDS, dead.urn
    assert dead.inputs["messageRetentionSeconds"] > main.inputs["messageRetentionSeconds"]


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_queues_encrypted_at_rest(recorded: Any, stack: str) -> None:
    for queue in queues(recorded(stack)):
        assert queue.inputs["sqsManagedSseEnabled"] is True, queue.urn


# --- orders table -----------------------------------------------------------------


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_orders_table_settings(recorded: Any, stack: str) -> None:
    table = only(recorded(stack).of_type(TABLE), "orders table")
    inputs = table.inputs

    assert inputs["pointInTimeRecovery"] == {"enabled": True}, table.urn
    assert inputs["deletionProtectionEnabled"] is True, table.urn
    assert inputs["billingMode"] == "PAY_PER_REQUEST", table.urn
    assert inputs["hashKey"] == "orderId", table.urn
    assert "rangeKey" not in inputs, table.urn
    assert inputs["attributes"] == [{"name": "orderId", "type": "S"}], table.urn
    assert inputs["serverSideEncryption"] == {"enabled": True}, table.urn


# --- buckets ----------------------------------------------------------------------


@pytest.mark.parametrize("part", ["receipts", "exports"])
def test_bucket_private_and_versioned(recorded: Any, part: str) -> None:
    recording = recorded("lisbon-popup")
    target = bucket(recording, part)

    block = attached_to(recording, target, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    versioning = attached_to(recording, target, "aws:s3/bucketVersioning:BucketVersioning")
    policy = attached_to(recording, target, "aws:s3/bucketPolicy:BucketPolicy")

    for flag in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        assert block.inputs[flag] is True, f"{block.urn}: {flag}"
    assert versioning.inputs["versioningConfiguration"] == {"status": "Enabled"}, versioning.urn
    statement = only(json.loads(policy.inputs["policy"])["Statement"], "bucket policy statement")
    assert statement["Effect"] == "Deny", policy.urn
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, policy.urn
    arn = target.state["arn"]
    assert statement["Resource"] == [arn, f"{arn}/*"], policy.urn


def test_exports_bucket_locks_objects(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    exports = bucket(recording, "exports")
    lock = attached_to(
        recording, exports, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
    )

    assert exports.inputs["objectLockEnabled"] is True, exports.urn
    assert lock.inputs["rule"] == {"defaultRetention": {"mode": "GOVERNANCE", "days": 2555}}, (
        lock.urn
    )
    assert lock.retain_on_delete, lock.urn


# --- protection before and after the verified export ------------------------------


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_stateful_resources_protected(recorded: Any, stack: str) -> None:
    for resource in stateful(recorded(stack)):
        assert resource.protect, resource.urn
        assert not resource.retain_on_delete, resource.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_exports_kept_on_destroy(recorded: Any, stack: str) -> None:
    recording = recorded(stack)

    for resource in (bucket(recording, "exports"), finance_role(recording)):
        assert resource.retain_on_delete, resource.urn


def test_verified_export_lifts_protection(verified: Any) -> None:
    for resource in stateful(verified):
        assert not resource.protect, resource.urn


def test_verified_export_lifts_table_deletion_protection(verified: Any) -> None:
    table = only(verified.of_type(TABLE), "orders table")

    assert table.inputs["deletionProtectionEnabled"] is False, table.urn


def test_verified_export_still_keeps_exports(verified: Any) -> None:
    for resource in (bucket(verified, "exports"), finance_role(verified)):
        assert resource.retain_on_delete, resource.urn


def test_export_record_without_checksum_rejected(tmp_path: Path) -> None:
    # Only the record teardown writes (URI and SHA-256) may lift the protection.
    path = with_export_record(tmp_path, MANIFEST_URI)

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].endswith(
        f"popstack:teardownVerifiedExport: '{MANIFEST_URI}' is not "
        "s3://BUCKET/KEY#sha256=<64 hex digits>; only `popstack teardown` sets it, so remove "
        "the key"
    )
