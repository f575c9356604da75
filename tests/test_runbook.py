"""Tests for `popstack runbook`: the facts on the page, where its values come from, and
what the HTML page shows in Chromium on a phone and when printed.

The Chromium tests drive Debian's /usr/bin/chromium through Playwright, with one
browser per module. They fail, rather than skip, when Chromium is missing.
"""

from __future__ import annotations

import csv
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

from components.flags import flag_document
from components.spec import StackFile, load_stack_file
from popstack import runbook
from popstack.cli import app
from popstack.engine import SECRET_MASK, RecordingEngine
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


def write_variant(directory: Path, name: str, replacements: dict[str, str]) -> Path:
    """Write lisbon-popup with some text replaced, as stacks/Pulumi.<name>.yaml."""
    text = (STACKS / "Pulumi.lisbon-popup.yaml").read_text(encoding="utf-8")
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


def test_lisbon_times_keep_offsets() -> None:
    text = runbook.render_runbook(stack_file("lisbon-popup"))

    assert "| Doors open: change freeze starts | 2027-03-26 10:00 WET | 2027-03-26 10:00 |" in text
    assert "| Doors close: change freeze ends | 2027-03-28 19:00 WEST | 2027-03-28 18:00 |" in text
    assert "| Stock pre-sync starts | 2027-03-26 04:00 WET | 2027-03-26 04:00 |" in text
    assert "| Teardown deadline (the stack expires) | 2027-03-31 19:00 WEST |" in text


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

    assert "| 1 | Rita \\| Sousa <b> | A\\|B |" in markdown
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
    assert "because popstack runbook ran with --no-outputs" in result.stdout


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
