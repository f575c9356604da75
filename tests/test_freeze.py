"""The change freeze: `popstack up`, `rollback` and `promote` while doors are open.

The rule is opens <= now < closes, each edge with its own UTC offset. The windows
here cross a DST change, so an edge read at the wrong offset would move by an hour.
The CLI tests run the commands against RecordingEngine in a temporary git repository
(the fixtures of tests/test_lifecycle.py) with popstack.lifecycle.utc_now set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from components.spec import Window
from popstack import lifecycle
from popstack.engine import RecordingEngine
from popstack.freeze import (
    Emergency,
    FreezeError,
    check_freeze,
    doors_open,
    emergency_from_options,
)
from tests import test_lifecycle
from tests.test_lifecycle import Repo, checkpoint_files, read_checkpoint

# The project, engine and CLI fixtures of the lifecycle tests.
repo = test_lifecycle.repo
engine = test_lifecycle.engine
cli = test_lifecycle.cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws.*")

# Lisbon falls back from +01:00 to +00:00 at 02:00 local on 2027-10-31.
AUTUMN = Window.model_validate(
    {
        "opens": "2027-10-29T10:00:00+01:00",
        "closes": "2027-10-31T19:00:00+00:00",
        "timeZone": "Europe/Lisbon",
    }
)
# The staging stack's window: Lisbon springs forward at 01:00 UTC on 2027-03-28.
SPRING_OPENS = datetime(2027, 3, 26, 10, 0, tzinfo=UTC)
SPRING_CLOSES = datetime(2027, 3, 28, 18, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("now", "frozen"),
    [
        (datetime(2027, 10, 29, 8, 59, 59, tzinfo=UTC), False),
        (datetime(2027, 10, 29, 9, 0, tzinfo=UTC), True),
        (datetime(2027, 10, 31, 18, 59, 59, tzinfo=UTC), True),
        (datetime(2027, 10, 31, 19, 0, tzinfo=UTC), False),
    ],
)
def test_doors_open_from_opens_up_to_closes(now: datetime, frozen: bool) -> None:
    assert doors_open(AUTUMN, now) is frozen


def test_freeze_message_names_edges() -> None:
    with pytest.raises(FreezeError) as raised:
        check_freeze(
            "lisbon",
            [("Pulumi.lisbon.yaml", AUTUMN)],
            datetime(2027, 10, 30, 12, 0, tzinfo=UTC),
            None,
        )

    assert str(raised.value) == (
        "stack lisbon is in its change freeze: doors are open from 2027-10-29 10:00 WEST "
        "(09:00 UTC) to 2027-10-31 19:00 WET (19:00 UTC) (Pulumi.lisbon.yaml), and it is now "
        "2027-10-30 12:00 UTC. A kill switch needs no update: use `popstack flags set lisbon "
        "KEY=VALUE --reason TEXT`. If this update cannot wait until doors close, rerun with "
        '--emergency --reason "TEXT"'
    )


def test_freeze_emergency_is_returned() -> None:
    emergency = Emergency("payment provider changed its API", "rita")
    inside = datetime(2027, 10, 30, 12, 0, tzinfo=UTC)
    outside = datetime(2027, 11, 1, tzinfo=UTC)

    assert check_freeze("lisbon", [("file", AUTUMN)], inside, emergency) is emergency
    assert check_freeze("lisbon", [("file", AUTUMN)], outside, emergency) is None


@pytest.mark.parametrize(
    ("emergency", "reason", "message"),
    [
        (True, None, '--emergency needs --reason "TEXT"'),
        (True, "   ", '--emergency needs --reason "TEXT"'),
        (False, "hotfix", "--reason is only for an emergency update; add --emergency"),
        (True, "x" * 501, "--reason is 501 characters; keep it to 500"),
    ],
)
def test_emergency_options_are_checked_together(
    emergency: bool, reason: str | None, message: str
) -> None:
    with pytest.raises(FreezeError, match="^" + message.replace("(", r"\(")):
        emergency_from_options(emergency, reason, "rita")


def test_emergency_options_give_the_operator() -> None:
    assert emergency_from_options(True, " hotfix ", "rita") == Emergency("hotfix", "rita")
    assert emergency_from_options(False, None, "rita") is None


# --- through the CLI -------------------------------------------------------------------


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    def set_clock(moment: datetime) -> None:
        monkeypatch.setattr(lifecycle, "utc_now", lambda: moment)

    return set_clock


@pytest.mark.parametrize(
    ("now", "refused"),
    [
        (SPRING_OPENS - SECOND, False),
        (SPRING_OPENS, True),
        (SPRING_CLOSES - SECOND, True),
        # 19:00 local after the change is 18:00 UTC; at +00:00 it would still be open.
        (SPRING_CLOSES, False),
    ],
)
def test_up_refuses_and_allows_exactly_at_the_edges(
    repo: Repo,
    engine: RecordingEngine,
    cli: Callable[..., Any],
    at: Callable[[datetime], None],
    now: datetime,
    refused: bool,
) -> None:
    at(now)

    result = cli("up", "staging", "--yes")

    if refused:
        assert result.exit_code == lifecycle.EXIT_REFUSED, result.output
        assert "stack staging is in its change freeze" in result.output
        assert [call for call in engine.calls if call[0] == "up"] == []
        assert checkpoint_files(repo, "staging") == []
    else:
        assert result.exit_code == 0, result.output
        assert [call[0] for call in engine.calls].count("up") == 1


def test_emergency_up_is_deployed_and_recorded(
    repo: Repo,
    engine: RecordingEngine,
    cli: Callable[..., Any],
    at: Callable[[datetime], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POPSTACK_OPERATOR", "rita")
    at(SPRING_OPENS + timedelta(hours=5))

    result = cli("up", "staging", "--yes", "--emergency", "--reason", "cache endpoint moved")

    assert result.exit_code == 0, result.output
    [checkpoint] = checkpoint_files(repo, "staging")
    assert read_checkpoint(checkpoint)["emergency"] == {
        "reason": "cache endpoint moved",
        "operator": "rita",
    }


def test_emergency_without_reason_changes_nothing(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    at(SPRING_OPENS + timedelta(hours=5))

    result = cli("up", "staging", "--yes", "--emergency")

    assert result.exit_code == lifecycle.EXIT_BAD_INPUT
    assert '--emergency needs --reason "TEXT"' in result.output
    assert engine.calls == []


def test_freeze_survives_moved_window(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    at(SPRING_OPENS - timedelta(days=1))
    assert cli("up", "staging", "--yes").exit_code == 0
    [deployed] = checkpoint_files(repo, "staging")
    repo.edit(
        "stacks/Pulumi.staging.yaml",
        'opens: "2027-03-26T10:00:00+00:00"',
        'opens: "2027-03-28T10:00:00+01:00"',
    )
    at(SPRING_OPENS + timedelta(hours=1))

    result = cli("up", "staging", "--yes")

    assert result.exit_code == lifecycle.EXIT_REFUSED, result.output
    assert f"(deployed with checkpoint {read_checkpoint(deployed)['id']})" in result.output


def test_rollback_is_frozen_but_import_state_is_not(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    at(SPRING_OPENS - timedelta(days=1))
    assert cli("up", "staging", "--yes").exit_code == 0
    at(SPRING_OPENS + timedelta(hours=1))

    redeploy = cli("rollback", "staging", "--yes")
    imported = cli("rollback", "staging", "--import-state", "--yes")

    assert redeploy.exit_code == lifecycle.EXIT_REFUSED, redeploy.output
    assert "stack staging is in its change freeze" in redeploy.output
    assert imported.exit_code == 0, imported.output
    assert [call[0] for call in engine.calls].count("up") == 1


def test_promote_frozen_before_writing(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    at(SPRING_OPENS + timedelta(hours=1))
    prod_before = repo.read("stacks/Pulumi.prod.yaml")
    repo.edit("stacks/Pulumi.staging.yaml", "peakRps: 120", "peakRps: 140")
    repo.commit("Raise the staging peak")

    result = cli("promote", "staging", "prod", "--yes", "--json")

    assert result.exit_code == lifecycle.EXIT_REFUSED, result.output
    assert json.loads(result.stdout)["error"].startswith("stack prod is in its change freeze")
    assert repo.read("stacks/Pulumi.prod.yaml") == prod_before
    assert [call for call in engine.calls if call[0] == "up"] == []


def test_window_without_namespace_is_frozen_from_its_checkpoint(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    repo.edit("stacks/Pulumi.staging.yaml", "  popstack:window:", "  window:")
    repo.commit("Write the window without the namespace")
    at(SPRING_OPENS - timedelta(days=1))
    assert cli("up", "staging", "--yes").exit_code == 0
    repo.edit(
        "stacks/Pulumi.staging.yaml",
        'opens: "2027-03-26T10:00:00+00:00"',
        'opens: "2027-03-28T10:00:00+01:00"',
    )
    at(SPRING_OPENS + timedelta(hours=1))

    result = cli("up", "staging", "--yes")

    assert result.exit_code == lifecycle.EXIT_REFUSED, result.output
    assert "(deployed with checkpoint " in result.output


def test_invalid_checkpoint_window_refuses(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    at(SPRING_OPENS - timedelta(days=1))
    assert cli("up", "staging", "--yes").exit_code == 0
    [path] = checkpoint_files(repo, "staging")
    document = read_checkpoint(path)
    document["config"]["popstack:window"]["timeZone"] = "Europe/Lisbn"
    path.write_text(json.dumps(document))
    at(SPRING_OPENS + timedelta(days=10))

    result = cli("up", "staging", "--yes")

    assert result.exit_code == lifecycle.EXIT_REFUSED, result.output
    assert f"the event window recorded in checkpoint {document['id']} is invalid" in (
        " ".join(result.output.split())
    )


def test_emergency_that_moved_the_window_keeps_the_freeze(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    at(SPRING_OPENS - timedelta(days=1))
    assert cli("up", "staging", "--yes").exit_code == 0
    repo.edit(
        "stacks/Pulumi.staging.yaml",
        'opens: "2027-03-26T10:00:00+00:00"',
        'opens: "2027-03-28T10:00:00+01:00"',
    )
    at(SPRING_OPENS + timedelta(hours=1))
    assert cli("up", "staging", "--yes", "--emergency", "--reason", "moved").exit_code == 0
    repo.edit("stacks/Pulumi.staging.yaml", "peakRps: 120", "peakRps: 130")

    result = cli("up", "staging", "--yes")

    assert result.exit_code == lifecycle.EXIT_REFUSED, result.output
    assert [call[0] for call in engine.calls].count("up") == 2


def test_emergency_outside_the_freeze_is_not_recorded(
    repo: Repo, engine: RecordingEngine, cli: Callable[..., Any], at: Callable[[datetime], None]
) -> None:
    at(SPRING_OPENS - timedelta(days=1))

    result = cli("up", "staging", "--yes", "--emergency", "--reason", "just in case")

    assert result.exit_code == 0, result.output
    assert "no change freeze was in force, so --emergency was not needed" in result.output
    [path] = checkpoint_files(repo, "staging")
    assert read_checkpoint(path)["emergency"] is None
