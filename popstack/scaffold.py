"""Files rendered from templates/: a new event's stack file and the on-call runbook."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from components.flags import flag_document
from components.naming import physical_name
from components.spec import SpecError, StackFile, load_stack_file

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# Placeholders `popstack new` writes for the cluster, to be replaced by the
# platform team; they pass validation so that the first plan runs.
CLUSTER_PLACEHOLDERS = {
    "cluster_context": "CHANGE-ME-cluster",
    "oidc_provider_arn": (
        "arn:aws:iam::111111111111:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/CHANGEME"
    ),
    "oidc_issuer": "oidc.eks.eu-west-1.amazonaws.com/id/CHANGEME",
    "vpc_id": "vpc-00000000000000000",
    "subnet_ids": ["subnet-00000000000000000"],
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def write_stack_file(path: Path, *, locations: list[str], **values) -> Path:
    """Render a new stack file, validate it, and only then move it into place.

    Raises FileExistsError if the file exists and SpecError if the values are
    invalid; in both cases nothing is written.
    """
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    parsed = []
    for index, item in enumerate(locations):
        location_id, separator, name = item.partition("=")
        if not separator or not location_id or not name:
            raise SpecError(
                str(path),
                [
                    f"--location {item!r} (number {index + 1}): "
                    "write it as id=Name, for example chiado=Chiado store"
                ],
            )
        parsed.append({"id": location_id.strip(), "name": name.strip()})
    max_replicas = max(2, -(-values["peak_rps"] // 25) + 1)
    text = _environment.get_template("new_event.yaml.j2").render(
        locations=parsed,
        min_replicas=2,
        max_replicas=max_replicas,
        **CLUSTER_PLACEHOLDERS,
        **values,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".new-", suffix=".yaml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        load_stack_file_as(Path(temporary), path)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def load_stack_file_as(actual: Path, reported: Path) -> StackFile:
    """Validate `actual`, reporting errors under the name `reported`."""
    try:
        return load_stack_file(actual)
    except SpecError as error:
        problems = [p.replace(str(actual), str(reported)) for p in error.problems]
        raise SpecError(str(reported), problems) from None


def render_runbook(stack_file: StackFile) -> str:
    """Render the on-call runbook for one event."""
    spec = stack_file.spec
    zone = ZoneInfo(spec.window.time_zone)
    document = flag_document(spec)
    flags = [
        {"key": key, "name": document["flags"][key]["name"], "enabled": value["enabled"]}
        for key, value in document["values"].items()
    ]
    suffix = ".fifo" if spec.queues.type == "fifo" else ""
    account = "<account-id>"

    def name(rule: str, part: str = "") -> str:
        return physical_name(spec.id, rule, part)

    names = {
        "dead_letter_queue": name("sqs", f"orders-dlq{suffix}"),
        "alarm_dead_letters": name("alarm", "dead-letters"),
        "alarm_queue_age": name("alarm", "queue-age"),
        "alarm_cache_throttling": name("alarm", "cache-throttling"),
        "alarm_checkout_errors": name("alarm", "checkout-errors"),
        "receipts_bucket": f"{name('s3', 'receipts')}-{account}",
        "dashboard": name("cloudwatch", "board"),
        "namespace": name("k8s"),
    }
    return _environment.get_template("runbook.md.j2").render(
        spec=spec,
        stack=stack_file.stack,
        flags=flags,
        names=names,
        local=lambda moment: moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
        utc=lambda moment: moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
    )
