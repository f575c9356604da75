"""Terminal rendering of a plan: the resource tree by part, policies, outputs."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from popstack.plan import Plan, physical_name


def render_plan(plan: Plan, console: Console) -> None:
    """Print one plan for a person at a terminal."""
    spec = plan.stack_file.spec
    window = spec.window
    console.print(
        f"[bold]{escape(plan.stack_file.stack)}[/]: event [bold]{spec.id}[/] - "
        f"{escape(spec.title)}\n"
        f"window {window.opens.isoformat()} to {window.closes.isoformat()} ({window.time_zone}), "
        f"expires {spec.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        highlight=False,
    )

    tree = Tree(f"EventStack {spec.id}  ({plan.resource_count} resources)")
    for part, resources in plan.parts.items():
        branch = tree.add(f"[bold]{part}[/]  {len(resources)}")
        for resource in resources:
            flags = []
            if resource.protect:
                flags.append("protected")
            if resource.retain_on_delete:
                flags.append("kept on destroy")
            label = f"{resource.type}  [cyan]{physical_name(resource) or resource.name}[/]"
            if flags:
                label += f"  [yellow]({', '.join(flags)})[/]"
            branch.add(label)
    console.print(tree, highlight=False)

    path = " -> ".join(r.short_type for r in plan.critical_path)
    console.print(f"dependency depth {plan.depth}: {path}", highlight=False)

    if plan.policy_results:
        render_policies(plan, console)

    outputs = Table(title="outputs", show_header=False, box=None, pad_edge=False)
    outputs.add_column("key", no_wrap=True)
    outputs.add_column("value", overflow="fold")
    for key, value in plan.recording.outputs.items():
        outputs.add_row(key, escape(str(value)))
    console.print(outputs, highlight=False)

    for line in plan.recording.logs:
        console.print(line, highlight=False, markup=False)

    secrets = plan.stack_file.secret_keys
    if secrets:
        console.print(f"secret config (masked): {', '.join(secrets)}", highlight=False)
    console.print()


def render_policies(plan: Plan, console: Console) -> None:
    """Print the verdict of each policy rule, one finding per line."""
    table = Table(title="policies", box=None, pad_edge=False)
    table.add_column("rule")
    table.add_column("level")
    table.add_column("verdict")
    table.add_column("detail", overflow="fold")
    for result in plan.policy_results:
        verdict = VERDICT_STYLES[result.verdict]
        # Messages quote tag values and image names, so brackets must not become markup.
        detail = escape("\n".join(result.messages))
        table.add_row(result.rule, result.enforcement, verdict, detail)
    console.print(table, highlight=False)


# "unknown": the rule cannot check some resources until the update resolves their inputs.
VERDICT_STYLES = {
    "pass": "[green]pass[/]",
    "fail": "[red]FAIL[/]",
    "advice": "[yellow]advice[/]",
    "unknown": "[yellow]unknown[/]",
}
