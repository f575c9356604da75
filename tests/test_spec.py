"""Tests for the event spec: every bad stack file gets one exact, actionable error.

Each file under tests/data/specs is tests/data/specs/valid.yaml with one value
broken, and its first-line comment names the change. Line numbers in the expected messages count
that first comment line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
from typer.testing import CliRunner

from components.spec import SpecError, load_stack_file, spec_from_config
from popstack import mockrun
from popstack.cli import app

# Running the program in-process imports pulumi_aws submodules, which warn about
# their own deprecated classes on first import.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

SPECS = Path(__file__).resolve().parent / "data" / "specs"
POPSTACK = Path(sys.executable).with_name("popstack")


def spec_error(name: str) -> tuple[Path, str]:
    """Load tests/data/specs/<name>.yaml and return its path and the SpecError text."""
    path = SPECS / f"{name}.yaml"
    with pytest.raises(SpecError) as caught:
        load_stack_file(path)
    return path, str(caught.value)


def one_problem(path: Path, problem: str) -> str:
    return f"{path}: 1 problem in the event spec\n  {problem}"


def test_valid_file_loads() -> None:
    stack_file = load_stack_file(SPECS / "valid.yaml")

    assert stack_file.stack == "valid"
    assert stack_file.spec.id == "spring-popup"
    assert stack_file.spec.checkout.max_replicas == 6
    assert [location.id for location in stack_file.spec.locations] == ["chiado", "alfama"]
    assert stack_file.secret_keys == []


def test_yaml_syntax_error_has_line_and_column() -> None:
    path, message = spec_error("yaml-syntax")

    # The parser notices the unclosed `[` at the `:` of the next key, line 20 column 20.
    assert message == one_problem(
        path,
        f"{path}:20:20: YAML syntax error: expected ',' or ']', but got ':'; fix the syntax there",
    )


def test_unknown_key_suggests_closest() -> None:
    path, message = spec_error("unknown-key")

    assert message == one_problem(
        path,
        f"{path}:23: popstack:checkout.maxReplica: unknown key 'maxReplica'; "
        "did you mean 'maxReplicas'?",
    )


def test_unknown_top_level_key_suggests_closest() -> None:
    path, message = spec_error("unknown-top-level-key")

    assert message == (
        f"{path}: 2 problems in the event spec\n"
        f"  {path}: popstack:window: is required but missing; add it to the stack file\n"
        f"  {path}:10: popstack:windows: unknown key 'windows'; did you mean 'window'?"
    )


def test_string_for_integer_field() -> None:
    path, message = spec_error("peak-rps-string")

    assert message == one_problem(
        path, f"{path}:19: popstack:peakRps: expected an integer, got str '120'"
    )


def test_decimal_for_integer_field_names_float() -> None:
    path, message = spec_error("peak-rps-float")

    # The type is Python's float, not ruamel's ScalarFloat wrapper.
    assert message == one_problem(
        path, f"{path}:19: popstack:peakRps: expected an integer, got float 120.5"
    )


def test_list_for_string_field() -> None:
    path, message = spec_error("title-list")

    assert message == one_problem(
        path, f"{path}:5: popstack:title: expected a string, got list ['Spring', 'pop-up']"
    )


def test_event_id_not_dns_label() -> None:
    path, message = spec_error("id-not-dns-label")

    assert message == one_problem(
        path,
        f"{path}:4: popstack:id: 'Spring_Popup' is not a DNS-1123 label; use lower-case "
        "letters, digits and '-', starting and ending with a letter or digit",
    )


def test_event_id_too_long_names_service_and_limit() -> None:
    path, message = spec_error("id-too-long")

    assert message == one_problem(
        path,
        f"{path}:4: popstack:id: 'spring-popup-lisbon-2027-weekend' is 32 characters, too "
        "long: ElastiCache serverless cache name 'ps-spring-popup-lisbon-2027-weekend-cache' "
        "is 41 characters; the limit is 40; shorten the id to at most 28 characters",
    )


def test_window_closes_before_opens() -> None:
    path, message = spec_error("closes-before-opens")

    assert message == one_problem(
        path,
        f"{path}:12: popstack:window.closes: closes (2027-03-25T19:00:00+00:00) is not after "
        "opens (2027-03-26T10:00:00+00:00); swap them or move closes later",
    )


def test_time_without_offset() -> None:
    path, message = spec_error("time-without-offset")

    assert message == one_problem(
        path,
        f"{path}:11: popstack:window.opens: 2027-03-26T10:00:00 has no UTC offset; add one, "
        "for example 2027-03-26T10:00:00+00:00",
    )


def test_offset_wrong_for_zone_after_dst() -> None:
    path, message = spec_error("offset-wrong-for-zone")

    # Lisbon moves to +01:00 at 01:00 UTC on 2027-03-28, so a 19:00 close that day is
    # +01:00. The author may have meant 19:00 local time or the instant 19:00 UTC, so
    # the message offers both.
    assert message == one_problem(
        path,
        f"{path}:12: popstack:window.closes: closes 2027-03-28T19:00:00+00:00 has offset "
        "+00:00 but Europe/Lisbon is at +01:00 then; write 2027-03-28T19:00:00+01:00 for "
        "19:00 local time, or 2027-03-28T20:00:00+01:00 for the same instant",
    )


def test_unknown_time_zone_suggests_closest() -> None:
    path, message = spec_error("unknown-time-zone")

    assert message == one_problem(
        path,
        f"{path}:13: popstack:window.timeZone: 'Europe/Lisbn' is not an IANA time zone; "
        "did you mean 'Europe/Lisbon'?",
    )


def test_duplicate_location_id() -> None:
    path, message = spec_error("duplicate-location-id")

    assert message == one_problem(
        path,
        f"{path}:17: popstack:locations[1].id: duplicate location id 'chiado'; give each "
        "location its own id",
    )


def test_min_replicas_above_max() -> None:
    path, message = spec_error("min-above-max-replicas")

    assert message == one_problem(
        path,
        f"{path}:22: popstack:checkout.minReplicas: minReplicas (8) is greater than "
        "maxReplicas (6); raise maxReplicas or lower minReplicas",
    )


@pytest.mark.parametrize(
    ("name", "days"), [("rotation-zero-days", 0), ("rotation-1001-days", 1001)]
)
def test_rotation_days_out_of_range(name: str, days: int) -> None:
    path, message = spec_error(name)

    assert message == one_problem(
        path,
        f"{path}:26: popstack:secrets[0].rotationDays: {days} days is outside what Secrets "
        "Manager accepts; use 1 to 1000",
    )


def test_secret_name_reserved_for_cache() -> None:
    path, message = spec_error("reserved-secret-name")

    # The cache's own AUTH secret is named cache-auth. A spec secret of that name would
    # give two rotation Lambdas, roles and log groups the same physical names.
    assert message == one_problem(
        path,
        f"{path}:25: popstack:secrets[0].name: 'cache-auth' is reserved for the cache's AUTH "
        "secret; choose another name",
    )


def test_unknown_currency() -> None:
    path, message = spec_error("unknown-currency")

    assert message == one_problem(
        path,
        f"{path}:9: popstack:currency: 'EUX' is not an ISO 4217 currency code; use three "
        "capitals such as EUR or JPY",
    )


def test_image_tag_latest() -> None:
    path, message = spec_error("image-latest")

    assert message == one_problem(
        path,
        f"{path}:21: popstack:checkout.image: 'ghcr.io/sardinha/checkout:latest' uses the tag "
        "'latest', which is rejected; pin a version tag or a digest",
    )


def test_image_without_tag() -> None:
    path, message = spec_error("image-no-tag")

    assert message == one_problem(
        path,
        f"{path}:21: popstack:checkout.image: 'ghcr.io/sardinha/checkout' has no tag or "
        "digest; pin it, for example ghcr.io/sardinha/checkout:1.4.2",
    )


def test_flag_for_unknown_location() -> None:
    path, message = spec_error("flag-unknown-location")

    assert message == one_problem(
        path,
        f"{path}:22: popstack:flags.locations.belem: 'belem' is not a location of this "
        "event; use one of ['alfama', 'chiado']",
    )


def test_secure_value_on_spec_key() -> None:
    path, message = spec_error("secure-spec-value")

    assert message == one_problem(
        path,
        f"{path}:7: popstack:owner: is a secure value, but event spec keys hold no secrets; "
        "write it in plain text (secret keys: kubeconfig)",
    )
    # The ciphertext is not echoed back.
    assert "c2VjcmV0LW93bmVy" not in message


@pytest.mark.parametrize("name", ["empty", "no-config"])
def test_file_without_config_mapping(name: str) -> None:
    path, message = spec_error(name)

    assert message == one_problem(
        path, f"{path}: no `config:` mapping; add `config:` with the `popstack:` keys"
    )


def test_non_utf8_file_names_byte_and_line() -> None:
    path, message = spec_error("not-utf8")
    offset = path.read_bytes().index("ç".encode("latin-1"))

    # The Latin-1 "ç" of the brand, on line 6, is the first byte that is not UTF-8.
    assert message == one_problem(
        path, f"{path}:6: byte {offset} is not UTF-8; save the file as UTF-8"
    )


def test_missing_file() -> None:
    path = SPECS / "no-such-stack.yaml"

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    assert str(caught.value) == one_problem(
        path, f"{path}: file not found; create it with `popstack new`"
    )


# --- Pulumi config path: the flat string map the engine hands the program ---------


def flat_config(**overrides: str) -> dict[str, str]:
    """Return valid.yaml's config as Pulumi passes it: every value text, objects as JSON."""
    window = {
        "opens": "2027-03-26T10:00:00+00:00",
        "closes": "2027-03-28T19:00:00+01:00",
        "timeZone": "Europe/Lisbon",
    }
    config = {
        "aws:region": "eu-west-1",
        "popstack:id": "spring-popup",
        "popstack:title": "Spring pop-up",
        "popstack:brand": "Sardinha & Co",
        "popstack:owner": "retail-platform",
        "popstack:costCentre": "CC-4410",
        "popstack:currency": "EUR",
        "popstack:window": json.dumps(window),
        "popstack:locations": json.dumps(
            [{"id": "chiado", "name": "Chiado flagship"}, {"id": "alfama", "name": "Alfama kiosk"}]
        ),
        "popstack:peakRps": "120",
        "popstack:checkout": json.dumps(
            {"image": "ghcr.io/sardinha/checkout:1.4.2", "minReplicas": 2, "maxReplicas": 6}
        ),
        "popstack:secrets": json.dumps([{"name": "payment-webhook", "rotationDays": 7}]),
        "popstack:alerts": json.dumps({"email": "oncall@example.com"}),
        "popstack:inventory": json.dumps(
            {"preSyncCommand": ["/app/bin/inventory-sync", "--all-locations"]}
        ),
        "popstack:escalation": json.dumps(
            [
                {
                    "level": 1,
                    "name": "Duty manager",
                    "role": "Store operations",
                    "when": "A till or terminal fails",
                    "phone": "+351 210 000 001",
                }
            ]
        ),
        "popstack:cluster": json.dumps(
            {
                "oidcProviderArn": "arn:aws:iam::111122223333:oidc-provider/"
                "oidc.eks.eu-west-1.amazonaws.com/id/5C0FFEE0",
                "oidcIssuer": "oidc.eks.eu-west-1.amazonaws.com/id/5C0FFEE0",
                "vpcId": "vpc-0a1b2c3d4e5f60718",
                "subnetIds": ["subnet-0aa11bb22cc33dd44"],
            }
        ),
    }
    config.update(overrides)
    return config


def test_config_map_matches_stack_file() -> None:
    from_file = load_stack_file(SPECS / "valid.yaml").spec

    from_config = spec_from_config(flat_config(), "stacks/Pulumi.valid.yaml")

    assert from_config == from_file


def test_config_map_decodes_json_and_numbers() -> None:
    spec = spec_from_config(flat_config(), "stacks/Pulumi.valid.yaml")

    assert spec.peak_rps == 120
    assert spec.window.closes.isoformat() == "2027-03-28T19:00:00+01:00"
    assert spec.checkout.min_replicas == 2
    assert spec.secrets[0].rotation_days == 7


def test_config_map_keeps_numeric_text_as_string() -> None:
    spec = spec_from_config(
        flat_config(**{"popstack:title": "2027", "popstack:costCentre": "4410"}),
        "stacks/Pulumi.valid.yaml",
    )

    assert spec.title == "2027"
    assert spec.cost_centre == "4410"


def test_config_map_skips_non_spec_keys() -> None:
    config = flat_config(
        **{
            "popstack:kubeconfig": "[secret]",
            "popstack:teardownVerifiedExport": "s3://exports/manifest.json",
            "aws:endpoints": "[]",
        }
    )

    spec = spec_from_config(config, "stacks/Pulumi.valid.yaml")

    assert spec.id == "spring-popup"


def test_config_map_errors_name_key() -> None:
    config = flat_config(**{"popstack:window": "not json", "popstack:peakRps": "many"})

    with pytest.raises(SpecError) as caught:
        spec_from_config(config, "stacks/Pulumi.valid.yaml")

    assert str(caught.value) == (
        "stacks/Pulumi.valid.yaml: 2 problems in the event spec\n"
        "  stacks/Pulumi.valid.yaml: popstack:window: expected a mapping, got str 'not json'\n"
        "  stacks/Pulumi.valid.yaml: popstack:peakRps: expected an integer, got str 'many'"
    )


# --- the CLI and the program: the spec check runs before anything registers ------


@pytest.fixture
def registrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count every resource the mock monitor registers, except the root stack."""
    types: list[str] = []
    register = mockrun.RecordingMonitor.RegisterResource

    def counting(self: mockrun.RecordingMonitor, request):
        if request.type != "pulumi:pulumi:Stack":
            types.append(request.type)
        return register(self, request)

    monkeypatch.setattr(mockrun.RecordingMonitor, "RegisterResource", counting)
    return types


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_cli_prints_spec_error(command: str, registrations: list[str]) -> None:
    path, message = spec_error("min-above-max-replicas")

    result = CliRunner().invoke(app, [command, str(path)])

    assert result.exit_code == 2
    assert result.stderr == message + "\n"
    assert result.stdout == ""
    assert registrations == []


def test_cli_plan_registers_valid_stack(registrations: list[str]) -> None:
    # Counterpart of test_cli_prints_spec_error: the counter does see a real run.
    result = CliRunner().invoke(app, ["plan", str(SPECS / "valid.yaml"), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resourceCount"] == len(registrations)
    assert "aws:sqs/queue:Queue" in registrations


@pytest.mark.parametrize(
    ("command", "name"), [("validate", "unknown-key"), ("plan", "yaml-syntax")]
)
def test_cli_process_exits_2_without_traceback(command: str, name: str) -> None:
    path, message = spec_error(name)

    completed = subprocess.run(
        [str(POPSTACK), command, str(path)], capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 2
    assert completed.stderr == message + "\n"
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""


def test_validate_accepts_valid_file() -> None:
    path = SPECS / "valid.yaml"

    result = CliRunner().invoke(app, ["validate", str(path)])

    assert result.exit_code == 0
    assert result.stdout == f"{path}: event spring-popup is valid\n"


def test_program_rejects_bad_config_first(registrations: list[str]) -> None:
    # A value that reaches the program without load_stack_file (as from
    # `pulumi config set`) fails the run before any resource is registered.
    stack_file = load_stack_file(SPECS / "valid.yaml")
    broken = stack_file.model_copy(
        update={"config": {**stack_file.config, "popstack:peakRps": "many"}}
    )

    with pytest.raises(pulumi.RunError) as caught:
        mockrun.record_program(broken)

    assert str(caught.value) == (
        "stacks/Pulumi.valid.yaml: 1 problem in the event spec\n"
        "  stacks/Pulumi.valid.yaml: popstack:peakRps: expected an integer, got str 'many'"
    )
    assert registrations == []


def test_new_names_options_at_fault(tmp_path: Path) -> None:
    from popstack.scaffold import write_stack_file

    target = tmp_path / "stacks" / "Pulumi.porto.yaml"
    with pytest.raises(SpecError) as raised:
        write_stack_file(
            target,
            locations=["studio"],
            stack="porto",
            event_id="porto",
            title="Porto class",
            brand="Brand",
            owner="team",
            cost_centre="CC-1",
            currency="EUR",
            region="eu-west-1",
            opens="2027-05-10T18:00",
            closes="2027-05-10T20:00:00+01:00",
            time_zone="Europe/Lisbn",
            peak_rps=10,
            image="registry.example.com/porto/checkout:1.0.0",
            queue_type="standard",
            alert_email="ops@example.com",
        )

    assert raised.value.problems == [
        "--location 'studio' (number 1): write it as id=Name, for example chiado=Chiado store",
        "--opens: 2027-05-10T18:00 has no UTC offset; add one, for example "
        "2027-05-10T18:00:00+00:00",
        "--time-zone: 'Europe/Lisbn' is not an IANA time zone; did you mean 'Europe/Lisbon'?",
    ]
    assert list(target.parent.iterdir()) == []


def test_new_placeholders_are_reported(tmp_path: Path) -> None:
    from popstack.scaffold import placeholder_keys, write_stack_file

    target = write_stack_file(
        tmp_path / "Pulumi.porto.yaml",
        locations=["studio=Studio"],
        stack="porto",
        event_id="porto",
        title="Porto class",
        brand="CHANGE-ME brand",
        owner="team",
        cost_centre="CC-1",
        currency="EUR",
        region="eu-west-1",
        opens="2027-05-10T18:00:00+01:00",
        closes="2027-05-10T20:00:00+01:00",
        time_zone="Europe/Lisbon",
        peak_rps=10,
        image="registry.example.com/porto/checkout:1.0.0",
        queue_type="standard",
        alert_email="ops@example.com",
    )

    assert placeholder_keys(load_stack_file(target)) == [
        "popstack:brand",
        "popstack:cluster.context",
        "popstack:cluster.oidcProviderArn",
        "popstack:cluster.oidcIssuer",
        "popstack:cluster.vpcId",
        "popstack:cluster.subnetIds[0]",
        "popstack:escalation[0].name",
        "popstack:escalation[1].name",
        "popstack:inventory.preSyncCommand[0]",
    ]


def write_variant(tmp_path: Path, old: str, new: str) -> Path:
    """Write a copy of valid.yaml with one text replaced, and return its path."""
    text = (SPECS / "valid.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "Pulumi.variant.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_key_without_namespace_is_project_key(tmp_path: Path) -> None:
    path = write_variant(tmp_path, "popstack:brand:", "brand:")

    stack_file = load_stack_file(path)

    assert stack_file.spec.brand == load_stack_file(SPECS / "valid.yaml").spec.brand
    assert "popstack:brand" in stack_file.config


def test_out_of_range_names_limit(tmp_path: Path) -> None:
    path = write_variant(tmp_path, "popstack:peakRps: ", "popstack:peakRps: 9999999999 #")

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    assert caught.value.problems[0].endswith(
        "popstack:peakRps: 9999999999 is out of range; use 1000000 or less"
    )


def test_yaml_alias_rejected(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.alias.yaml"
    path.write_text("config:\n  other:a: &a [1, 2]\n  other:b: *a\n", encoding="utf-8")

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    assert caught.value.problems == [
        f"{path}:3: YAML alias *a: stack files take no aliases; write the value out in full"
    ]


def test_plain_kubeconfig_rejected(tmp_path: Path) -> None:
    path = write_variant(tmp_path, "config:\n", "config:\n  popstack:kubeconfig: plain-token\n")

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    assert caught.value.problems == [
        f"{path}:3: popstack:kubeconfig: is in plain text; set it with "
        "`pulumi config set --secret popstack:kubeconfig` so it is stored encrypted"
    ]


@pytest.mark.parametrize(
    ("endpoints", "problem"),
    [
        (
            [{"sqs": "http://127.0.0.1:5000@sqs.eu-west-1.amazonaws.com"}],
            "is true but aws:endpoints.sqs is "
            "'http://127.0.0.1:5000@sqs.eu-west-1.amazonaws.com'; "
            "an emulator stack may only use http://127.0.0.1:PORT",
        ),
        (
            [{"s3": "http://127.0.0.1:5000"}],
            "is true but aws:endpoints does not list appconfig, cloudwatch, dynamodb, iam, "
            "kms, lambda, logs, secretsmanager, sns, sqs, sts; point every service the stack "
            "uses at the emulator",
        ),
        (
            ["http://127.0.0.1:5000"],
            "is true but aws:endpoints has the entry "
            "'http://127.0.0.1:5000', not a service: URL mapping",
        ),
    ],
)
def test_emulator_endpoints_must_be_local(endpoints: list, problem: str) -> None:
    from components.spec import emulator_endpoint_problem

    assert emulator_endpoint_problem(endpoints) == problem


def test_id_with_trailing_newline_rejected(tmp_path: Path) -> None:
    text = (SPECS / "valid.yaml").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("  popstack:id:"))
    path = write_variant(tmp_path, line, line.replace(": ", ': "', 1) + '\\n"')

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    assert "is not a DNS-1123 label" in caught.value.problems[0]


def test_emulator_endpoints_cover_services(
    recorded: Callable[..., Any],
) -> None:
    """Each AWS module the demo program uses, and CloudWatch Logs for log groups, has an
    endpoint on 127.0.0.1; any other would send calls to real AWS."""
    from components.spec import EMULATOR_SERVICES

    stack_file = load_stack_file(Path("stacks/Pulumi.demo.yaml"))
    [endpoints] = stack_file.config["aws:endpoints"]
    types = {resource.type for resource in recorded("demo").resources}
    used = {type_.split(":")[1].split("/")[0] for type_ in types if type_.startswith("aws:")}
    if "aws:cloudwatch/logGroup:LogGroup" in types:
        used.add("logs")

    assert used <= set(EMULATOR_SERVICES)
    assert set(EMULATOR_SERVICES) <= set(endpoints)
    assert {url for url in endpoints.values()} == {"http://127.0.0.1:5000"}


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            'phone: "+351 210 000 001"',
            "phone: +351210000001",
            "popstack:escalation[0].phone: 351210000001 was read as a number, which drops the "
            'leading + and any spaces; write it as a quoted string such as "+351 912 345 678"',
        ),
        (
            "name: Duty manager",
            'name: "Duty\\e[31m manager"',
            "popstack:escalation[0].name: contains a control character (a newline, tab, "
            "escape or invisible formatting character); write it on one line as plain text",
        ),
        (
            "role: Store operations",
            'role: "\\u200b\\u200b"',
            "popstack:escalation[0].role: contains a control character",
        ),
        (
            'phone: "+351 210 000 001"',
            'email: "x](https://evil.example/pay)@a.io"',
            "popstack:escalation[0].email: 'x](https://evil.example/pay)@a.io' is not an "
            "email address",
        ),
        (
            'preSyncCommand: ["/app/bin/inventory-sync", "--all-locations"]',
            'preSyncCommand: ["/app/bin/inventory-sync", "  "]',
            "popstack:inventory.preSyncCommand[1]: is blank; remove it or give the argument",
        ),
        (
            'preSyncCommand: ["/app/bin/inventory-sync", "--all-locations"]',
            'preSyncCommand: ["/app/bin/sync\\0x"]',
            "popstack:inventory.preSyncCommand[0]: contains a NUL character",
        ),
    ],
)
def test_contact_and_command_values_are_checked(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    path = write_variant(tmp_path, old, new)

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    [reported] = caught.value.problems
    assert problem in reported


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            'closes: "2027-03-28T19:00:00+01:00"',
            'closes: "2027-04-26T19:00:00+01:00"',
            "popstack:window.closes: pre-sync start to close is 31 days 14 h; popstack runs "
            "an event for at most 28 days from pre-sync start to close, because secrets do "
            "not rotate in that time; close earlier, shorten preSyncHours, or split the event "
            "into two stacks",
        ),
        (
            'opens: "2027-03-26T10:00:00+00:00"',
            'opens: "2027-03-26T10:00:00.900+00:00"',
            "popstack:window.opens: 2027-03-26T10:00:00.900+00:00 has a fraction of a second; "
            "give whole seconds, for example 2027-03-26T10:00:00+00:00",
        ),
    ],
)
def test_window_length_and_precision(tmp_path: Path, old: str, new: str, problem: str) -> None:
    path = write_variant(tmp_path, old, new)

    with pytest.raises(SpecError) as caught:
        load_stack_file(path)

    [reported] = caught.value.problems
    assert reported.endswith(problem)
