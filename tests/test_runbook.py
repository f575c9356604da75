"""Tests for `popstack runbook`: the facts on the page, where its values come from, and
what the HTML page shows in Chromium on a phone and when printed.

The Chromium tests drive Debian's /usr/bin/chromium through Playwright, with one
browser per module. They fail, rather than skip, when Chromium is missing.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from components.flag_schema import flag_document
from components.spec import StackFile, load_stack_file
from popstack import runbook
from popstack.cli import app
from popstack.engine import CLI_MISSING, SECRET_MASK, RecordingEngine
from popstack.scaffold import write_stack_file
from teardown.csvinput import InputError, InputFile, read_receipts

REPO = Path(__file__).resolve().parent.parent
STACKS = REPO / "stacks"
SAMPLE_STACKS = sorted(
    path.name.removeprefix("Pulumi.").removesuffix(".yaml") for path in STACKS.glob("Pulumi.*.yaml")
)
POPSTACK = Path(sys.executable).with_name("popstack")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
NARROW_PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}

# Outputs of a deployed lisbon-popup stack, as `pulumi stack output` reports them.
LISBON_OUTPUTS = {
    "eventId": "lisbon-popup-27",
    "receiptsBucket": "ps-lisbon-popup-27-receipts-111122223333",
    "dashboardName": "ps-lisbon-popup-27-board",
    "flagsApplicationId": "a1b2c3d",
    "flagsProfileId": "p9q8r7s",
    "alertTopicArn": "arn:aws:sns:eu-west-1:111122223333:ps-lisbon-popup-27-alerts",
    "checkoutNamespace": "ps-lisbon-popup-27",
    "deadLetterQueueUrl": (
        "https://sqs.eu-west-1.amazonaws.com/111122223333/ps-lisbon-popup-27-orders-dlq"
    ),
    "cacheAuthSecretArn": SECRET_MASK,
}
LISBON_APPCONFIG = (
    "https://eu-west-1.console.aws.amazon.com/systems-manager/appconfig/applications/a1b2c3d"
    "/featureflags/p9q8r7s/versions?region=eu-west-1"
)
LISBON_DASHBOARD = (
    "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
    "#dashboards/dashboard/ps-lisbon-popup-27-board"
)


def stack_file(stack: str) -> StackFile:
    return load_stack_file(STACKS / f"Pulumi.{stack}.yaml")


def invoke(*arguments: str, engine: RecordingEngine | None = None) -> Any:
    """Run `popstack runbook` in-process from the repository root with a recording engine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        patch.setattr(runbook, "make_engine", lambda: engine or RecordingEngine())
        return CliRunner().invoke(app, ["runbook", *arguments])


def deployed_engine(stack: str = "lisbon-popup", outputs: dict | None = None) -> RecordingEngine:
    engine = RecordingEngine()
    engine.seed(stack, LISBON_OUTPUTS if outputs is None else outputs)
    return engine


def expected_facts(stack_file: StackFile) -> list[str]:
    """Return the commands, contacts and names the runbook of a stack must print."""
    spec = stack_file.spec
    stack = stack_file.stack
    facts = [
        f"popstack flags show {stack}",
        f"popstack teardown {stack} --settlements FILE",
        f"ps-{spec.id}-board",
        "--emergency --reason",
    ]
    for key in flag_document(spec)["values"]:
        facts.append(f"popstack flags set {stack} {key}=off --reason ")
        facts.append(f"popstack flags set {stack} {key}=on --reason ")
    for contact in spec.escalation:
        facts += [contact.name, contact.role, contact.when]
        facts += [value for value in (contact.phone, contact.email, contact.chat) if value]
    for location in spec.locations:
        facts.append(f"/receipts/{location.id}/")
    return facts


def write_variant(
    directory: Path, name: str, replacements: dict[str, str], base: str = "lisbon-popup"
) -> Path:
    """Write a sample stack file with some text replaced, as <directory>/Pulumi.<name>.yaml."""
    text = (STACKS / f"Pulumi.{base}.yaml").read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = directory / f"Pulumi.{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the facts on the page ------------------------------------------------------------


def test_sample_stacks_found() -> None:
    assert {"lisbon-popup", "flash-drop", "demo"} <= set(SAMPLE_STACKS)


@pytest.mark.parametrize("output_format", runbook.FORMATS)
@pytest.mark.parametrize("stack", SAMPLE_STACKS)
def test_runbook_has_stack_facts(stack: str, output_format: str) -> None:
    text = runbook.render_runbook(stack_file(stack), output_format=output_format)
    if output_format == "html":
        text = unescape(text)
    for fact in expected_facts(stack_file(stack)):
        assert fact in text, f"{fact!r} missing from the {output_format} runbook of {stack}"


def test_lisbon_commands_exact() -> None:
    text = runbook.render_runbook(stack_file("lisbon-popup"))

    assert (
        'popstack flags set lisbon-popup checkout_enabled=off --reason "checkout failing '
        'everywhere"' in text
    )
    assert (
        'popstack flags set lisbon-popup offline_receipts_allowed=on --reason "payment '
        'provider down"' in text
    )
    assert (
        'popstack flags set lisbon-popup location_lx_factory_enabled=off --reason "closing '
        'location lx-factory"' in text
    )
    assert "[+351 912 000 202](tel:+351912000202)" in text
    assert "[marta.pires@example.com](mailto:marta.pires@example.com)" in text
    assert "/app/bin/inventory-sync --all-locations --source shopify" in text
    assert f"[CloudWatch dashboard ps-lisbon-popup-27-board]({LISBON_DASHBOARD})" in text


def test_lisbon_calendar_rows_keep_offsets() -> None:
    text = runbook.render_runbook(stack_file("lisbon-popup"))
    rows = [line for line in text.split("## Times")[1].split("\n\n")[1].splitlines()[2:]]

    assert rows == [
        "| Stock pre-sync starts: the stock sync job runs | 2027-03-26 04:00 WET | "
        "2027-03-26 04:00 |",
        "| Doors open: change freeze starts; elevated sampling switches on by itself | "
        "2027-03-26 10:00 WET | 2027-03-26 10:00 |",
        "| Doors close: change freeze ends; checkout and elevated sampling switch off by "
        "themselves | 2027-03-28 19:00 WEST | 2027-03-28 18:00 |",
        "| Secrets held back during the event rotate | 2027-03-28 19:05 WEST | 2027-03-28 18:05 |",
        "| Teardown warning to the alert topic: 24 h left | 2027-03-30 19:00 WEST | "
        "2027-03-30 18:00 |",
        "| Teardown warning to the alert topic: 2 h left | 2027-03-31 17:00 WEST | "
        "2027-03-31 16:00 |",
        "| Teardown deadline (the stack expires) | 2027-03-31 19:00 WEST | 2027-03-31 18:00 |",
    ]


def test_stock_sync_rerun_command() -> None:
    text = runbook.render_runbook(stack_file("lisbon-popup"))

    assert (
        "kubectl -n ps-lisbon-popup-27 create job pre-sync-manual "
        "--from=cronjob/ps-lisbon-popup-27-pre-sync"
    ) in text


def test_emulator_calendar_has_no_automatic_actions() -> None:
    text = runbook.render_runbook(stack_file("demo"))
    times = text.split("## Times")[1].split("## Dashboard")[0]

    assert "by itself" not in times
    assert "Teardown warning" not in times
    assert "| Doors close: change freeze ends |" in times


def test_urgent_sections_come_first() -> None:
    text = runbook.render_runbook(stack_file("lisbon-popup"))
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)

    assert headings == [
        "Checkout fails",
        "Terminals at a location are slow",
        "Inventory looks wrong",
        "Switches",
        "Manual receipts",
        "Escalation",
        "Times",
        "Dashboard and alarms",
        "After the event",
    ]


@pytest.mark.parametrize("stack", SAMPLE_STACKS)
def test_markdown_structure(stack: str) -> None:
    text = runbook.render_runbook(stack_file(stack))
    html = MarkdownIt("commonmark").enable("table").render(text)
    spec = stack_file(stack).spec
    code = " ".join(re.findall(r"<code[^>]*>(.*?)</code>", html, flags=re.DOTALL))
    code = code.replace("&quot;", '"')

    for key in flag_document(spec)["values"]:
        assert f"popstack flags set {stack} {key}=off" in code
        assert f"popstack flags set {stack} {key}=on" in code
    # Escalation, receipt columns, times and alarms each render as a table.
    assert html.count("<table>") == 4
    assert html.count("<tr>\n<td>") >= len(spec.escalation) + 10 + 4 + 4
    for contact in spec.escalation:
        if contact.phone_uri:
            assert f'<a href="{contact.phone_uri}">{contact.phone}</a>' in html


def code_and_links(html: str) -> tuple[set[str], set[str]]:
    """Return every line of code and every link target (other than in-page) of an HTML text."""
    code = set()
    for block in re.findall(r"<code[^>]*>(.*?)</code>", html, flags=re.DOTALL):
        code.update(line.strip() for line in unescape(block).strip().split("\n"))
    links = {unescape(href) for href in re.findall(r'href="([^"#][^"]*)"', html)}
    return code, links


@pytest.mark.parametrize("stack", SAMPLE_STACKS)
def test_markdown_and_html_match(stack: str) -> None:
    markdown = runbook.render_runbook(stack_file(stack))
    markdown_code, markdown_links = code_and_links(
        MarkdownIt("commonmark").enable("table").render(markdown)
    )
    html_code, html_links = code_and_links(
        runbook.render_runbook(stack_file(stack), output_format="html")
    )

    assert markdown_code == html_code
    assert markdown_links == html_links


@pytest.mark.parametrize("stack", SAMPLE_STACKS)
def test_receipt_example_is_accepted(stack: str) -> None:
    context = runbook.runbook_context(
        stack_file(stack), runbook.stack_values(stack_file(stack), {})
    )
    example = "\n".join(context["receipts"]["example"]) + "\n"

    receipts = read_receipts([InputFile("example.csv", example.encode())])

    assert receipts.table.num_rows == 2
    assert receipts.table.column("currency").to_pylist() == [stack_file(stack).spec.currency] * 2


def test_receipt_required_columns_match_teardown() -> None:
    context = runbook.runbook_context(
        stack_file("lisbon-popup"), runbook.stack_values(stack_file("lisbon-popup"), {})
    )
    header, *rows = context["receipts"]["example"]
    columns = header.split(",")
    for index in range(len(columns)):
        required = context["receipts"]["columns"][index]["required"]
        reduced = [",".join(columns[:index] + columns[index + 1 :])]
        for row in rows:
            cells = next(csv.reader([row]))
            reduced.append(",".join(f'"{cell}"' for cell in cells[:index] + cells[index + 1 :]))
        data = ("\n".join(reduced) + "\n").encode()
        if required:
            with pytest.raises(InputError):
                read_receipts([InputFile("reduced.csv", data)])
        else:
            read_receipts([InputFile("reduced.csv", data)])


def test_markdown_escapes_table_cells(tmp_path: Path) -> None:
    path = write_variant(
        tmp_path,
        "odd-names",
        {"name: Rita Sousa": "name: Rita | Sousa <b>", "role: Shift lead, Chiado": "role: A|B"},
    )
    stack = load_stack_file(path)

    markdown = runbook.render_runbook(stack)
    html = runbook.render_runbook(stack, output_format="html")

    assert "| 1 | Rita \\| Sousa \\<b\\> | A\\|B |" in markdown
    assert "Rita | Sousa &lt;b&gt;" in html
    assert "<b>" not in html


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="use md or html"):
        runbook.render_runbook(stack_file("demo"), output_format="pdf")


def test_emulator_stack_has_no_console_links() -> None:
    text = runbook.render_runbook(stack_file("demo"))

    assert "console.aws.amazon.com" not in text
    assert "aws --endpoint-url http://127.0.0.1:5000 s3 cp " in text
    assert "aws --endpoint-url http://127.0.0.1:5000 cloudwatch get-dashboard" in text
    assert "local AWS emulator at http://127.0.0.1:5000" in text


# --- where the values come from -------------------------------------------------------


def test_plan_values_when_not_deployed() -> None:
    values = runbook.stack_values(stack_file("lisbon-popup"), {}, "it is not deployed")
    text = runbook.render_runbook(stack_file("lisbon-popup"), values)

    assert values.source == "plan"
    assert "come from the plan, because it is not deployed" in text
    assert "s3://ps-lisbon-popup-27-receipts-<account-id>/receipts/chiado/" in text
    assert (
        "https://eu-west-1.console.aws.amazon.com/systems-manager/appconfig/applications"
        "?region=eu-west-1" in text
    )
    assert "application `ps-lisbon-popup-27-flags`, profile `kill-switches`" in text


def test_outputs_values_used() -> None:
    values = runbook.stack_values(stack_file("lisbon-popup"), LISBON_OUTPUTS)
    text = runbook.render_runbook(stack_file("lisbon-popup"), values)

    assert values.source == "outputs"
    assert "come from the outputs of stack lisbon-popup." in text
    assert f"[AppConfig flag profile]({LISBON_APPCONFIG})" in text
    assert (
        "aws s3 cp chiado-2027-03-26-staff-01-1.csv "
        "s3://ps-lisbon-popup-27-receipts-111122223333/receipts/chiado/" in text
    )
    assert (
        "https://s3.console.aws.amazon.com/s3/buckets/ps-lisbon-popup-27-receipts-111122223333"
        "?region=eu-west-1&prefix=receipts/lx-factory/" in text
    )
    assert "<account-id>" not in text


def test_partial_outputs_name_plan_keys() -> None:
    outputs = {key: value for key, value in LISBON_OUTPUTS.items() if key != "flagsProfileId"}
    values = runbook.stack_values(stack_file("lisbon-popup"), outputs)
    text = runbook.render_runbook(stack_file("lisbon-popup"), values)

    assert values.source == "outputs and plan"
    assert "except flagsProfileId, which come from the plan" in text
    assert LISBON_APPCONFIG not in text


def test_secret_output_not_used() -> None:
    outputs = {**LISBON_OUTPUTS, "receiptsBucket": SECRET_MASK}
    values = runbook.stack_values(stack_file("lisbon-popup"), outputs)

    assert values.values["receiptsBucket"] == "ps-lisbon-popup-27-receipts-<account-id>"
    assert "receiptsBucket" not in values.from_outputs


def test_cli_reads_outputs() -> None:
    engine = deployed_engine()

    result = invoke("lisbon-popup", engine=engine)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert ("outputs", "lisbon-popup") in engine.calls
    assert "come from the outputs of stack lisbon-popup." in result.stdout
    assert LISBON_APPCONFIG in result.stdout


def test_cli_engine_failure_falls_back() -> None:
    engine = deployed_engine()
    engine.fail_next("outputs", "the Pulumi CLI is not on PATH")

    result = invoke("lisbon-popup", engine=engine)

    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("note: the runbook uses the plan's values, because ")
    assert "the Pulumi CLI is not on PATH" in result.stderr
    assert "Traceback" not in result.output
    assert "come from the plan, because the stack outputs could not be read" in result.stdout


def test_cli_without_pulumi_cli_sentence() -> None:
    engine = deployed_engine()
    engine.fail_next("outputs", CLI_MISSING)

    result = invoke("lisbon-popup", engine=engine)

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "note: the runbook uses the plan's values, because the Pulumi CLI is not on PATH, so "
        "the stack outputs could not be read\n"
    )
    assert (
        "\n\nNames on this page come from the plan, because the Pulumi CLI is not on PATH, so "
        "the stack outputs could not be read. `popstack runbook --no-outputs` skips reading the "
        "stack outputs. Replace \\<account-id\\> with the AWS account id of the stack. The "
        "AppConfig ids are known only after the stack is deployed.\n\n" in result.stdout
    )
    assert "offline checks" not in result.stdout
    assert "\\`" not in result.stdout


CLI_MISSING_REASON = "the Pulumi CLI is not on PATH, so the stack outputs could not be read"


def test_source_sentence_html_code() -> None:
    values = runbook.stack_values(stack_file("lisbon-popup"), {}, CLI_MISSING_REASON)
    html = runbook.render_runbook(stack_file("lisbon-popup"), values, "html")

    assert (
        '<p class="source" data-source="plan">Names on this page come from the plan, because '
        "the Pulumi CLI is not on PATH, so the stack outputs could not be read. "
        "<code>popstack runbook --no-outputs</code> skips reading the stack outputs. Replace "
        "&lt;account-id&gt; with the AWS account id of the stack. The AppConfig ids are known "
        "only after the stack is deployed.</p>\n" in html
    )


def test_source_sentence_no_outputs_html() -> None:
    values = runbook.stack_values(stack_file("demo"), {}, runbook.NO_OUTPUTS_REASON)
    html = runbook.render_runbook(stack_file("demo"), values, "html")

    assert (
        '<p class="source" data-source="plan">Names on this page come from the plan, because '
        "<code>popstack runbook</code> ran with <code>--no-outputs</code>, which skips reading "
        "the stack outputs. Replace &lt;account-id&gt; with the AWS account id of the stack. "
        "The AppConfig ids are known only after the stack is deployed.</p>\n" in html
    )


def test_source_reason_backticks_as_code() -> None:
    """Backticks in an engine message become code spans, and other markup stays escaped."""
    values = runbook.stack_values(stack_file("demo"), {}, "run `pulumi login` *now*")
    markdown = runbook.render_runbook(stack_file("demo"), values)
    html = runbook.render_runbook(stack_file("demo"), values, "html")

    assert "because run `pulumi login` \\*now\\*. `popstack runbook --no-outputs`" in markdown
    assert "because run <code>pulumi login</code> *now*. <code>popstack runbook" in html


def test_cli_undeployed_stack_falls_back() -> None:
    result = invoke("lisbon-popup", engine=RecordingEngine())

    assert result.exit_code == 0, result.output
    assert "stack 'lisbon-popup' not found" in result.stderr
    assert "ps-lisbon-popup-27-receipts-<account-id>" in result.stdout


def test_cli_empty_outputs_fall_back() -> None:
    result = invoke("lisbon-popup", engine=deployed_engine(outputs={}))

    assert result.exit_code == 0, result.output
    assert "stack lisbon-popup has no outputs yet" in result.stderr


def test_cli_no_outputs_skips_engine() -> None:
    engine = deployed_engine()

    result = invoke("lisbon-popup", "--no-outputs", engine=engine)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert engine.calls == []
    assert (
        "Names on this page come from the plan, because `popstack runbook` ran with "
        "`--no-outputs`, which skips reading the stack outputs. Replace \\<account-id\\> with "
        "the AWS account id of the stack. The AppConfig ids are known only after the stack is "
        "deployed.\n" in result.stdout
    )


def test_cli_without_pulumi_cli() -> None:
    """The installed command, with no Pulumi CLI on PATH, notes it and renders from the plan."""
    path = os.pathsep.join(
        directory
        for directory in os.environ.get("PATH", "").split(os.pathsep)
        if directory and not (Path(directory) / "pulumi").exists()
    )
    completed = subprocess.run(
        [str(POPSTACK), "runbook", "lisbon-popup"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PATH": path},
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert "the Pulumi CLI is not on PATH" in completed.stderr
    assert completed.stdout.startswith("# Runbook: Sardinha & Co spring pop-up (lisbon-popup-27)")


def test_cli_to_directory_writes_both(tmp_path: Path) -> None:
    target = tmp_path / "out"

    result = invoke("lisbon-popup", "--to", str(target), engine=deployed_engine())

    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in target.iterdir()) == ["runbook.html", "runbook.md"]
    markdown = (target / "runbook.md").read_text(encoding="utf-8")
    html = (target / "runbook.html").read_text(encoding="utf-8")
    assert markdown.startswith("# Runbook: ")
    assert html.startswith("<!doctype html>")
    assert LISBON_APPCONFIG in markdown
    assert LISBON_APPCONFIG in html


def test_cli_to_directory_one_format(tmp_path: Path) -> None:
    result = invoke("demo", "--to", str(tmp_path), "--format", "html", "--no-outputs")

    assert result.exit_code == 0, result.output
    assert [path.name for path in tmp_path.iterdir()] == ["runbook.html"]


def test_cli_html_on_stdout() -> None:
    result = invoke("flash-drop", "--format", "html", "--no-outputs")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!doctype html>")
    assert result.stdout.rstrip().endswith("</html>")


def test_cli_rejects_unknown_format() -> None:
    result = invoke("demo", "--format", "pdf")

    assert result.exit_code == 2
    assert "--format 'pdf' is not a runbook format; use md or html" in result.stderr


def test_cli_rejects_file_as_directory(tmp_path: Path) -> None:
    target = tmp_path / "runbook.md"
    target.write_text("old", encoding="utf-8")

    result = invoke("demo", "--to", str(target))

    assert result.exit_code == 2
    assert "is a file; give a directory" in result.stderr
    assert target.read_text(encoding="utf-8") == "old"


def test_cli_missing_stack_file() -> None:
    result = invoke("no-such-event")

    assert result.exit_code == 2
    assert "stacks/Pulumi.no-such-event.yaml: file not found" in result.stderr


def test_cli_missing_region(tmp_path: Path) -> None:
    path = write_variant(tmp_path, "no-region", {"  aws:region: eu-west-1\n": ""})

    result = invoke(str(path), "--no-outputs")

    assert result.exit_code == 2
    assert "aws:region is missing" in result.stderr
    assert "Traceback" not in result.output


# --- values from a hostile stack file or hostile outputs ------------------------------

HOSTILE_PRE_SYNC = ["/app/bin/inventory-sync", "a`b", "x\n\ny"]


def yaml_string(value: str) -> str:
    """Return `value` as a YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(value)


def markdown_html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def table_rows(html: str, first_header: str) -> list[list[str]]:
    """Return the body cells of the table whose first header cell is `first_header`."""
    for table in re.findall(r"<table>(.*?)</table>", html, flags=re.DOTALL):
        if re.search(rf"<th>{re.escape(first_header)}</th>", table.split("</tr>")[0]):
            body = table.split("<tbody>", 1)[1]
            return [
                re.findall(r"<td>(.*?)</td>", row, flags=re.DOTALL)
                for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.DOTALL)
            ]
    raise AssertionError(f"no table with first header {first_header!r}")


HOSTILE_LOCATION = "<b>Chiado</b>\n\n## Injected location heading"


@pytest.fixture
def hostile_stack(tmp_path: Path) -> StackFile:
    """lisbon-popup with markup, pipes, newlines and backticks in its free-text values.

    The spec rejects a newline in a location name and brackets or pipes in an e-mail
    address, so those values are set on the loaded model: the runbook must escape them
    even if the spec lets them through.
    """
    path = write_variant(
        tmp_path,
        "hostile",
        {
            "popstack:title: Sardinha & Co spring pop-up": "popstack:title: "
            + yaml_string("<script>alert(4)</script>"),
            "name: Rita Sousa": "name: " + yaml_string("<script>alert('name')</script>"),
            "role: Shift lead, Chiado": "role: " + yaml_string("a\\|b"),
            "name: Retail platform on-call": "name: " + yaml_string("<img src=x onerror=alert(2)>"),
            "when: Checkout is down everywhere, or a kill switch did not help within 5 minutes": (
                "when: " + yaml_string("Call <a href='javascript:alert(3)'>here</a>")
            ),
            '["/app/bin/inventory-sync", "--all-locations", "--source", "shopify"]': json.dumps(
                HOSTILE_PRE_SYNC
            ),
        },
    )
    stack = load_stack_file(path)
    spec = stack.spec
    first, second, third = spec.escalation
    escalation = [
        first.model_copy(update={"email": "x](https://evil.example/pay)@a.io"}),
        second,
        third.model_copy(update={"email": "a|b@example.com"}),
    ]
    locations = [
        spec.locations[0].model_copy(update={"name": HOSTILE_LOCATION}),
        *spec.locations[1:],
    ]
    return stack.model_copy(
        update={"spec": spec.model_copy(update={"escalation": escalation, "locations": locations})}
    )


def test_markdown_escapes_contact_markup(hostile_stack: StackFile) -> None:
    html = markdown_html(runbook.render_runbook(hostile_stack))
    rows = table_rows(html, "level")

    assert rows[0][:4] == [
        "1",
        "&lt;script&gt;alert('name')&lt;/script&gt;",
        "a\\|b",
        "A till, a terminal or the stock count looks wrong at any location",
    ]
    assert rows[1][1] == "&lt;img src=x onerror=alert(2)&gt;"
    assert rows[1][3] == "Call &lt;a href='javascript:alert(3)'&gt;here&lt;/a&gt;"
    assert "<script" not in html
    assert "<img" not in html
    assert "<a href='javascript" not in html


def test_markdown_escapes_title(hostile_stack: StackFile) -> None:
    markdown = runbook.render_runbook(hostile_stack)
    html = markdown_html(markdown)

    assert markdown.startswith("# Runbook: \\<script\\>alert(4)\\</script\\> (lisbon-popup-27)\n")
    assert html.startswith(
        "<h1>Runbook: &lt;script&gt;alert(4)&lt;/script&gt; (lisbon-popup-27)</h1>"
    )


def test_markdown_escapes_emails(hostile_stack: StackFile) -> None:
    html = markdown_html(runbook.render_runbook(hostile_stack))
    rows = table_rows(html, "level")

    assert [len(row) for row in rows] == [7, 7, 7]
    assert rows[0][5] == (
        '<a href="mailto:x%5D%28https%3A%2F%2Fevil.example%2Fpay%29@a.io">'
        "x](https://evil.example/pay)@a.io</a>"
    )
    assert rows[2][5] == '<a href="mailto:a%7Cb@example.com">a|b@example.com</a>'
    assert 'href="https://evil.example' not in html


def test_markdown_escapes_location_name(hostile_stack: StackFile) -> None:
    markdown = runbook.render_runbook(hostile_stack)
    html = markdown_html(markdown)
    headings = re.findall(r"<h2>(.*?)</h2>", html)
    escaped_name = "&lt;b&gt;Chiado&lt;/b&gt; ## Injected location heading"

    assert "Injected location heading" not in " ".join(headings)
    assert len(headings) == 9
    assert "<b>" not in html
    assert f"<li>\n<p>{escaped_name}:</p>" in html
    assert (
        f"<li>\n<p>{escaped_name} (<code>chiado</code>), to "
        "<code>s3://ps-lisbon-popup-27-receipts-&lt;account-id&gt;/receipts/chiado/</code>:</p>"
    ) in html
    assert "   - \\<b\\>Chiado\\</b\\> \\## Injected location heading:\n" in markdown


def test_markdown_code_span_fences(hostile_stack: StackFile) -> None:
    markdown = runbook.render_runbook(hostile_stack)
    html = markdown_html(markdown)

    assert "It runs ``/app/bin/inventory-sync 'a`b' $'x\\n\\ny'`` in a Kubernetes Job" in markdown
    assert (
        "It runs <code>/app/bin/inventory-sync 'a`b' $'x\\n\\ny'</code> in a Kubernetes Job" in html
    )


def test_html_escapes_hostile_values(hostile_stack: StackFile) -> None:
    html = runbook.render_runbook(hostile_stack, output_format="html")

    assert "<title>Runbook: &lt;script&gt;alert(4)&lt;/script&gt; (lisbon-popup-27)</title>" in html
    assert "<strong>&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;</strong>" in html
    assert "&lt;b&gt;Chiado&lt;/b&gt;\n\n## Injected location heading:" in html
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>" not in html


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rita Sousa", "Rita Sousa"),
        ("Sardinha & Co", "Sardinha & Co"),
        ("A&amp;B", "A\\&amp;B"),
        ("#sardinha-war-room", "#sardinha-war-room"),
        ("# heading", "\\# heading"),
        ("closing ##", "closing \\##"),
        ("- item", "\\- item"),
        ("+ item", "\\+ item"),
        ("+351 912 000 101", "+351 912 000 101"),
        ("===", "\\==="),
        ("1. item", "1\\. item"),
        ("2027-03-26", "2027-03-26"),
        ("a*b*c", "a\\*b\\*c"),
        ("checkout_enabled", "checkout_enabled"),
        ("_emphasis_", "\\_emphasis\\_"),
        ("[x](y) <b> `c` ~~s~~ a|b \\", "\\[x\\](y) \\<b\\> \\`c\\` \\~\\~s\\~\\~ a\\|b \\\\"),
        ("two\n\nlines\tand  spaces", "two lines and spaces"),
        ("bell\x07", "bell\ufffd"),
    ],
)
def test_markdown_text_escapes(text: str, expected: str) -> None:
    assert runbook.markdown_text(text) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("plain", "`plain`"),
        ("a`b", "``a`b``"),
        ("``x", "``` ``x ```"),
        ("x`", "`` x` ``"),
        (" padded ", "`  padded  `"),
        ("one\ntwo", "`one\ufffdtwo`"),
        ("a|b", "`a|b`"),
        ("", "` `"),
    ],
)
def test_markdown_code_spans(code: str, expected: str) -> None:
    rendered = runbook.markdown_code(code)
    html = markdown_html(f"see {rendered}")

    assert rendered == expected
    if code.strip("\n"):
        assert html == f"<p>see <code>{code.replace(chr(10), chr(0xFFFD))}</code></p>\n"


@pytest.mark.parametrize(
    ("code", "expected_cell"),
    [
        ("a|b", "<code>a|b</code>"),
        ("a`|`b", "<code>a`|`b</code>"),
        # A backslash before a pipe reads differently in markdown-it and in GFM,
        # so such a value leaves the code span and is escaped as text.
        ("a\\|b", "a\\|b"),
    ],
)
def test_markdown_code_in_table_cell(code: str, expected_cell: str) -> None:
    cell = runbook.markdown_code(code, table_cell=True)
    html = markdown_html(f"| x | y |\n| --- | --- |\n| {cell} | z |\n")

    assert table_rows(html, "x") == [[expected_cell, "z"]]


HOSTILE_OUTPUTS = {
    **LISBON_OUTPUTS,
    "dashboardName": "board](https://evil.example)",
    "receiptsBucket": "b; rm -rf ~",
    "deadLetterQueueUrl": "https://sqs/q|x$(id)",
    "checkoutNamespace": "ns`x",
}


def test_markdown_escapes_outputs() -> None:
    values = runbook.stack_values(stack_file("lisbon-popup"), HOSTILE_OUTPUTS)
    markdown = runbook.render_runbook(stack_file("lisbon-popup"), values)
    html = markdown_html(markdown)
    dashboard = (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#dashboards/dashboard/board%5D%28https%3A%2F%2Fevil.example%29"
    )

    assert table_rows(html, "alarm")[0] == [
        "<code>ps-lisbon-popup-27-dead-letters</code>",
        "An order failed processing. Read the dead letters with <code>aws sqs receive-message "
        "--queue-url 'https://sqs/q|x$(id)' --max-number-of-messages 10</code>. Do not purge "
        "the queue: teardown exports them.",
    ]
    assert f'<a href="{dashboard}">CloudWatch dashboard board](https://evil.example)</a>' in html
    assert 'href="https://evil.example' not in html
    assert "namespace <code>ns`x</code>" in html
    assert (
        '<code class="language-sh">aws s3 cp chiado-2027-03-26-staff-01-1.csv '
        "'s3://b; rm -rf ~/receipts/chiado/'\n</code>" in html
    )
    assert (
        'href="https://s3.console.aws.amazon.com/s3/buckets/b%3B%20rm%20-rf%20~'
        '?region=eu-west-1&amp;prefix=receipts/chiado/"' in html
    )


def test_hostile_outputs_markdown_and_html_match() -> None:
    values = runbook.stack_values(stack_file("lisbon-popup"), HOSTILE_OUTPUTS)
    markdown_code, markdown_links = code_and_links(
        markdown_html(runbook.render_runbook(stack_file("lisbon-popup"), values))
    )
    html_code, html_links = code_and_links(
        runbook.render_runbook(stack_file("lisbon-popup"), values, "html")
    )

    assert markdown_code == html_code
    assert markdown_links == html_links


def test_commands_quote_plan_bucket() -> None:
    text = runbook.render_runbook(stack_file("lisbon-popup"))

    assert (
        "aws s3 cp chiado-2027-03-26-staff-01-1.csv "
        "'s3://ps-lisbon-popup-27-receipts-<account-id>/receipts/chiado/'\n" in text
    )
    assert (
        "`aws sqs receive-message --queue-url "
        "'https://sqs.eu-west-1.amazonaws.com/<account-id>/ps-lisbon-popup-27-orders-dlq' "
        "--max-number-of-messages 10`" in text
    )


def test_commands_quote_newline_output() -> None:
    outputs = {**LISBON_OUTPUTS, "deadLetterQueueUrl": "https://q\nrm -rf /"}
    values = runbook.stack_values(stack_file("lisbon-popup"), outputs)
    context = runbook.runbook_context(stack_file("lisbon-popup"), values)
    markdown = runbook.render_runbook(stack_file("lisbon-popup"), values)

    assert context["dead_letter_command"] == (
        "aws sqs receive-message --queue-url $'https://q\\nrm -rf /' --max-number-of-messages 10"
    )
    assert "\nrm -rf /" not in markdown


def test_commands_quote_emulator_endpoint() -> None:
    # The spec accepts only local endpoints, so the hostile ones are set on the model.
    demo = stack_file("demo")
    endpoints = {
        **demo.config["aws:endpoints"][0],
        "s3": "http://127.0.0.1:5000; id",
        "cloudwatch": "http://127.0.0.1:5000 $(id)",
    }
    stack = demo.model_copy(update={"config": {**demo.config, "aws:endpoints": [endpoints]}})
    text = runbook.render_runbook(stack)

    assert (
        "aws --endpoint-url 'http://127.0.0.1:5000; id' s3 cp market-2027-06-05-staff-01-1.csv "
        "'s3://ps-demo-receipts-<account-id>/receipts/market/'\n" in text
    )
    assert (
        "aws --endpoint-url 'http://127.0.0.1:5000 $(id)' cloudwatch get-dashboard "
        "--dashboard-name ps-demo-board" in text
    )


def test_shell_word_quoting() -> None:
    assert runbook.shell_word("lisbon-popup") == "lisbon-popup"
    assert runbook.shell_word("a b") == "'a b'"
    assert runbook.shell_word("it's") == "'it'\"'\"'s'"
    assert runbook.shell_word("a\nb'c\\") == "$'a\\nb\\'c\\\\'"
    assert runbook.shell_word("\x1b[31m") == "$'\\x1b[31m'"
    assert runbook.shell_word("\x85") == "$'\\u0085'"


UNSAFE_STACK = "x; touch $HOME-PWNED #"


def test_cli_rejects_unsafe_stack_name(tmp_path: Path) -> None:
    path = write_variant(tmp_path, UNSAFE_STACK, {})
    engine = deployed_engine()

    result = invoke(str(path), engine=engine)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert (
        f"invalid stack name {UNSAFE_STACK!r}; use letters, digits, '-', '_' and '.' only"
        in result.stderr
    )
    assert str(path) in result.stderr
    assert engine.calls == []


def test_render_rejects_unsafe_stack_name(tmp_path: Path) -> None:
    stack = load_stack_file(write_variant(tmp_path, UNSAFE_STACK, {}))

    with pytest.raises(runbook.RunbookError, match="invalid stack name"):
        runbook.render_runbook(stack)


def test_cli_rejects_invalid_region(tmp_path: Path) -> None:
    path = write_variant(
        tmp_path, "bad-region", {"aws:region: eu-west-1": "aws:region: evil.example/x#"}
    )

    result = invoke(str(path), "--no-outputs")

    assert result.exit_code == 2
    assert "aws:region 'evil.example/x#' is not an AWS region name" in result.stderr
    assert result.stdout == ""


# --- writing the files with --to ------------------------------------------------------


def test_cli_to_parent_is_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("old", encoding="utf-8")
    target = tmp_path / "file" / "sub"

    result = invoke("demo", "--to", str(target), "--no-outputs")

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert f"--to {target}: a parent of the directory is a file" in result.stderr
    assert "Traceback" not in result.output
    assert (tmp_path / "file").read_text(encoding="utf-8") == "old"


def test_cli_to_target_is_directory(tmp_path: Path) -> None:
    (tmp_path / "runbook.md").mkdir()

    result = invoke("demo", "--to", str(tmp_path), "--no-outputs")

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert (
        f"{tmp_path / 'runbook.md'} is a directory, so no file was changed; remove it or give "
        "another --to directory" in result.stderr
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runbook.md"]


def test_cli_to_name_too_long(tmp_path: Path) -> None:
    target = tmp_path / ("x" * 300)

    result = invoke("demo", "--to", str(target), "--no-outputs")

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert f"--to {target}: File name too long; give a shorter path" in result.stderr
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_to_second_target_directory(tmp_path: Path) -> None:
    (tmp_path / "runbook.md").write_text("old", encoding="utf-8")
    (tmp_path / "runbook.html").mkdir()

    result = invoke("demo", "--to", str(tmp_path), "--no-outputs")

    assert result.exit_code == 2
    assert f"{tmp_path / 'runbook.html'} is a directory, so no file was changed" in result.stderr
    assert (tmp_path / "runbook.md").read_text(encoding="utf-8") == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runbook.html", "runbook.md"]


def test_cli_to_replaces_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep", encoding="utf-8")
    target = tmp_path / "out"
    target.mkdir()
    (target / "runbook.md").symlink_to(outside)

    result = invoke("demo", "--to", str(target), "--no-outputs")

    assert result.exit_code == 0, result.output
    assert outside.read_text(encoding="utf-8") == "keep"
    assert not (target / "runbook.md").is_symlink()
    assert (target / "runbook.md").read_text(encoding="utf-8").startswith("# Runbook: ")
    assert sorted(path.name for path in target.iterdir()) == ["runbook.html", "runbook.md"]


def test_cli_to_file_mode_follows_umask(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.write_text("", encoding="utf-8")

    result = invoke("demo", "--to", str(tmp_path / "out"), "--no-outputs")

    assert result.exit_code == 0, result.output
    for name in ("runbook.md", "runbook.html"):
        assert (tmp_path / "out" / name).stat().st_mode == reference.stat().st_mode


def test_cli_to_failed_rename_restores_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "runbook.md").write_text("old markdown", encoding="utf-8")
    real_replace = os.replace

    def replace(source: Any, destination: Any) -> None:
        if Path(destination).name == "runbook.html":
            raise PermissionError(13, "Permission denied", str(destination))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    result = invoke("demo", "--to", str(tmp_path), "--no-outputs")

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert (
        f"{tmp_path / 'runbook.html'}: Permission denied, so no file was changed; check the "
        "permissions or give another --to directory" in result.stderr
    )
    assert (tmp_path / "runbook.md").read_text(encoding="utf-8") == "old markdown"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runbook.md"]


def test_cli_to_failed_rename_removes_new_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def replace(source: Any, destination: Any) -> None:
        if Path(destination).name == "runbook.html":
            raise OSError(28, "No space left on device", str(destination))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    result = invoke("demo", "--to", str(tmp_path), "--no-outputs")

    assert result.exit_code == 2
    assert "no file was changed" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_to_failed_rename_names_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without hard links the old runbook.md cannot be kept, so the error names it."""
    (tmp_path / "runbook.md").write_text("old markdown", encoding="utf-8")
    real_replace = os.replace

    def replace(source: Any, destination: Any) -> None:
        if Path(destination).name == "runbook.html":
            raise PermissionError(13, "Permission denied", str(destination))
        real_replace(source, destination)

    def link(*arguments: Any, **options: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    result = invoke("demo", "--to", str(tmp_path), "--no-outputs")

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert (
        f"{tmp_path / 'runbook.html'}: Permission denied, so only {tmp_path / 'runbook.md'} "
        "has the new runbook; check the permissions" in result.stderr
    )
    assert (tmp_path / "runbook.md").read_text(encoding="utf-8").startswith("# Runbook: ")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runbook.md"]


def test_cli_to_failed_write_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "runbook.md").write_text("old markdown", encoding="utf-8")
    real_open = os.open

    def open_file(path: Any, flags: int, mode: int = 0o777) -> int:
        if Path(path).name.startswith(".runbook.html."):
            raise OSError(28, "No space left on device", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", open_file)
    result = invoke("demo", "--to", str(tmp_path), "--no-outputs")

    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert (
        f"{tmp_path / 'runbook.html'}: No space left on device, so no file was changed; free "
        "some disk space or give another --to directory" in result.stderr
    )
    assert (tmp_path / "runbook.md").read_text(encoding="utf-8") == "old markdown"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runbook.md"]


def test_cli_to_error_keeps_brackets(tmp_path: Path) -> None:
    target = tmp_path / "[red]runbooks"
    target.write_text("old", encoding="utf-8")

    result = invoke("demo", "--to", str(target), "--no-outputs")

    assert result.exit_code == 2
    assert f"--to {target} is a file" in result.stderr


def new_event_file(directory: Path) -> Path:
    """Write a stack file as `popstack new` does, with its default placeholder values."""
    return write_stack_file(
        directory / "Pulumi.new-shop.yaml",
        locations=["alfama=Alfama kiosk"],
        stack="new-shop",
        event_id="new-shop",
        title="New shop",
        brand="CHANGE-ME brand",
        owner="CHANGE-ME team",
        cost_centre="CHANGE-ME",
        currency="EUR",
        region="eu-west-1",
        opens="2027-05-01T10:00:00+01:00",
        closes="2027-05-01T18:00:00+01:00",
        time_zone="Europe/Lisbon",
        peak_rps=50,
        image="registry.example.com/change-me/checkout:1.0.0",
        queue_type="standard",
        alert_email="change-me@example.com",
    )


NEW_EVENT_PLACEHOLDERS = [
    "popstack:alerts.email",
    "popstack:brand",
    "popstack:checkout.image",
    "popstack:cluster.context",
    "popstack:cluster.oidcProviderArn",
    "popstack:cluster.oidcIssuer",
    "popstack:cluster.vpcId",
    "popstack:cluster.subnetIds[0]",
    "popstack:costCentre",
    "popstack:escalation[0].name",
    "popstack:escalation[1].name",
    "popstack:escalation[1].email",
    "popstack:inventory.preSyncCommand[0]",
    "popstack:owner",
]


def test_cli_placeholder_warning(tmp_path: Path) -> None:
    path = new_event_file(tmp_path)

    result = invoke(str(path), "--no-outputs")

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"warning: {path} still has `popstack new` placeholder values at "
        f"{', '.join(NEW_EVENT_PLACEHOLDERS)}; replace them before `popstack up`\n"
    )


def test_markdown_placeholder_box(tmp_path: Path) -> None:
    path = new_event_file(tmp_path)

    markdown = runbook.render_runbook(load_stack_file(path))

    box = "".join(f"> - `{key}`\n" for key in NEW_EVENT_PLACEHOLDERS)
    assert markdown.startswith(
        "# Runbook: New shop (new-shop)\n\n"
        "> [!WARNING]\n"
        f"> **Not ready for staff.** {path} still has `CHANGE-ME` placeholder values from "
        "`popstack new`, so contacts, names and commands on this page can be wrong. Replace "
        "the values at these keys, then render the runbook again:\n"
        ">\n"
        f"{box}\n"
        "Stack `new-shop` "
    )


def test_html_placeholder_box(tmp_path: Path) -> None:
    path = new_event_file(tmp_path)

    html = runbook.render_runbook(load_stack_file(path), output_format="html")

    items = "".join(f"<li><code>{key}</code></li>\n" for key in NEW_EVENT_PLACEHOLDERS)
    assert (
        "<h1>Runbook: New shop (new-shop)</h1>\n"
        '<div class="warning" id="placeholders" role="alert">\n'
        f"<p><strong>Not ready for staff.</strong> {path} still has <code>CHANGE-ME</code> "
        "placeholder values from <code>popstack new</code>, so contacts, names and commands on "
        "this page can be wrong. Replace the values at these keys, then render the runbook "
        f"again:</p>\n<ul>\n{items}</ul>\n</div>\n"
        '<p class="meta">' in html
    )


@pytest.mark.parametrize("output_format", runbook.FORMATS)
@pytest.mark.parametrize("stack", SAMPLE_STACKS)
def test_sample_stack_no_placeholder_box(stack: str, output_format: str) -> None:
    text = runbook.render_runbook(stack_file(stack), output_format=output_format)

    assert "Not ready for staff" not in text
    assert "[!WARNING]" not in text


LISBON_LOCATION_STEP_MARKDOWN = """\
1. If only one location fails, close that location until it works again:

   - Chiado flagship:

     ```sh
     popstack flags set lisbon-popup location_chiado_enabled=off --reason "closing location chiado"
     ```

   - LX Factory stall:

     ```sh
     popstack flags set lisbon-popup location_lx_factory_enabled=off --reason "closing location lx-factory"
     ```

   - Alfama kiosk:

     ```sh
     popstack flags set lisbon-popup location_alfama_enabled=off --reason "closing location alfama"
     ```
1. If orders fail everywhere"""  # noqa: E501

LISBON_LOCATION_STEP_HTML = """\
<li><p>If only one location fails, close that location until it works again:</p>
<ul>
<li><p>Chiado flagship:</p>
<pre><code>popstack flags set lisbon-popup location_chiado_enabled=off --reason &#34;closing location chiado&#34;</code></pre></li>
<li><p>LX Factory stall:</p>
<pre><code>popstack flags set lisbon-popup location_lx_factory_enabled=off --reason &#34;closing location lx-factory&#34;</code></pre></li>
<li><p>Alfama kiosk:</p>
<pre><code>popstack flags set lisbon-popup location_alfama_enabled=off --reason &#34;closing location alfama&#34;</code></pre></li>
</ul></li>
<li><p>If orders fail everywhere"""  # noqa: E501


def test_markdown_close_location_blocks() -> None:
    markdown = runbook.render_runbook(stack_file("lisbon-popup"))

    assert LISBON_LOCATION_STEP_MARKDOWN in markdown


def test_html_close_location_blocks() -> None:
    html = runbook.render_runbook(stack_file("lisbon-popup"), output_format="html")

    assert LISBON_LOCATION_STEP_HTML in html


def test_markdown_close_location_one_per_block() -> None:
    html = markdown_html(runbook.render_runbook(stack_file("lisbon-popup")))
    section = html.split("<h2>Checkout fails</h2>")[1].split("<h2>")[0]
    blocks = re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", section, flags=re.DOTALL)
    closing = [block for block in blocks if "location_" in block]

    assert len(closing) == 3
    for block in closing:
        assert block.count("\n") == 1, block


def test_markdown_calendar_alarm_row() -> None:
    markdown = runbook.render_runbook(stack_file("lisbon-popup"))

    assert (
        '| `ps-lisbon-popup-27-checkout-errors` | Checkout returns errors: follow "Checkout '
        'fails" above. |\n'
        "| `ps-lisbon-popup-27-calendar-errors` | A scheduled doors-open or doors-close action "
        "failed. Check the switches with `popstack flags show lisbon-popup` and set them by "
        "hand. If doors-open failed, turn elevated sampling on with `popstack flags set "
        'lisbon-popup elevated_sampling=on --reason "doors-open action failed"`. If '
        "doors-close failed, turn checkout and elevated sampling off with `popstack flags set "
        'lisbon-popup checkout_enabled=off elevated_sampling=off --reason "doors-close action '
        'failed"`. `popstack flags set` does not change the X-Ray sampling rate, which the '
        "action also sets, so tell the engineer on call, who reads the log group "
        "`/aws/lambda/ps-lisbon-popup-27-calendar`. |\n\n## After the event" in markdown
    )


def test_html_calendar_alarm_row() -> None:
    html = runbook.render_runbook(stack_file("lisbon-popup"), output_format="html")

    assert (
        '<tr><td data-label="alarm"><code>ps-lisbon-popup-27-calendar-errors</code></td>'
        '<td data-label="what to do">A scheduled doors-open or doors-close action failed. '
        "Check the switches with <code>popstack flags show lisbon-popup</code> and set them by "
        "hand. If doors-open failed, turn elevated sampling on with <code>popstack flags set "
        "lisbon-popup elevated_sampling=on --reason &#34;doors-open action failed&#34;</code>. "
        "If doors-close failed, turn checkout and elevated sampling off with <code>popstack "
        "flags set lisbon-popup checkout_enabled=off elevated_sampling=off --reason "
        "&#34;doors-close action failed&#34;</code>. <code>popstack flags set</code> does not "
        "change the X-Ray sampling rate, which the action also sets, so tell the engineer on "
        "call, who reads the log group <code>/aws/lambda/ps-lisbon-popup-27-calendar</code>."
        "</td></tr>\n</tbody>" in html
    )


def test_emulator_calendar_alarm_row() -> None:
    """An emulator stack has the calendar Lambda and its alarm, but no schedules run it."""
    markdown = runbook.render_runbook(stack_file("demo"))
    html = runbook.render_runbook(stack_file("demo"), output_format="html")

    assert (
        "| `ps-demo-calendar-errors` | The calendar Lambda failed when someone invoked it by "
        "hand. This stack has no schedules, so nothing runs it at doors open or close. Check "
        "the switches with `popstack flags show demo` and set them by hand: at doors open "
        '`popstack flags set demo elevated_sampling=on --reason "doors-open action failed"`, '
        "at doors close `popstack flags set demo checkout_enabled=off elevated_sampling=off "
        '--reason "doors-close action failed"`. |\n\n## After the event' in markdown
    )
    assert (
        '<tr><td data-label="alarm"><code>ps-demo-calendar-errors</code></td>'
        '<td data-label="what to do">The calendar Lambda failed when someone invoked it by '
        "hand. This stack has no schedules, so nothing runs it at doors open or close. Check "
        "the switches with <code>popstack flags show demo</code> and set them by hand: at doors "
        "open <code>popstack flags set demo elevated_sampling=on --reason &#34;doors-open "
        "action failed&#34;</code>, at doors close <code>popstack flags set demo "
        "checkout_enabled=off elevated_sampling=off --reason &#34;doors-close action "
        "failed&#34;</code>.</td></tr>\n</tbody>" in html
    )
    assert "X-Ray" not in markdown.split("## Dashboard and alarms")[1]


@pytest.mark.parametrize("stack", SAMPLE_STACKS)
def test_calendar_alarm_matches_program(stack: str) -> None:
    """The runbook names the alarm components/schedules.py creates in this stack's plan."""
    from popstack.plan import build_plan

    plan = build_plan(stack_file(stack), run_policies=False)
    alarms = {
        resource.inputs["name"]
        for resource in plan.recording.resources
        if resource.type == "aws:cloudwatch/metricAlarm:MetricAlarm"
    }
    markdown = runbook.render_runbook(stack_file(stack))

    assert f"ps-{stack_file(stack).spec.id}-calendar-errors" in alarms
    for alarm in alarms:
        assert f"| `{alarm}` |" in markdown


def test_markdown_shows_account_placeholder() -> None:
    html = markdown_html(runbook.render_runbook(stack_file("lisbon-popup")))

    assert "Replace &lt;account-id&gt; with the AWS account id of the stack." in html


# --- what the page shows in Chromium ---------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Launch Debian's Chromium once for this module, headless, with a fresh profile."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing; the runbook's HTML tests need Chromium. Install it with "
            "`apt-get install -y chromium` (scripts/bootstrap.sh does this where apt-get exists)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the Python package playwright is missing; install the test dependencies with "
            "`.venv/bin/python -m pip install -e '.[test]'` (never `playwright install`)",
            pytrace=False,
        )
    playwright = sync_playwright().start()
    # Playwright's launch gives the browser a new temporary profile directory.
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="module")
def html_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Render the HTML runbook of every sample stack from the plan, plus lisbon-popup's
    from its outputs, into files for the browser."""
    directory = tmp_path_factory.mktemp("runbooks")
    pages = {}
    for stack in SAMPLE_STACKS:
        path = directory / f"{stack}.html"
        path.write_text(
            runbook.render_runbook(stack_file(stack), output_format="html"), encoding="utf-8"
        )
        pages[stack] = path
    values = runbook.stack_values(stack_file("lisbon-popup"), LISBON_OUTPUTS)
    path = directory / "lisbon-popup-deployed.html"
    path.write_text(
        runbook.render_runbook(stack_file("lisbon-popup"), values, "html"), encoding="utf-8"
    )
    pages["lisbon-popup-deployed"] = path
    return pages


def open_page(browser: Any, path: Path, **context_options: Any) -> Any:
    """Open a rendered runbook, failing on any request that leaves the file."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    outside = [url for url in requests if not url.startswith("file://")]
    assert outside == [], f"the page requested {outside}; it must be self-contained"
    return page


@pytest.fixture
def phone_page(browser: Any, html_pages: dict[str, Path], request: pytest.FixtureRequest) -> Any:
    page = open_page(browser, html_pages[request.param], **PHONE)
    yield page
    page.context.close()


def horizontal_overflow(page: Any) -> list[str]:
    """Return a description of every element that sticks out of the viewport or its box."""
    return page.evaluate(
        """() => {
          const width = window.innerWidth;
          const found = [];
          for (const element of document.querySelectorAll('body *')) {
            const box = element.getBoundingClientRect();
            // Skip the 1-pixel table headers kept for screen readers on a phone.
            if (box.width <= 1) continue;
            if (box.right > width + 0.5 || element.scrollWidth > element.clientWidth + 1
                && getComputedStyle(element).overflowX !== 'visible') {
              found.push(element.tagName + ': ' + element.textContent.slice(0, 60));
            }
          }
          return found;
        }"""
    )


@pytest.mark.parametrize("phone_page", SAMPLE_STACKS, indirect=True)
def test_phone_no_horizontal_scroll(phone_page: Any) -> None:
    scroll_width = phone_page.evaluate("document.documentElement.scrollWidth")
    inner_width = phone_page.evaluate("window.innerWidth")

    assert inner_width == 390
    assert scroll_width <= inner_width
    assert horizontal_overflow(phone_page) == []


def test_narrow_phone_no_horizontal_scroll(browser: Any, html_pages: dict[str, Path]) -> None:
    page = open_page(browser, html_pages["lisbon-popup-deployed"], **NARROW_PHONE)

    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert horizontal_overflow(page) == []
    page.context.close()


@pytest.mark.parametrize("phone_page", SAMPLE_STACKS, indirect=True)
def test_phone_body_text_size(phone_page: Any) -> None:
    body = phone_page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    smallest_paragraph = phone_page.evaluate(
        """() => Math.min(...[...document.querySelectorAll('main p, main li, main td')]
             .map(e => parseFloat(getComputedStyle(e).fontSize)))"""
    )

    assert body >= 16
    assert smallest_paragraph >= 16


@pytest.mark.parametrize("phone_page", SAMPLE_STACKS, indirect=True)
def test_phone_shows_flags_and_contacts(phone_page: Any, request: pytest.FixtureRequest) -> None:
    stack = request.node.callspec.params["phone_page"]
    spec = stack_file(stack).spec
    text = phone_page.inner_text("body")

    for key in flag_document(spec)["values"]:
        assert f"popstack flags set {stack} {key}=off --reason " in text
        assert f"popstack flags set {stack} {key}=on --reason " in text
    for contact in spec.escalation:
        assert contact.name in text
        if contact.phone:
            assert contact.phone in text
        if contact.email:
            assert contact.email in text
    assert f"popstack flags show {stack}" in text
    assert f"popstack teardown {stack} --settlements FILE" in text


@pytest.mark.parametrize("phone_page", SAMPLE_STACKS, indirect=True)
def test_phone_contact_links(phone_page: Any, request: pytest.FixtureRequest) -> None:
    stack = request.node.callspec.params["phone_page"]
    spec = stack_file(stack).spec
    tel = phone_page.eval_on_selector_all(
        "a[href^='tel:']", "links => links.map(a => [a.getAttribute('href'), a.innerText])"
    )
    mail = phone_page.eval_on_selector_all(
        "a[href^='mailto:']", "links => links.map(a => [a.getAttribute('href'), a.innerText])"
    )
    sizes = phone_page.eval_on_selector_all(
        "a[href^='tel:'], a[href^='mailto:']",
        "links => links.map(a => a.getBoundingClientRect()).map(box => [box.width, box.height])",
    )

    assert tel == [[c.phone_uri, c.phone] for c in spec.escalation if c.phone]
    assert mail == [[f"mailto:{c.email}", c.email] for c in spec.escalation if c.email]
    # WCAG 2.1 success criterion 2.5.5 (Target Size, AAA) asks for 44 by 44 CSS pixels.
    assert min(height for _, height in sizes) >= 44
    assert min(width for width, _ in sizes) >= 44


@pytest.mark.parametrize("phone_page", ["lisbon-popup", "flash-drop"], indirect=True)
def test_phone_dashboard_link(phone_page: Any, request: pytest.FixtureRequest) -> None:
    stack = request.node.callspec.params["phone_page"]
    spec = stack_file(stack).spec
    region = stack_file(stack).config["aws:region"]
    expected = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#dashboards/dashboard/ps-{spec.id}-board"
    )
    link = phone_page.locator("#dashboard a", has_text=f"CloudWatch dashboard ps-{spec.id}-board")

    assert link.count() == 1
    assert link.get_attribute("href") == expected
    assert link.is_visible()


@pytest.mark.parametrize("phone_page", ["lisbon-popup"], indirect=True)
def test_phone_sections_in_order(phone_page: Any) -> None:
    headings = phone_page.eval_on_selector_all("main h2", "items => items.map(h => h.innerText)")

    assert headings[:3] == [
        "Checkout fails",
        "Terminals at a location are slow",
        "Inventory looks wrong",
    ]
    assert headings[3:] == [
        "Switches",
        "Manual receipts",
        "Escalation",
        "Times",
        "Dashboard and alarms",
        "After the event",
    ]


@pytest.mark.parametrize("phone_page", ["lisbon-popup-deployed"], indirect=True)
def test_phone_deployed_links(phone_page: Any) -> None:
    appconfig = phone_page.eval_on_selector_all(
        "#switches a", "links => links.map(a => a.getAttribute('href'))"
    )
    s3 = phone_page.locator("#receipts a", has_text="S3 console")
    text = phone_page.inner_text("body")

    assert appconfig == [LISBON_APPCONFIG] * 7
    assert s3.count() == 3
    assert s3.first.get_attribute("href") == (
        "https://s3.console.aws.amazon.com/s3/buckets/ps-lisbon-popup-27-receipts-111122223333"
        "?region=eu-west-1&prefix=receipts/chiado/"
    )
    assert "aws s3 cp chiado-2027-03-26-staff-01-1.csv" in text
    assert "come from the outputs of stack lisbon-popup." in text


@pytest.mark.parametrize("phone_page", ["demo"], indirect=True)
def test_phone_emulator_has_no_console(phone_page: Any) -> None:
    hrefs = phone_page.eval_on_selector_all("a", "links => links.map(a => a.href)")

    assert [href for href in hrefs if "console.aws.amazon.com" in href] == []
    assert "local AWS emulator" in phone_page.inner_text("body")


def test_phone_placeholder_box_on_top(browser: Any, tmp_path: Path) -> None:
    page_path = tmp_path / "new-shop.html"
    page_path.write_text(
        runbook.render_runbook(load_stack_file(new_event_file(tmp_path)), output_format="html"),
        encoding="utf-8",
    )
    page = open_page(browser, page_path, **PHONE)
    box = page.locator("#placeholders")
    box_top = box.bounding_box()["y"]
    first_section_top = page.locator("main section").first.bounding_box()["y"]

    assert box.is_visible()
    assert box_top < 844
    assert box_top < first_section_top
    assert box.locator("li").all_inner_texts() == NEW_EVENT_PLACEHOLDERS
    assert horizontal_overflow(page) == []
    page.context.close()


@pytest.fixture
def print_page(browser: Any, html_pages: dict[str, Path]) -> Iterator[Any]:
    page = open_page(browser, html_pages["lisbon-popup-deployed"])
    page.emulate_media(media="print")
    yield page
    page.context.close()


def test_print_hides_navigation(print_page: Any) -> None:
    navigation = print_page.locator("nav")

    assert navigation.count() == 1
    assert not navigation.is_visible()
    assert "Terminals slow" not in print_page.inner_text("body")


def test_print_shows_link_urls(print_page: Any) -> None:
    printed = print_page.eval_on_selector_all(
        "a[href^='http']",
        "links => links.map(a => [a.href, getComputedStyle(a, '::after').content])",
    )

    assert len(printed) >= 10
    for href, after in printed:
        assert after == f'" ({href})"'


def test_print_black_on_white(print_page: Any) -> None:
    colours = print_page.evaluate(
        """() => [...document.querySelectorAll('body, body *')]
             .filter(e => e.getBoundingClientRect().width > 0)
             .map(e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor])"""
    )

    assert {color for color, _ in colours} == {"rgb(0, 0, 0)"}
    assert {background for _, background in colours} == {"rgb(255, 255, 255)"}


def test_print_keeps_sections_whole(print_page: Any) -> None:
    breaks = print_page.eval_on_selector_all(
        "main section", "items => items.map(s => getComputedStyle(s).breakInside)"
    )

    assert len(breaks) == 9
    assert set(breaks) == {"avoid"}


def test_print_pdf_page_count(print_page: Any) -> None:
    pdf = print_page.pdf(format="A4", print_background=False)
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))

    assert pdf.startswith(b"%PDF-")
    assert 3 <= pages <= 20, f"{pages} pages"


def test_bootstrap_installs_chromium() -> None:
    script = REPO / "scripts" / "bootstrap.sh"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)

    assert syntax.returncode == 0, syntax.stderr
    assert re.search(r"apt-get install -y\S* .*\bchromium\b", script.read_text(encoding="utf-8"))


def test_terminals_section_blocks_hold_one_command() -> None:
    """Copying a block from a phone must not close and reopen a location at once."""
    text = runbook.render_runbook(stack_file("lisbon-popup"))
    section = text.split("## Terminals at a location are slow")[1].split("\n## ")[0]
    blocks = re.findall(r"```sh\n(.*?)\n\s*```", section, flags=re.DOTALL)

    assert [len(block.strip().splitlines()) for block in blocks] == [1] * 7
    assert blocks[1].strip() == (
        "popstack flags set lisbon-popup location_chiado_enabled=off "
        '--reason "closing location chiado"'
    )
