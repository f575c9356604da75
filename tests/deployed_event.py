"""A deployed, populated demo event in moto, and a RecordingEngine whose outputs match it.

``deploy_event`` creates with boto3 what `pulumi up` of the event would have created
(orders table, order and dead-letter queues, receipts bucket, object-locked exports
bucket, two event secrets, the AppConfig application and flag profile with its
initial version, the CloudWatch dashboard) and fills it: orders in EUR, JPY, USD and
KWD, two dead letters, one receipts file and dashboard metrics.

Determinism: moto's random ids are seeded (``/moto-api/seed``), and the SQS clock that
stamps SentTimestamp is ``SqsClock``, so dead letters get the same ids and send times
in every session and the export bytes can be compared with committed files.

moto 5.2 lacks AppConfig environments, deployments and ListHostedConfigurationVersions
(it returns 404 or 500), so ``AppConfigControl`` sends those calls to botocore's
Stubber, with responses in the real shapes. Creating, reading and deleting hosted
versions goes to moto.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.stub import Stubber
from rich.console import Console

from components.dashboards import render_json
from components.flag_schema import PROFILE, PROFILE_TYPE, flag_document
from components.spec import spec_from_config
from lambdas.flagstore import serialise
from popstack.engine import RecordingEngine, read_config_entries
from teardown.aws import Clients
from teardown.steps import SettlementInput, Teardown, TeardownOptions, settlement_argument

STACK = "tdemo"
EVENT_ID = "tdemo"
ACCOUNT = "123456789012"
TABLE = f"ps-{EVENT_ID}-orders"
QUEUE = f"ps-{EVENT_ID}-orders"
DEAD_LETTER_QUEUE = f"ps-{EVENT_ID}-orders-dlq"
RECEIPTS_BUCKET = f"ps-{EVENT_ID}-receipts-{ACCOUNT}"
EXPORTS_BUCKET = f"ps-{EVENT_ID}-exports-{ACCOUNT}"
DASHBOARD = f"ps-{EVENT_ID}-board"
ENVIRONMENT_ID = "e1live1"
STRATEGY_ID = "s1once1"
CLOSED_AT = datetime(2027, 6, 5, 17, 10, tzinfo=UTC)
DATA = Path(__file__).resolve().parent / "data" / "teardown"
SEED = 20270605

STACK_FILE = """\
config:
  aws:region: us-east-1
  popstack:id: tdemo
  popstack:title: Teardown test event
  popstack:brand: Test brand
  popstack:owner: popstack-test
  popstack:costCentre: CC-0001
  popstack:currency: EUR
  popstack:window:
    opens: "2027-06-05T10:00:00+01:00"
    closes: "2027-06-05T18:00:00+01:00"
    timeZone: Europe/Lisbon
  popstack:locations:
    - id: market
      name: Market stall
    - id: kiosk
      name: Station kiosk
  popstack:peakRps: 10
  popstack:checkout:
    image: docker.io/nginxinc/nginx-unprivileged:1.27.3
  popstack:secrets:
    - name: pos-token
      rotationDays: 30
  popstack:alerts:
    email: ops@example.com
  popstack:inventory:
    preSyncCommand: ["/app/bin/inventory-sync"]
  popstack:escalation:
    - level: 1
      name: Duty manager
      role: Store operations
      when: A till or terminal fails
      phone: "+351 210 000 001"
  popstack:cluster:
    oidcProviderArn: arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/T
    oidcIssuer: oidc.eks.us-east-1.amazonaws.com/id/T
    vpcId: vpc-12345678
    subnetIds:
      - subnet-12345678
"""

# The checkout service's order items (components/orders_table.py), with personal data.
ORDERS: list[dict[str, Any]] = [
    {
        "orderId": "o-1001",
        "locationId": "market",
        "createdAt": "2027-06-05T10:15:00+01:00",
        "currency": "EUR",
        "amountMinor": 1250,
        "paymentMethod": "card",
        "paymentReference": "ch_1001",
        "status": "paid",
        "refundedMinor": 0,
        "customerEmail": "ana@example.com",
        "cardNumber": "4111 1111 1111 1111",
    },
    {
        "orderId": "o-1002",
        "locationId": "kiosk",
        "createdAt": "2027-06-05T11:02:00+01:00",
        "currency": "JPY",
        "amountMinor": 5400,
        "paymentMethod": "card",
        "paymentReference": "ch_1002",
        "status": "paid",
        "refundedMinor": 0,
    },
    {
        "orderId": "o-1003",
        "locationId": "market",
        "createdAt": "2027-06-05T12:30:00+01:00",
        "currency": "USD",
        "amountMinor": 2000,
        "paymentMethod": "wallet",
        "paymentReference": "ch_1003",
        "status": "partially_refunded",
        "refundedMinor": 500,
        "customerPhone": "+351 912 345 678",
    },
    {
        "orderId": "o-1004",
        "locationId": "kiosk",
        "createdAt": "2027-06-05T13:45:00+01:00",
        "currency": "KWD",
        "amountMinor": 12345,
        "paymentMethod": "card",
        "paymentReference": "ch_1004",
        "status": "paid",
        "refundedMinor": 0,
    },
    {
        "orderId": "o-1005",
        "locationId": "market",
        "createdAt": "2027-06-05T14:05:00+01:00",
        "currency": "EUR",
        "amountMinor": 400,
        "paymentMethod": "cash",
        "status": "paid",
        "refundedMinor": 0,
    },
    {
        "orderId": "o-1006",
        "locationId": "kiosk",
        "createdAt": "2027-06-05T15:20:00+01:00",
        "currency": "EUR",
        "amountMinor": 990,
        "paymentMethod": "card",
        "paymentReference": "ch_1006",
        "status": "paid",
        "refundedMinor": 0,
    },
    {
        "orderId": "o-1007",
        "locationId": "market",
        "createdAt": "2027-06-05T16:40:00+01:00",
        "currency": "EUR",
        "amountMinor": 1500,
        "paymentMethod": "card",
        "paymentReference": "ch_1007",
        "status": "refunded",
        "refundedMinor": 1500,
    },
]

DEAD_LETTER_BODIES = [
    json.dumps({"orderId": "o-1006", "step": "fulfil", "customerEmail": "rui@example.org"}),
    "inventory sync failed for sku 77; call +351 213 456 789",
]

RECEIPTS_CSV = (
    "receipt_id,location_id,taken_at,amount,currency,payment_method,order_id,"
    "payment_reference,staff_id,note\r\n"
    "r-1,market,2027-06-05T14:06:00+01:00,4.00,EUR,cash,o-1005,,staff-1,\r\n"
    "r-2,kiosk,2027-06-05T15:55:00+01:00,2.50,EUR,cash,,,staff-2,Terminal down\r\n"
)


class SqsClock:
    """The clock moto's SQS backend stamps messages with, in epoch milliseconds.

    moto runs in this process (ThreadedMotoServer), so replacing its SQS clock fixes
    the dead letters' SentTimestamp. Time moves only when ``advance`` is called, which
    is also what makes a hidden message visible again.
    """

    def __init__(self, start: datetime):
        self.now_ms = start.timestamp() * 1000

    def __call__(self) -> float:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += seconds * 1000


@dataclass
class AppConfigControl:
    """Stubbed responses for the AppConfig calls moto lacks, in step with moto's versions.

    ``versions`` and ``deployments`` are what AppConfig contains. Each ``expect_*`` queues
    the responses one teardown step or flag flip receives and then updates them the way
    that step changes AppConfig.
    """

    client: Any
    application_id: str
    profile_id: str
    versions: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stubber = Stubber(self.client)
        self.stubber.activate()

    def _list_versions(self, page_size: int = 50) -> None:
        """Queue ListHostedConfigurationVersions in pages of at most 50, as AppConfig does."""
        items = [
            {
                "ApplicationId": self.application_id,
                "ConfigurationProfileId": self.profile_id,
                "VersionNumber": version["number"],
                "ContentType": "application/json",
                **({"VersionLabel": version["label"]} if version["label"] else {}),
            }
            for version in self.versions
        ]
        pages = [items[start : start + page_size] for start in range(0, len(items), page_size)]
        for index, page in enumerate(pages or [[]]):
            response: dict[str, Any] = {"Items": page}
            if index + 1 < len(pages):
                response["NextToken"] = f"page-{index + 1}"
            expected = {
                "ApplicationId": self.application_id,
                "ConfigurationProfileId": self.profile_id,
            }
            if index:
                expected["NextToken"] = f"page-{index}"
            self.stubber.add_response("list_hosted_configuration_versions", response, expected)

    def _list_deployments(self) -> None:
        items = [
            {
                "DeploymentNumber": item["number"],
                "ConfigurationProfileId": self.profile_id,
                "ConfigurationName": PROFILE,
                "ConfigurationVersion": str(item["version"]),
                "DeploymentDurationInMinutes": 0,
                "GrowthType": "LINEAR",
                "GrowthFactor": 100.0,
                "FinalBakeTimeInMinutes": 0,
                "State": "COMPLETE",
                "PercentageComplete": 100.0,
                "StartedAt": item["started"],
                "CompletedAt": item["started"] + timedelta(seconds=5),
            }
            for item in self.deployments
        ]
        self.stubber.add_response(
            "list_deployments",
            {"Items": items},
            {"ApplicationId": self.application_id, "EnvironmentId": ENVIRONMENT_ID},
        )

    def _start_deployment(self, version: int, description: str, started: datetime) -> None:
        number = len(self.deployments) + 1
        self.stubber.add_response(
            "start_deployment",
            {
                "ApplicationId": self.application_id,
                "EnvironmentId": ENVIRONMENT_ID,
                "DeploymentStrategyId": STRATEGY_ID,
                "ConfigurationProfileId": self.profile_id,
                "DeploymentNumber": number,
                "ConfigurationName": PROFILE,
                "ConfigurationLocationUri": "hosted",
                "ConfigurationVersion": str(version),
                "Description": description,
                "DeploymentDurationInMinutes": 0,
                "GrowthType": "LINEAR",
                "GrowthFactor": 100.0,
                "FinalBakeTimeInMinutes": 0,
                "State": "DEPLOYING",
                "StartedAt": started,
            },
            {
                "ApplicationId": self.application_id,
                "EnvironmentId": ENVIRONMENT_ID,
                "DeploymentStrategyId": STRATEGY_ID,
                "ConfigurationProfileId": self.profile_id,
                "ConfigurationVersion": str(version),
                "Description": description,
            },
        )
        self.deployments.append({"number": number, "version": version, "started": started})

    def add_version(self, label: str | None) -> int:
        number = max((version["number"] for version in self.versions), default=0) + 1
        self.versions.append({"number": number, "label": label})
        return number

    def expect_close(self, checkout_on: bool) -> None:
        """Queue step close, which is `set_flags` with checkout off.

        With checkout on, that writes a version and deploys it; with checkout already
        off, it lists deployments and deploys the latest version only if none has.
        """
        if checkout_on:
            self.expect_flip(
                "popstack-teardown by popstack teardown: checkout_enabled off",
                CLOSED_AT,
                label="popstack-teardown",
                reads=1,
            )
            return
        self._list_versions()
        self._list_deployments()
        number = self.versions[-1]["number"]
        if not any(item["version"] == number for item in self.deployments):
            self._start_deployment(
                number,
                f"popstack-teardown by popstack teardown: deploy version {number}, never deployed",
                CLOSED_AT,
            )

    def expect_export(self) -> None:
        self._list_versions()
        self._list_deployments()

    def expect_destroy(self) -> None:
        """Queue destroy's listing; every version but the program's initial one goes."""
        self._list_versions()
        self.versions = self.versions[:1]

    def expect_flip(
        self, description: str, started: datetime, label: str = "popstack-flag", reads: int = 2
    ) -> int:
        """Queue a flag change and start a deployment of the new version.

        The latest version is listed ``reads`` times: `flags set` reads it once to check
        the keys, then `set_flags` reads it. One more listing checks that no other writer
        came between.
        """
        for _ in range(reads):
            self._list_versions()
        number = self.add_version(label)
        self._list_versions()
        self._start_deployment(number, description, started)
        return number

    def expect_flip_conflict(self, label: str = "popstack-flag") -> int:
        """Queue a `flags set` whose deployment AppConfig rejects: another is in progress."""
        self._list_versions()
        self._list_versions()
        number = self.add_version(label)
        self._list_versions()
        self.stubber.add_client_error(
            "start_deployment",
            service_error_code="ConflictException",
            service_message="Deployment 1 is in progress",
            http_status_code=409,
        )
        return number

    def expect_read(self) -> None:
        """Queue `flags show`: list versions, then list deployments."""
        self._list_versions()
        self._list_deployments()

    def expect_steps(self, steps: list[str], checkout_on: Callable[[], bool]) -> None:
        for step in steps:
            if step == "close":
                self.expect_close(checkout_on())
            elif step == "export":
                self.expect_export()
            elif step == "destroy":
                self.expect_destroy()


@dataclass
class DeployedEvent:
    """The moto resources of the event, its stack outputs and an engine with those outputs."""

    outputs: dict[str, Any]
    engine: RecordingEngine
    work_dir: Path
    control: AppConfigControl
    clients: dict[str, Any]
    secret_arns: list[str]
    initial_secret_values: dict[str, str]

    def checkout_on(self) -> bool:
        """Read checkout_enabled from the latest hosted version in moto."""
        latest = self.control.versions[-1]["number"]
        content = (
            self.clients["appconfig"]
            .get_hosted_configuration_version(
                ApplicationId=self.control.application_id,
                ConfigurationProfileId=self.control.profile_id,
                VersionNumber=latest,
            )["Content"]
            .read()
        )
        return json.loads(content)["values"]["checkout_enabled"]["enabled"]


def deploy_event(
    aws_client: Callable[..., Any],
    moto_api: Callable[..., None],
    work_dir: Path,
    sqs_clock: SqsClock,
) -> DeployedEvent:
    """Create and fill the event's resources in moto; return them with a RecordingEngine."""
    moto_api(f"/moto-api/seed?a={SEED}")
    (work_dir / "stacks").mkdir(parents=True)
    (work_dir / "Pulumi.yaml").write_text(
        "name: popstack\nruntime: python\nstackConfigDir: stacks\n"
    )
    stack_file = work_dir / "stacks" / f"Pulumi.{STACK}.yaml"
    stack_file.write_text(STACK_FILE)
    config = {key: entry.value for key, entry in read_config_entries(stack_file).items()}
    spec = spec_from_config(config, str(stack_file))

    dynamodb = aws_client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_continuous_backups(
        TableName=TABLE,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    for order in ORDERS:
        item = {
            key: {"N": str(value)} if isinstance(value, int) else {"S": value}
            for key, value in order.items()
        }
        dynamodb.put_item(TableName=TABLE, Item=item)

    sqs = aws_client("sqs")
    dead_letter_url = sqs.create_queue(QueueName=DEAD_LETTER_QUEUE)["QueueUrl"]
    queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    for body in DEAD_LETTER_BODIES:
        sqs.send_message(QueueUrl=dead_letter_url, MessageBody=body)
        sqs_clock.advance(61)

    s3 = aws_client("s3")
    s3.create_bucket(Bucket=RECEIPTS_BUCKET)
    s3.put_object(
        Bucket=RECEIPTS_BUCKET, Key="receipts/market/day-1.csv", Body=RECEIPTS_CSV.encode()
    )
    s3.create_bucket(Bucket=EXPORTS_BUCKET, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=EXPORTS_BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )

    secretsmanager = aws_client("secretsmanager")
    token_value = json.dumps({"kind": "token", "token": "t" * 43, "created_at": "2027-06-01"})
    token_arn = secretsmanager.create_secret(
        Name=f"ps-{EVENT_ID}-pos-token-x1",
        SecretString=token_value,
        Tags=[{"Key": "popstack:secret-kind", "Value": "token"}],
    )["ARN"]
    cache_value = json.dumps(
        {
            "kind": "cache-auth",
            "userId": "ps-tdemo-checkout",
            "username": "checkout",
            "password": "p" * 64,
            "created_at": "2027-06-01",
        }
    )
    cache_arn = secretsmanager.create_secret(
        Name=f"ps-{EVENT_ID}-cache-auth-x1",
        SecretString=cache_value,
        Tags=[{"Key": "popstack:secret-kind", "Value": "cache-auth"}],
    )["ARN"]

    appconfig = aws_client("appconfig")
    application_id = appconfig.create_application(Name=f"ps-{EVENT_ID}-flags")["Id"]
    profile_id = appconfig.create_configuration_profile(
        ApplicationId=application_id, Name=PROFILE, LocationUri="hosted", Type=PROFILE_TYPE
    )["Id"]
    appconfig.create_hosted_configuration_version(
        ApplicationId=application_id,
        ConfigurationProfileId=profile_id,
        Content=serialise(flag_document(spec)),
        ContentType="application/json",
        Description="Initial flag values from the stack file",
    )

    cloudwatch = aws_client("cloudwatch")
    body = render_json(
        "cloudwatch_dashboard.json.j2",
        alarm_arns=[f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:ps-tdemo-dead-letters"],
        title=spec.title,
        event_id=EVENT_ID,
        stack=STACK,
        region="us-east-1",
        time_zone=spec.window.time_zone,
        window_opens=spec.window.opens.isoformat(),
        window_closes=spec.window.closes.isoformat(),
        queue_name=QUEUE,
        dead_letter_queue_name=DEAD_LETTER_QUEUE,
        cache_name=f"ps-{EVENT_ID}-cache",
        metrics_namespace="Popstack/Checkout",
    )
    cloudwatch.put_dashboard(DashboardName=DASHBOARD, DashboardBody=body)
    opens = spec.window.opens.astimezone(UTC)
    cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": QUEUE}],
                "Timestamp": opens + timedelta(minutes=minute),
                "Value": float(value),
            }
            for minute, value in ((0, 3), (1, 7), (2, 2))
        ],
    )
    cloudwatch.put_metric_data(
        Namespace="Popstack/Checkout",
        MetricData=[
            {
                "MetricName": "CheckoutErrors",
                "Dimensions": [{"Name": "EventId", "Value": EVENT_ID}],
                "Timestamp": opens + timedelta(hours=2),
                "Value": 4.0,
            }
        ],
    )

    outputs = {
        "eventId": EVENT_ID,
        "expiresAt": "2027-06-08T17:00:00Z",
        "ordersTable": TABLE,
        "orderQueueUrl": queue_url,
        "deadLetterQueueUrl": dead_letter_url,
        "receiptsBucket": RECEIPTS_BUCKET,
        "exportsBucket": EXPORTS_BUCKET,
        "financeRoleArn": f"arn:aws:iam::{ACCOUNT}:role/ps-{EVENT_ID}-finance-reader",
        "flagsApplicationId": application_id,
        "flagsEnvironmentId": ENVIRONMENT_ID,
        "flagsProfileId": profile_id,
        "flagsStrategyId": STRATEGY_ID,
        "secretArns": {"pos-token": token_arn},
        "cacheAuthSecretArn": cache_arn,
        "dashboardName": DASHBOARD,
    }
    engine = RecordingEngine(work_dir, program=lambda stack, config: outputs)
    engine.seed(STACK, outputs)
    engine.import_state(STACK, stack_state(outputs))
    control = AppConfigControl(aws_client("appconfig"), application_id, profile_id)
    control.versions.append({"number": 1, "label": None})
    control.deployments.append(
        {"number": 1, "version": 1, "started": datetime(2027, 6, 5, 7, 0, tzinfo=UTC)}
    )
    clients = {
        "dynamodb": dynamodb,
        "sqs": sqs,
        "s3": s3,
        "secretsmanager": secretsmanager,
        "appconfig": appconfig,
        "appconfig-control": control.client,
        "cloudwatch": cloudwatch,
        "sts": aws_client("sts"),
    }
    return DeployedEvent(
        outputs=outputs,
        engine=engine,
        work_dir=work_dir,
        control=control,
        clients=clients,
        secret_arns=sorted([token_arn, cache_arn]),
        initial_secret_values={token_arn: token_value, cache_arn: cache_value},
    )


def stack_state(outputs: dict[str, Any]) -> dict[str, Any]:
    """A `pulumi stack export` document for the event: the root stack and a few children.

    The children carry input values (one looks like a secret) that the teardown's
    resource list must leave out.
    """
    prefix = f"urn:pulumi:{STACK}::popstack::"
    resources = [
        {
            "urn": f"{prefix}pulumi:pulumi:Stack::popstack-{STACK}",
            "type": "pulumi:pulumi:Stack",
            "custom": False,
            "outputs": outputs,
        },
        {
            "urn": f"{prefix}popstack:index:EventStack$popstack:orders:OrdersTable$"
            f"aws:dynamodb/table:Table::{EVENT_ID}-orders-table",
            "type": "aws:dynamodb/table:Table",
            "custom": True,
            "protect": True,
            "inputs": {"name": TABLE, "deletionProtectionEnabled": True},
        },
        {
            "urn": f"{prefix}popstack:index:EventStack$popstack:secrets:EventSecrets$"
            f"random:index/randomPassword:RandomPassword::{EVENT_ID}-pos-token-initial-password",
            "type": "random:index/randomPassword:RandomPassword",
            "custom": True,
            "outputs": {
                "result": {
                    "4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                    "ciphertext": "v1:ZmFrZS1jaXBoZXJ0ZXh0",
                }
            },
        },
    ]
    return {"version": 3, "deployment": {"resources": resources}}


def settlements() -> list[SettlementInput]:
    return [
        settlement_argument(str(DATA / "stripe-settlements.csv") + ":stripe"),
        settlement_argument(str(DATA / "generic-settlements-eu.csv") + ":generic:eu"),
    ]


def options(**overrides: Any) -> TeardownOptions:
    values: dict[str, Any] = {
        "settlements": settlements(),
        "drain_timeout": 5,
        "drain_poll": 0.1,
        "dead_letter_wait": 0,
    }
    values.update(overrides)
    return TeardownOptions(**values)


def make_teardown(
    event: DeployedEvent,
    root: Path,
    teardown_options: TeardownOptions | None = None,
    hook: Callable[[str, str], None] | None = None,
    engine: RecordingEngine | None = None,
) -> Teardown:
    return Teardown(
        STACK,
        engine or event.engine,
        Clients(event.clients),
        teardown_options or options(),
        root=root,
        console=Console(file=io.StringIO()),
        clock=lambda: CLOSED_AT,
        hook=hook,
        sleep=lambda seconds: None,
    )


def expect_control(event: DeployedEvent, steps: list[str]) -> None:
    event.control.expect_steps(steps, event.checkout_on)
