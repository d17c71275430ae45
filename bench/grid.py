"""Grids through the executor: the same 8-cell sweep with --jobs 1 and --jobs 2, side by side.

Usage (from the repo root):

    .venv/bin/python bench/grid.py [--reps 3] [--mpi] [--small]

Each repetition runs the sweep (8 DP noise levels on the CNN/MNIST, inversion attack, one round,
a shared undefended twin; every other setting the CLI's default, so cells are the size a user's
are; `--small`: --max-train 1000 --aux-size 256 --probe-size 16 --attack-iters 100, cells of
~3 s) as `slsec sweep --jobs 1` and `--jobs 2`, each into a fresh --out
(cold: the twin is computed in every run), in turns, the order reversed every repetition, with
OMP_NUM_THREADS=1. Prints each wall-clock, the median per-repetition ratio jobs2 / jobs1
(target <= 0.60 on 2 cores), the CPU seconds of all their processes (on a shared machine, what
the wall-clock spent waiting for a core) and whether the rows are identical (timings, --out and --run-id
aside). `--mpi` adds, in the same turns, the launch over 1 + 2 MPI ranks through mpi4py.futures:
`mpiexec -n 3 python -m mpi4py.futures -m slsec sweep ...` (rank 0 writes, ranks 1-2 work).
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

SIGMAS = "0.05,0.1,0.2,0.3,0.5,0.7,1,2"


def sweep_args(a: argparse.Namespace) -> list[str]:
    sizes = {"--max-train": a.max_train, "--aux-size": a.aux_size,
             "--probe-size": a.probe_size, "--attack-iters": a.attack_iters}
    return ["sweep", "--protocol", "vanilla", "--attack", "inversion", "--method", a.method,
            "--defense", "dp", "--sigma", SIGMAS, "--rounds", "1", "--run-id", "g",
            *[x for k, v in sizes.items() if v is not None for x in (k, str(v))]]


def launch(kind: str, args: list[str], out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (all its processes) of one sweep (`kind`: jobs1 | jobs2 | mpi)."""
    py = sys.executable
    exe = Path(py).parent
    cmd = {"jobs1": [py, "-m", "slsec", *args, "--jobs", "1"],
           "jobs2": [py, "-m", "slsec", *args, "--jobs", "2"],
           "mpi": [str(exe / "mpiexec"), "-n", "3", py, "-m", "mpi4py.futures", "-m", "slsec",
                   *args]}[kind]
    return timed_command(cmd + ["--out", str(out)], kind)


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("out", "run_id", "row_check")
                 and not any(s in k for s in ("seconds", "wall", "_s"))}
                for r in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mpi", action="store_true", help="also 1 + 2 MPI ranks (mpi4py.futures)")
    ap.add_argument("--small", action="store_true",
                    help="cells of ~3 s: the fixed costs (start-up, checks, report) weigh more")
    for flag in ("--max-train", "--aux-size", "--probe-size", "--attack-iters"):
        ap.add_argument(flag, type=int, default=None, help="default: the CLI's")
    ap.add_argument("--method", default="decoder")
    a = ap.parse_args()
    if a.small:
        for k, v in {"max_train": 1000, "aux_size": 256, "probe_size": 16,
                     "attack_iters": 100}.items():
            setattr(a, k, getattr(a, k) or v)
    kinds = ["jobs1", "jobs2"] + (["mpi"] if a.mpi else [])
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    same: dict[str, bool] = {k: True for k in kinds[1:]}
    with tempfile.TemporaryDirectory(prefix="slsec-grid-") as tmp:
        for rep in range(a.reps):
            order = kinds if rep % 2 == 0 else kinds[::-1]
            outs = {}
            for k in order:
                outs[k] = Path(tmp) / f"{rep}-{k}"
                wall, cpu = launch(k, sweep_args(a), outs[k])
                walls[k].append(wall)
                cpus[k].append(cpu)
                print(f"rep {rep + 1}: {k} {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
            ref = rows(outs["jobs1"] / "g")
            assert len(ref) == 8, f"expected 8 rows, got {len(ref)}"
            for k in kinds[1:]:
                same[k] &= rows(outs[k] / "g") == ref
    ratios = {k: statistics.median(w / j for w, j in zip(walls[k], walls["jobs1"]))
              for k in kinds[1:]}
    cores = len(os.sched_getaffinity(0))
    sizes = ", ".join(f"{k} {getattr(a, k)}" for k in ("max_train", "aux_size", "probe_size",
                                                        "attack_iters") if getattr(a, k))
    table(f"8-cell sweep ({sizes or 'CLI defaults'}), {a.reps} rep(s), {cores} cores, load average {os.getloadavg()[0]:.1f}",
          ["run", "median wall s", "median CPU s", "ratio to jobs 1", "target", "rows identical"],
          [[k, f"{statistics.median(walls[k]):.1f}", f"{statistics.median(cpus[k]):.1f}",
            f"{ratios[k]:.2f}" if k in ratios else "1", "<= 0.60" if k == "jobs2" else "",
            "yes" if same.get(k, True) else "NO"] for k in kinds])


if __name__ == "__main__":
    main()
