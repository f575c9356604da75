"""Teardown progress, kept in the export location and mirrored on the operator's disk.

The state is one JSON object (``TeardownState.to_json``) stored as
``exports/<event id>/teardown-state.json`` in the exports bucket, which outlives the
stack, and mirrored as ``.popstack/teardown/<stack>.json`` under the working
directory. A run saves it after every step, so a later run starts at the first step
not yet recorded. When both copies exist, the one with more recorded steps wins, and
the bucket's copy wins a tie. The state contains ids, counts, checksums and times, never
message bodies or secret values.
"""

from __future__ import annotations

import hashlib
import json
import os
from base64 import b64encode
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from components.exports import EXPORTS_PREFIX

STATE_FORMAT = 1
STATE_FILE = "teardown-state.json"
LOCAL_ROOT = Path(".popstack") / "teardown"


@dataclass
class DeadLetterRecord:
    """A dead letter's id, send time and receive count as first read (no body)."""

    message_id: str
    sent_at: str
    receive_count: int


@dataclass
class SettlementRecord:
    """A settlement report used by the reconciliation, identified by name and SHA-256."""

    name: str
    sha256: str
    layout: str
    format: str


@dataclass
class TeardownState:
    """Everything a later run needs to resume a teardown where the last one stopped."""

    stack: str
    event_id: str
    exports_bucket: str
    steps_done: list[str] = field(default_factory=list)
    closed_at: str | None = None
    drained_at: str | None = None
    flag_version: int | None = None
    flag_deployment: int | None = None
    remaining_order_messages: int | None = None
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    force_reason: str | None = None
    settlements: list[SettlementRecord] = field(default_factory=list)
    native_export_arn: str | None = None
    native_export_prefix: str | None = None
    manifest_uri: str | None = None
    manifest_sha256: str | None = None
    revoked_secrets: list[str] = field(default_factory=list)
    deleted_flag_versions: list[int] = field(default_factory=list)
    destroyed: bool = False

    def done(self, step: str) -> bool:
        return step in self.steps_done

    def mark_done(self, step: str) -> None:
        if step not in self.steps_done:
            self.steps_done.append(step)

    @property
    def verified(self) -> bool:
        """True once step 5 read every file back and recorded the manifest's checksum."""
        return bool(self.manifest_uri and self.manifest_sha256)

    def to_json(self) -> bytes:
        payload = {"format": STATE_FORMAT, **_camel(asdict(self))}
        return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str) -> TeardownState:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as error:
            raise StateError(
                f"{source} is not valid JSON ({error}); restore it from the exports "
                f"bucket's previous object version or delete the local copy"
            ) from None
        if not isinstance(payload, dict):
            raise StateError(
                f"{source} is not a teardown state (a JSON object); restore it from the exports "
                "bucket's previous object version or delete the local copy"
            )
        if payload.get("format") != STATE_FORMAT:
            raise StateError(
                f"{source} has state format {payload.get('format')!r}; this popstack reads "
                f"format {STATE_FORMAT}"
            )
        values = _snake(payload)
        values.pop("format")
        try:
            values["dead_letters"] = [DeadLetterRecord(**item) for item in values["dead_letters"]]
            values["settlements"] = [SettlementRecord(**item) for item in values["settlements"]]
            return cls(**values)
        except (KeyError, TypeError) as error:
            raise StateError(
                f"{source} is not a complete teardown state ({type(error).__name__}: {error}); "
                "restore it from the exports bucket's previous object version or delete it"
            ) from None


class StateError(Exception):
    """A teardown state file that cannot be read."""


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {_to_camel(key): _camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel(item) for item in value]
    return value


def _snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {_to_snake(key): _snake(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_snake(item) for item in value]
    return value


def _to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _to_snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def export_prefix(event_id: str) -> str:
    """Return the key prefix of one event's export: ``exports/<event id>/``."""
    return f"{EXPORTS_PREFIX}{event_id}/"


class StateStore:
    """Reads and writes one stack's teardown state in both places."""

    def __init__(self, stack: str, s3: Any, root: Path | None = None):
        self.stack = stack
        self.s3 = s3
        self.local_root = (root or Path.cwd()) / LOCAL_ROOT
        self.local_path = self.local_root / f"{stack}.json"

    def staging_dir(self) -> Path:
        """Return the local directory for this stack's export files before upload."""
        return self.local_root / self.stack

    def state_key(self, event_id: str) -> str:
        return export_prefix(event_id) + STATE_FILE

    def load(self, bucket: str | None = None, event_id: str | None = None) -> TeardownState | None:
        """Read both copies and return the one with more recorded steps, or None."""
        local = self._load_local()
        if local is not None:
            bucket = bucket or local.exports_bucket
            event_id = event_id or local.event_id
        remote = self._load_remote(bucket, event_id) if bucket and event_id else None
        if local is None:
            return remote
        if remote is None:
            return local
        return local if len(local.steps_done) > len(remote.steps_done) else remote

    def save(self, state: TeardownState) -> None:
        """Write the local mirror, then the bucket's copy."""
        data = state.to_json()
        self.local_root.mkdir(parents=True, exist_ok=True)
        temporary = self.local_path.with_suffix(".json.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.local_path)
        put_object(self.s3, state.exports_bucket, self.state_key(state.event_id), data)

    def _load_local(self) -> TeardownState | None:
        if not self.local_path.exists():
            return None
        return TeardownState.from_json(self.local_path.read_bytes(), str(self.local_path))

    def _load_remote(self, bucket: str, event_id: str) -> TeardownState | None:
        key = self.state_key(event_id)
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "NoSuchBucket", "404"):
                return None
            raise
        return TeardownState.from_json(response["Body"].read(), f"s3://{bucket}/{key}")


def put_object(s3: Any, bucket: str, key: str, data: bytes, content_type: str = "") -> str:
    """Upload bytes with a SHA-256 checksum that S3 checks on arrival; return the hex digest.

    S3 requires a checksum on every write to a bucket with object lock, and this one
    also makes S3 reject a body that was corrupted on the way.
    """
    digest = hashlib.sha256(data)
    extra = {"ContentType": content_type} if content_type else {}
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=b64encode(digest.digest()).decode("ascii"),
        **extra,
    )
    return digest.hexdigest()
