"""The popstack operator CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from components.spec import SpecError, StackFile, load_stack_file

app = typer.Typer(
    help="Provision, operate and tear down one Pulumi stack per retail event.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help wraps long option names instead of cutting them off at 80 columns.
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)
console = Console(emoji=False)
errors = Console(stderr=True, emoji=False)

STACKS_DIR = Path("stacks")
EXIT_BAD_INPUT = 2
EXIT_POLICY = 3


def stack_path(stack: str) -> Path:
    """Resolve a stack name or a path to its stack file."""
    candidate = Path(stack)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return STACKS_DIR / f"Pulumi.{stack}.yaml"


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print an error without a traceback and return the exit to raise."""
    errors.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def plan(
    stacks: Annotated[
        list[str], typer.Argument(help="Stack names (stacks/Pulumi.<name>.yaml) or paths.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON for CI.")] = False,
    policies: Annotated[bool, typer.Option(help="Run the policy pack's rules.")] = True,
) -> None:
    """Evaluate the program offline under Pulumi's mocks and check policies; no cloud needed."""
    import pulumi

    from popstack.plan import build_plan
    from popstack.render import render_plan

    stack_files = load_all(stacks)
    results = []
    exit_code = 0
    for stack_file in stack_files:
        try:
            result = build_plan(stack_file, run_policies=policies)
        except pulumi.RunError as error:
            raise fail(str(error)) from None
        if result.mandatory_failures:
            exit_code = EXIT_POLICY
        results.append(result)
    if as_json:
        payload = [r.to_json() for r in results]
        sys.stdout.write(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2) + "\n")
    else:
        for result in results:
            render_plan(result, console)
    raise typer.Exit(exit_code)


@app.command()
def validate(
    stacks: Annotated[list[str], typer.Argument(help="Stack names or paths.")],
) -> None:
    """Check stack files against the event spec without running the program."""
    for stack_file in load_all(stacks, report_valid=True):
        console.print(f"{stack_file.path}: event {stack_file.spec.id} is valid", highlight=False)


def load_all(stacks: list[str], report_valid: bool = False) -> list[StackFile]:
    """Load every stack file, printing each one's errors and placeholder warnings.

    If any file is invalid, it exits with EXIT_BAD_INPUT only after reading all of
    them, so one run reports every bad file. With `report_valid`, it also lists the
    valid ones before exiting.
    """
    from popstack.scaffold import placeholder_keys

    loaded: list[StackFile] = []
    invalid = 0
    for stack in stacks:
        try:
            stack_file = load_stack_file(stack_path(stack))
        except SpecError as error:
            errors.print(str(error), markup=False, highlight=False, soft_wrap=True)
            invalid += 1
            continue
        placeholders = placeholder_keys(stack_file)
        if placeholders:
            errors.print(
                f"warning: {stack_file.path} still has `popstack new` placeholder values at "
                f"{', '.join(placeholders)}; replace them before `popstack up`",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        loaded.append(stack_file)
    if invalid:
        if report_valid:
            for stack_file in loaded:
                console.print(
                    f"{stack_file.path}: event {stack_file.spec.id} is valid", highlight=False
                )
        raise typer.Exit(EXIT_BAD_INPUT)
    return loaded


@app.command()
def new(
    stack: Annotated[str, typer.Argument(help="Stack name; writes stacks/Pulumi.<stack>.yaml.")],
    title: Annotated[str, typer.Option(help="Event title shown on dashboards.")],
    opens: Annotated[str, typer.Option(help="Doors open, ISO 8601 with offset.")],
    closes: Annotated[str, typer.Option(help="Doors close, ISO 8601 with offset.")],
    time_zone: Annotated[str, typer.Option(help="IANA time zone of the venue.")],
    location: Annotated[
        list[str], typer.Option(help="A location as id=Name; repeat for each location.")
    ],
    event_id: Annotated[
        str | None, typer.Option("--id", help="Event id; default: the stack name.")
    ] = None,
    brand: Annotated[str, typer.Option(help="Brand running the event.")] = "CHANGE-ME brand",
    owner: Annotated[str, typer.Option(help="Owning team.")] = "CHANGE-ME team",
    cost_centre: Annotated[str, typer.Option(help="Cost centre for the tags.")] = "CHANGE-ME",
    currency: Annotated[str, typer.Option(help="ISO 4217 currency code.")] = "EUR",
    region: Annotated[str, typer.Option(help="AWS region.")] = "eu-west-1",
    peak_rps: Annotated[int, typer.Option(help="Expected peak checkout requests per second.")] = 50,
    image: Annotated[str, typer.Option(help="Checkout image, pinned by tag or digest.")] = (
        "registry.example.com/change-me/checkout:1.0.0"
    ),
    fifo: Annotated[bool, typer.Option(help="Use a FIFO order queue.")] = False,
    alert_email: Annotated[str, typer.Option(help="Where alarms are sent.")] = (
        "change-me@example.com"
    ),
) -> None:
    """Scaffold a stack file for a new event from templates/new_event.yaml.j2."""
    from popstack.scaffold import write_stack_file

    try:
        path = write_stack_file(
            stack_path(stack),
            stack=stack,
            event_id=event_id or stack,
            title=title,
            brand=brand,
            owner=owner,
            cost_centre=cost_centre,
            currency=currency,
            region=region,
            opens=opens,
            closes=closes,
            time_zone=time_zone,
            locations=location,
            peak_rps=peak_rps,
            image=image,
            queue_type="fifo" if fifo else "standard",
            alert_email=alert_email,
        )
    except SpecError as error:
        errors.print(str(error), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except FileExistsError as error:
        raise fail(f"{error}; pick another stack name or edit the existing file") from None
    console.print(
        f"wrote {path}; replace the CHANGE-ME values and the cluster settings, "
        f"then run `popstack plan {stack}`",
        highlight=False,
    )


@app.command()
def runbook(
    stack: Annotated[str, typer.Argument(help="Stack name or path.")],
    to: Annotated[
        Path | None,
        typer.Option(
            help="Write runbook.md and runbook.html into this directory (created if missing) "
            "instead of printing the runbook."
        ),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Output format, md or html. Without --to, md is printed by default. "
            "With --to, only this format is written instead of both.",
        ),
    ] = None,
    outputs: Annotated[
        bool,
        typer.Option(
            help="Read names and ids from the stack's outputs through the Pulumi engine; "
            "--no-outputs uses the plan's values only.",
        ),
    ] = True,
) -> None:
    """Render the on-call runbook for an event: what to do, switches, receipts, contacts."""
    from rich.markup import escape

    from popstack import runbook as runbooks

    if output_format is not None and output_format not in runbooks.FORMATS:
        raise fail(f"--format {output_format!r} is not a runbook format; use md or html")
    try:
        if to is not None:
            runbooks.check_directory(to)
    except runbooks.RunbookError as error:
        raise fail(escape(str(error))) from None
    # load_all prints the same placeholder warning as `plan` and `validate`; the page
    # lists the keys too.
    [stack_file] = load_all([stack])
    try:
        runbooks.check_stack(stack_file)
    except runbooks.RunbookError as error:
        raise fail(escape(str(error))) from None
    problem: str | None = runbooks.NO_OUTPUTS_REASON
    stack_outputs: dict = {}
    if outputs:
        stack_outputs, problem = runbooks.read_outputs(runbooks.make_engine(), stack_file.stack)
        if problem is not None:
            errors.print(
                f"note: the runbook uses the plan's values, because {problem}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    try:
        values = runbooks.stack_values(stack_file, stack_outputs, problem)
        context = runbooks.runbook_context(stack_file, values)
    except runbooks.RunbookError as error:
        raise fail(escape(str(error))) from None
    if to is None:
        sys.stdout.write(runbooks.render_context(context, output_format or "md"))
        return
    # Every requested format is rendered before any file is written.
    documents = {
        name: runbooks.render_context(context, name)
        for name in ([output_format] if output_format else runbooks.FORMATS)
    }
    try:
        written = runbooks.write_runbooks(to, documents)
    except runbooks.RunbookError as error:
        raise fail(escape(str(error))) from None
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)


def _register_commands() -> None:
    """Add the command groups that live in their own modules."""
    from popstack import flag_commands, lifecycle_commands, teardown_commands

    lifecycle_commands.register(app)
    teardown_commands.register(app)
    flag_commands.register(app)


# Commands defined in this module. The other command groups import boto3,
# pyarrow and DuckDB (about 0.6 s on a 2-core machine), which these do not need.
OFFLINE_COMMANDS = ("plan", "validate", "new", "runbook")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in OFFLINE_COMMANDS:
        _register_commands()
    app()
