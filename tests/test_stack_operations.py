"""Stack tests under Pulumi mocks: what on-call uses during the event.

Kill-switch flags, alarms and dashboards, the cache and its network path,
X-Ray sampling, and the checkout service's scaling bounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import rpc

from popstack.mockrun import RecordedResource

STACKS = Path(__file__).resolve().parent.parent / "stacks"
FLASH_TOPIC = "arn:aws:sns:us-east-1:444455556666:drops-oncall"
LISBON_FLAGS = {
    "checkout_enabled": True,
    "inventory_read_only": False,
    "offline_receipts_allowed": True,
    "elevated_sampling": False,
    "location_chiado_enabled": True,
    "location_lx_factory_enabled": True,
    "location_alfama_enabled": True,
}
FLASH_FLAGS = {
    "checkout_enabled": True,
    "inventory_read_only": False,
    "offline_receipts_allowed": False,
    "elevated_sampling": True,
    "location_web_enabled": True,
}


def only(resources: list[RecordedResource], description: str) -> RecordedResource:
    assert len(resources) == 1, f"expected one {description}, got {[r.urn for r in resources]}"
    return resources[0]


def one(recording: Any, type_token: str) -> RecordedResource:
    return only(recording.of_type(type_token), type_token)


def named_suffix(recording: Any, type_token: str, suffix: str) -> RecordedResource:
    found = [r for r in recording.of_type(type_token) if r.name.endswith(suffix)]
    return only(found, f"{type_token} named *{suffix}")


def write_variant(directory: Path, name: str, replacements: dict[str, str]) -> Path:
    """Write lisbon-popup with some lines replaced, as stacks/Pulumi.<name>.yaml would be."""
    text = (STACKS / "Pulumi.lisbon-popup.yaml").read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = directory / f"Pulumi.{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def closed_location(recorded: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Record lisbon-popup with Alfama closed and inventory read-only from the start."""
    path = write_variant(
        tmp_path_factory.mktemp("flags"),
        "lisbon-closed",
        {
            "    inventoryReadOnly: false\n": "    inventoryReadOnly: true\n"
            "    locations:\n      alfama: false\n",
        },
    )
    return recorded(path)


# --- feature flags ------------------------------------------------------------------


def flag_values(recording: Any) -> dict[str, bool]:
    version = one(recording, "aws:appconfig/hostedConfigurationVersion:HostedConfigurationVersion")
    content = version.inputs["content"]
    if rpc.is_rpc_secret(content):
        content = rpc.unwrap_rpc_secret(content)
    document = json.loads(content)
    assert document["version"] == "1", version.urn
    assert set(document["flags"]) == set(document["values"]), version.urn
    return {key: value["enabled"] for key, value in document["values"].items()}


@pytest.mark.parametrize(
    ("stack", "flags"), [("lisbon-popup", LISBON_FLAGS), ("flash-drop", FLASH_FLAGS)]
)
def test_flag_document_initial_values(recorded: Any, stack: str, flags: dict) -> None:
    assert flag_values(recorded(stack)) == flags


def test_flag_document_closed_location(closed_location: Any) -> None:
    assert flag_values(closed_location) == {
        **LISBON_FLAGS,
        "inventory_read_only": True,
        "location_alfama_enabled": False,
    }


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_flags_deployed_all_at_once(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    application = one(recording, "aws:appconfig/application:Application")
    environment = one(recording, "aws:appconfig/environment:Environment")
    profile = one(recording, "aws:appconfig/configurationProfile:ConfigurationProfile")
    version = one(recording, "aws:appconfig/hostedConfigurationVersion:HostedConfigurationVersion")
    strategy = one(recording, "aws:appconfig/deploymentStrategy:DeploymentStrategy")
    deployment = one(recording, "aws:appconfig/deployment:Deployment")

    assert profile.inputs["type"] == "AWS.AppConfig.FeatureFlags", profile.urn
    assert profile.inputs["locationUri"] == "hosted", profile.urn
    assert strategy.inputs["growthFactor"] == 100, strategy.urn
    assert strategy.inputs["deploymentDurationInMinutes"] == 0, strategy.urn
    assert strategy.inputs["finalBakeTimeInMinutes"] == 0, strategy.urn
    assert deployment.inputs["deploymentStrategyId"] == strategy.id, deployment.urn
    assert deployment.inputs["applicationId"] == application.id, deployment.urn
    assert deployment.inputs["environmentId"] == environment.state["environmentId"]
    assert deployment.inputs["configurationProfileId"] == profile.state["configurationProfileId"]
    assert deployment.inputs["configurationVersion"] == str(version.state["versionNumber"])


# --- alarms and dashboards ----------------------------------------------------------


def alert_topic(recording: Any, stack: str) -> str:
    if stack == "flash-drop":
        assert recording.of_type("aws:sns/topic:Topic") == []
        return FLASH_TOPIC
    return one(recording, "aws:sns/topic:Topic").state["arn"]


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_alarms_notify_one_topic(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    topic = alert_topic(recording, stack)
    alarms = recording.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")

    # Four from the dashboards and one on the calendar Lambda's errors.
    assert len(alarms) == 5
    for alarm in alarms:
        assert alarm.inputs["alarmActions"] == [topic], alarm.urn
        assert alarm.inputs["okActions"] == [topic], alarm.urn


def test_alert_email_subscribed(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    subscription = one(recording, "aws:sns/topicSubscription:TopicSubscription")

    assert subscription.inputs["topic"] == alert_topic(recording, "lisbon-popup")
    assert subscription.inputs["protocol"] == "email", subscription.urn
    assert subscription.inputs["endpoint"] == "oncall-retail@example.com", subscription.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_alarms_watch_stack_resources(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    event_id = recording.outputs["eventId"]
    queues = recording.of_type("aws:sqs/queue:Queue")
    main = only([q for q in queues if q.name.endswith("-queue")], "order queue")
    dead = only([q for q in queues if q.name.endswith("-dlq")], "dead-letter queue")
    cache = one(recording, "aws:elasticache/serverlessCache:ServerlessCache")
    alarm_type = "aws:cloudwatch/metricAlarm:MetricAlarm"
    expected = {
        "-dead-letters": (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": dead.inputs["name"]},
            0,
        ),
        "-queue-age": (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            {"QueueName": main.inputs["name"]},
            300,
        ),
        "-cache-throttling": (
            "AWS/ElastiCache",
            "ThrottledCmds",
            {"clusterId": cache.inputs["name"]},
            0,
        ),
        "-checkout-errors": (
            "Popstack/Checkout",
            "CheckoutErrors",
            {"EventId": event_id},
            5,
        ),
        "-calendar-errors": (
            "AWS/Lambda",
            "Errors",
            {"FunctionName": f"ps-{event_id}-calendar"},
            0,
        ),
    }

    for suffix, (namespace, metric, dimensions, threshold) in expected.items():
        alarm = named_suffix(recording, alarm_type, suffix)
        assert alarm.inputs["namespace"] == namespace, alarm.urn
        assert alarm.inputs["metricName"] == metric, alarm.urn
        assert alarm.inputs["dimensions"] == dimensions, alarm.urn
        assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold", alarm.urn
        assert alarm.inputs["threshold"] == threshold, alarm.urn


def metric_strings(body: dict) -> set[str]:
    """Return every string in the metric arrays of a CloudWatch dashboard body."""
    found: set[str] = set()
    for widget in body["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            found.update(item for item in metric if isinstance(item, str))
    return found


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_dashboard_body_names_resources(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    dashboard = one(recording, "aws:cloudwatch/dashboard:Dashboard")
    queues = [q.inputs["name"] for q in recording.of_type("aws:sqs/queue:Queue")]
    cache = one(recording, "aws:elasticache/serverlessCache:ServerlessCache")
    # The board shows every alarm of the event: the dashboards part's four and the
    # calendar's.
    alarms = [a.state["arn"] for a in recording.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")]

    body = json.loads(dashboard.inputs["dashboardBody"])

    names = metric_strings(body)
    assert len(alarms) == 5
    assert len(queues) == 2
    for name in [*queues, cache.inputs["name"]]:
        assert name in names, f"{dashboard.urn} does not chart {name}"
    alarm_widgets = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert [sorted(w["properties"]["alarms"]) for w in alarm_widgets] == [sorted(alarms)]


def test_dashboard_covers_lisbon_window(recorded: Any) -> None:
    dashboard = one(recorded("lisbon-popup"), "aws:cloudwatch/dashboard:Dashboard")

    body = json.loads(dashboard.inputs["dashboardBody"])

    assert dashboard.inputs["dashboardName"] == "ps-lisbon-popup-27-board"
    assert body["start"] == "2027-03-26T10:00:00+00:00"
    assert body["end"] == "2027-03-28T19:00:00+01:00"


# Prints the two dashboards of the stack file named on the command line as JSON.
RENDER_DASHBOARDS = """
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
from components.spec import load_stack_file
from popstack.mockrun import record_program
recording = record_program(load_stack_file(sys.argv[1]))
[board] = recording.of_type("aws:cloudwatch/dashboard:Dashboard")
[grafana] = recording.of_type("kubernetes:core/v1:ConfigMap")
print(json.dumps({"cloudwatch": board.inputs["dashboardBody"], "grafana": grafana.inputs["data"]}))
"""


def test_dashboards_show_title_verbatim(tmp_path: Path) -> None:
    # A title may contain JSON's special characters, and the boards must show it unchanged.
    # The program runs in a child process because a failed run leaves Pulumi's
    # pending tasks behind, which would fail every later recording in this process.
    title = 'Sardinha "Co" \\ spring & sale'
    path = write_variant(
        tmp_path,
        "lisbon-title",
        {"popstack:title: Sardinha & Co spring pop-up": f"popstack:title: '{title}'"},
    )

    completed = subprocess.run(
        [sys.executable, "-c", RENDER_DASHBOARDS, str(path)],
        capture_output=True,
        text=True,
        cwd=STACKS.parent,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    rendered = json.loads(completed.stdout)
    body = json.loads(rendered["cloudwatch"])
    board = json.loads(rendered["grafana"]["lisbon-popup-27.json"])
    text_widgets = [w for w in body["widgets"] if w["type"] == "text"]
    assert text_widgets[0]["properties"]["markdown"].splitlines()[0] == f"## {title}"
    assert board["title"] == f"{title} (lisbon-popup-27)"


def test_grafana_board_charts_queues(recorded: Any) -> None:
    recording = recorded("lisbon-popup")
    grafana = one(recording, "kubernetes:core/v1:ConfigMap")

    board = json.loads(grafana.inputs["data"]["lisbon-popup-27.json"])

    dimensions = [t["dimensions"] for p in board["panels"] for t in p["targets"]]
    assert {"QueueName": "ps-lisbon-popup-27-orders"} in dimensions
    assert {"QueueName": "ps-lisbon-popup-27-orders-dlq"} in dimensions
    assert {"clusterId": "ps-lisbon-popup-27-cache"} in dimensions
    assert grafana.inputs["metadata"]["labels"]["grafana_dashboard"] == "1", grafana.urn


# --- cache --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "storage_gb", "ecpu"), [("lisbon-popup", 2, 5000), ("flash-drop", 10, 200_000)]
)
def test_cache_usage_limits(recorded: Any, stack: str, storage_gb: int, ecpu: int) -> None:
    cache = one(recorded(stack), "aws:elasticache/serverlessCache:ServerlessCache")

    assert cache.inputs["cacheUsageLimits"] == {
        "dataStorage": {"maximum": storage_gb, "unit": "GB"},
        "ecpuPerSeconds": [{"maximum": ecpu}],
    }, cache.urn
    assert cache.inputs["engine"] == "valkey", cache.urn
    assert cache.inputs["majorEngineVersion"] == "8", cache.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_cache_admits_only_checkout(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    cache = one(recording, "aws:elasticache/serverlessCache:ServerlessCache")
    groups = "aws:ec2/securityGroup:SecurityGroup"
    cache_group = named_suffix(recording, groups, "-cache-sg")
    checkout_group = named_suffix(recording, groups, "-checkout-sg")
    rules = [
        r
        for r in recording.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == cache_group.id
    ]

    assert cache.inputs["securityGroupIds"] == [cache_group.id], cache.urn
    assert "ingress" not in cache_group.inputs, cache_group.urn
    assert recording.of_type("aws:ec2/securityGroupRule:SecurityGroupRule") == []
    rule = only(rules, f"ingress rule of {cache_group.urn}")
    assert rule.inputs["referencedSecurityGroupId"] == checkout_group.id, rule.urn
    assert rule.inputs["ipProtocol"] == "tcp", rule.urn
    assert (rule.inputs["fromPort"], rule.inputs["toPort"]) == (6379, 6379), rule.urn
    for source in ("cidrIpv4", "cidrIpv6", "prefixListId"):
        assert source not in rule.inputs, f"{rule.urn} also admits {source}"


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_cache_uses_rotated_user(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    cache = one(recording, "aws:elasticache/serverlessCache:ServerlessCache")
    group = one(recording, "aws:elasticache/userGroup:UserGroup")
    user = one(recording, "aws:elasticache/user:User")

    assert cache.inputs["userGroupId"] == group.inputs["userGroupId"], cache.urn
    assert group.inputs["userIds"] == [user.inputs["userId"]], group.urn
    assert user.ignore_changes == ["authenticationMode"], user.urn


# --- tracing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "rate", "reservoir"), [("lisbon-popup", 0.05, 5), ("flash-drop", 1, 50)]
)
def test_sampling_rule_scoped_to_event(
    recorded: Any, stack: str, rate: float, reservoir: int
) -> None:
    recording = recorded(stack)
    event_id = recording.outputs["eventId"]
    rule = one(recording, "aws:xray/samplingRule:SamplingRule")
    deployment = one(recording, "kubernetes:apps/v1:Deployment")
    container = only(deployment.inputs["spec"]["template"]["spec"]["containers"], "container")
    environment = {item["name"]: item["value"] for item in container["env"]}

    assert rule.inputs["ruleName"] == f"ps-{event_id}", rule.urn
    assert rule.inputs["serviceName"] == f"ps-{event_id}-checkout", rule.urn
    assert environment["AWS_XRAY_TRACING_NAME"] == rule.inputs["serviceName"], deployment.urn
    assert rule.inputs["attributes"] == {"event": event_id}, rule.urn
    assert rule.inputs["fixedRate"] == rate, rule.urn
    assert rule.inputs["reservoirSize"] == reservoir, rule.urn


# --- checkout scaling ---------------------------------------------------------------


@pytest.mark.parametrize(("stack", "low", "high"), [("lisbon-popup", 2, 6), ("flash-drop", 8, 90)])
def test_autoscaler_bounds_from_spec(recorded: Any, stack: str, low: int, high: int) -> None:
    recording = recorded(stack)
    autoscaler = one(recording, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    deployment = one(recording, "kubernetes:apps/v1:Deployment")
    spec = autoscaler.inputs["spec"]

    assert (spec["minReplicas"], spec["maxReplicas"]) == (low, high), autoscaler.urn
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment.inputs["metadata"]["name"],
    }, autoscaler.urn
    # The autoscaler owns the replica count; a fixed one would be reset on every update.
    assert "replicas" not in deployment.inputs["spec"], deployment.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_disruption_budget_fits_replicas(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    budget = one(recording, "kubernetes:policy/v1:PodDisruptionBudget")
    autoscaler = one(recording, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    deployment = one(recording, "kubernetes:apps/v1:Deployment")
    pod_labels = deployment.inputs["spec"]["template"]["metadata"]["labels"]

    unavailable = budget.inputs["spec"]["maxUnavailable"]

    assert unavailable == 1, budget.urn
    assert "minAvailable" not in budget.inputs["spec"], budget.urn
    # An unready pod must not hold up a drain either.
    assert budget.inputs["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", budget.urn
    # At the autoscaler's minimum, one eviction still leaves a pod serving checkout.
    assert autoscaler.inputs["spec"]["minReplicas"] - unavailable >= 1, budget.urn
    assert budget.inputs["spec"]["selector"] == {"matchLabels": pod_labels}, budget.urn


@pytest.mark.parametrize("stack", ["lisbon-popup", "flash-drop"])
def test_checkout_pods_use_event_role(recorded: Any, stack: str) -> None:
    recording = recorded(stack)
    event_id = recording.outputs["eventId"]
    account = one(recording, "kubernetes:core/v1:ServiceAccount")
    role = named_suffix(recording, "aws:iam/role:Role", "-checkout-role")
    deployment = one(recording, "kubernetes:apps/v1:Deployment")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]

    annotations = account.inputs["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == role.state["arn"], account.urn
    pod = deployment.inputs["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account.inputs["metadata"]["name"], deployment.urn
    statement = only(trust, "trust statement")
    subject = f"system:serviceaccount:ps-{event_id}:{account.inputs['metadata']['name']}"
    conditions = statement["Condition"]["StringEquals"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity", role.urn
    assert subject in conditions.values(), role.urn
    assert "sts.amazonaws.com" in conditions.values(), role.urn
