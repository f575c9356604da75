"""Run the real Pulumi program offline under Pulumi's mock monitor and record what it registers.

No Pulumi CLI, no cloud credentials: the program's resource registrations go to
a `MockMonitor` subclass that keeps the whole request (parent, dependencies,
protect, retain-on-delete), and `PlanMocks` returns plausible, stable
physical ids, ARNs and URLs so that names derived from them are deterministic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.sync_await import _sync_await

from components.spec import StackFile

PLAN_ACCOUNT_ID = "123456789012"
SECRET_MASK = "[secret]"


@dataclass
class RecordedResource:
    """One registered resource, with what the plain mock interface leaves out."""

    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    dependencies: list[str]
    provider: str
    protect: bool
    retain_on_delete: bool
    ignore_changes: list[str]
    inputs: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    @property
    def short_type(self) -> str:
        return self.type.split(":")[-1]


@dataclass
class Recording:
    """Everything one mock run of the program registered, in registration order."""

    stack: str
    resources: list[RecordedResource]
    outputs: dict[str, Any]
    secret_outputs: list[str]
    logs: list[str]

    def by_urn(self) -> dict[str, RecordedResource]:
        return {resource.urn: resource for resource in self.resources}

    def of_type(self, type_token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_token]


def _stable_id(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


class PlanMocks(pulumi.runtime.Mocks):
    """Mock provider that returns stable, made-up values shaped like AWS's for each registration."""

    def __init__(self, region: str, account_id: str = PLAN_ACCOUNT_ID):
        self.region = region
        self.account_id = account_id

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account_id,
                "arn": f"arn:aws:iam::{self.account_id}:user/popstack-plan",
                "userId": "AIDAPLAN",
                "id": self.account_id,
            }
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        return {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        token = args.typ
        key = _stable_id(token, args.name)
        name = inputs.get("name") or inputs.get("namePrefix", "") + key
        region, account = self.region, self.account_id
        state: dict[str, Any] = dict(inputs)
        physical_id = f"{args.name}-{key}"

        if token == "aws:sqs/queue:Queue":
            physical_id = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
            state.update(arn=f"arn:aws:sqs:{region}:{account}:{name}", url=physical_id)
        elif token == "aws:dynamodb/table:Table":
            physical_id = name
            state["arn"] = f"arn:aws:dynamodb:{region}:{account}:table/{name}"
        elif token == "aws:s3/bucket:Bucket":
            physical_id = inputs["bucket"]
            state.update(arn=f"arn:aws:s3:::{physical_id}", bucket=physical_id)
        elif token == "aws:secretsmanager/secret:Secret":
            physical_id = f"arn:aws:secretsmanager:{region}:{account}:secret:{name}-{key[:6]}"
            state.update(arn=physical_id, name=name)
        elif token == "aws:iam/role:Role":
            physical_id = name
            state["arn"] = f"arn:aws:iam::{account}:role/{name}"
        elif token == "aws:lambda/function:Function":
            physical_id = name
            state["arn"] = f"arn:aws:lambda:{region}:{account}:function:{name}"
        elif token == "aws:cloudwatch/logGroup:LogGroup":
            physical_id = name
            state["arn"] = f"arn:aws:logs:{region}:{account}:log-group:{name}"
        elif token == "aws:sns/topic:Topic":
            physical_id = f"arn:aws:sns:{region}:{account}:{name}"
            state["arn"] = physical_id
        elif token == "aws:cloudwatch/metricAlarm:MetricAlarm":
            state["arn"] = f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}"
        elif token == "aws:elasticache/user:User":
            physical_id = inputs["userId"]
            state["arn"] = f"arn:aws:elasticache:{region}:{account}:user:{physical_id}"
        elif token == "aws:elasticache/userGroup:UserGroup":
            physical_id = inputs["userGroupId"]
            state["arn"] = f"arn:aws:elasticache:{region}:{account}:usergroup:{physical_id}"
        elif token == "aws:elasticache/serverlessCache:ServerlessCache":
            physical_id = name
            state.update(
                arn=f"arn:aws:elasticache:{region}:{account}:serverlesscache:{name}",
                endpoints=[
                    {
                        "address": f"{name}-{key[:6]}.serverless.{region}.cache.amazonaws.com",
                        "port": 6379,
                    }
                ],
            )
        elif token == "aws:ec2/securityGroup:SecurityGroup":
            physical_id = f"sg-{_stable_id(token, args.name, length=17)}"
            state["arn"] = f"arn:aws:ec2:{region}:{account}:security-group/{physical_id}"
        elif token.startswith("aws:appconfig/"):
            short = _stable_id(token, args.name, length=7)
            physical_id = short
            state.update(
                arn=f"arn:aws:appconfig:{region}:{account}:{token.split(':')[-1].lower()}/{short}",
                environmentId=short,
                configurationProfileId=short,
                versionNumber=1,
                deploymentNumber=1,
            )
        elif token == "aws:xray/samplingRule:SamplingRule":
            state["arn"] = f"arn:aws:xray:{region}:{account}:sampling-rule/{inputs['ruleName']}"
        elif token == "random:index/randomPassword:RandomPassword":
            state.update(result="plan-placeholder-" + key, bcryptHash="plan-placeholder")
        return physical_id, state


class RecordingMonitor(mocks.MockMonitor):
    """A mock monitor that records each whole registration request."""

    def __init__(self, plan_mocks: PlanMocks):
        super().__init__(plan_mocks)
        self.recorded: list[RecordedResource] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        registration = self.resources.get(response.urn)
        self.recorded.append(
            RecordedResource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=bool(request.custom),
                parent=request.parent,
                dependencies=sorted(set(request.dependencies)),
                provider=request.provider,
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                ignore_changes=list(request.ignoreChanges),
                inputs=_integral(rpc.deserialize_properties(request.object)),
                state=dict(registration.state) if registration else {},
                id=registration.id if registration else "",
            )
        )
        return response


def _integral(value: Any) -> Any:
    """Turn whole floats back into ints: the wire format carries every number as a double."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


def flat_config(stack_file: StackFile) -> tuple[dict[str, str], list[str]]:
    """Turn a stack file's config into Pulumi's flat string map, secret values masked."""
    values: dict[str, str] = {}
    for key, value in stack_file.config.items():
        if key in stack_file.secret_keys:
            values[key] = SECRET_MASK
        elif isinstance(value, dict | list):
            values[key] = json.dumps(value)
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        else:
            values[key] = str(value)
    return values, list(stack_file.secret_keys)


def record_program(stack_file: StackFile, account_id: str = PLAN_ACCOUNT_ID) -> Recording:
    """Run the Pulumi program for one stack file under mocks and return what it registered."""
    from components import program

    config, secret_keys = flat_config(stack_file)
    region = config.get("aws:region", "us-east-1")
    plan_mocks = PlanMocks(region=region, account_id=account_id)
    monitor = RecordingMonitor(plan_mocks)
    collector = _LogCollector()
    logger = logging.getLogger(f"popstack.plan.{stack_file.stack}")
    logger.propagate = False
    logger.addHandler(collector)

    settings.ROOT.set(None)
    set_all_config(config, secret_keys)
    mocks.set_mocks(
        plan_mocks,
        project="popstack",
        stack=stack_file.stack,
        preview=True,
        logger=logger,
        monitor=monitor,
    )
    # A failed earlier run leaves its pending tasks in the settings; start clean.
    settings.SETTINGS.outputs = set()
    root = settings.get_root_resource()
    try:
        _sync_await(mocks.run_pulumi_func(program.run))
        outputs, secret_outputs = _sync_await(_resolve_outputs(getattr(root, "outputs", {})))
    finally:
        logger.removeHandler(collector)
    return Recording(
        stack=stack_file.stack,
        resources=list(monitor.recorded),
        outputs=outputs,
        secret_outputs=secret_outputs,
        logs=collector.messages,
    )


async def _resolve_outputs(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    resolved: dict[str, Any] = {}
    secret: list[str] = []
    for key in sorted(raw):
        output = pulumi.Output.from_input(raw[key])
        value = await output.future(with_unknowns=True)
        if await output.is_secret():
            secret.append(key)
            value = SECRET_MASK
        resolved[key] = _plain(value)
    await asyncio.sleep(0)
    return resolved, secret


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
