"""The popstack operator CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from components.spec import SpecError

app = typer.Typer(
    help="Provision, operate and tear down one Pulumi stack per retail event.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

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
    stacks: Annotated[list[str], typer.Argument(help="Stack names (stacks/Pulumi.<name>.yaml) or paths.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON for CI.")] = False,
    policies: Annotated[bool, typer.Option(help="Run the policy pack's rules.")] = True,
) -> None:
    """Evaluate the program offline under Pulumi's mocks and check policies; no cloud needed."""
    from popstack.plan import build_plan
    from popstack.render import render_plan

    results = []
    exit_code = 0
    for stack in stacks:
        try:
            result = build_plan(stack_path(stack), run_policies=policies)
        except SpecError as error:
            errors.print(str(error), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
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
    from components.spec import load_stack_file

    for stack in stacks:
        try:
            stack_file = load_stack_file(stack_path(stack))
        except SpecError as error:
            errors.print(str(error), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        console.print(f"{stack_file.path}: event {stack_file.spec.id} is valid", highlight=False)


def main() -> None:
    app()
