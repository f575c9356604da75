"""A new event's stack file, rendered from templates/new_event.yaml.j2, and its placeholders."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import jinja2

from components.spec import SpecError, StackFile, load_stack_file

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# Placeholders `popstack new` writes where the platform team must fill in a
# value. They pass validation, so the first plan runs, and `placeholder_keys`
# finds them, so `plan` and `validate` warn until they are replaced.
PLACEHOLDER = "CHANGE-ME"
CLUSTER_PLACEHOLDERS = {
    "cluster_context": f"{PLACEHOLDER}-cluster",
    "oidc_provider_arn": (
        f"arn:aws:iam::111111111111:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/{PLACEHOLDER}"
    ),
    "oidc_issuer": f"oidc.eks.eu-west-1.amazonaws.com/id/{PLACEHOLDER}",
    "vpc_id": f"vpc-{PLACEHOLDER}",
    "subnet_ids": [f"subnet-{PLACEHOLDER}"],
}

# The `popstack new` option behind each spec key, so errors name the option.
OPTIONS = {
    "id": "--id",
    "title": "--title",
    "brand": "--brand",
    "owner": "--owner",
    "costCentre": "--cost-centre",
    "currency": "--currency",
    "peakRps": "--peak-rps",
    "window.opens": "--opens",
    "window.closes": "--closes",
    "window.timeZone": "--time-zone",
    "checkout.image": "--image",
    "alerts.email": "--alert-email",
    "alerts": "--alert-email",
    "window": "--opens/--closes",
}

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def _parse_locations(items: list[str]) -> tuple[list[dict[str, str]], list[str]]:
    parsed, problems = [], []
    for index, item in enumerate(items):
        location_id, separator, name = item.partition("=")
        if not separator or not location_id.strip() or not name.strip():
            problems.append(
                f"--location {item!r} (number {index + 1}): "
                "write it as id=Name, for example chiado=Chiado store"
            )
            continue
        parsed.append({"id": location_id.strip(), "name": name.strip()})
    return parsed, problems


def _as_option_problem(problem: str, temporary: Path) -> str:
    """Turn `FILE:LINE: popstack:window.opens: msg` into `--opens: msg`."""
    match = re.match(rf"^{re.escape(str(temporary))}(?::\d+)*: popstack:([^:]+): (.*)$", problem)
    if not match:
        return problem.replace(str(temporary), "the generated stack file")
    key, message = match.groups()
    location = re.match(r"^locations\[(\d+)\]", key)
    if location:
        return f"--location (number {int(location.group(1)) + 1}): {message}"
    return f"{OPTIONS.get(key, 'popstack:' + key)}: {message}"


def write_stack_file(path: Path, *, locations: list[str], **values) -> Path:
    """Render a new stack file, validate it, and only then move it into place.

    Raises FileExistsError if the file exists and SpecError, naming the options
    at fault, if the values are invalid; in both cases nothing is written.
    """
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", values["stack"]):
        raise SpecError(
            f"popstack new {values['stack']}",
            [f"stack name {values['stack']!r}: use letters, digits, '-', '_' and '.' only"],
        )
    parsed, problems = _parse_locations(locations)
    max_replicas = max(2, -(-values["peak_rps"] // 25) + 1)
    text = _environment.get_template("new_event.yaml.j2").render(
        locations=parsed or [{"id": "location", "name": "Location"}],
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
        try:
            load_stack_file(Path(temporary))
        except SpecError as error:
            problems += [_as_option_problem(p, Path(temporary)) for p in error.problems]
        if problems:
            raise SpecError(f"popstack new {path.name}", problems)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def placeholder_keys(stack_file: StackFile) -> list[str]:
    """Return the config keys whose values still contain a `popstack new` placeholder."""
    found: list[str] = []

    def walk(value: object, key: str) -> None:
        if isinstance(value, dict):
            for child, item in value.items():
                walk(item, f"{key}.{child}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{key}[{index}]")
        elif isinstance(value, str) and PLACEHOLDER.lower() in value.lower():
            found.append(key)

    for key, value in sorted(stack_file.config.items()):
        walk(value, key)
    return found
