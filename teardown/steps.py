"""`popstack teardown`: seven resumable steps from closing checkout to `pulumi destroy`.

Steps, in order (``STEPS``):

1. ``close``: turn ``checkout_enabled`` off in AppConfig and record the close time.
2. ``drain``: wait for the order queue to empty, then read every dead letter (kept in
   the queue until the stack is destroyed).
3. ``export``: read orders, receipts, flag history, stack resources and dashboard
   metrics into the local staging directory.
4. ``reconcile``: reconcile against the settlement reports and write the export.
5. ``upload``: upload every file, read each one back and check it against the
   manifest; record the manifest's S3 URI and SHA-256.
6. ``revoke``: replace every event secret with a random value and schedule deletion.
7. ``destroy``: set the stack config key that drops `protect`, run `pulumi up`,
   delete popstack's AppConfig versions, then `pulumi destroy`.

A step is recorded in the teardown state (``teardown.state``) once it finished, and a
later run starts at the first step not recorded. Steps that change something check
first whether an earlier, interrupted run already did it. Steps 3 and 4 write only
local files, derived from data that no longer changes once checkout is closed and the
queue is drained. When their local output is gone, a later run derives it again, byte
for byte the same.

The guard: steps 6 and 7 raise ``TeardownRefused`` unless step 5 recorded a verified
manifest, so teardown never calls ``engine.destroy`` before the export is verified.
Teardown also stops, unless a force reason is given, when the order queue still contains
messages after the drain timeout or when no settlement report is given.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from components.spec import EXPORT_VERIFIED_KEY, NAMESPACE, EventSpec, spec_from_values
from lambdas.flagstore import (
    LABEL_TEARDOWN,
    AuditRecord,
    FlagStore,
    FlagTarget,
    HostedVersion,
    audit_log,
    set_flags,
)
from teardown import aws
from teardown.bundle import json_bytes, read_manifest, verify, write_bundle
from teardown.csvinput import FORMATS, LAYOUTS, CsvFormat, InputFile, read_settlements
from teardown.export import MANIFEST, ExportContext, flag_audit_csv, redact_text
from teardown.state import (
    DeadLetterRecord,
    SettlementRecord,
    StateError,
    StateStore,
    TeardownState,
    export_prefix,
    put_object,
)

logger = logging.getLogger("popstack.teardown")

STEPS = ("close", "drain", "export", "reconcile", "upload", "revoke", "destroy")
CHECKOUT_FLAG = "checkout_enabled"
# Files teardown adds to the export beside the reconciliation files.
FLAG_HISTORY = "flag-history.json"
FLAG_AUDIT = "flag-audit.csv"
TEARDOWN_ACTOR = "popstack teardown"
HOSTED_VERSION_TYPE = "aws:appconfig/hostedConfigurationVersion:HostedConfigurationVersion"
STACK_RESOURCES = "stack-resources.json"
METRICS = "metrics.json"
TEARDOWN_FILE = "teardown.json"
# A default judgement, not a measurement: above 1 GiB a consistent Scan takes long and
# consumes read capacity, while ExportTableToPointInTime reads none.
NATIVE_EXPORT_MIN_BYTES = 1 << 30
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".parquet": "application/vnd.apache.parquet",
}


class TeardownError(Exception):
    """A teardown step that failed; the message names what and how to continue."""


class TeardownRefused(TeardownError):
    """A check that stopped teardown before a step that could lose data.

    `--force-reason` overrides the drain and settlement checks. Nothing overrides the
    check that a verified export exists before revoke and destroy.
    """


@dataclass(frozen=True)
class SettlementInput:
    """A settlement report given on the command line, with its layout and CSV format."""

    name: str
    data: bytes
    layout: str = "stripe"
    format: str = "default"


@dataclass
class TeardownOptions:
    """Settings of one teardown run; times are in seconds."""

    settlements: list[SettlementInput] = field(default_factory=list)
    receipts_format: str = "default"
    force_reason: str | None = None
    drain_timeout: float = 900
    drain_poll: float = 10
    dead_letter_visibility: int = 900
    dead_letter_wait: int = 1
    scan_segments: int = 4
    native_export_min_bytes: int = NATIVE_EXPORT_MIN_BYTES
    native_export_timeout: float = 3600
    native_export_poll: float = 10
    exports_bucket: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class TeardownResult:
    """The state after a run, and whether the stack had already been torn down."""

    state: TeardownState
    already_torn_down: bool


Hook = Callable[[str, str], None]


class Teardown:
    """Runs the steps for one stack; ``hook(step, phase)`` runs before and after each.

    The ``after`` phase comes when the step's work is done and before the state
    records it, which is where an interruption is hardest to resume from.
    """

    def __init__(
        self,
        stack: str,
        engine: Any,
        clients: aws.Clients,
        options: TeardownOptions | None = None,
        *,
        root: Path | None = None,
        console: Console | None = None,
        clock: Callable[[], datetime] | None = None,
        hook: Hook | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.stack = stack
        self.engine = engine
        self.clients = clients
        self.options = options or TeardownOptions()
        self.store = StateStore(stack, clients("s3"), root)
        self.console = console or Console(stderr=True)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.hook = hook
        self.sleep = sleep
        self.monotonic = monotonic
        self._outputs: dict[str, Any] | None = None
        self._spec: EventSpec | None = None
        # The manifest SHA-256 whose files this run read back from S3 and checked.
        self._verified_manifest: str | None = None

    # Paths

    @property
    def staging(self) -> Path:
        return self.store.staging_dir()

    @property
    def inputs_dir(self) -> Path:
        """Raw inputs read in steps 2 and 3; they may contain personal data until step 5."""
        return self.staging / "inputs"

    @property
    def export_dir(self) -> Path:
        return self.staging / "export"

    # Running

    def run(self) -> TeardownResult:
        """Run every step not yet recorded; return the final state."""
        state = self._load_state()
        if state.destroyed:
            logger.info(
                "teardown: stack %s was already torn down; export %s",
                self.stack,
                state.manifest_uri,
            )
            return TeardownResult(state, already_torn_down=True)
        if not self.engine.exists(self.stack):
            if state.verified and self._remote_manifest_matches(state):
                logger.info(
                    "teardown: stack %s no longer exists and its export %s is verified",
                    self.stack,
                    state.manifest_uri,
                )
                return TeardownResult(state, already_torn_down=True)
            raise TeardownError(
                f"stack {self.stack} does not exist and no verified export was recorded for it; "
                "check the stack name"
            )
        self._check_options()
        if self.options.force_reason and state.force_reason != self.options.force_reason:
            state.force_reason = self.options.force_reason
            self.store.save(state)
        for step in STEPS:
            if state.done(step):
                continue
            if self.hook:
                self.hook(step, "before")
            getattr(self, f"_step_{step}")(state)
            if self.hook:
                self.hook(step, "after")
            state.mark_done(step)
            self.store.save(state)
            if step == "upload":
                # The verified copy is in the bucket, so the raw inputs can go.
                shutil.rmtree(self.inputs_dir, ignore_errors=True)
        return TeardownResult(state, already_torn_down=False)

    def _check_options(self) -> None:
        """Reject unknown formats and unreadable settlement reports before closing checkout."""
        _csv_format(self.options.receipts_format)
        files = []
        for item in self.options.settlements:
            if item.layout not in LAYOUTS:
                raise TeardownError(
                    f"settlement layout {item.layout!r} of {item.name} is unknown; "
                    f"use one of {', '.join(LAYOUTS)}"
                )
            files.append(InputFile(item.name, item.data, _csv_format(item.format), item.layout))
        if files:
            read_settlements(files)

    def _load_state(self) -> TeardownState:
        bucket = self.options.exports_bucket
        event_id = self.options.event_id
        if bucket is None and self.engine.exists(self.stack):
            outputs = self.outputs()
            # A destroyed stack has no outputs; the local state then names the bucket.
            if outputs.get("exportsBucket") and outputs.get("eventId"):
                bucket = str(outputs["exportsBucket"])
                event_id = str(outputs["eventId"])
        state = self.store.load(bucket, event_id)
        if state is not None and event_id is not None and state.event_id != event_id:
            raise StateError(
                f"the teardown state for stack {self.stack} ({self.store.local_path}) belongs "
                f"to event {state.event_id}, but the stack's event is {event_id}; move that "
                "file away if the earlier event's teardown is finished"
            )
        if state is not None:
            return state
        if bucket is None or event_id is None:
            raise TeardownError(
                f"stack {self.stack} does not exist and no teardown state was found in "
                f"{self.store.local_path}; pass --exports-bucket and --event-id to read the "
                "state from the export location"
            )
        return TeardownState(stack=self.stack, event_id=event_id, exports_bucket=bucket)

    def _remote_manifest_matches(self, state: TeardownState) -> bool:
        key = export_prefix(state.event_id) + MANIFEST
        try:
            data = aws.read_object(self.clients("s3"), state.exports_bucket, key)
        except FileNotFoundError:
            return False
        return aws.sha256_hex(data) == state.manifest_sha256

    def outputs(self) -> dict[str, Any]:
        if self._outputs is None:
            self._outputs = dict(self.engine.outputs(self.stack))
        return self._outputs

    def spec(self) -> EventSpec:
        """Read the event spec from the stack's config, as the Pulumi program does."""
        if self._spec is None:
            values = {key: entry.value for key, entry in self.engine.get_config(self.stack).items()}
            self._spec = spec_from_values(values, f"config of stack {self.stack}")
        return self._spec

    def flag_store(self) -> FlagStore:
        return FlagStore(
            FlagTarget.from_outputs(self.outputs()),
            self.clients("appconfig"),
            self.clients("appconfig-control"),
        )

    @contextmanager
    def progress(self, description: str, total: float | None = None):
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns.append(BarColumn())
        columns.append(TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda **update: progress.update(task, **update)

    # Step 1

    def _step_close(self, state: TeardownState) -> None:
        if state.closed_at is None:
            # Saved before the flip, so a resumed run keeps the first close time.
            state.closed_at = _iso(self.clock())
            self.store.save(state)
        # set_flags also deploys a version that an interrupted run wrote but never deployed.
        result = set_flags(
            self.flag_store(),
            {CHECKOUT_FLAG: False},
            actor=TEARDOWN_ACTOR,
            reason=f"teardown of stack {self.stack}",
            label=LABEL_TEARDOWN,
            clock=lambda: datetime.fromisoformat(state.closed_at),
        )
        version = result.version if result.changed else result.base_version
        deployment = result.deployment
        if result.changed:
            action = f"created version {version} with checkout off"
        else:
            action = f"version {version} already has checkout off"
        state.flag_version = version
        state.flag_deployment = deployment
        where = (
            f"deployment {deployment}"
            if deployment is not None
            else "not deployed: the stack has no AppConfig environment"
        )
        logger.info("close: %s (%s); closed at %s", action, where, state.closed_at)

    # Step 2

    def _step_drain(self, state: TeardownState) -> None:
        outputs = self.outputs()
        sqs = self.clients("sqs")
        timeout = self.options.drain_timeout
        with self.progress("Draining the order queue", total=None) as update:
            remaining = aws.wait_for_drain(
                sqs,
                str(outputs["orderQueueUrl"]),
                timeout,
                self.options.drain_poll,
                on_poll=lambda left, elapsed: update(
                    description=f"Draining the order queue: {left} message(s) left, "
                    f"{elapsed:.0f}/{timeout:.0f} s"
                ),
                sleep=self.sleep,
                monotonic=self.monotonic,
            )
        state.remaining_order_messages = remaining
        if remaining:
            self._require_force(
                state,
                f"the order queue still held {remaining} message(s) after the "
                f"{timeout:.0f} s drain timeout",
                "wait for the consumers to finish and run teardown again, or pass "
                "--drain-timeout with a longer wait",
            )
        if state.drained_at is None:
            state.drained_at = _iso(self.clock())
        letters = self._dead_letters(state)
        ids = ", ".join(letter.message_id for letter in letters) or "none"
        logger.info(
            "drain: %d message(s) left in the order queue; read %d dead letter(s) (ids: %s)",
            remaining,
            len(letters),
            ids,
        )

    def _require_force(self, state: TeardownState, problem: str, fix: str) -> None:
        if not self.options.force_reason and not state.force_reason:
            raise TeardownRefused(
                f"teardown stopped: {problem}. Nothing was destroyed. To continue, {fix}; or "
                '--force-reason "..." to go on, which is recorded in the export'
            )
        if problem not in state.forced:
            state.forced.append(problem)
        logger.warning("forced past a check: %s (reason recorded in teardown.json)", problem)

    def _dead_letters(self, state: TeardownState) -> list[aws.DeadLetter]:
        """Return the dead letters staged by this run or an earlier one, else read them."""
        staged = self.inputs_dir / "dead-letters.json"
        recorded = [record.message_id for record in state.dead_letters]
        if staged.exists():
            letters = [aws.DeadLetter.from_staged(item) for item in json.loads(staged.read_bytes())]
            # An empty record means the run that staged them stopped before saving state.
            if not recorded or [letter.message_id for letter in letters] == recorded:
                state.dead_letters = _records(letters)
                return letters
        deadline = self.options.dead_letter_visibility + 30 if recorded else 0
        letters = aws.read_dead_letters(
            self.clients("sqs"),
            str(self.outputs()["deadLetterQueueUrl"]),
            visibility_timeout=self.options.dead_letter_visibility,
            wait_seconds=self.options.dead_letter_wait,
            expected_ids=recorded,
            deadline_seconds=deadline,
            sleep=self.sleep,
            monotonic=self.monotonic,
        )
        if state.dead_letters:
            # A re-read raised the receive counts; keep the ones the first read saw.
            first = {record.message_id: record for record in state.dead_letters}
            letters = [
                _replace_count(letter, first[letter.message_id].receive_count)
                if letter.message_id in first
                else letter
                for letter in letters
            ]
        state.dead_letters = _records(letters)
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(json_bytes([letter.staged() for letter in letters]))
        # Saved at once: the read hid the messages, so a resumed run must know their ids.
        self.store.save(state)
        return letters

    # Step 3

    def _step_export(self, state: TeardownState) -> None:
        outputs = self.outputs()
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        letters = self._dead_letters(state)
        orders, source = self._read_orders(state)
        receipts = aws.read_receipts(self.clients("s3"), str(outputs["receiptsBucket"]))

        receipts_dir = self.inputs_dir / "receipts"
        shutil.rmtree(receipts_dir, ignore_errors=True)
        for receipt in receipts:
            path = receipts_dir / _receipt_path(receipt.name)
            if path.exists() or any(parent.is_file() for parent in path.parents):
                raise TeardownError(
                    f"receipt object receipts/{receipt.name} collides with another receipt "
                    "object used as a folder; rename one of them in the receipts bucket"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(receipt.data)

        history, audit = self._flag_history()
        resources = self._stack_resources()
        metrics = self._metrics(state)

        (self.inputs_dir / "orders.json").write_bytes(json_bytes(orders))
        extra = self.inputs_dir / "extra"
        extra.mkdir(exist_ok=True)
        (extra / FLAG_HISTORY).write_bytes(json_bytes(history))
        (extra / FLAG_AUDIT).write_bytes(audit)
        (extra / STACK_RESOURCES).write_bytes(json_bytes(resources))
        (extra / METRICS).write_bytes(json_bytes(metrics))
        (self.inputs_dir / "orders-source.txt").write_text(source)
        logger.info(
            "export: %d order(s) by %s, %d dead letter(s), %d receipt file(s), "
            "%d flag version(s), %d deployment(s), %d stack resource(s), %d metric series",
            len(orders),
            source,
            len(letters),
            len(receipts),
            len(history["versions"]),
            len(history["deployments"]),
            len(resources),
            len(metrics["series"]),
        )

    def _read_orders(self, state: TeardownState) -> tuple[list[dict[str, Any]], str]:
        dynamodb = self.clients("dynamodb")
        table = str(self.outputs()["ordersTable"])
        size, count, table_arn = aws.table_size(dynamodb, table)
        if size < self.options.native_export_min_bytes and state.native_export_arn is None:
            segments = self.options.scan_segments
            with self.progress(f"Scanning {table} in {segments} segments", total=count) as update:
                read = 0

                def advance(items: int) -> None:
                    nonlocal read
                    read += items
                    update(completed=read)

                return aws.scan_table(dynamodb, table, segments, on_items=advance), "scan"
        bucket = state.exports_bucket
        if state.native_export_arn is None:
            prefix = export_prefix(state.event_id) + "dynamodb-export"
            moment = datetime.fromisoformat(state.drained_at or _iso(self.clock()))
            token = f"popstack-{state.event_id}-{int(moment.timestamp())}"
            state.native_export_prefix = prefix
            state.native_export_arn = aws.start_native_export(
                dynamodb, table_arn, bucket, prefix, min(moment, self.clock()), token
            )
            # Saved at once, so a resumed run waits for this export instead of a new one.
            self.store.save(state)
        with self.progress(f"Waiting for the DynamoDB export of {table}"):
            aws.wait_for_native_export(
                dynamodb,
                state.native_export_arn,
                self.options.native_export_timeout,
                self.options.native_export_poll,
                sleep=self.sleep,
                monotonic=self.monotonic,
            )
        items = aws.read_native_export(self.clients("s3"), bucket, state.native_export_prefix or "")
        return items, "native export"

    def _flag_history(self) -> tuple[dict[str, Any], bytes]:
        """Return every flag version and deployment, and the audit log as CSV bytes.

        Reasons and descriptions are free text an operator typed, so they are redacted
        like the other free text of the export.
        """
        store = self.flag_store()
        versions = []
        read: list[HostedVersion] = []
        for summary in store.version_summaries():
            version = store.read(summary["VersionNumber"])
            # The list's label: moto 5.2 returns "None" in the header when unset.
            label = summary.get("VersionLabel")
            read.append(HostedVersion(version.number, label, version.description, version.document))
            record = AuditRecord.parse(version.description)
            entry: dict[str, Any] = {"version": version.number, "label": label}
            if record is not None:
                entry["audit"] = {
                    "actor": redact_text(record.actor)[0],
                    "at": record.at,
                    "reason": redact_text(record.reason)[0],
                }
            else:
                entry["description"] = redact_text(version.description or "")[0]
            values = version.document.get("values")
            # Kept as AppConfig stores them, even when a console edit left an odd shape.
            entry["values"] = (
                {
                    str(name): value.get("enabled") if isinstance(value, dict) else value
                    for name, value in sorted(values.items())
                }
                if isinstance(values, dict)
                else values
            )
            versions.append(entry)
        raw_deployments = store.deployments()
        deployments = [
            {
                "deployment": item["DeploymentNumber"],
                "version": item.get("ConfigurationVersion"),
                "state": item.get("State"),
                "startedAt": _iso(item["StartedAt"]) if item.get("StartedAt") else None,
                "completedAt": _iso(item["CompletedAt"]) if item.get("CompletedAt") else None,
            }
            for item in raw_deployments
        ]
        history = {
            "applicationId": store.target.application_id,
            "profileId": store.target.profile_id,
            "environmentId": store.target.environment_id,
            "versions": versions,
            "deployments": deployments,
        }
        return history, flag_audit_csv(audit_log(read, raw_deployments))

    def _stack_resources(self) -> list[dict[str, str]]:
        """Return the type and URN of every resource in the stack's state, no properties."""
        exported = self.engine.export_state(self.stack)
        if isinstance(exported, (str, bytes)):
            exported = json.loads(exported)
        deployment = exported.get("deployment", exported)
        return [
            {"type": str(resource["type"]), "urn": str(resource["urn"])}
            for resource in deployment.get("resources") or []
        ]

    def _metrics(self, state: TeardownState) -> dict[str, Any]:
        window = self.spec().window
        start = window.pre_sync_starts.astimezone(UTC)
        closed = datetime.fromisoformat(state.closed_at or _iso(self.clock()))
        end = max(window.closes.astimezone(UTC), closed) + timedelta(hours=1)
        cloudwatch = self.clients("cloudwatch")
        body = aws.read_dashboard(cloudwatch, str(self.outputs()["dashboardName"]))
        queries = aws.dashboard_queries(body)
        series = [
            {
                "widget": query.widget,
                "namespace": query.namespace,
                "metric": query.metric,
                "dimensions": dict(query.dimensions),
                "stat": query.stat,
                "period": query.period,
                "points": [[_iso(moment), value] for moment, value in points],
            }
            for query, points in aws.metric_data(cloudwatch, queries, start, end)
        ]
        return {
            "dashboard": str(self.outputs()["dashboardName"]),
            "start": _iso(start),
            "end": _iso(end),
            "series": series,
        }

    # Step 4

    def _step_reconcile(self, state: TeardownState) -> None:
        if not (self.inputs_dir / "orders.json").exists():
            logger.info("reconcile: staged inputs are missing; reading them again")
            self._step_export(state)
        if not self.options.settlements:
            self._require_force(
                state,
                "no settlement report was given, so payments cannot be reconciled",
                "pass --settlements FILE[:LAYOUT[:FORMAT]] once the provider's report arrived",
            )
        self._check_settlements(state)
        bundle = self._write_export(state)
        counts = ", ".join(
            f"{name}={count}" for name, count in bundle.reconciliation.class_counts().items()
        )
        logger.info(
            "reconcile: %d settlement file(s), %d export file(s), manifest sha256 %s; %s",
            len(self.options.settlements),
            len(bundle.manifest["files"]),
            bundle.manifest_sha256,
            counts,
        )

    def _check_settlements(self, state: TeardownState) -> None:
        given = [
            SettlementRecord(item.name, aws.sha256_hex(item.data), item.layout, item.format)
            for item in self.options.settlements
        ]
        if state.settlements and given != state.settlements:
            names = ", ".join(record.name for record in state.settlements)
            raise TeardownError(
                f"the settlement reports differ from those an earlier run of this teardown "
                f"used ({names}); pass the same files with the same layouts and formats"
            )
        state.settlements = given

    def _write_export(self, state: TeardownState):
        spec = self.spec()
        inputs = self.inputs_dir
        receipts_format = _csv_format(self.options.receipts_format)
        receipts_dir = inputs / "receipts"
        receipt_files = [
            InputFile(path.relative_to(receipts_dir).as_posix(), path.read_bytes(), receipts_format)
            for path in sorted(receipts_dir.rglob("*"))
            if path.is_file()
        ]
        settlement_files = [
            InputFile(item.name, item.data, _csv_format(item.format), item.layout)
            for item in self.options.settlements
        ]
        letters = [
            aws.DeadLetter.from_staged(item).record()
            for item in json.loads((inputs / "dead-letters.json").read_bytes())
        ]
        extra = {path.name: path.read_bytes() for path in sorted((inputs / "extra").iterdir())}
        extra[TEARDOWN_FILE] = json_bytes(self._teardown_record(state, spec))
        context = ExportContext(
            event_id=state.event_id,
            opens=spec.window.opens,
            closes=spec.window.closes,
            time_zone=spec.window.time_zone,
        )
        return write_bundle(
            self.export_dir,
            context,
            orders=json.loads((inputs / "orders.json").read_bytes()),
            settlement_files=settlement_files,
            receipt_files=receipt_files,
            dead_letters=letters,
            extra_files=extra,
        )

    def _teardown_record(self, state: TeardownState, spec: EventSpec) -> dict[str, Any]:
        source = self.inputs_dir / "orders-source.txt"
        return {
            "stack": self.stack,
            "eventId": state.event_id,
            "closedAt": state.closed_at,
            "flagVersion": state.flag_version,
            "flagDeployment": state.flag_deployment,
            "ordersSource": source.read_text() if source.exists() else None,
            "remainingOrderMessages": state.remaining_order_messages,
            "deadLetterIds": [record.message_id for record in state.dead_letters],
            "settlements": [
                {"name": r.name, "sha256": r.sha256, "layout": r.layout, "format": r.format}
                for r in state.settlements
            ],
            "forced": list(state.forced),
            "forceReason": state.force_reason,
        }

    # Step 5

    def _step_upload(self, state: TeardownState) -> None:
        local = read_manifest(self.export_dir)
        if local is None or not verify(self.export_dir).ok:
            logger.info("upload: the local export is missing or incomplete; writing it again")
            self._step_reconcile(state)
            local = read_manifest(self.export_dir)
            assert local is not None
        manifest, manifest_sha256 = local
        s3 = self.clients("s3")
        bucket = state.exports_bucket
        prefix = export_prefix(state.event_id)
        names = [str(entry["name"]) for entry in manifest["files"]] + [MANIFEST]
        with self.progress("Uploading the export", total=len(names)) as update:
            for done, name in enumerate(names, start=1):
                data = (self.export_dir / name).read_bytes()
                put_object(s3, bucket, prefix + name, data, _content_type(name))
                update(completed=done)

        def read_back(name: str) -> bytes:
            return aws.read_object(s3, bucket, prefix + name)

        with self.progress("Reading the export back", total=None):
            result = verify(read_back, None, manifest_sha256=manifest_sha256)
        if not result.ok:
            raise TeardownError(
                f"the uploaded export does not match its manifest: {result}; run teardown "
                "again to upload it again"
            )
        state.manifest_uri = f"s3://{bucket}/{prefix}{MANIFEST}"
        state.manifest_sha256 = manifest_sha256
        logger.info(
            "upload: %d file(s) uploaded and read back; manifest %s sha256 %s",
            len(names),
            state.manifest_uri,
            manifest_sha256,
        )

    def _require_verified(self, state: TeardownState, step: str) -> None:
        """Refuse `step` unless the export in the bucket matches the recorded manifest now.

        The recorded state alone is not trusted: a stale or edited state file must not
        let revoke or destroy run, so every file is read back from S3 again.
        """
        if not (state.done("upload") and state.verified):
            raise TeardownRefused(
                f"step {step} needs a verified export, and none is recorded for stack "
                f"{self.stack}; run teardown again so that step upload uploads and verifies it"
            )
        if self._verified_manifest == state.manifest_sha256:
            return
        s3 = self.clients("s3")
        prefix = export_prefix(state.event_id)

        def read_back(name: str) -> bytes:
            return aws.read_object(s3, state.exports_bucket, prefix + name)

        result = verify(read_back, None, manifest_sha256=state.manifest_sha256)
        if not result.ok:
            raise TeardownRefused(
                f"step {step} rejected: the export in s3://{state.exports_bucket}/{prefix} no "
                f"longer matches the verified manifest (sha256 {state.manifest_sha256}): "
                f"{result}; restore the export or remove the teardown state to export again"
            )
        self._verified_manifest = state.manifest_sha256

    # Step 6

    def _step_revoke(self, state: TeardownState) -> None:
        self._require_verified(state, "revoke")
        secretsmanager = self.clients("secretsmanager")
        revoked = []
        skipped = 0
        for arn in self._secret_arns():
            result = aws.revoke_secret(secretsmanager, arn)
            if result.already_deleted:
                skipped += 1
            revoked.append(arn)
        state.revoked_secrets = revoked
        logger.info(
            "revoke: %d secret(s) replaced and scheduled for deletion, %d already scheduled "
            "(arns: %s)",
            len(revoked) - skipped,
            skipped,
            ", ".join(revoked) or "none",
        )

    def _secret_arns(self) -> list[str]:
        outputs = self.outputs()
        arns = list((outputs.get("secretArns") or {}).values())
        if outputs.get("cacheAuthSecretArn"):
            arns.append(outputs["cacheAuthSecretArn"])
        return sorted(str(arn) for arn in arns)

    # Step 7

    def _step_destroy(self, state: TeardownState) -> None:
        self._require_verified(state, "destroy")
        if not self._has_resources():
            # An earlier run destroyed the stack and stopped before recording it; an `up`
            # now would create the stack again.
            state.destroyed = True
            logger.info("destroy: stack %s has no resources left; nothing to do", self.stack)
            return
        value = f"{state.manifest_uri}#sha256={state.manifest_sha256}"
        key = f"{NAMESPACE}:{EXPORT_VERIFIED_KEY}"
        self.engine.set_config(self.stack, key, value)
        update = self._engine_call("up", "dropping protection")
        store = self.flag_store()
        summaries = store.version_summaries()
        owned = self._program_flag_versions(summaries)
        deleted = []
        for summary in summaries:
            number = int(summary["VersionNumber"])
            if number not in owned:
                store.delete(number)
                deleted.append(number)
        state.deleted_flag_versions = sorted(set(state.deleted_flag_versions) | set(deleted))
        destroy = self._engine_call("destroy", "destroying the stack")
        state.destroyed = True
        logger.info(
            "destroy: set %s, up (%s), deleted flag version(s) %s, destroy (%s)",
            key,
            update.summary,
            ", ".join(map(str, deleted)) or "none",
            destroy.summary,
        )

    def _program_flag_versions(self, summaries: list[dict[str, Any]]) -> set[int]:
        """Return the hosted version numbers the Pulumi program owns, which destroy deletes.

        Every other version (operators' flips, the calendar's, teardown's own, any made
        in the console) would make AppConfig refuse to delete the profile. The program's
        versions are read from the stack's state. When the state records none (older
        resources record no outputs), the lowest-numbered version is kept, because it is
        the first one `pulumi up` wrote.
        """
        exported = self.engine.export_state(self.stack)
        deployment = exported.get("deployment", exported)
        owned = set()
        for resource in deployment.get("resources") or []:
            if resource.get("type") != HOSTED_VERSION_TYPE:
                continue
            number = (resource.get("outputs") or {}).get("versionNumber")
            if isinstance(number, int | float):
                owned.add(int(number))
        if not owned and summaries:
            owned.add(min(int(summary["VersionNumber"]) for summary in summaries))
        return owned

    def _has_resources(self) -> bool:
        exported = self.engine.export_state(self.stack)
        deployment = exported.get("deployment", exported)
        return bool(deployment.get("resources"))

    def _engine_call(self, operation: str, description: str):
        with self.progress(f"pulumi {operation}: {description}", total=None) as update:

            def show(line: str) -> None:
                update(description=f"pulumi {operation}: {line.strip()[:80]}")

            result = getattr(self.engine, operation)(self.stack, on_output=show)
        if not result.ok:
            raise TeardownError(
                f"pulumi {operation} of stack {self.stack} failed ({result.kind}): "
                f"{result.message}; fix the cause and run teardown again, it resumes at "
                "step destroy"
            )
        return result


def _records(letters: list[aws.DeadLetter]) -> list[DeadLetterRecord]:
    return [
        DeadLetterRecord(letter.message_id, letter.sent_at, letter.receive_count)
        for letter in letters
    ]


def _replace_count(letter: aws.DeadLetter, count: int) -> aws.DeadLetter:
    staged = letter.staged()
    staged["receiveCount"] = count
    return aws.DeadLetter.from_staged(staged)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _receipt_path(name: str) -> Path:
    """Return a staff-uploaded receipt's key as a relative path inside the staging folder."""
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts):
        raise TeardownError(
            f"receipt object key receipts/{name} has an empty, '.' or '..' path segment; "
            "rename it in the receipts bucket to receipts/<location id>/<file>.csv"
        )
    return Path(*parts)


def _csv_format(name: str) -> CsvFormat:
    if name not in FORMATS:
        raise TeardownError(f"CSV format {name!r} is unknown; use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def _content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


def settlement_argument(text: str) -> SettlementInput:
    """Parse `FILE[:LAYOUT[:FORMAT]]` and read the file; LAYOUT defaults to stripe."""
    parts = text.split(":")
    path, layout, fmt = text, "stripe", "default"
    if len(parts) >= 3 and parts[-2] in LAYOUTS and parts[-1] in FORMATS:
        path, layout, fmt = ":".join(parts[:-2]), parts[-2], parts[-1]
    elif len(parts) >= 2 and parts[-1] in LAYOUTS:
        path, layout = ":".join(parts[:-1]), parts[-1]
    elif len(parts) >= 2 and parts[-1] in FORMATS:
        raise TeardownError(
            f"--settlements {text!r}: FORMAT {parts[-1]!r} needs a LAYOUT before it; write "
            f"FILE:LAYOUT:FORMAT with LAYOUT one of {', '.join(LAYOUTS)}"
        )
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TeardownError(f"--settlements {text!r}: file {path} not found") from None
    return SettlementInput(Path(path).name, data, layout, fmt)


@dataclass(frozen=True)
class TeardownOutcome:
    """Result of a non-interactive teardown, such as one run by `popstack expire --teardown`."""

    ok: bool
    message: str
    result: TeardownResult | None = None


def run_teardown(stack: str, engine: Any, *, yes: bool, reason: str | None) -> TeardownOutcome:
    """Tear one stack down with default options and AWS clients from the environment.

    `yes` is the caller's approval of the destroy; without it nothing runs.
    `reason` is a force reason: it lets teardown go on past a non-empty queue
    or missing settlements, and is recorded in the export.
    """
    if not yes:
        return TeardownOutcome(False, f"teardown of {stack} needs approval; rerun with --yes")
    runner = Teardown(stack, engine, aws.Clients(), TeardownOptions(force_reason=reason))
    try:
        result = runner.run()
    except TeardownError as error:
        return TeardownOutcome(False, str(error))
    state = result.state
    verb = "was already torn down" if result.already_torn_down else "torn down"
    return TeardownOutcome(True, f"{stack} {verb}; verified export {state.manifest_uri}", result)
