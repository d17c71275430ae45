"""SIGKILL a real `slsec sweep` at many points, resume it each time, count what survived.

    python bench/kill_sweep.py [--kills 20] [--cells 8] [--seed 3] [--random-max 25]
                               [--damage-every 5]

Kill points, in turn: a random moment after start (2 s to --random-max s: start-up,
validation, mid-cell), the moment a row's temp file appears (mid-row write:
`.results.csv.*.tmp`), and the moment a report file's temp file appears (mid-report:
`.report.*.tmp` / a frontier plot's). Every 5th resume (--damage-every) also finds the last row
of results.csv cut in half (as a non-atomic copy or a full disk might leave it): that row must
be moved to rejected-rows.csv and its cell run again. After each kill the
script reads results.csv: intact rows, duplicated cells, damaged rows. At the end one more
resume runs to completion and the rows are compared with the planned cells (sweep.json).
Prints one line per kill and the totals: rows lost, rows duplicated, damaged rows trusted.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from slsec.report.results import read_rows, scan_rows  # noqa: E402

SLSEC = str(Path(sys.executable).parent / "slsec")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--random-max", type=float, default=25.0,
                    help="latest random kill, seconds after start (a short sweep ends sooner)")
    ap.add_argument("--damage-every", type=int, default=5,
                    help="every Nth resume finds the last row cut in half")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    w = Path(tempfile.mkdtemp(prefix="slsec-kill-"))
    lrs = ",".join(f"{0.001 * (i + 1):g}" for i in range(args.cells))
    argv = [SLSEC, "sweep", "--lr", lrs, "--max-train", "64", "--probe-size", "4",
            "--aux-size", "100", "--batch-size", "64", "--rounds", "1", "--out", str(w),
            "--run-id", "k"]
    folder = w / "k"
    results = folder / "results.csv"
    modes = ["random", "mid-row", "mid-report"]
    log = []
    damaged_injected = 0
    t_start = time.perf_counter()
    i = -1
    while sum(1 for entry in log if entry[1] != "finished") < args.kills and i < 3 * args.kills:
        i += 1
        mode = modes[i % 3]
        if i and i % args.damage_every == 0 and results.exists():
            text = results.read_text()
            last = text.splitlines(keepends=True)[-1]
            if last.strip() and read_rows(results):
                results.write_text(text[: len(text) - len(last) // 2])   # cut the last row
                damaged_injected += 1
        before = len(read_rows(results))
        stale = set(folder.glob(".*.tmp"))      # left by an earlier kill: not a kill point
        proc = subprocess.Popen(argv + (["--resume"] if folder.exists() else []), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.perf_counter()
        deadline = t0 + rng.uniform(2.0, args.random_max)
        killed, where = False, "finished"
        while proc.poll() is None:
            now = time.perf_counter()
            if mode == "random" and now >= deadline:
                killed, where = True, f"random {now - t0:.1f} s"
            elif mode == "mid-row" and set(folder.glob(".results.csv.*.tmp")) - stale:
                killed, where = True, "mid-row write"
            elif mode == "mid-report" and (set(folder.glob(".report.*.tmp"))
                                           | set(folder.glob(".frontier_*.tmp"))) - stale:
                killed, where = True, "mid-report"
            elif now - t0 > 240:
                killed, where = True, "timeout (no kill point reached)"
            if killed:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
        good, bad = scan_rows(results)
        cells = [r["cell"] for r in good]
        dup = len(cells) - len(set(cells))
        log.append((i + 1, where, before, len(good), dup, len(bad), proc.returncode))
        print(f"kill {i + 1:2d}: {where:<32} rows {before} -> {len(good)}  duplicated {dup}  "
              f"damaged {len(bad)}  exit {proc.returncode}"
              + (f"  stderr: {err.strip().splitlines()[-1]}" if err.strip() and not killed
                 else ""), flush=True)
        if not killed and proc.returncode == 0 and len(good) == args.cells:
            # finished before the kill point: start a fresh sweep folder for the next kills
            folder.rename(w / f"k-done-{i + 1}")
    final = subprocess.run(argv + (["--resume"] if folder.exists() else []), env=ENV,
                           capture_output=True, text=True)
    # every sweep folder of the run (finished ones were renamed k-done-N) must be complete
    planned_n = rows_n = lost = dup = left_bad = trusted_damaged = rejected_n = temps = 0
    for f in sorted(w.glob("k*")):
        planned = json.loads((f / "sweep.json").read_text())["cells"]
        good, bad = scan_rows(f / "results.csv")
        cells = [r["cell"] for r in good]
        planned_n += len(planned)
        rows_n += len(good)
        lost += len(set(planned) - set(cells))
        dup += len(cells) - len(set(cells))
        left_bad += len(bad)
        # a trusted damaged row would be one read as intact that is not a whole row of a
        # planned cell: unknown cell, or its config/metrics missing
        trusted_damaged += sum(1 for r in good if r["cell"] not in planned or not r.get("lr")
                               or not r.get("accuracy") or not r.get("mb_on_wire"))
        rejected_n += len(scan_rows(f / "rejected-rows.csv")[0])
        temps += len(list(f.glob(".*.tmp")))
    kills = sum(1 for _, where, *_ in log if where != "finished")
    print(f"\nfinal resume: exit {final.returncode}; {len(list(w.glob('k*')))} sweep folder(s), "
          f"{planned_n} planned cells, {rows_n} rows; lost {lost}, duplicated {dup}, damaged "
          f"rows left in results.csv {left_bad}, damaged rows trusted {trusted_damaged}; "
          f"{damaged_injected} damaged row(s) injected, {rejected_n} in rejected-rows.csv; "
          f"{kills} kills in {len(log)} attempts ("
          + ", ".join(f"{m}: {sum(1 for _, wh, *_ in log if wh.startswith(m))}" for m in modes)
          + f"); temp files left: {temps}; {time.perf_counter() - t_start:.0f} s")
    ok = (final.returncode == 0 and lost == 0 and dup == 0 and left_bad == 0
          and trusted_damaged == 0 and rejected_n == damaged_injected)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
