"""Checkpoints: what `popstack up` records before each update so it can be rolled back.

A checkpoint is one JSON document per update attempt, stored under
`<stack>/<id>.json` in a local directory (`.popstack/checkpoints` by default) or under
an S3 prefix. It contains:

- `state`: the stack's state as `pulumi stack export` writes it, before the update
  (null for a stack that did not exist yet). Secrets in it stay encrypted.
- `config` and `stackSettings`: the stack file's `config:` mapping, secure values kept as
  `{"secure": <ciphertext>}`, and the keys that record how they are encrypted
  (`secretsprovider`, `encryptedkey`, `encryptionsalt`).
- `program`: the git revision of the program (`git rev-parse HEAD`) and whether the
  tree had changes outside the stack files, with their paths.
- `status`: `pending` while the update runs, then `good` or `failed`. A good checkpoint
  also keeps `deployedState` and `outputs`, read just after the update succeeded.
  `recorded` marks a snapshot taken before a state import, which is never a
  rollback target.

The id is `<UTC time, microseconds>Z-<first 12 hex digits of the revision>`, so ids sort
by time.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

FORMAT_VERSION = 1
DEFAULT_DIRECTORY = Path(".popstack") / "checkpoints"

PENDING = "pending"
GOOD = "good"
FAILED = "failed"
RECORDED = "recorded"
STATUSES = (PENDING, GOOD, FAILED, RECORDED)

CHECKPOINT_ID = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{7,40}$")
# Stack names as the Pulumi CLI accepts them, without an organization or project part.
STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class CheckpointError(Exception):
    """A checkpoint could not be read or written, or is invalid."""


class CheckpointNotFoundError(CheckpointError):
    """No checkpoint with the requested id exists for the stack."""


def check_stack_name(stack: str) -> str:
    if stack in (".", "..") or not STACK_NAME.match(stack):
        raise CheckpointError(
            f"invalid stack name {stack!r}; use letters, digits, '-', '_' and '.' only"
        )
    return stack


def check_checkpoint_id(checkpoint_id: str) -> str:
    if not CHECKPOINT_ID.match(checkpoint_id):
        raise CheckpointError(
            f"invalid checkpoint id {checkpoint_id!r}; ids look like "
            "20270326T091500.000000Z-1a2b3c4d5e6f (list them with `popstack checkpoints`)"
        )
    return checkpoint_id


def new_checkpoint_id(created_at: datetime, revision: str) -> str:
    moment = created_at.astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}.{moment:%f}Z-{revision[:12]}"


def _time_text(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: Any, name: str) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise CheckpointError(f"checkpoint field {name} is not an ISO 8601 time")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CheckpointError(
            f"checkpoint field {name}: {text!r} is not an ISO 8601 time"
        ) from None


@dataclass
class Checkpoint:
    """One update attempt of one stack: the state before it and what it deployed."""

    id: str
    stack: str
    operation: str
    created_at: datetime
    revision: str
    dirty: bool
    dirty_paths: list[str]
    config: dict[str, Any]
    stack_settings: dict[str, str]
    state: dict[str, Any] | None
    status: str = PENDING
    finished_at: datetime | None = None
    message: str = ""
    summary: dict[str, int] = field(default_factory=dict)
    deployed_state: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    rollback_of: str | None = None
    # Set when the update broke the change freeze: {"reason": ..., "operator": ...}.
    emergency: dict[str, str] | None = None

    @property
    def secret_keys(self) -> list[str]:
        return sorted(
            key
            for key, value in self.config.items()
            if isinstance(value, dict) and set(value) == {"secure"}
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "formatVersion": FORMAT_VERSION,
            "id": self.id,
            "stack": self.stack,
            "operation": self.operation,
            "status": self.status,
            "createdAt": _time_text(self.created_at),
            "finishedAt": _time_text(self.finished_at),
            "program": {
                "revision": self.revision,
                "dirty": self.dirty,
                "dirtyPaths": list(self.dirty_paths),
            },
            "rollbackOf": self.rollback_of,
            "emergency": self.emergency,
            "stackSettings": dict(self.stack_settings),
            "config": self.config,
            "secretKeys": self.secret_keys,
            "state": self.state,
            "message": self.message,
            "summary": dict(self.summary),
            "deployedState": self.deployed_state,
            "outputs": self.outputs,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> Checkpoint:
        """Build a checkpoint from its JSON document, raising CheckpointError if invalid."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: not a checkpoint (expected a JSON object)")
        if data.get("formatVersion") != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: formatVersion {data.get('formatVersion')!r} is not supported; "
                f"this popstack reads version {FORMAT_VERSION}"
            )
        required = ("id", "stack", "operation", "status", "createdAt", "program", "config")
        missing = [name for name in required if name not in data]
        if missing:
            raise CheckpointError(f"{source}: missing field(s) {', '.join(missing)}")

        program = data["program"]
        if not isinstance(program, dict) or not isinstance(program.get("revision"), str):
            raise CheckpointError(f"{source}: program.revision is missing")
        if data["status"] not in STATUSES:
            raise CheckpointError(f"{source}: unknown status {data['status']!r}")
        if not isinstance(data["config"], dict):
            raise CheckpointError(f"{source}: config is not an object")
        created_at = _parse_time(data["createdAt"], "createdAt")
        if created_at is None:
            raise CheckpointError(f"{source}: createdAt is null")

        return cls(
            id=data["id"],
            stack=data["stack"],
            operation=data["operation"],
            created_at=created_at,
            revision=program["revision"],
            dirty=bool(program.get("dirty", False)),
            dirty_paths=list(program.get("dirtyPaths") or []),
            config=data["config"],
            stack_settings=dict(data.get("stackSettings") or {}),
            state=data.get("state"),
            status=data["status"],
            finished_at=_parse_time(data.get("finishedAt"), "finishedAt"),
            message=data.get("message") or "",
            summary=dict(data.get("summary") or {}),
            deployed_state=data.get("deployedState"),
            outputs=dict(data.get("outputs") or {}),
            rollback_of=data.get("rollbackOf"),
            emergency=data.get("emergency"),
        )


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return (json.dumps(checkpoint.to_json(), indent=2, sort_keys=True) + "\n").encode()


class CheckpointStore(Protocol):
    """The storage of checkpoints. `location` is printed, and `--checkpoint-store` takes it
    to open the same store again."""

    location: str

    def save(self, checkpoint: Checkpoint) -> None:
        """Create or replace the checkpoint's document."""

    def load(self, stack: str, checkpoint_id: str) -> Checkpoint:
        """Return one checkpoint; raise CheckpointNotFoundError if it does not exist."""

    def list_ids(self, stack: str) -> list[str]:
        """Return the stack's checkpoint ids, oldest first."""


class LocalCheckpointStore:
    """Checkpoints as files `<root>/<stack>/<id>.json`, readable by the owner only."""

    def __init__(self, root: Path, location: str | None = None):
        self.root = Path(root)
        self.location = location or str(self.root)

    def _path(self, stack: str, checkpoint_id: str) -> Path:
        return self.root / check_stack_name(stack) / f"{check_checkpoint_id(checkpoint_id)}.json"

    def save(self, checkpoint: Checkpoint) -> None:
        path = self._path(checkpoint.stack, checkpoint.id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{checkpoint.id}.")
            try:
                os.chmod(temporary, 0o600)
                with os.fdopen(handle, "wb") as stream:
                    stream.write(encode_checkpoint(checkpoint))
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise CheckpointError(f"could not write checkpoint {path}: {error}") from None

    def load(self, stack: str, checkpoint_id: str) -> Checkpoint:
        path = self._path(stack, checkpoint_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointNotFoundError(
                f"checkpoint {checkpoint_id} of stack {stack} not found in {self.location}; "
                f"list them with `popstack checkpoints {stack}`"
            ) from None
        except OSError as error:
            raise CheckpointError(f"could not read checkpoint {path}: {error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path}: invalid JSON ({error})") from None
        return Checkpoint.from_json(data, str(path))

    def list_ids(self, stack: str) -> list[str]:
        directory = self.root / check_stack_name(stack)
        if not directory.is_dir():
            return []
        return sorted(
            path.stem for path in directory.glob("*.json") if CHECKPOINT_ID.match(path.stem)
        )


class S3CheckpointStore:
    """Checkpoints as objects `s3://<bucket>/<prefix><stack>/<id>.json`.

    The boto3 client follows the usual AWS environment (credentials, region and
    AWS_ENDPOINT_URL). Objects are encrypted with the bucket's default encryption.
    """

    def __init__(
        self, bucket: str, prefix: str = "", client_factory: Callable[[], Any] | None = None
    ):
        self.bucket = bucket
        self.prefix = prefix
        self.location = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._client_factory = client_factory
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            if self._client_factory is not None:
                self._client = self._client_factory()
            else:
                import boto3

                self._client = boto3.client("s3")
        return self._client

    def _key(self, stack: str, checkpoint_id: str) -> str:
        return f"{self.prefix}{check_stack_name(stack)}/{check_checkpoint_id(checkpoint_id)}.json"

    def save(self, checkpoint: Checkpoint) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(checkpoint.stack, checkpoint.id)
        try:
            self._s3().put_object(
                Bucket=self.bucket,
                Key=key,
                Body=encode_checkpoint(checkpoint),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError) as error:
            raise CheckpointError(
                f"could not write checkpoint s3://{self.bucket}/{key}: {error}"
            ) from None

    def load(self, stack: str, checkpoint_id: str) -> Checkpoint:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(stack, checkpoint_id)
        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise CheckpointNotFoundError(
                    f"checkpoint {checkpoint_id} of stack {stack} not found in {self.location}; "
                    f"list them with `popstack checkpoints {stack} --checkpoint-store "
                    f"{self.location}`"
                ) from None
            raise CheckpointError(f"could not read s3://{self.bucket}/{key}: {error}") from None
        except BotoCoreError as error:
            raise CheckpointError(f"could not read s3://{self.bucket}/{key}: {error}") from None
        try:
            data = json.loads(body)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"s3://{self.bucket}/{key}: invalid JSON ({error})") from None
        return Checkpoint.from_json(data, f"s3://{self.bucket}/{key}")

    def list_ids(self, stack: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.prefix}{check_stack_name(stack)}/"
        ids = []
        try:
            paginator = self._s3().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    name = item["Key"][len(prefix) :]
                    stem = name.removesuffix(".json")
                    if name.endswith(".json") and CHECKPOINT_ID.match(stem):
                        ids.append(stem)
        except (BotoCoreError, ClientError) as error:
            raise CheckpointError(f"could not list s3://{self.bucket}/{prefix}: {error}") from None
        return sorted(ids)


def open_store(location: str | None, project_dir: Path) -> CheckpointStore:
    """Open the store `--checkpoint-store` names: None for the project's default
    directory, `s3://bucket/prefix` for S3, anything else for a local directory."""
    if location is None:
        return LocalCheckpointStore(project_dir / DEFAULT_DIRECTORY)
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        if not S3_BUCKET.match(bucket):
            raise CheckpointError(
                f"invalid checkpoint store {location!r}: {bucket!r} is not an S3 bucket name; "
                "write s3://bucket/prefix"
            )
        prefix = prefix.strip("/")
        return S3CheckpointStore(bucket, f"{prefix}/" if prefix else "")
    return LocalCheckpointStore(Path(location), location)


def latest_good(
    store: CheckpointStore, stack: str, exclude: tuple[str, ...] = ()
) -> Checkpoint | None:
    """Return the newest checkpoint of `stack` marked good, skipping the ids in `exclude`."""
    for checkpoint_id in reversed(store.list_ids(stack)):
        if checkpoint_id in exclude:
            continue
        checkpoint = store.load(stack, checkpoint_id)
        if checkpoint.status == GOOD:
            return checkpoint
    return None
