"""Secrets Manager rotation function for an event's secrets.

Secrets Manager invokes ``lambda_handler`` once per step (createSecret, setSecret,
testSecret, finishSecret) with the event keys ``SecretId``, ``ClientRequestToken`` and
``Step``. The token is the id of the new secret version, which carries the staging label
AWSPENDING until finishSecret moves AWSCURRENT onto it. Every step can be retried or
resumed after an interruption. Only finishSecret moves AWSCURRENT, and Secrets Manager
calls it only after testSecret succeeded, so a failed or interrupted earlier step leaves
AWSCURRENT on the old, working version.

The tag ``popstack:secret-kind`` on the secret selects how it rotates:

``token`` (the default when the tag is missing)
    An event-scoped bearer or HMAC token, stored as the JSON object
    ``{"kind": "token", "token": <43 URL-safe base64 characters>, "created_at": <ISO 8601>}``.
    setSecret does nothing, because consumers read the secret itself. Contract for
    consumers: accept a token that matches either the AWSCURRENT or the AWSPREVIOUS
    version, so requests signed just before a rotation stay valid until the next one.

``cache-auth``
    The AUTH password of the ElastiCache RBAC user that the stack creates for the cache,
    stored as ``{"kind": "cache-auth", "userId": ..., "username": ..., "password": ...,
    "created_at": ...}``. Other fields of the current value are carried over unchanged.
    setSecret sets the user's two passwords to the pending and the current one
    (ElastiCache allows two per user), so clients that still hold the current password
    keep working. The previous password stays valid until the next rotation replaces it.

createSecret raises ``RotationFrozenError`` and writes nothing while the current time is
inside the window given by ``ROTATION_FREEZE_START`` and ``ROTATION_FREEZE_END`` (ISO
8601 with a UTC offset), because no secret rotates while the event's doors are open.

Clients come from ``boto3.client`` with no explicit endpoint, so ``AWS_ENDPOINT_URL``
redirects them (checked with boto3 1.44). Log lines carry the secret ARN, the version id
and the step, never a secret value.

This module runs inside AWS Lambda and imports only the standard library and boto3.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import string
import time
from datetime import UTC, datetime
from typing import Any

import boto3

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

SECRET_KIND_TAG = "popstack:secret-kind"
KIND_TOKEN = "token"
KIND_CACHE_AUTH = "cache-auth"
SECRET_KINDS = (KIND_TOKEN, KIND_CACHE_AUTH)

FREEZE_START_ENV = "ROTATION_FREEZE_START"
FREEZE_END_ENV = "ROTATION_FREEZE_END"

CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"

# secrets.token_urlsafe(32) encodes 32 random bytes as 43 URL-safe base64 characters.
TOKEN_BYTES = 32
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")

# ElastiCache accepts AUTH passwords of 16 to 128 printable characters, and its only
# permitted special characters are ! & # $ ^ < > - (ElastiCache for Redis OSS User Guide,
# "AUTH token constraints"). popstack also requires at least 32 characters.
PASSWORD_MIN_LENGTH = 32
PASSWORD_MAX_LENGTH = 128
PASSWORD_ALLOWED_CHARACTERS = frozenset(string.ascii_letters + string.digits + "!&#$^<>-")
# Generated passwords use letters and digits only, so they need no escaping in a URL.
GENERATED_PASSWORD_LENGTH = 64
GENERATED_PASSWORD_ALPHABET = string.ascii_letters + string.digits
# ElastiCache user ids start with a letter and contain only letters, digits and hyphens.
USER_ID_PATTERN = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")

# A user stays in status "modifying" for a while after ModifyUser, so testSecret polls.
# The Lambda timeout must exceed USER_POLL_ATTEMPTS * USER_POLL_INTERVAL_SECONDS.
USER_POLL_ATTEMPTS = 10
USER_POLL_INTERVAL_SECONDS = 3.0


class RotationError(Exception):
    """A rotation step that cannot proceed. The message names the secret and version."""


class RotationFrozenError(RotationError):
    """createSecret called while the event's rotation freeze window is open."""


def now() -> datetime:
    """Return the current time in UTC. Tests replace this function to move the clock."""
    return datetime.now(UTC)


def make_client(service_name: str) -> Any:
    """Create a boto3 client for the service. Tests replace this function to stub one."""
    return boto3.client(service_name)


def lambda_handler(event: dict[str, Any], context: Any) -> None:
    """Validate a rotation event and run its step.

    Raises RotationError when the event is malformed, rotation is disabled on the secret,
    the token is not a version of the secret, or the version is not staged AWSPENDING.
    A token that already carries AWSCURRENT means the rotation has finished, so the
    step returns without changes.
    """
    secret_id, token, step = _read_event(event)
    secrets_client = make_client("secretsmanager")
    metadata = secrets_client.describe_secret(SecretId=secret_id)
    secret_arn = metadata["ARN"]

    if not metadata.get("RotationEnabled"):
        raise RotationError(
            f"Rotation is not enabled for secret {secret_arn}. "
            "Configure rotation on the secret before invoking this function."
        )

    stages = _version_stages(metadata, secret_arn, token)
    kind = _secret_kind(metadata, secret_arn)

    if CURRENT in stages:
        if step == "finishSecret" and PENDING in stages:
            # An interrupted finishSecret moved AWSCURRENT but left AWSPENDING behind.
            finish_secret(secrets_client, secret_arn, token)
            return
        logger.info(
            "%s: version %s of secret %s is already AWSCURRENT, nothing to do",
            step,
            token,
            secret_arn,
        )
        return
    if PENDING not in stages:
        raise RotationError(
            f"Version {token} of secret {secret_arn} is not staged AWSPENDING "
            f"(stages: {', '.join(stages) or 'none'}), so it cannot be rotated to."
        )

    if step == "createSecret":
        create_secret(secrets_client, secret_arn, token, kind)
    elif step == "setSecret":
        set_secret(secrets_client, secret_arn, token, kind)
    elif step == "testSecret":
        test_secret(secrets_client, secret_arn, token, kind)
    else:
        finish_secret(secrets_client, secret_arn, token)


def create_secret(secrets_client: Any, secret_arn: str, token: str, kind: str) -> None:
    """Store a new value as version ``token`` with the label AWSPENDING.

    Does nothing when that version already has a value, so a retried step keeps the
    value of the first attempt. Raises RotationFrozenError, before reading or writing
    anything, while the rotation freeze window is open.
    """
    _check_freeze_window(secret_arn, token)
    current_value = _get_value(secrets_client, secret_arn, CURRENT)

    try:
        secrets_client.get_secret_value(SecretId=secret_arn, VersionId=token, VersionStage=PENDING)
    except secrets_client.exceptions.ResourceNotFoundException:
        pass
    else:
        logger.info("createSecret: version %s of secret %s already has a value", token, secret_arn)
        return

    if kind == KIND_CACHE_AUTH:
        new_value = _new_cache_auth_value(current_value, secret_arn)
    else:
        new_value = _new_token_value()
    secrets_client.put_secret_value(
        SecretId=secret_arn,
        ClientRequestToken=token,
        SecretString=json.dumps(new_value),
        VersionStages=[PENDING],
    )
    logger.info("createSecret: stored version %s of secret %s as AWSPENDING", token, secret_arn)


def set_secret(secrets_client: Any, secret_arn: str, token: str, kind: str) -> None:
    """Make the pending value usable by the service that checks it.

    Tokens need nothing here, because consumers read the secret itself. For cache-auth,
    sets the RBAC user's passwords to the pending and the current password. Repeating
    the call sets the same two passwords, so a retried step is harmless.
    """
    if kind != KIND_CACHE_AUTH:
        logger.info("setSecret: nothing to set for token secret %s version %s", secret_arn, token)
        return

    pending = _parse_cache_auth(_get_value(secrets_client, secret_arn, PENDING, token), secret_arn)
    current = _parse_cache_auth(_get_value(secrets_client, secret_arn, CURRENT), secret_arn)
    if pending["userId"] != current["userId"]:
        raise RotationError(
            f"Version {token} of secret {secret_arn} names ElastiCache user "
            f"{pending['userId']}, but the AWSCURRENT version names {current['userId']}."
        )
    elasticache = make_client("elasticache")
    elasticache.modify_user(
        UserId=pending["userId"], Passwords=[pending["password"], current["password"]]
    )
    logger.info(
        "setSecret: set pending and current password on ElastiCache user %s for secret %s "
        "version %s",
        pending["userId"],
        secret_arn,
        token,
    )


def test_secret(secrets_client: Any, secret_arn: str, token: str, kind: str) -> None:
    """Check the pending value, and raise RotationError if it cannot be used.

    A token must be 43 URL-safe base64 characters. A cache-auth value must hold a valid
    user id, username and password, and ElastiCache must report the user active with
    two passwords. This check does not open a connection to the cache.
    """
    pending_value = _get_value(secrets_client, secret_arn, PENDING, token)
    if kind == KIND_CACHE_AUTH:
        pending = _parse_cache_auth(pending_value, secret_arn)
        _check_cache_user(make_client("elasticache"), pending["userId"], secret_arn, token)
    else:
        _parse_token(pending_value, secret_arn)
    logger.info("testSecret: version %s of secret %s passed", token, secret_arn)


def finish_secret(secrets_client: Any, secret_arn: str, token: str) -> None:
    """Move AWSCURRENT to version ``token`` and remove its AWSPENDING label.

    Secrets Manager moves AWSPREVIOUS to the version that loses AWSCURRENT. A version
    that is already AWSCURRENT only loses its AWSPENDING label.
    """
    metadata = secrets_client.describe_secret(SecretId=secret_arn)
    current_version = _version_with_stage(metadata, CURRENT)

    if current_version == token:
        logger.info(
            "finishSecret: version %s of secret %s is already AWSCURRENT", token, secret_arn
        )
    else:
        secrets_client.update_secret_version_stage(
            SecretId=secret_arn,
            VersionStage=CURRENT,
            MoveToVersionId=token,
            RemoveFromVersionId=current_version,
        )
        logger.info(
            "finishSecret: moved AWSCURRENT of secret %s from version %s to version %s",
            secret_arn,
            current_version,
            token,
        )

    if PENDING in metadata.get("VersionIdsToStages", {}).get(token, []):
        secrets_client.update_secret_version_stage(
            SecretId=secret_arn, VersionStage=PENDING, RemoveFromVersionId=token
        )


def _read_event(event: dict[str, Any]) -> tuple[str, str, str]:
    values = []
    for key in ("SecretId", "ClientRequestToken", "Step"):
        value = event.get(key)
        if not isinstance(value, str) or not value:
            raise RotationError(f"Rotation event is missing the string field {key!r}.")
        values.append(value)

    secret_id, token, step = values
    if step not in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        raise RotationError(
            f"Invalid rotation step {step!r} for secret {secret_id}. "
            "Expected createSecret, setSecret, testSecret or finishSecret."
        )
    return secret_id, token, step


def _version_stages(metadata: dict[str, Any], secret_arn: str, token: str) -> list[str]:
    versions = metadata.get("VersionIdsToStages", {})
    if token not in versions:
        raise RotationError(
            f"ClientRequestToken {token} is not a version of secret {secret_arn}. "
            "Start the rotation with RotateSecret so that the version exists."
        )
    return list(versions[token])


def _version_with_stage(metadata: dict[str, Any], stage: str) -> str | None:
    for version_id, stages in metadata.get("VersionIdsToStages", {}).items():
        if stage in stages:
            return version_id
    return None


def _secret_kind(metadata: dict[str, Any], secret_arn: str) -> str:
    tags = {tag["Key"]: tag["Value"] for tag in metadata.get("Tags", [])}
    kind = tags.get(SECRET_KIND_TAG, KIND_TOKEN)
    if kind not in SECRET_KINDS:
        raise RotationError(
            f"Invalid tag {SECRET_KIND_TAG}={kind!r} on secret {secret_arn}. "
            f"Expected one of: {', '.join(SECRET_KINDS)}."
        )
    return kind


def _get_value(
    secrets_client: Any, secret_arn: str, stage: str, version_id: str | None = None
) -> str:
    request = {"SecretId": secret_arn, "VersionStage": stage}
    if version_id is not None:
        request["VersionId"] = version_id
    response = secrets_client.get_secret_value(**request)
    if "SecretString" not in response:
        raise RotationError(
            f"The {stage} version {response['VersionId']} of secret {secret_arn} has no "
            "SecretString. popstack stores every secret as a JSON string."
        )
    return response["SecretString"]


def _check_freeze_window(secret_arn: str, token: str) -> None:
    start_text = os.environ.get(FREEZE_START_ENV, "")
    end_text = os.environ.get(FREEZE_END_ENV, "")
    if not start_text and not end_text:
        return
    if not start_text or not end_text:
        raise RotationError(
            f"Only one of {FREEZE_START_ENV} and {FREEZE_END_ENV} is set. "
            "Set both to ISO 8601 times with a UTC offset, or neither."
        )

    start = _parse_freeze_time(FREEZE_START_ENV, start_text)
    end = _parse_freeze_time(FREEZE_END_ENV, end_text)
    if end <= start:
        raise RotationError(
            f"{FREEZE_END_ENV}={end_text} is not later than {FREEZE_START_ENV}={start_text}."
        )

    current_time = now()
    if start <= current_time < end:
        # NOTE: the AWSPENDING label that RotateSecret attached stays on the empty version.
        # Per the RotateSecret API reference, later RotateSecret calls then fail as "still
        # in progress" until that label is removed, so the error message names that step.
        raise RotationFrozenError(
            f"createSecret rejected for secret {secret_arn} version {token}: "
            f"rotation is frozen from {start_text} to {end_text} while the event's doors "
            "are open. Rotate after the window closes, and first remove the AWSPENDING "
            f"label from version {token} if RotateSecret reports a rotation in progress."
        )


def _parse_freeze_time(name: str, text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RotationError(
            f"Invalid {name}={text!r}: expected an ISO 8601 time such as 2025-06-01T09:00:00+01:00."
        ) from None
    if parsed.utcoffset() is None:
        raise RotationError(
            f"Invalid {name}={text!r}: the time has no UTC offset. Add one, such as +01:00."
        )
    return parsed


def _new_token_value() -> dict[str, str]:
    return {
        "kind": KIND_TOKEN,
        "token": secrets.token_urlsafe(TOKEN_BYTES),
        "created_at": now().isoformat(),
    }


def _new_cache_auth_value(current_value: str, secret_arn: str) -> dict[str, Any]:
    current = _parse_cache_auth(current_value, secret_arn)
    password = "".join(
        secrets.choice(GENERATED_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH)
    )
    return {
        **current,
        "kind": KIND_CACHE_AUTH,
        "password": password,
        "created_at": now().isoformat(),
    }


def _parse_json_object(value: str, secret_arn: str) -> dict[str, Any]:
    # The JSON error is dropped (from None) because its text can quote the secret value.
    try:
        parsed = json.loads(value)
    except ValueError:
        raise RotationError(f"The value of secret {secret_arn} is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise RotationError(f"The value of secret {secret_arn} is not a JSON object.")
    return parsed


def _parse_token(value: str, secret_arn: str) -> str:
    parsed = _parse_json_object(value, secret_arn)
    token = parsed.get("token")
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise RotationError(
            f"The field 'token' of secret {secret_arn} is missing or is not "
            "43 URL-safe base64 characters."
        )
    return token


def _parse_cache_auth(value: str, secret_arn: str) -> dict[str, Any]:
    parsed = _parse_json_object(value, secret_arn)
    for field in ("userId", "username", "password"):
        if not isinstance(parsed.get(field), str) or not parsed[field]:
            raise RotationError(f"The field {field!r} of secret {secret_arn} is missing.")

    if not USER_ID_PATTERN.fullmatch(parsed["userId"]):
        raise RotationError(
            f"The field 'userId' of secret {secret_arn} is not a valid ElastiCache user id."
        )
    password = parsed["password"]
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise RotationError(
            f"The field 'password' of secret {secret_arn} has {len(password)} characters. "
            f"Expected {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH}."
        )
    if not set(password) <= PASSWORD_ALLOWED_CHARACTERS:
        raise RotationError(
            f"The field 'password' of secret {secret_arn} contains characters that "
            "ElastiCache rejects. Use letters, digits and !&#$^<>- only."
        )
    return parsed


def _check_cache_user(elasticache: Any, user_id: str, secret_arn: str, token: str) -> None:
    for attempt in range(1, USER_POLL_ATTEMPTS + 1):
        user = elasticache.describe_users(UserId=user_id)["Users"][0]
        if user["Status"] != "modifying":
            break
        logger.info(
            "testSecret: ElastiCache user %s is modifying (attempt %d of %d)",
            user_id,
            attempt,
            USER_POLL_ATTEMPTS,
        )
        if attempt < USER_POLL_ATTEMPTS:
            time.sleep(USER_POLL_INTERVAL_SECONDS)

    status = user["Status"]
    password_count = user.get("Authentication", {}).get("PasswordCount")
    if status != "active" or password_count != 2:
        raise RotationError(
            f"ElastiCache user {user_id} for secret {secret_arn} version {token} has status "
            f"{status!r} and {password_count} passwords. Expected 'active' with 2 passwords "
            "(pending and current). Check that setSecret ran."
        )
