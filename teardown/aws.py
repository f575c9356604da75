"""The AWS reads and writes of teardown, one function per call pattern, all through boto3.

Clients come from ``Clients``, which builds them from the default boto3 session (so
``AWS_ENDPOINT_URL`` points them at a local emulator) unless a test hands one in.
Nothing here logs or returns a secret value.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import ClientError

from components.receipts import RECEIPTS_PREFIX
from components.secrets import RECOVERY_WINDOW_DAYS

# Drain and dead-letter reads count every message left in the queue, visible or not.
QUEUE_COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
SQS_MAX_BATCH = 10
# GetMetricData accepts at most 500 queries per request.
METRIC_QUERIES_PER_REQUEST = 500
SECRET_KIND_TAG = "popstack:secret-kind"


class TeardownAwsError(Exception):
    """An AWS read or write of teardown that failed; the message gives the reason."""


class Clients:
    """One boto3 client per service, built on first use; ``overrides`` replace any of them.

    The key ``appconfig-control`` is the client for the AppConfig calls moto lacks
    (listing hosted versions, deployments); it defaults to the ``appconfig`` client.
    """

    def __init__(self, overrides: Mapping[str, Any] | None = None, region: str | None = None):
        self._clients: dict[str, Any] = dict(overrides or {})
        self._region = region

    def __call__(self, service: str) -> Any:
        if service not in self._clients:
            if service == "appconfig-control":
                self._clients[service] = self("appconfig")
            else:
                self._clients[service] = boto3.client(service, region_name=self._region)
        return self._clients[service]


# Queues


def queue_counts(sqs: Any, queue_url: str) -> dict[str, int]:
    """Return the approximate visible, in-flight and delayed message counts of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(QUEUE_COUNT_ATTRIBUTES)
    )["Attributes"]
    return {name: int(attributes.get(name, 0)) for name in QUEUE_COUNT_ATTRIBUTES}


def wait_for_drain(
    sqs: Any,
    queue_url: str,
    timeout_seconds: float,
    poll_seconds: float,
    on_poll: Callable[[int, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Poll the queue until it is empty or the timeout passes; return the messages left.

    In-flight and delayed messages count as left, because a consumer that fails hands
    its message back. ``on_poll(remaining, elapsed_seconds)`` runs after every poll.
    """
    started = monotonic()
    while True:
        remaining = sum(queue_counts(sqs, queue_url).values())
        elapsed = monotonic() - started
        if on_poll:
            on_poll(remaining, elapsed)
        if remaining == 0 or elapsed >= timeout_seconds:
            return remaining
        sleep(min(poll_seconds, max(timeout_seconds - elapsed, 0)))


@dataclass(frozen=True)
class DeadLetter:
    """One message read from the dead-letter queue, without its receipt handle."""

    message_id: str
    body: str
    md5_of_body: str
    sent_at: str
    receive_count: int
    message_attributes: dict[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    sequence_number: str | None = None

    def record(self) -> dict[str, Any]:
        """Return the fields the export writes for a dead letter."""
        return {
            "messageId": self.message_id,
            "body": self.body,
            "sentAt": self.sent_at,
            "receiveCount": self.receive_count,
        }

    def staged(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "body": self.body,
            "md5OfBody": self.md5_of_body,
            "sentAt": self.sent_at,
            "receiveCount": self.receive_count,
            "messageAttributes": self.message_attributes,
            "groupId": self.group_id,
            "sequenceNumber": self.sequence_number,
        }

    @classmethod
    def from_staged(cls, value: Mapping[str, Any]) -> DeadLetter:
        return cls(
            message_id=value["messageId"],
            body=value["body"],
            md5_of_body=value["md5OfBody"],
            sent_at=value["sentAt"],
            receive_count=int(value["receiveCount"]),
            message_attributes=dict(value.get("messageAttributes") or {}),
            group_id=value.get("groupId"),
            sequence_number=value.get("sequenceNumber"),
        )


def read_dead_letters(
    sqs: Any,
    queue_url: str,
    visibility_timeout: int,
    wait_seconds: int = 1,
    expected_ids: Iterable[str] = (),
    deadline_seconds: float = 0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> list[DeadLetter]:
    """Receive every message in the queue without deleting one, sorted by send time and id.

    Each receive hides the messages for ``visibility_timeout`` seconds, so one pass
    receives each message once. A message that became visible again and was received
    twice is dropped by id. The pass ends at the first empty receive. When ``expected_ids`` names
    messages a previous run read and they are still hidden, receiving goes on until
    all of them arrived or ``deadline_seconds`` passed.

    ``receive_count`` is SQS's ApproximateReceiveCount minus this receive. Raises
    TeardownAwsError when the queue reports more messages than were read (in a FIFO
    queue, SQS hides the rest of a message group while part of it is in flight).
    """
    found: dict[str, DeadLetter] = {}
    wanted = set(expected_ids)
    started = monotonic()
    while True:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=SQS_MAX_BATCH,
            VisibilityTimeout=visibility_timeout,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        for message in messages:
            letter = _dead_letter(message)
            found.setdefault(letter.message_id, letter)
        if messages:
            continue
        if wanted - set(found) and monotonic() - started < deadline_seconds:
            sleep(1)
            continue
        break
    missing = wanted - set(found)
    if missing:
        raise TeardownAwsError(
            f"{len(missing)} dead letter(s) read by an earlier run did not reappear in "
            f"{queue_url} within {deadline_seconds:.0f} s (first id {sorted(missing)[0]}); "
            "run teardown again after the queue's visibility timeout"
        )
    held = sum(queue_counts(sqs, queue_url).values())
    if held > len(found):
        raise TeardownAwsError(
            f"read {len(found)} dead letter(s) but {queue_url} reports {held}; run teardown "
            "again after the visibility timeout, or move the rest out of the FIFO message "
            "groups that hold them"
        )
    return sorted(found.values(), key=lambda letter: (letter.sent_at, letter.message_id))


def _dead_letter(message: Mapping[str, Any]) -> DeadLetter:
    attributes = message.get("Attributes", {})
    sent = datetime.fromtimestamp(int(attributes.get("SentTimestamp", "0")) / 1000, tz=UTC)
    return DeadLetter(
        message_id=message["MessageId"],
        body=message["Body"],
        md5_of_body=message["MD5OfBody"],
        sent_at=sent.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        receive_count=max(int(attributes.get("ApproximateReceiveCount", "1")) - 1, 0),
        message_attributes=dict(message.get("MessageAttributes", {})),
        group_id=attributes.get("MessageGroupId"),
        sequence_number=attributes.get("SequenceNumber"),
    )


# Orders table

_deserializer = TypeDeserializer()


def plain_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a DynamoDB-JSON item into plain values: integral numbers become int."""
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, Binary):
        return bytes(value).hex()
    if isinstance(value, set):
        return sorted(_plain(item) for item in value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def table_size(dynamodb: Any, table: str) -> tuple[int, int, str]:
    """Return the table's size in bytes, item count and ARN as DescribeTable reports them.

    AWS refreshes the size and count about every six hours, so they are estimates.
    """
    description = dynamodb.describe_table(TableName=table)["Table"]
    return (
        int(description.get("TableSizeBytes", 0)),
        int(description.get("ItemCount", 0)),
        description["TableArn"],
    )


def scan_table(
    dynamodb: Any,
    table: str,
    segments: int,
    on_items: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Read every item with a consistent parallel Scan of ``segments`` segments.

    Returns plain items sorted by ``orderId``, so the result does not depend on the
    order the segments finish in. ``on_items(count)`` runs after each page.
    """

    def scan_segment(segment: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        arguments: dict[str, Any] = {
            "TableName": table,
            "Segment": segment,
            "TotalSegments": segments,
            "ConsistentRead": True,
        }
        while True:
            page = dynamodb.scan(**arguments)
            items.extend(plain_item(item) for item in page.get("Items", []))
            if on_items:
                on_items(len(page.get("Items", [])))
            if "LastEvaluatedKey" not in page:
                return items
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    with ThreadPoolExecutor(max_workers=segments) as pool:
        parts = list(pool.map(scan_segment, range(segments)))
    return sort_items([item for part in parts for item in part])


def sort_items(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: str(item.get("orderId", "")))


def start_native_export(
    dynamodb: Any, table_arn: str, bucket: str, prefix: str, export_time: datetime, token: str
) -> str:
    """Start ExportTableToPointInTime into ``bucket``/``prefix``; return the export ARN.

    ``token`` is the idempotency token, so a retried start does not export twice.
    """
    response = dynamodb.export_table_to_point_in_time(
        TableArn=table_arn,
        ExportTime=export_time,
        S3Bucket=bucket,
        S3Prefix=prefix.rstrip("/"),
        ExportFormat="DYNAMODB_JSON",
        ClientToken=token,
    )
    return response["ExportDescription"]["ExportArn"]


def wait_for_native_export(
    dynamodb: Any,
    export_arn: str,
    timeout_seconds: float,
    poll_seconds: float = 5,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll DescribeExport until the export completed; raise TeardownAwsError otherwise."""
    started = monotonic()
    while True:
        description = dynamodb.describe_export(ExportArn=export_arn)["ExportDescription"]
        status = description["ExportStatus"]
        if status == "COMPLETED":
            return description
        if status == "FAILED":
            raise TeardownAwsError(
                f"DynamoDB export {export_arn} failed: {description.get('FailureCode')} "
                f"{description.get('FailureMessage')}; fix the cause and run teardown again"
            )
        if monotonic() - started >= timeout_seconds:
            raise TeardownAwsError(
                f"DynamoDB export {export_arn} is still {status} after {timeout_seconds:.0f} s; "
                "run teardown again later, it picks the same export up"
            )
        sleep(poll_seconds)


def read_native_export(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Read the DYNAMODB_JSON data files an export wrote under ``prefix``.

    Every export gets a prefix of its own, so all ``data/*.gz`` objects under it belong
    to that export. Returns plain items sorted by ``orderId``.
    """
    items: list[dict[str, Any]] = []
    for key in list_keys(s3, bucket, prefix.rstrip("/") + "/"):
        if "/data/" not in key or not key.endswith(".gz"):
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for line in gzip.decompress(body).decode("utf-8").splitlines():
            if line.strip():
                items.append(plain_item(json.loads(line)["Item"]))
    return sort_items(items)


# S3


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Return every key under ``prefix``, sorted."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


@dataclass(frozen=True)
class StoredFile:
    """An object's key (relative to the prefix it was listed under) and its bytes."""

    name: str
    data: bytes


def read_receipts(s3: Any, bucket: str) -> list[StoredFile]:
    """Download every staff-uploaded object under ``receipts/``, sorted by key.

    Names keep the part after ``receipts/`` (``<location id>/<file>.csv``).
    """
    files = []
    for key in list_keys(s3, bucket, RECEIPTS_PREFIX):
        if key.endswith("/"):
            continue
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        files.append(StoredFile(key.removeprefix(RECEIPTS_PREFIX), data))
    return files


def read_object(s3: Any, bucket: str, key: str) -> bytes:
    """Download one object; raise FileNotFoundError when it does not exist."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
            raise FileNotFoundError(f"s3://{bucket}/{key}") from None
        raise


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# CloudWatch


@dataclass(frozen=True)
class MetricQuery:
    """One line of a dashboard's metric widget, as a GetMetricData query."""

    widget: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str
    period: int


def dashboard_queries(body: Mapping[str, Any]) -> list[MetricQuery]:
    """Return the metrics a CloudWatch dashboard body shows, in widget order.

    Each metric line is ``[namespace, name, dimension, value, ..., {options}]``; the
    options may set ``stat`` and ``period``, else the widget's values apply. A ``"."``
    repeats the entry at the same position of the line before, as in the CloudWatch
    dashboard body syntax.
    """
    queries: list[MetricQuery] = []
    for widget in body.get("widgets", []):
        if widget.get("type") != "metric":
            continue
        properties = widget.get("properties", {})
        previous: list[Any] = []
        for line in properties.get("metrics", []):
            options = line[-1] if line and isinstance(line[-1], Mapping) else {}
            parts = list(line[:-1] if options else line)
            parts = [
                previous[i] if part == "." and i < len(previous) else part
                for i, part in enumerate(parts)
            ]
            previous = parts
            namespace, metric, *pairs = parts
            dimensions = tuple(zip(pairs[0::2], pairs[1::2], strict=True))
            queries.append(
                MetricQuery(
                    widget=str(properties.get("title", "")),
                    namespace=namespace,
                    metric=metric,
                    dimensions=dimensions,
                    stat=str(options.get("stat", properties.get("stat", "Average"))),
                    period=int(options.get("period", properties.get("period", 300))),
                )
            )
    return queries


def read_dashboard(cloudwatch: Any, name: str) -> dict[str, Any]:
    return json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"])


def metric_data(
    cloudwatch: Any, queries: list[MetricQuery], start: datetime, end: datetime
) -> list[tuple[MetricQuery, list[tuple[datetime, float]]]]:
    """Fetch every query's data points between ``start`` and ``end``, oldest first."""
    results: dict[str, list[tuple[datetime, float]]] = {}
    for offset in range(0, len(queries), METRIC_QUERIES_PER_REQUEST):
        batch = queries[offset : offset + METRIC_QUERIES_PER_REQUEST]
        request = [
            {
                "Id": f"m{offset + index}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": query.namespace,
                        "MetricName": query.metric,
                        "Dimensions": [
                            {"Name": name, "Value": value} for name, value in query.dimensions
                        ],
                    },
                    "Period": query.period,
                    "Stat": query.stat,
                },
                "ReturnData": True,
            }
            for index, query in enumerate(batch)
        ]
        paginator = cloudwatch.get_paginator("get_metric_data")
        pages = paginator.paginate(
            MetricDataQueries=request,
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampAscending",
        )
        for page in pages:
            for result in page.get("MetricDataResults", []):
                points = results.setdefault(result["Id"], [])
                points.extend(zip(result["Timestamps"], result["Values"], strict=True))
    return [
        (query, sorted(results.get(f"m{index}", []), key=lambda point: point[0]))
        for index, query in enumerate(queries)
    ]


# Secrets Manager


@dataclass(frozen=True)
class Revocation:
    """Record of one revoked secret: its ARN and version ids, never its value."""

    secret_arn: str
    already_deleted: bool
    new_version_id: str | None
    cleared_version_ids: tuple[str, ...]
    deletion_date: str | None


def revoke_secret(secretsmanager: Any, secret_arn: str) -> Revocation:
    """Replace the secret's value with a fresh random one and schedule its deletion.

    The fresh value becomes AWSCURRENT, and the AWSPREVIOUS and AWSPENDING labels are
    removed from every other version, so a consumer that accepts the previous version
    during a rotation overlap rejects the old token too. This does not go through the
    rotation Lambda: moto cannot invoke Lambda code without a container engine, and a
    revocation must not wait for a function that teardown is about to destroy.
    NOTE: for the cache's AUTH secret this changes the stored password only. The
    ElastiCache user keeps its old password until `pulumi destroy` deletes the cache.
    """
    description = secretsmanager.describe_secret(SecretId=secret_arn)
    if description.get("DeletedDate"):
        return Revocation(secret_arn, True, None, (), _iso(description.get("DeletedDate")))
    tags = {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])}
    value = _fresh_value(secretsmanager, secret_arn, tags.get(SECRET_KIND_TAG, "token"))
    new_version = secretsmanager.put_secret_value(
        SecretId=secret_arn, SecretString=value, VersionStages=["AWSCURRENT"]
    )["VersionId"]
    cleared = []
    stages = secretsmanager.describe_secret(SecretId=secret_arn).get("VersionIdsToStages", {})
    for version_id, labels in sorted(stages.items()):
        if version_id == new_version:
            continue
        for label in ("AWSPREVIOUS", "AWSPENDING"):
            if label in labels:
                secretsmanager.update_secret_version_stage(
                    SecretId=secret_arn, VersionStage=label, RemoveFromVersionId=version_id
                )
                cleared.append(version_id)
    deleted = secretsmanager.delete_secret(
        SecretId=secret_arn, RecoveryWindowInDays=RECOVERY_WINDOW_DAYS
    )
    return Revocation(
        secret_arn, False, new_version, tuple(sorted(set(cleared))), _iso(deleted["DeletionDate"])
    )


def _fresh_value(secretsmanager: Any, secret_arn: str, kind: str) -> str:
    """Build a random value in the shape the rotation handler writes for ``kind``."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if kind == "cache-auth":
        current = json.loads(
            secretsmanager.get_secret_value(SecretId=secret_arn, VersionStage="AWSCURRENT")[
                "SecretString"
            ]
        )
        return json.dumps(
            {
                "kind": kind,
                "userId": current.get("userId"),
                "username": current.get("username"),
                "password": secrets.token_hex(32),
                "created_at": now,
            }
        )
    return json.dumps({"kind": "token", "token": secrets.token_urlsafe(32), "created_at": now})


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return None if value is None else str(value)
