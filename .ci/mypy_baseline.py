"""mypy against a per-file baseline that may only shrink.

The package ships `py.typed`, but it grew without a type checker: mypy still reports errors in some
files. `.ci/mypy_baseline.json` holds how many each file has; this script runs mypy (settings in
pyproject.toml) and fails when a file has more errors than its baseline (a file missing from the
baseline has 0). When a file has fewer, it says so: lower the baseline with `--update`, which never
raises a count unless `--allow-growth` is given.

    python .ci/mypy_baseline.py            # check (make lint)
    python .ci/mypy_baseline.py --update   # write the lower counts after fixing errors
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "mypy_baseline.json"
_ERROR = re.compile(r"^(?P<file>[^:\n]+\.py):\d+(?::\d+)?: error: ", re.M)


def count_errors(output: str) -> Counter:
    """mypy's output -> {file: number of errors}; notes and the summary line are not errors."""
    return Counter(m.group("file").replace("\\", "/") for m in _ERROR.finditer(output))


def compare(counts: dict[str, int], baseline: dict[str, int]) -> tuple[list[str], list[str]]:
    """(files over their baseline, files under it), each as a line to print."""
    grown = [
        f"{f}: {n} errors, baseline {baseline.get(f, 0)}" for f, n in sorted(counts.items()) if n > baseline.get(f, 0)
    ]
    shrunk = [
        f"{f}: {counts.get(f, 0)} errors, baseline {b}" for f, b in sorted(baseline.items()) if counts.get(f, 0) < b
    ]
    return grown, shrunk


def run_mypy() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty", "--show-error-codes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not _ERROR.search(proc.stdout)):
        sys.exit(f"mypy failed to run (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="write the current counts where they are lower")
    ap.add_argument("--allow-growth", action="store_true", help="with --update: also raise counts")
    args = ap.parse_args(argv)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    counts = dict(count_errors(run_mypy()))
    grown, shrunk = compare(counts, baseline)
    if args.update:
        if grown and not args.allow_growth:
            print("mypy: more errors than the baseline allows; fix them (or --allow-growth):", *grown, sep="\n  ")
            return 1
        new = {f: n for f, n in sorted(counts.items()) if n}
        BASELINE.write_text(json.dumps(new, indent=1) + "\n")
        print(f"mypy: baseline written, {sum(new.values())} errors in {len(new)} files")
        return 0
    total, base_total = sum(counts.values()), sum(baseline.values())
    if grown:
        print("mypy: more errors than the baseline (.ci/mypy_baseline.json) in:", *grown, sep="\n  ")
        print("fix them; the baseline only shrinks")
        return 1
    if shrunk:
        print(
            "mypy: fewer errors than the baseline in (lower it: python .ci/mypy_baseline.py --update):",
            *shrunk,
            sep="\n  ",
        )
    print(f"mypy: {total} errors in {len(counts)} files, baseline {base_total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
