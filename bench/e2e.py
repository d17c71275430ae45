"""End to end: wall-clock of the card's command, cold (fresh --out) and warm (cached baseline).

Usage (from the repo root):

    .venv/bin/python bench/e2e.py [--reps 1] [--keep]
    .venv/bin/python bench/e2e.py --startup-only    # slsec list, --help, bad input: <= 1 s each
    .venv/bin/python bench/e2e.py --ratio [--reps 3]  # card / `slsec train`, side by side
    .venv/bin/python bench/e2e.py --ratio --before /path/to/other/checkout  # + its cold card
    .venv/bin/python bench/e2e.py --diff BEFORE/result.json AFTER/result.json
    .venv/bin/python bench/e2e.py --ratio --device cuda   # train and card with --device cuda

`--ratio` (issue 17: card / train <= 2.0 cold, <= 1.6 with the twin cached) times `slsec train`
of the card's config (`--defense dp --sigma 0.5`), the card cold (fresh --out) and the card
warm (same --out again) in turns, the order reversed every repetition, with OMP_NUM_THREADS=1
(as CI runs), and prints the median per-repetition ratio of wall-clock and of CPU seconds.

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
TRAIN = ["train", "--protocol", "vanilla", "--defense", "dp", "--sigma", "0.5"]


def slsec() -> list[str]:
    """The installed `slsec` entry point next to this Python (else `python -m slsec.cli`)."""
    exe = Path(sys.executable).parent / "slsec"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "slsec.cli"]


def timed(args: list[str], env: dict[str, str] | None = None,
          checkout: Path | None = None) -> tuple[float, float, str]:
    """(wall s, child CPU s, output) of one command (`checkout`: that checkout's `slsec`, run
    from its root, instead of ours)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    exe = [str(checkout / ".venv" / "bin" / "slsec")] if checkout else slsec()
    proc = subprocess.run(exe + args, capture_output=True, text=True, cwd=checkout or ROOT,
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


def ratio(reps: int, keep: bool = False, other: Path | None = None, device: str = "auto") -> None:
    """Card cold and warm / `slsec train` of the same config, in turns (see the doc); `other`:
    also the cold card of that checkout (e.g. before a change), in the same turns; `device`:
    every command gets `--device device`."""
    import statistics
    env = {"OMP_NUM_THREADS": "1"}
    dev = ["--device", device]
    runs: dict[str, list[tuple[float, float]]] = {"train": [], "cold": [], "warm": []}
    if other:
        runs["cold before"] = []
    for rep in range(reps):
        tmp = tempfile.mkdtemp(prefix="slsec-e2e-")
        try:
            steps = [("train", TRAIN + dev + ["--out", f"{tmp}/t"]),
                     ("cold", CARD + dev + ["--out", f"{tmp}/c"]),
                     ("warm", CARD + dev + ["--out", f"{tmp}/c"])]
            if rep % 2:   # reversed, but warm must follow cold
                steps = [steps[1], steps[2], steps[0]]
            if other:
                steps.insert(1 if rep % 2 else 0, ("cold before", CARD + dev + ["--out", f"{tmp}/b"]))
            for name, args in steps:
                wall, cpu, _ = timed(args, env, other if name == "cold before" else None)
                runs[name].append((wall, cpu))
                print(f"rep {rep + 1}: {name}: {wall:.1f} s wall, {cpu:.1f} s CPU, load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
        finally:
            if keep:
                print(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for name, target in (("cold", 2.0), ("warm", 1.6)) + ((("cold before", 2.0),) if other else ()):
        w = statistics.median(c[0] / t[0] for c, t in zip(runs[name], runs["train"]))
        c = statistics.median(c[1] / t[1] for c, t in zip(runs[name], runs["train"]))
        rows.append([f"card {name} / train", f"{w:.2f}", f"{c:.2f}", f"<= {target}",
                     "yes" if w <= target else "NO"])
    for name in runs:
        rows.append([f"{name} (median s)", f"{statistics.median(r[0] for r in runs[name]):.1f}",
                     f"{statistics.median(r[1] for r in runs[name]):.1f}", "", ""])
    table(f"card / train, {reps} reps side by side, --device {device}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", ["run", "wall ratio (or s)", "CPU ratio (or s)", "target",
                                        "met (wall)"], rows)


def diff(a: str, b: str) -> None:
    """Print every metric of two result.json files (the card before/after a change), the
    defended run's and its twin's, timings and paths aside, and whether they are identical."""
    import json

    def metrics(p: str) -> dict:
        """The defended run's metrics and its undefended twin's (as `undefended.<key>`)."""
        stored = json.loads(Path(p).read_text())
        twin = (stored.get("undefended") or {}).get("metrics") or {}
        return {**stored["metrics"], **{f"undefended.{k}": v for k, v in twin.items()}}
    ma, mb = metrics(a), metrics(b)
    skip = ("seconds", "wall", "report")
    keys = [k for k in dict.fromkeys([*ma, *mb]) if not any(s in k for s in skip)]
    same = [k for k in keys if json.dumps(ma.get(k)) == json.dumps(mb.get(k))]
    table(f"result.json metrics, {a} vs {b} (timings aside)", ["metric", "before", "after", "same"],
          [[k, json.dumps(ma.get(k))[:40], json.dumps(mb.get(k))[:40],
            "yes" if k in same else "NO"] for k in keys])
    print(f"{len(same)} of {len(keys)} non-timing metrics identical")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1, help="cold+warm pairs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary --out folders")
    ap.add_argument("--no-preview", action="store_true",
                    help="skip the OMP_NUM_THREADS=1 runs (preview of the one-thread fix)")
    ap.add_argument("--startup-only", action="store_true",
                    help="only the start-up table (slsec list, --help, bad-input errors)")
    ap.add_argument("--ratio", action="store_true",
                    help="only card / train of the same config, side by side (issue 17)")
    ap.add_argument("--before", type=Path, metavar="CHECKOUT",
                    help="with --ratio: also the cold card of another checkout (its .venv's "
                         "slsec, run from its root), in the same turns")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="with --ratio: every command's --device (auto: CUDA when available)")
    ap.add_argument("--diff", nargs=2, metavar=("BEFORE", "AFTER"),
                    help="compare two result.json files (timings aside); runs nothing")
    args = ap.parse_args()
    if args.diff:
        diff(*args.diff)
        return
    if args.ratio:
        ratio(max(1, args.reps), args.keep, args.before, args.device)
        return
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
