"""The kill switches' AppConfig feature-flag document: which flags exist and their initial values.

Kept apart from the Pulumi component (components/flags.py) so that the operator CLI and
the runbook can build the document without importing the Pulumi SDKs.
"""

from __future__ import annotations

from components.spec import EventSpec

PROFILE_TYPE = "AWS.AppConfig.FeatureFlags"
ENVIRONMENT = "live"
PROFILE = "kill-switches"


def location_flag(location_id: str) -> str:
    """Return the flag key for one location; AppConfig flag keys take no '-'."""
    return "location_" + location_id.replace("-", "_") + "_enabled"


def flag_document(spec: EventSpec) -> dict:
    """Build the AppConfig feature-flag document (format version 1) for the spec's values."""
    flags: dict[str, dict] = {
        "checkout_enabled": {
            "name": "Checkout enabled",
            "description": "Off stops new orders everywhere",
        },
        "inventory_read_only": {
            "name": "Inventory read-only",
            "description": "On serves stock from the last sync and stops inventory writes",
        },
        "offline_receipts_allowed": {
            "name": "Offline receipts allowed",
            "description": "On lets staff take payment offline and upload receipts later",
        },
        "elevated_sampling": {
            "name": "Elevated sampling",
            "description": "On traces every checkout request",
        },
    }
    values: dict[str, dict] = {
        "checkout_enabled": {"enabled": spec.flags.checkout_enabled},
        "inventory_read_only": {"enabled": spec.flags.inventory_read_only},
        "offline_receipts_allowed": {"enabled": spec.flags.offline_receipts_allowed},
        "elevated_sampling": {"enabled": spec.flags.elevated_sampling},
    }
    for location in spec.locations:
        key = location_flag(location.id)
        flags[key] = {"name": f"{location.name} enabled", "description": "Off closes this location"}
        values[key] = {"enabled": spec.location_enabled(location.id)}
    return {"version": "1", "flags": flags, "values": values}
