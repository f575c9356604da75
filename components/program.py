"""The Pulumi program: read the event spec from stack config and build one EventStack."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.context import EventContext
from components.event_stack import EventStack
from components.spec import (
    EXPORT_VERIFIED_KEY,
    NAMESPACE,
    VERIFIED_EXPORT,
    SpecError,
    emulator_endpoint_problem,
    spec_from_config,
)


def run() -> EventStack:
    """Build the stack for the current Pulumi stack's config and export its outputs."""
    stack = pulumi.get_stack()
    source = f"stacks/Pulumi.{stack}.yaml"
    try:
        spec = spec_from_config(_all_config(), source)
    except SpecError as error:
        # RunError prints the message alone, without a Python traceback.
        raise pulumi.RunError(str(error)) from None
    if spec.emulator:
        problem = emulator_endpoint_problem(_all_config().get("aws:endpoints"))
        if problem:
            raise pulumi.RunError(f"{source}: {NAMESPACE}:emulator {problem}")

    config = pulumi.Config(NAMESPACE)
    identity = aws.get_caller_identity()
    context = EventContext(
        spec=spec,
        account_id=identity.account_id,
        region=pulumi.Config("aws").require("region"),
        partition=aws.get_partition().partition,
        export_verified=_export_verified(config.get(EXPORT_VERIFIED_KEY), source),
    )
    event = EventStack(spec.id, context, stack=stack, kubeconfig=config.get_secret("kubeconfig"))
    for key, value in event.outputs.items():
        pulumi.export(key, value)
    return event


def _export_verified(value: str | None, source: str) -> bool:
    """Return whether teardown recorded a verified export; reject a malformed record.

    Only a value of the form teardown writes drops the stateful resources'
    protection, so a stray or mistyped value keeps them protected.
    """
    if value is None:
        return False
    if not VERIFIED_EXPORT.fullmatch(value):
        raise pulumi.RunError(
            f"{source}: {NAMESPACE}:{EXPORT_VERIFIED_KEY} is {value!r}, not "
            "s3://BUCKET/KEY#sha256=<64 hex digits>; only `popstack teardown` sets it, "
            f"so remove it with `pulumi config rm {NAMESPACE}:{EXPORT_VERIFIED_KEY}`"
        )
    return True


def _all_config() -> dict[str, str]:
    """Return the stack's whole config map, as the engine or the mock runner set it."""
    from pulumi.runtime import config as runtime_config

    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
