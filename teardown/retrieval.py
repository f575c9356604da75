"""Finance's side of the exports: list them, download one and check every checksum.

Only two S3 calls are made, ListObjectsV2 and GetObject, which the finance read-only
role that ``components/exports.py`` creates allows (``s3:ListBucket`` on the bucket,
``s3:GetObject`` under ``exports/``).

An export is verified when teardown recorded it so: its ``teardown-state.json`` contains
the SHA-256 of the ``manifest.json`` that is in the bucket now.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from components.exports import EXPORTS_PREFIX
from teardown.aws import read_object
from teardown.export import MANIFEST, Verification, verify_export
from teardown.state import STATE_FILE, StateError, TeardownState, export_prefix


class RetrievalError(Exception):
    """An export that cannot be found or read; the message names it and the fix."""


@dataclass(frozen=True)
class ExportSummary:
    """One export as its manifest and teardown state describe it."""

    bucket: str
    event_id: str
    manifest_uri: str
    opens: str | None
    closes: str | None
    time_zone: str | None
    totals: dict[str, str]
    files: int
    verified: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "eventId": self.event_id,
            "manifest": self.manifest_uri,
            "window": {"opens": self.opens, "closes": self.closes, "timeZone": self.time_zone},
            "totals": self.totals,
            "files": self.files,
            "verified": self.verified,
            "note": self.note,
        }


def event_ids(s3: Any, bucket: str) -> list[str]:
    """Return the event ids that have a folder under ``exports/`` in the bucket."""
    ids: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=EXPORTS_PREFIX, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            ids.append(common["Prefix"].removeprefix(EXPORTS_PREFIX).rstrip("/"))
    return sorted(ids)


def recorded_manifest_sha256(s3: Any, bucket: str, event_id: str) -> str | None:
    """Return the manifest SHA-256 teardown recorded after verifying, or None."""
    key = export_prefix(event_id) + STATE_FILE
    try:
        data = read_object(s3, bucket, key)
    except FileNotFoundError:
        return None
    try:
        state = TeardownState.from_json(data, f"s3://{bucket}/{key}")
    except StateError:
        return None
    return state.manifest_sha256 if state.verified else None


def summarise(s3: Any, bucket: str, event_id: str) -> ExportSummary:
    """Describe one export from its manifest and teardown state."""
    key = export_prefix(event_id) + MANIFEST
    uri = f"s3://{bucket}/{key}"
    try:
        data = read_object(s3, bucket, key)
    except FileNotFoundError:
        return ExportSummary(
            bucket,
            event_id,
            uri,
            None,
            None,
            None,
            {},
            0,
            False,
            "no manifest: teardown unfinished",
        )

    manifest = json.loads(data)
    window = (manifest.get("event") or {}).get("window") or {}
    totals = {
        str(total["currency"]): str(total["amount"])
        for total in (manifest.get("totals") or {}).get("currency", [])
    }

    recorded = recorded_manifest_sha256(s3, bucket, event_id)
    verified = recorded is not None and recorded == hashlib.sha256(data).hexdigest()
    note = ""
    if recorded is not None and not verified:
        note = "manifest changed after teardown verified it"
    return ExportSummary(
        bucket=bucket,
        event_id=event_id,
        manifest_uri=uri,
        opens=window.get("opens"),
        closes=window.get("closes"),
        time_zone=window.get("time_zone"),
        totals=dict(sorted(totals.items())),
        files=len(manifest.get("files", [])),
        verified=verified,
        note=note,
    )


def list_exports(s3: Any, buckets: Iterable[str]) -> list[ExportSummary]:
    """Describe every export in every bucket, by bucket then event id."""
    return [
        summarise(s3, bucket, event_id) for bucket in buckets for event_id in event_ids(s3, bucket)
    ]


def locate(s3: Any, buckets: Iterable[str], event_id: str) -> str:
    """Return the first bucket with the event's manifest; raise RetrievalError if none has it."""
    searched = []
    for bucket in buckets:
        searched.append(bucket)
        try:
            read_object(s3, bucket, export_prefix(event_id) + MANIFEST)
        except FileNotFoundError:
            continue
        return bucket
    raise RetrievalError(
        f"no export of event {event_id!r} in {', '.join(searched) or 'no bucket'}; "
        "list the exports with `popstack exports list --bucket BUCKET`"
    )


@dataclass
class Download:
    """A downloaded export and the result of checking it."""

    directory: Path
    files: list[str]
    verification: Verification
    manifest_sha256: str
    recorded_sha256: str | None

    @property
    def ok(self) -> bool:
        return self.verification.ok


def download(s3: Any, bucket: str, event_id: str, directory: Path) -> Download:
    """Download the manifest and every file it lists, then re-check every checksum.

    Files are written under ``directory`` by their manifest names. A file missing from
    the bucket, or whose bytes differ from the manifest, is reported by name. When
    teardown recorded the manifest's SHA-256, a changed manifest is reported too.
    """
    prefix = export_prefix(event_id)
    manifest_bytes = read_object(s3, bucket, prefix + MANIFEST)
    manifest = json.loads(manifest_bytes)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_bytes(manifest_bytes)
    written = []
    for entry in manifest.get("files", []):
        name = str(entry["name"])
        if not _inside(name):
            continue
        try:
            data = read_object(s3, bucket, prefix + name)
        except FileNotFoundError:
            continue
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(name)
    recorded = recorded_manifest_sha256(s3, bucket, event_id)

    def read_local(name: str) -> bytes:
        if not _inside(name):
            raise FileNotFoundError(name)
        return (directory / name).read_bytes()

    verification = verify_export(read_local, manifest_sha256=recorded)
    return Download(
        directory=directory,
        files=written,
        verification=verification,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        recorded_sha256=recorded,
    )


def _inside(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name
