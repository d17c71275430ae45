"""End to end: wall-clock of the card's command, cold (fresh --out) and warm (cached baseline).

Usage (from the repo root):

    .venv/bin/python bench/e2e.py [--reps 1] [--keep]
    .venv/bin/python bench/e2e.py --startup-only    # slsec list, --help, bad input: <= 1 s each

First the start-up table: the median wall of 5 runs of `slsec --help`, `slsec list` and a set
of bad-input errors (each must exit 2), target <= 1 s.

Runs `slsec evaluate --protocol vanilla --attack inversion --defense dp --sigma 0.5 --out TMP`
as a subprocess (the installed entry point next to this Python), first with a fresh TMP (the
undefended baseline's cache is cold: two trainings + two attacks), then again with the same
TMP (warm: the undefended result is read from TMP/.cache). Prints wall-clock and the child's
CPU seconds (user+sys) of each, plus the bare start-up cost (`slsec --help`). Target <= 60 s.
On a shared machine, CPU seconds show how much of the wall-clock was waiting for a core.

Each pair runs twice: as installed, and with OMP_NUM_THREADS=1 (a preview of the suggested
fix: the attack runs on the main thread, which never gets `--threads`, so torch uses every core;
on a loaded 2-core machine its parallel regions stall waiting for descheduled threads).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, table

CARD = ["evaluate", "--protocol", "vanilla", "--attack", "inversion", "--defense", "dp",
        "--sigma", "0.5"]


def slsec() -> list[str]:
    """The installed `slsec` entry point next to this Python (else `python -m slsec.cli`)."""
    exe = Path(sys.executable).parent / "slsec"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "slsec.cli"]


def timed(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall s, child CPU s, output) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(slsec() + args, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(f"`slsec {' '.join(args)}` failed with exit code {proc.returncode}")
    return wall, cpu, proc.stdout


# start-up: each must answer in <= 1 s wall (median of 5); the errors are one line, exit 2
STARTUP = [["--help"], ["list"], ["train", "--protocol", "bogus"], ["train", "--cut", "nope"],
           ["train", "--rounds", "x"], ["evaluate", "--attack", "nope"],
           ["evaluate", "--attack", "inversion", "--method", "nope"],
           ["evaluate", "--attack", "inversion", "--defense", "dp", "--sigma", "1",
            "--target-epsilon", "2"],
           ["train", "--dataset", "mutag", "--cut", "fc9", "--aux-size", "50"]]


def startup(reps: int = 5) -> None:
    """Median wall of `reps` runs of each start-up command (interleaved)."""
    import statistics
    walls: dict[str, list[float]] = {" ".join(a): [] for a in STARTUP}
    for i in range(reps):
        for args in (STARTUP if i % 2 == 0 else STARTUP[::-1]):
            t0 = time.perf_counter()
            proc = subprocess.run(slsec() + args + (["--out", tempfile.gettempdir()]
                                                    if args[0] in ("train", "evaluate") else []),
                                  capture_output=True, text=True, cwd=ROOT)
            walls[" ".join(args)].append(time.perf_counter() - t0)
            if args[0] in ("train", "evaluate") and proc.returncode != 2:
                raise SystemExit(f"`slsec {' '.join(args)}` exited {proc.returncode}, not 2")
    table(f"start-up, median wall of {reps} ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; target <= 1 s)", ["command", "median wall s", "max s", "<= 1 s"],
          [[f"slsec {k}", f"{statistics.median(v):.2f}", f"{max(v):.2f}",
            "yes" if statistics.median(v) <= 1 else "NO"] for k, v in walls.items()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1, help="cold+warm pairs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary --out folders")
    ap.add_argument("--no-preview", action="store_true",
                    help="skip the OMP_NUM_THREADS=1 runs (preview of the one-thread fix)")
    ap.add_argument("--startup-only", action="store_true",
                    help="only the start-up table (slsec list, --help, bad-input errors)")
    args = ap.parse_args()
    startup()
    if args.startup_only:
        return
    rows = []
    wall, cpu, _ = timed(["--help"])
    rows.append(["slsec --help (start-up)", f"{wall:.1f}", f"{cpu:.1f}", "-", "-"])
    variants = [("as installed", {})]
    if not args.no_preview:
        variants.append(("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}))
    for rep in range(args.reps):
        for vname, env in (variants if rep % 2 == 0 else variants[::-1]):
            out = Path(tempfile.mkdtemp(prefix="slsec-e2e-"))
            try:
                for label in ("cold (fresh --out)", "warm (cached undefended run)"):
                    wall, cpu, text = timed(CARD + ["--out", str(out)], env)
                    own = re.search(r"wall-clock ([0-9.]+) s", text)
                    rows.append([f"{vname}: {label}", f"{wall:.1f}", f"{cpu:.1f}",
                                 own.group(1) if own else "?", "yes" if wall <= 60 else "NO"])
                    print(f"rep {rep + 1}, {vname}: {label}: {wall:.1f} s wall, {cpu:.1f} s CPU",
                          flush=True)
            finally:
                if args.keep:
                    print(f"kept {out}")
                else:
                    shutil.rmtree(out, ignore_errors=True)
    table(f"`slsec {' '.join(CARD)}`, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')} "
          "(target <= 60 s)", ["run", "wall s", "CPU s (child)", "its own wall-clock line s",
                               "<= 60 s"], rows)


if __name__ == "__main__":
    main()
