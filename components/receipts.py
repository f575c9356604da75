"""Receipts intake: where on-site staff upload manual and offline receipts as CSV."""

from __future__ import annotations

import pulumi

from components.buckets import private_bucket
from components.context import EventContext

# Staff upload to receipts/<location id>/<file>.csv; teardown reads everything under it.
RECEIPTS_PREFIX = "receipts/"


class ReceiptsIntake(pulumi.ComponentResource):
    """A private, encrypted, versioned bucket for staff-uploaded receipt files."""

    def __init__(
        self, name: str, context: EventContext, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("popstack:receipts:ReceiptsIntake", name, None, opts)

        self.storage = private_bucket(
            f"{name}-bucket",
            context.name("s3", f"receipts-{context.account_id}"),
            context,
            context.stateful(self),
        )
        self.bucket = self.storage.bucket

        self.register_outputs(
            {
                "bucketName": self.bucket.bucket,
                "bucketArn": self.bucket.arn,
                "prefix": RECEIPTS_PREFIX,
            }
        )
