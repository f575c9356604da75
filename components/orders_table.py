"""The orders table: the digital record that finance reconciles.

Contract between the checkout service (writer) and teardown (reader). One item
per order, partition key `orderId`, no sort key:

| attribute | type | meaning |
| --- | --- | --- |
| orderId | S | unique order id, set by checkout |
| locationId | S | one of the event's location ids |
| createdAt | S | ISO 8601 time with UTC offset |
| currency | S | ISO 4217 code |
| amountMinor | N | amount charged, integer minor units |
| paymentMethod | S | card, wallet, cash or manual |
| paymentReference | S | the payment provider's charge id; absent for cash |
| status | S | paid, refunded, partially_refunded or cancelled |
| refundedMinor | N | amount refunded so far, integer minor units, default 0 |
| customerEmail, customerPhone, cardNumber | S | optional personal data, never exported raw |
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.context import EventContext

PARTITION_KEY = "orderId"


class OrdersTable(pulumi.ComponentResource):
    """An on-demand DynamoDB table with point-in-time recovery and deletion protection."""

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:orders:OrdersTable", name, None, opts)

        self.table = aws.dynamodb.Table(
            f"{name}-table",
            name=context.name("dynamodb", "orders"),
            billing_mode="PAY_PER_REQUEST",
            hash_key=PARTITION_KEY,
            attributes=[{"name": PARTITION_KEY, "type": "S"}],
            point_in_time_recovery={"enabled": True},
            deletion_protection_enabled=not context.export_verified,
            server_side_encryption={"enabled": True},
            tags=context.tags,
            opts=context.stateful(self),
        )

        self.register_outputs({"tableName": self.table.name, "tableArn": self.table.arn})
