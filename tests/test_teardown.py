"""Teardown against moto in server mode, with a RecordingEngine for the Pulumi engine.

The event's resources are created in moto by ``tests/deployed_event.py``. AppConfig
environments, deployments and ListHostedConfigurationVersions are missing from moto
5.2, so those calls go to botocore's Stubber (``AppConfigControl``), with responses in
the real shapes. Hosted versions themselves are created, read and deleted in moto.

The export is compared byte for byte with ``tests/data/teardown/expected``. To write
those files again after an intended change, run the tests with
``POPSTACK_WRITE_EXPECTED=1`` and read the diff before committing it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from components.spec import EXPORT_VERIFIED_KEY, load_stack_file
from popstack import teardown_commands
from popstack.engine import RecordingEngine
from teardown.aws import Clients
from teardown.state import STATE_FILE
from teardown.steps import (
    STEPS,
    TeardownError,
    TeardownRefused,
    settlement_argument,
)
from tests.deployed_event import (
    CLOSED_AT,
    DATA,
    EVENT_ID,
    EXPORTS_BUCKET,
    STACK,
    DeployedEvent,
    SqsClock,
    deploy_event,
    expect_control,
    make_teardown,
    options,
)

EXPECTED = DATA / "expected"
PREFIX = f"exports/{EVENT_ID}/"
WRITE_EXPECTED = os.environ.get("POPSTACK_WRITE_EXPECTED") == "1"


@pytest.fixture
def sqs_clock(monkeypatch: pytest.MonkeyPatch) -> SqsClock:
    clock = SqsClock(CLOSED_AT.replace(hour=15))
    monkeypatch.setattr("moto.sqs.models.unix_time_millis", clock)
    return clock


@pytest.fixture
def event(
    moto_reset: None,
    aws_client: Callable[..., Any],
    moto_api: Callable[..., None],
    tmp_path: Path,
    sqs_clock: SqsClock,
) -> Iterator[DeployedEvent]:
    deployed = deploy_event(aws_client, moto_api, tmp_path / "project", sqs_clock)
    yield deployed
    deployed.control.stubber.deactivate()


def exported_files(event: DeployedEvent) -> dict[str, bytes]:
    """Return the latest version of every export object except the teardown state."""
    s3 = event.clients["s3"]
    files = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=EXPORTS_BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            name = item["Key"].removeprefix(PREFIX)
            if name == STATE_FILE or name.startswith("dynamodb-export/"):
                continue
            files[name] = s3.get_object(Bucket=EXPORTS_BUCKET, Key=item["Key"])["Body"].read()
    return files


def expected_files() -> dict[str, bytes]:
    return {
        path.relative_to(EXPECTED).as_posix(): path.read_bytes()
        for path in sorted(EXPECTED.rglob("*"))
        if path.is_file()
    }


def assert_matches_expected(files: dict[str, bytes]) -> None:
    if WRITE_EXPECTED:
        shutil.rmtree(EXPECTED, ignore_errors=True)
        for name, data in files.items():
            path = EXPECTED / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    expected = expected_files()
    assert sorted(files) == sorted(expected)
    for name in expected:
        assert files[name] == expected[name], f"{name} differs from the expected file"


def engine_operations(engine: RecordingEngine) -> list[str]:
    return [call[0] for call in engine.calls if call[0] in ("set_config", "up", "destroy")]


def test_full_teardown_writes_expected_export(event: DeployedEvent, tmp_path: Path) -> None:
    expect_control(event, list(STEPS))
    result = make_teardown(event, tmp_path / "operator").run()

    event.control.stubber.assert_no_pending_responses()
    state = result.state
    assert result.already_torn_down is False
    assert state.steps_done == list(STEPS)
    assert state.destroyed is True
    assert state.closed_at == "2027-06-05T17:10:00Z"
    assert state.manifest_uri == f"s3://{EXPORTS_BUCKET}/{PREFIX}manifest.json"
    files = exported_files(event)
    assert_matches_expected(files)

    import hashlib

    assert state.manifest_sha256 == hashlib.sha256(files["manifest.json"]).hexdigest()
    manifest = json.loads(files["manifest.json"])
    listed = {entry["name"] for entry in manifest["files"]}
    assert {"orders.csv", "dead_letters.csv", "reconciliation.parquet", "teardown.json"} <= listed
    assert {"flag-history.json", "stack-resources.json", "metrics.json"} <= listed
    assert listed | {"manifest.json"} == set(files)
    totals = {t["currency"]: t["amount"] for t in manifest["totals"]["currency"]}
    assert totals == {"EUR": "28.90", "JPY": "5400", "KWD": "12.345", "USD": "15.00"}


def test_destroy_after_many_flips(event: DeployedEvent, tmp_path: Path) -> None:
    """AppConfig rejects deleting a profile that has hosted versions, by any writer.

    60 flips, every third one made in the console without a label, so the listing spans
    two pages of 50.
    """
    appconfig, control = event.clients["appconfig"], event.control
    target = {
        "ApplicationId": control.application_id,
        "ConfigurationProfileId": control.profile_id,
    }
    document = json.loads(
        appconfig.get_hosted_configuration_version(**target, VersionNumber=1)["Content"].read()
    )
    for flip in range(60):
        document["values"]["elevated_sampling"] = {"enabled": flip % 2 == 0}
        label = None if flip % 3 == 0 else "popstack-flag"
        appconfig.create_hosted_configuration_version(
            **target,
            Content=json.dumps(document).encode(),
            ContentType="application/json",
            **({"VersionLabel": label} if label else {}),
            Description=f"flip {flip}",
        )
        control.add_version(label)
    expect_control(event, list(STEPS))

    result = make_teardown(event, tmp_path / "operator").run()

    control.stubber.assert_no_pending_responses()
    assert result.state.deleted_flag_versions == list(range(2, 63))
    assert (
        appconfig.get_hosted_configuration_version(**target, VersionNumber=1)["VersionNumber"] == 1
    )
    for number in (2, 50, 51, 62):
        with pytest.raises(ClientError):
            appconfig.get_hosted_configuration_version(**target, VersionNumber=number)
    audit = exported_files(event)["flag-audit.csv"].decode().splitlines()
    # A header, the six initial values, one row per flip and teardown's checkout off.
    assert len(audit) == 1 + 6 + 60 + 1
    assert audit[7] == ("2,,unknown (not made with popstack),flip 0,elevated_sampling,off,on,,,")
    assert audit[-1].startswith("62,2027-06-05T17:10:00Z,popstack teardown,")


def test_full_teardown_side_effects(event: DeployedEvent, tmp_path: Path) -> None:
    expect_control(event, list(STEPS))
    make_teardown(event, tmp_path / "operator").run()

    appconfig = event.clients["appconfig"]
    control = event.control
    # The close step deployed version 2, all at once, with checkout off.
    assert [(d["number"], d["version"]) for d in control.deployments] == [(1, 1), (2, 2)]
    # Step destroy deleted the version teardown created; the Pulumi-managed one is left.
    with pytest.raises(ClientError):
        appconfig.get_hosted_configuration_version(
            ApplicationId=control.application_id,
            ConfigurationProfileId=control.profile_id,
            VersionNumber=2,
        )
    initial = appconfig.get_hosted_configuration_version(
        ApplicationId=control.application_id,
        ConfigurationProfileId=control.profile_id,
        VersionNumber=1,
    )
    assert initial["VersionNumber"] == 1

    operations = engine_operations(event.engine)
    assert operations == ["set_config", "up", "destroy"]
    set_call = next(call for call in event.engine.calls if call[0] == "set_config")
    assert set_call[2] == f"popstack:{EXPORT_VERIFIED_KEY}"
    state = json.loads((tmp_path / "operator/.popstack/teardown/tdemo.json").read_text())
    assert set_call[3] == f"{state['manifestUri']}#sha256={state['manifestSha256']}"
    update = event.engine.updates[-1]
    assert update.config[f"popstack:{EXPORT_VERIFIED_KEY}"].value == set_call[3]

    secretsmanager = event.clients["secretsmanager"]
    for arn in event.secret_arns:
        description = secretsmanager.describe_secret(SecretId=arn)
        assert description.get("DeletedDate") is not None
        stages = description["VersionIdsToStages"]
        labelled = {label for labels in stages.values() for label in labels}
        assert labelled == {"AWSCURRENT"}
    assert sorted(state["revokedSecrets"]) == event.secret_arns

    # Dead letters stay in the queue; only the destroy removes them.
    sqs = event.clients["sqs"]
    counts = sqs.get_queue_attributes(
        QueueUrl=event.outputs["deadLetterQueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    held = int(counts["ApproximateNumberOfMessages"])
    held += int(counts["ApproximateNumberOfMessagesNotVisible"])
    assert held == 2
    # The raw inputs (personal data) are gone from the operator's disk.
    assert not (tmp_path / "operator/.popstack/teardown/tdemo/inputs").exists()


def test_teardown_logs_one_line_per_step(
    event: DeployedEvent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expect_control(event, list(STEPS))
    with caplog.at_level(logging.INFO, logger="popstack.teardown"):
        make_teardown(event, tmp_path / "operator").run()

    lines = [r.getMessage() for r in caplog.records if r.name == "popstack.teardown"]
    assert [line.split(":")[0] for line in lines] == list(STEPS)
    assert lines[0].startswith("close: created version 2 with checkout off (deployment 2)")
    assert "read 2 dead letter(s)" in lines[1]
    assert lines[2].startswith("export: 7 order(s) by scan, 2 dead letter(s), 1 receipt file(s)")
    assert "2 secret(s) replaced and scheduled for deletion" in lines[5]
    state_text = (tmp_path / "operator/.popstack/teardown/tdemo.json").read_text()
    for text in [*lines, state_text]:
        for value in event.initial_secret_values.values():
            parsed = json.loads(value)
            assert (parsed.get("token") or parsed["password"]) not in text
        assert "rui@example.org" not in text
        assert "inventory sync failed" not in text


def test_revoked_secret_old_value_not_current(event: DeployedEvent, tmp_path: Path) -> None:
    expect_control(event, list(STEPS))
    make_teardown(event, tmp_path / "operator").run()

    secretsmanager = event.clients["secretsmanager"]
    for arn, old in event.initial_secret_values.items():
        with pytest.raises(ClientError) as raised:
            secretsmanager.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")
        # A secret scheduled for deletion cannot be read at all.
        assert raised.value.response["Error"]["Code"] == "InvalidRequestException"
        versions = secretsmanager.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)
        current = [v for v in versions["Versions"] if "AWSCURRENT" in v.get("VersionStages", [])]
        assert len(current) == 1
        assert old not in json.dumps(versions, default=str)


INTERRUPTIONS = [
    ("close", RuntimeError("simulated crash")),
    ("drain", KeyboardInterrupt()),
    ("export", RuntimeError("simulated crash")),
    ("reconcile", KeyboardInterrupt()),
    ("upload", RuntimeError("simulated crash")),
    ("revoke", KeyboardInterrupt()),
    ("destroy", RuntimeError("simulated crash")),
]


@pytest.mark.parametrize(("step", "error"), INTERRUPTIONS, ids=[s for s, _ in INTERRUPTIONS])
def test_interrupted_teardown_resumes_identically(
    event: DeployedEvent, tmp_path: Path, step: str, error: BaseException
) -> None:
    fired: list[str] = []

    def crash_after_work(name: str, phase: str) -> None:
        if name == step and phase == "after" and not fired:
            fired.append(name)
            raise error

    index = STEPS.index(step)
    root = tmp_path / "operator"
    expect_control(event, list(STEPS[: index + 1]))
    with pytest.raises(type(error)):
        make_teardown(event, root, hook=crash_after_work).run()
    assert fired == [step]
    event.control.stubber.assert_no_pending_responses()
    saved = json.loads((root / ".popstack/teardown/tdemo.json").read_text())
    assert saved["stepsDone"] == list(STEPS[:index])
    if index < STEPS.index("destroy"):
        assert "destroy" not in engine_operations(event.engine)

    # A destroy that finished before the crash is not run again, so it needs no stubbed responses.
    expect_control(event, list(STEPS[index:]) if step != "destroy" else [])
    result = make_teardown(event, root).run()

    event.control.stubber.assert_no_pending_responses()
    assert result.state.steps_done == list(STEPS)
    assert result.state.destroyed is True
    assert_matches_expected(exported_files(event))
    assert engine_operations(event.engine).count("destroy") == 1
    # Step close created one hosted version, however often it ran.
    assert [d["version"] for d in event.control.deployments] == [1, 2]


def test_staged_inputs_lost_reads_queue_again(
    event: DeployedEvent, tmp_path: Path, sqs_clock: SqsClock
) -> None:
    root = tmp_path / "operator"
    expect_control(event, ["close", "export"])
    teardown = make_teardown(event, root, options(dead_letter_visibility=30))

    def stop_after_export(name: str, phase: str) -> None:
        if name == "export" and phase == "after":
            raise RuntimeError("simulated crash")

    teardown.hook = stop_after_export
    with pytest.raises(RuntimeError):
        teardown.run()
    shutil.rmtree(root / ".popstack/teardown/tdemo")
    # The dead letters were hidden for 30 s by the first read; let that pass.
    sqs_clock.advance(31)

    expect_control(event, ["export", "destroy"])
    make_teardown(event, root, options(dead_letter_visibility=30)).run()

    event.control.stubber.assert_no_pending_responses()
    assert_matches_expected(exported_files(event))


def test_native_export_gives_same_orders(event: DeployedEvent, tmp_path: Path) -> None:
    expect_control(event, list(STEPS))
    result = make_teardown(event, tmp_path / "operator", options(native_export_min_bytes=0)).run()

    assert result.state.native_export_arn is not None
    files = exported_files(event)
    expected = expected_files()
    for name in ("orders.csv", "orders.parquet", "reconciliation.csv", "totals.csv"):
        assert files[name] == expected[name], f"{name} differs from the scan's export"
    record = json.loads(files["teardown.json"])
    assert record["ordersSource"] == "native export"
    keys = event.clients["s3"].list_objects_v2(
        Bucket=EXPORTS_BUCKET, Prefix=f"{PREFIX}dynamodb-export/"
    )
    assert any(item["Key"].endswith(".gz") for item in keys["Contents"])


def test_destroy_refused_before_verified_export(event: DeployedEvent, tmp_path: Path) -> None:
    teardown = make_teardown(event, tmp_path / "operator")
    state = teardown._load_state()
    state.steps_done = ["close", "drain", "export", "reconcile"]

    with pytest.raises(TeardownRefused) as raised:
        teardown._step_destroy(state)

    assert "verified export" in str(raised.value)
    assert engine_operations(event.engine) == []
    with pytest.raises(TeardownRefused):
        teardown._step_revoke(state)
    secretsmanager = event.clients["secretsmanager"]
    for arn in event.secret_arns:
        assert secretsmanager.describe_secret(SecretId=arn).get("DeletedDate") is None


def test_teardown_stops_without_settlements(event: DeployedEvent, tmp_path: Path) -> None:
    root = tmp_path / "operator"
    expect_control(event, ["close", "export"])

    with pytest.raises(TeardownRefused) as raised:
        make_teardown(event, root, options(settlements=[])).run()

    assert "no settlement report was given" in str(raised.value)
    assert "--force-reason" in str(raised.value)
    saved = json.loads((root / ".popstack/teardown/tdemo.json").read_text())
    assert saved["stepsDone"] == ["close", "drain", "export"]
    assert engine_operations(event.engine) == []
    # A later run with the report picks up at reconcile.
    expect_control(event, ["destroy"])
    result = make_teardown(event, root).run()
    assert result.state.destroyed is True
    assert_matches_expected(exported_files(event))


def test_undrained_queue_refused_then_forced(event: DeployedEvent, tmp_path: Path) -> None:
    root = tmp_path / "operator"
    sqs = event.clients["sqs"]
    sqs.send_message(QueueUrl=event.outputs["orderQueueUrl"], MessageBody='{"orderId":"o-9"}')
    expect_control(event, ["close"])

    with pytest.raises(TeardownRefused) as raised:
        make_teardown(event, root, options(drain_timeout=0)).run()
    assert "the order queue still held 1 message(s)" in str(raised.value)
    assert engine_operations(event.engine) == []

    reason = "fulfilment worker is down; ops ticket 4411 re-sends the order by hand"
    expect_control(event, ["export", "destroy"])
    result = make_teardown(event, root, options(drain_timeout=0, force_reason=reason)).run()

    assert result.state.destroyed is True
    files = exported_files(event)
    record = json.loads(files["teardown.json"])
    assert record["forceReason"] == reason
    assert record["forced"] == [
        "the order queue still held 1 message(s) after the 0 s drain timeout"
    ]
    assert record["remainingOrderMessages"] == 1
    manifest = json.loads(files["manifest.json"])
    entry = next(item for item in manifest["files"] if item["name"] == "teardown.json")
    import hashlib

    assert entry["sha256"] == hashlib.sha256(files["teardown.json"]).hexdigest()


def test_already_torn_down_returns_early(event: DeployedEvent, tmp_path: Path) -> None:
    root = tmp_path / "operator"
    expect_control(event, list(STEPS))
    make_teardown(event, root).run()
    calls = len(event.engine.calls)

    again = make_teardown(event, root).run()

    assert again.already_torn_down is True
    assert engine_operations(event.engine) == ["set_config", "up", "destroy"]
    assert {call[0] for call in event.engine.calls[calls:]} <= {"exists", "outputs"}

    # A stack removed from the backend, on another machine, with a verified export.
    shutil.rmtree(root / ".popstack")
    other = RecordingEngine(tmp_path / "elsewhere")
    found = make_teardown(
        event,
        tmp_path / "elsewhere",
        options(exports_bucket=EXPORTS_BUCKET, event_id=EVENT_ID),
        engine=other,
    ).run()
    assert found.already_torn_down is True
    assert found.state.manifest_sha256 is not None


def test_missing_stack_without_state_fails(event: DeployedEvent, tmp_path: Path) -> None:
    with pytest.raises(TeardownError) as raised:
        make_teardown(event, tmp_path / "x", engine=RecordingEngine(tmp_path / "x")).run()
    assert "--exports-bucket" in str(raised.value)


def test_settlement_argument_layouts(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"x")
    assert settlement_argument(str(path)).layout == "stripe"
    generic = settlement_argument(f"{path}:generic")
    assert (generic.layout, generic.format) == ("generic", "default")
    eu = settlement_argument(f"{path}:generic:eu")
    assert (eu.name, eu.layout, eu.format, eu.data) == ("report.csv", "generic", "eu", b"x")
    with pytest.raises(TeardownError, match="needs a LAYOUT"):
        settlement_argument(f"{path}:eu")
    with pytest.raises(TeardownError, match="not found"):
        settlement_argument(str(tmp_path / "missing.csv"))


# pulumi_aws 7.51 warns about its own deprecated modules while the program imports them.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_program_protects_until_key_set(tmp_path: Path) -> None:
    """The engine-side guard: without the key the program marks data resources protected,
    and `pulumi destroy` refuses to delete a protected resource."""
    from popstack.mockrun import record_program

    source = Path(__file__).resolve().parent.parent / "stacks" / "Pulumi.lisbon-popup.yaml"
    protected = record_program(load_stack_file(source))
    unlocked_file = tmp_path / "Pulumi.lisbon-popup.yaml"
    unlocked_file.write_text(
        source.read_text()
        + f"  popstack:{EXPORT_VERIFIED_KEY}: s3://bucket-b/exports/x/manifest.json#sha256="
        + "0" * 64
        + "\n"
    )
    unlocked = record_program(load_stack_file(unlocked_file))

    def stateful(recording: Any) -> dict[str, Any]:
        kinds = ("aws:dynamodb/table:Table", "aws:sqs/queue:Queue", "aws:s3/bucket:Bucket")
        return {r.name: r for r in recording.resources if r.type in kinds}

    before, after = stateful(protected), stateful(unlocked)
    table = next(name for name in before if name.endswith("orders-table"))
    receipts = next(name for name in before if "receipts" in name)
    for name in (table, receipts, *[n for n in before if n.endswith(("-queue", "-dlq"))]):
        assert before[name].protect is True, name
        assert after[name].protect is False, name
    assert before[table].inputs["deletionProtectionEnabled"] is True
    assert after[table].inputs["deletionProtectionEnabled"] is False
    exports = next(name for name in before if "exports" in name)
    assert after[exports].retain_on_delete is True


def test_teardown_command_exit_codes(
    event: DeployedEvent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    app = typer.Typer()
    teardown_commands.register(app)
    monkeypatch.setattr(teardown_commands, "make_engine", lambda: event.engine)
    monkeypatch.setattr(teardown_commands, "make_clients", lambda: Clients(event.clients))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    expect_control(event, ["close", "export"])
    common = ["--yes", "--drain-timeout", "1", "--drain-poll", "0.1"]

    refused = runner.invoke(app, ["teardown", STACK, *common])
    assert refused.exit_code == teardown_commands.EXIT_REFUSED, refused.output
    assert "no settlement report was given" in refused.output

    expect_control(event, ["destroy"])
    reports = [
        "--settlements",
        str(DATA / "stripe-settlements.csv") + ":stripe",
        "--settlements",
        str(DATA / "generic-settlements-eu.csv") + ":generic:eu",
    ]
    done = runner.invoke(app, ["teardown", STACK, *common, *reports])
    assert done.exit_code == 0, done.output
    assert f"stack {STACK} torn down; verified export s3://{EXPORTS_BUCKET}" in done.output

    again = runner.invoke(app, ["teardown", STACK, *common])
    assert again.exit_code == 0, again.output
    assert "already torn down" in again.output
    for value in event.initial_secret_values.values():
        for text in (refused.output, done.output, again.output):
            parsed = json.loads(value)
            assert (parsed.get("token") or parsed["password"]) not in text


@pytest.mark.parametrize("name", ["../escape.csv", "/abs.csv", "market//x.csv", "market/./x.csv"])
def test_receipt_key_outside_staging_rejected(name: str) -> None:
    from teardown.steps import TeardownError, _receipt_path

    with pytest.raises(TeardownError, match="has an empty, '.' or '..' path segment"):
        _receipt_path(name)


def test_receipt_key_kept_as_relative_path() -> None:
    from teardown.steps import _receipt_path

    assert _receipt_path("market/day-1.csv") == Path("market", "day-1.csv")


@pytest.mark.parametrize("data", [b"[]", b'"text"', b'{"format": 1}'])
def test_state_of_wrong_shape_is_state_error(data: bytes) -> None:
    from teardown.state import StateError, TeardownState

    with pytest.raises(StateError, match="state"):
        TeardownState.from_json(data, "teardown-state.json")
