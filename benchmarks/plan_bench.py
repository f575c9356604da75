"""Benchmark `popstack plan`: wall time and peak memory, start-up included.

Prints the median over several runs of one plan of the pop-up sample, each in a
fresh process, and one process planning 20 generated events. Not a test: it
only measures and prints. Target: one plan under 2 s and under 300 MB.

    .venv/bin/python benchmarks/plan_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "stacks" / "Pulumi.lisbon-popup.yaml"
POPSTACK = [sys.executable, "-m", "popstack"]

MANY_EVENTS_SCRIPT = """
import sys
from popstack.plan import build_plan
for path in sys.argv[1:]:
    plan = build_plan(path)
    assert plan.resource_count > 0, path
    assert not plan.mandatory_failures, path
"""


def measure(command: list[str]) -> tuple[float, float]:
    """Run a command; return its wall time in seconds and peak RSS in MB."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} exited with {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def generated_events(directory: Path, count: int) -> list[str]:
    """Write `count` copies of the pop-up sample, each with its own event id."""
    text = SAMPLE.read_text(encoding="utf-8")
    paths = []
    for index in range(count):
        event_id = f"bench-event-{index:02d}"
        path = directory / f"Pulumi.{event_id}.yaml"
        path.write_text(text.replace("lisbon-popup-27", event_id), encoding="utf-8")
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of the single plan")
    parser.add_argument("--events", type=int, default=20, help="events planned in one process")
    args = parser.parse_args()

    single = [measure([*POPSTACK, "plan", str(SAMPLE), "--json"]) for _ in range(args.runs)]
    walls, peaks = zip(*single, strict=True)
    print(
        f"one plan of {SAMPLE.name}, {args.runs} runs: "
        f"median {statistics.median(walls):.2f} s wall "
        f"(min {min(walls):.2f}, max {max(walls):.2f}), "
        f"median peak RSS {statistics.median(peaks):.0f} MB"
    )

    with tempfile.TemporaryDirectory() as directory:
        paths = generated_events(Path(directory), args.events)
        wall, peak = measure([sys.executable, "-c", MANY_EVENTS_SCRIPT, *paths])
    print(
        f"{args.events} generated events in one process: {wall:.2f} s wall "
        f"({wall / args.events:.2f} s per event), peak RSS {peak:.0f} MB"
    )
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
