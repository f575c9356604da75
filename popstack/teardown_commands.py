"""`popstack teardown` and `popstack exports list|get`.

The commands build their engine and AWS clients through ``make_engine`` and
``make_clients``, so tests can hand in a RecordingEngine and clients for moto.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from lambdas.flagstore import FlagError
from popstack.engine import AutomationEngine, Engine, EngineError
from teardown import aws
from teardown.csvinput import InputError
from teardown.retrieval import RetrievalError, download, list_exports, locate
from teardown.state import StateError
from teardown.steps import (
    NATIVE_EXPORT_MIN_BYTES,
    Teardown,
    TeardownError,
    TeardownOptions,
    TeardownRefused,
    settlement_argument,
)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130

console = Console()
errors = Console(stderr=True)


def make_engine() -> Engine:
    """Return the engine for the project in the working directory."""
    return AutomationEngine(Path.cwd())


def make_clients() -> aws.Clients:
    """Return boto3 clients from the default session (AWS_ENDPOINT_URL applies)."""
    return aws.Clients()


def _confirm(yes: bool, question: str) -> None:
    """Ask before a change that takes effect at once, unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise _fail(
            f"{question} Confirmation needed and stdin is not a terminal; rerun with --yes",
            EXIT_BAD_INPUT,
        )
    if not typer.confirm(question, default=False, err=True):
        raise _fail("cancelled; nothing was changed", EXIT_FAILED)


def _fail(message: str, code: int) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _log_to_stderr() -> None:
    logger = logging.getLogger("popstack.teardown")
    if not logger.handlers:
        handler = RichHandler(console=errors, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def teardown(
    stack: Annotated[str, typer.Argument(help="The stack to tear down.")],
    settlements: Annotated[
        list[str] | None,
        typer.Option(
            "--settlements",
            help="A payment provider's settlement report, FILE[:LAYOUT[:FORMAT]]; LAYOUT is "
            "stripe (default) or generic, FORMAT is default or eu. Repeat for more reports.",
        ),
    ] = None,
    receipts_format: Annotated[
        str, typer.Option(help="CSV format of the staff-uploaded receipt files: default or eu.")
    ] = "default",
    force_reason: Annotated[
        str | None,
        typer.Option(
            help="Go on although the order queue is not empty or no settlement report was "
            "given; the reason is recorded in the export's teardown.json."
        ),
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the order queue to empty.")
    ] = 900,
    drain_poll: Annotated[float, typer.Option(help="Seconds between queue depth polls.")] = 10,
    dead_letter_visibility: Annotated[
        int, typer.Option(help="Seconds each read dead letter stays hidden from other readers.")
    ] = 900,
    scan_segments: Annotated[
        int, typer.Option(min=1, max=64, help="Parallel Scan segments for the orders table.")
    ] = 4,
    native_export_min_bytes: Annotated[
        int,
        typer.Option(
            help="Tables at least this large (bytes, as DescribeTable reports) are read "
            "through DynamoDB's export to S3 instead of a Scan."
        ),
    ] = NATIVE_EXPORT_MIN_BYTES,
    exports_bucket: Annotated[
        str | None,
        typer.Option(help="Exports bucket, to find the state of a stack that no longer exists."),
    ] = None,
    event_id: Annotated[
        str | None, typer.Option(help="Event id, with --exports-bucket, for the same case.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before destroying.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Close checkout, drain, export, reconcile, verify, revoke tokens, then destroy."""
    _log_to_stderr()
    _confirm(
        yes,
        f"Close checkout for {stack}, export, revoke its tokens and destroy the stack?",
    )
    try:
        options = TeardownOptions(
            settlements=[settlement_argument(item) for item in settlements or []],
            receipts_format=receipts_format,
            force_reason=force_reason,
            drain_timeout=drain_timeout,
            drain_poll=drain_poll,
            dead_letter_visibility=dead_letter_visibility,
            scan_segments=scan_segments,
            native_export_min_bytes=native_export_min_bytes,
            exports_bucket=exports_bucket,
            event_id=event_id,
        )
        runner = Teardown(stack, make_engine(), make_clients(), options, console=errors)
        result = runner.run()
    except TeardownRefused as error:
        raise _fail(str(error), EXIT_REFUSED) from None
    except (InputError, StateError) as error:
        raise _fail(str(error), EXIT_BAD_INPUT) from None
    except (TeardownError, EngineError, FlagError, aws.TeardownAwsError) as error:
        raise _fail(str(error), EXIT_FAILED) from None
    except (ClientError, BotoCoreError) as error:
        raise _fail(
            f"AWS call failed: {error}; run teardown again to resume", EXIT_FAILED
        ) from None
    except KeyboardInterrupt:
        raise _fail(
            "interrupted; the finished steps are recorded, run teardown again to resume",
            EXIT_INTERRUPTED,
        ) from None
    state = result.state
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "stack": stack,
                    "alreadyTornDown": result.already_torn_down,
                    "manifestUri": state.manifest_uri,
                    "manifestSha256": state.manifest_sha256,
                    "forceReason": state.force_reason,
                },
                indent=2,
            )
            + "\n"
        )
        return
    if result.already_torn_down:
        console.print(
            f"stack {stack} is already torn down; verified export {state.manifest_uri} "
            f"(sha256 {state.manifest_sha256})",
            highlight=False,
            soft_wrap=True,
        )
        return
    console.print(
        f"stack {stack} torn down; verified export {state.manifest_uri} "
        f"(sha256 {state.manifest_sha256})",
        highlight=False,
        soft_wrap=True,
    )


exports_app = typer.Typer(
    help="List and download teardown exports (finance, read-only).", no_args_is_help=True
)

BucketOption = Annotated[
    list[str],
    typer.Option("--bucket", help="An exports bucket to read; repeat for more buckets."),
]


@exports_app.command("list")
def exports_list(
    bucket: BucketOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the exports as JSON.")] = False,
) -> None:
    """Show every export: event, window, totals per currency, verified or not."""
    try:
        summaries = list_exports(make_clients()("s3"), bucket)
    except (ClientError, BotoCoreError) as error:
        raise _fail(f"reading the exports failed: {error}", EXIT_FAILED) from None
    if as_json:
        sys.stdout.write(json.dumps([s.to_json() for s in summaries], indent=2) + "\n")
        return
    table = Table(title="Teardown exports")
    for column in ("event", "window", "totals", "verified", "manifest"):
        table.add_column(column)
    for summary in summaries:
        window = f"{summary.opens} to {summary.closes}" if summary.opens else "-"
        totals = ", ".join(f"{currency} {amount}" for currency, amount in summary.totals.items())
        verified = "yes" if summary.verified else "no"
        if summary.note:
            verified += f" ({summary.note})"
        table.add_row(summary.event_id, window, totals or "-", verified, summary.manifest_uri)
    console.print(table)


@exports_app.command("get")
def exports_get(
    event: Annotated[str, typer.Argument(help="The event id of the export.")],
    to: Annotated[Path, typer.Option("--to", help="Directory to download the export into.")],
    bucket: BucketOption,
) -> None:
    """Download one export and re-check every file's size and SHA-256 against the manifest."""
    s3 = make_clients()("s3")
    try:
        source = locate(s3, bucket, event)
        result = download(s3, source, event, to)
    except RetrievalError as error:
        raise _fail(str(error), EXIT_BAD_INPUT) from None
    except (ClientError, BotoCoreError) as error:
        raise _fail(f"downloading the export failed: {error}", EXIT_FAILED) from None
    if not result.ok:
        raise _fail(
            f"export {event} in {to} failed verification: {result.verification}",
            EXIT_FAILED,
        )
    recorded = "matches" if result.recorded_sha256 else "has no teardown record to match"
    console.print(
        f"downloaded {len(result.files)} file(s) and manifest.json of {event} to {to}; every "
        f"checksum matches, and the manifest (sha256 {result.manifest_sha256}) {recorded}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command("teardown")(teardown)
    app.add_typer(exports_app, name="exports")
