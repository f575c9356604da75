"""Rewrite tests/data/reconcile/expected/ from the fixture inputs beside this script.

Run it only after a deliberate change to the export format, then read the diff of the
expected files before committing them: the tests compare new exports with these bytes.

    .venv/bin/python tests/data/reconcile/regenerate_expected.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.test_export import EXPECTED, write_fixture_export  # noqa: E402

if __name__ == "__main__":
    shutil.rmtree(EXPECTED, ignore_errors=True)
    write_fixture_export(EXPECTED)
    print(f"wrote {EXPECTED}")
