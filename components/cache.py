"""The event cache: ElastiCache Serverless, TLS only, reachable only from checkout pods."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.context import EventContext, allow
from components.secrets import RotatedSecret

CACHE_PORT = 6379
# Valkey 8 is the newest major version ElastiCache Serverless offers for Valkey.
MAJOR_ENGINE_VERSION = {"valkey": "8", "redis": "7"}
AUTH_ROTATION_DAYS = 30


class Cache(pulumi.ComponentResource):
    """A serverless cache with usage limits, its security groups and a rotated AUTH user.

    `checkout_security_group` is attached to the checkout pods (security groups
    for pods), and it is the only source the cache accepts connections from.
    """

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:cache:Cache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = context.spec
        engine = spec.cache.engine

        self.checkout_security_group = aws.ec2.SecurityGroup(
            f"{name}-checkout-sg",
            name=context.name("ec2sg", "checkout"),
            description=f"Checkout pods of event {context.event_id}",
            vpc_id=spec.cluster.vpc_id,
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "AWS APIs and the payment provider over HTTPS",
                },
                {
                    "protocol": "udp",
                    "from_port": 53,
                    "to_port": 53,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "DNS",
                },
            ],
            tags=context.tags,
            opts=child,
        )

        self.cache_security_group = aws.ec2.SecurityGroup(
            f"{name}-cache-sg",
            name=context.name("ec2sg", "cache"),
            description=f"Cache of event {context.event_id}; checkout pods only",
            vpc_id=spec.cluster.vpc_id,
            tags=context.tags,
            opts=child,
        )

        self.ingress = aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-checkout",
            security_group_id=self.cache_security_group.id,
            referenced_security_group_id=self.checkout_security_group.id,
            ip_protocol="tcp",
            from_port=CACHE_PORT,
            to_port=CACHE_PORT,
            description="Valkey/Redis over TLS from checkout pods",
            tags=context.tags,
            opts=child,
        )

        self.egress = aws.vpc.SecurityGroupEgressRule(
            f"{name}-checkout-to-cache",
            security_group_id=self.checkout_security_group.id,
            referenced_security_group_id=self.cache_security_group.id,
            ip_protocol="tcp",
            from_port=CACHE_PORT,
            to_port=CACHE_PORT,
            description="Checkout pods to the cache",
            tags=context.tags,
            opts=child,
        )

        user_id = context.name("cacheuser", "checkout")
        user_arn = context.arn("elasticache", f"user:{user_id}")
        self.auth = RotatedSecret(
            f"{name}-auth",
            context,
            secret_name="cache-auth",
            rotation_days=AUTH_ROTATION_DAYS,
            kind="cache-auth",
            render_value=lambda password: json.dumps(
                {"userId": user_id, "username": "checkout", "password": password}
            ),
            password_length=64,
            description=f"AUTH password of the checkout user of the {context.event_id} cache",
            extra_statements=[
                allow(
                    ["elasticache:ModifyUser", "elasticache:DescribeUsers"],
                    [user_arn],
                    "RotateCacheUserPassword",
                )
            ],
            opts=child,
        )

        # Rotation owns the password after the first deploy (both current and
        # previous stay valid during the overlap), so Pulumi must not reset it.
        self.user = aws.elasticache.User(
            f"{name}-user",
            user_id=user_id,
            user_name="checkout",
            engine=engine,
            access_string="on ~* +@all -@dangerous",
            authentication_mode={
                "type": "password",
                "passwords": [pulumi.Output.secret(self.auth.initial_password.result)],
            },
            tags=context.tags,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["authenticationMode"]),
        )

        self.user_group = aws.elasticache.UserGroup(
            f"{name}-users",
            user_group_id=context.name("cacheuser", "users"),
            engine=engine,
            user_ids=[self.user.user_id],
            tags=context.tags,
            opts=child,
        )

        # ElastiCache Serverless accepts TLS connections only; there is no plain-text port.
        self.cache = aws.elasticache.ServerlessCache(
            f"{name}-serverless",
            name=context.name("elasticache", "cache"),
            engine=engine,
            major_engine_version=MAJOR_ENGINE_VERSION[engine],
            description=f"Cache of {spec.title}",
            cache_usage_limits={
                "data_storage": {"maximum": spec.cache.max_data_storage_gb, "unit": "GB"},
                "ecpu_per_seconds": [{"maximum": spec.cache.max_ecpu_per_second}],
            },
            security_group_ids=[self.cache_security_group.id],
            subnet_ids=spec.cluster.subnet_ids,
            user_group_id=self.user_group.user_group_id,
            tags=context.tags,
            opts=child,
        )

        self.endpoint = self.cache.endpoints.apply(
            lambda endpoints: endpoints[0].address if endpoints else ""
        )

        self.register_outputs(
            {
                "cacheName": self.cache.name,
                "endpoint": self.endpoint,
                "authSecretArn": self.auth.secret.arn,
                "checkoutSecurityGroupId": self.checkout_security_group.id,
            }
        )
