"""The default review on every core: `slsec review --jobs 1` and `--jobs 2`, side by side.

Usage (from the repo root):

    .venv/bin/python bench/review_jobs.py [--reps 1] [-- extra review flags]

Each repetition runs `slsec review` with the CLI's defaults (the embedded CNN and MNIST, every
cut, the inversion attack, label inference where labels stay with the client, the malicious
server's column) once with `--jobs 1` (its cells one after another in this process: the
review as it ran before grids had workers) and once with `--jobs 2`, each into a fresh --out,
in turns, the order reversed every repetition, with OMP_NUM_THREADS=1. Prints each wall-clock,
the CPU seconds of all their processes, the median per-repetition ratio jobs2 / jobs1 (target
<= 0.60 on 2 cores) and whether the two results.csv are identical (timing columns aside).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import table, timed_command


def launch(jobs: int, extra: list[str], out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (all its processes) of one review."""
    cmd = [sys.executable, "-m", "slsec", "review", "--jobs", str(jobs), "--run-id", "r",
           "--out", str(out), *extra]
    return timed_command(cmd, f"review --jobs {jobs}")


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as f:
        return [{k: v for k, v in r.items() if not any(s in k for s in ("seconds", "wall"))}
                for r in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("extra", nargs="*", help="flags passed to both reviews (after --)")
    a = ap.parse_args()
    walls: dict[int, list[float]] = {1: [], 2: []}
    cpus: dict[int, list[float]] = {1: [], 2: []}
    same = True
    with tempfile.TemporaryDirectory(prefix="slsec-review-") as tmp:
        for rep in range(a.reps):
            outs = {}
            for jobs in ((1, 2) if rep % 2 == 0 else (2, 1)):
                outs[jobs] = Path(tmp) / f"{rep}-jobs{jobs}"
                wall, cpu = launch(jobs, a.extra, outs[jobs])
                walls[jobs].append(wall)
                cpus[jobs].append(cpu)
                print(f"rep {rep + 1}: jobs {jobs} {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
            same &= rows(outs[2] / "r") == rows(outs[1] / "r")
    ratio = statistics.median(w2 / w1 for w2, w1 in zip(walls[2], walls[1]))
    cores = len(os.sched_getaffinity(0))
    table(f"slsec review (defaults{', ' + ' '.join(a.extra) if a.extra else ''}), {a.reps} "
          f"rep(s), {cores} cores, load average {os.getloadavg()[0]:.1f}",
          ["run", "median wall s", "median CPU s", "ratio to jobs 1", "target", "rows identical"],
          [["jobs 1", f"{statistics.median(walls[1]):.1f}", f"{statistics.median(cpus[1]):.1f}",
            "1", "", ""],
           ["jobs 2", f"{statistics.median(walls[2]):.1f}", f"{statistics.median(cpus[2]):.1f}",
            f"{ratio:.2f}", "<= 0.60", "yes" if same else "NO"]])


if __name__ == "__main__":
    main()
