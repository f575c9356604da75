"""The one place teardown calls ``teardown.export``: the export plus teardown's own files.

``teardown.export.export_event`` writes the reconciliation files and their manifest.
Teardown adds JSON files of its own: flag history, stack resources, dashboard metrics
and ``teardown.json`` with the close time and any force reason. ``write_bundle`` writes
them beside the others and adds them to the same manifest, in the manifest's own layout
(entries sorted by name, keys sorted, two-space indent, trailing newline).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teardown.csvinput import InputFile
from teardown.export import MANIFEST, ExportContext, Verification, export_event, verify_export
from teardown.reconcile import Reconciliation


@dataclass(frozen=True)
class Bundle:
    """A written export directory, its manifest and the manifest's SHA-256."""

    directory: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    reconciliation: Reconciliation


def json_bytes(value: Any) -> bytes:
    """Serialise a teardown file: sorted keys, two-space indent, UTF-8, trailing newline."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_bundle(
    directory: Path,
    context: ExportContext,
    *,
    orders: Iterable[Mapping[str, object]],
    settlement_files: Sequence[InputFile],
    receipt_files: Sequence[InputFile],
    dead_letters: Iterable[Mapping[str, object]],
    extra_files: Mapping[str, bytes],
) -> Bundle:
    """Write the whole export into ``directory``, replacing what an earlier run left there."""
    if directory.exists():
        shutil.rmtree(directory)
    result = export_event(
        directory,
        context,
        orders=orders,
        settlement_files=settlement_files,
        receipt_files=receipt_files,
        dead_letters=dead_letters,
    )
    manifest = dict(result.manifest)
    entries = [entry for entry in manifest["files"] if entry["name"] not in extra_files]
    for name, data in sorted(extra_files.items()):
        (directory / name).write_bytes(data)
        entries.append(
            {
                "name": name,
                "rows": None,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    manifest["files"] = sorted(entries, key=lambda entry: str(entry["name"]))
    manifest_bytes = json_bytes(manifest)
    (directory / MANIFEST).write_bytes(manifest_bytes)
    return Bundle(
        directory=directory,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        reconciliation=result.reconciliation,
    )


def read_manifest(directory: Path) -> tuple[dict[str, Any], str] | None:
    """Return a local export's manifest and its SHA-256, or None when there is none."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    data = path.read_bytes()
    return json.loads(data), hashlib.sha256(data).hexdigest()


def verify(source: Path | Any, manifest: Mapping[str, Any] | None = None, **kwargs) -> Verification:
    """Check an export against its manifest; see ``teardown.export.verify_export``."""
    return verify_export(source, manifest, **kwargs)
