"""Feature flags that act as kill switches, held in AWS AppConfig.

Flags are flipped during the event without a deploy (`popstack flags set`); the
checkout service polls the profile through the AppConfig data API.

The program owns the flag schema and the initial values; operators own the live
values. So the program writes the initial hosted version once and ignores later
changes to its content, and the initial deployment ignores later changes to the
version it deploys: a `pulumi up` after operators flipped flags, or after the stack
file's initial values changed, writes and deploys nothing. A changed schema (a
location added or removed) reaches AppConfig through `popstack up`, which runs
`popstack flags sync` after a successful update (popstack/flags.py).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.context import EventContext
from components.flag_schema import ENVIRONMENT, PROFILE, PROFILE_TYPE, flag_document


class FeatureFlags(pulumi.ComponentResource):
    """An AppConfig application, environment and flag profile, deployed all at once."""

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:flags:FeatureFlags", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.application = aws.appconfig.Application(
            f"{name}-app",
            name=context.name("appconfig", "flags"),
            description=f"Kill switches for {context.spec.title}",
            tags=context.tags,
            opts=child,
        )

        self.profile = aws.appconfig.ConfigurationProfile(
            f"{name}-profile",
            application_id=self.application.id,
            name=PROFILE,
            location_uri="hosted",
            type=PROFILE_TYPE,
            tags=context.tags,
            opts=child,
        )

        self.initial_version = aws.appconfig.HostedConfigurationVersion(
            f"{name}-initial",
            application_id=self.application.id,
            configuration_profile_id=self.profile.configuration_profile_id,
            content_type="application/json",
            content=json.dumps(flag_document(context.spec), sort_keys=True),
            description="Initial flag values from the stack file",
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["content", "description"]),
        )

        self.environment: aws.appconfig.Environment | None = None
        self.strategy: aws.appconfig.DeploymentStrategy | None = None
        self.deployment: aws.appconfig.Deployment | None = None
        if context.spec.emulator:
            # moto has no AppConfig environments or deployments.
            self.register_outputs(
                {
                    "applicationId": self.application.id,
                    "profileId": self.profile.configuration_profile_id,
                }
            )
            return

        self.environment = aws.appconfig.Environment(
            f"{name}-env",
            application_id=self.application.id,
            name=ENVIRONMENT,
            tags=context.tags,
            opts=child,
        )

        # A kill switch must take effect at once, not over a gradual rollout.
        self.strategy = aws.appconfig.DeploymentStrategy(
            f"{name}-all-at-once",
            name=context.name("appconfig", "all-at-once"),
            deployment_duration_in_minutes=0,
            final_bake_time_in_minutes=0,
            growth_factor=100,
            growth_type="LINEAR",
            replicate_to="NONE",
            tags=context.tags,
            opts=child,
        )

        self.deployment = aws.appconfig.Deployment(
            f"{name}-deployment",
            application_id=self.application.id,
            environment_id=self.environment.environment_id,
            configuration_profile_id=self.profile.configuration_profile_id,
            configuration_version=self.initial_version.version_number.apply(str),
            deployment_strategy_id=self.strategy.id,
            description="Deploy the initial flag values",
            tags=context.tags,
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["configurationVersion", "description"]
            ),
        )

        self.register_outputs(
            {
                "applicationId": self.application.id,
                "environmentId": self.environment.environment_id,
                "profileId": self.profile.configuration_profile_id,
                "strategyId": self.strategy.id,
            }
        )
