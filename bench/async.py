"""Asynchronous vs synchronous SplitFed with a straggler, over MPI (issue: splitfed-async).

4 clients (5 MPI ranks), client 4 made 3x slower by a sleep per step. Prints the ratio
    time for async to reach the sync run's final accuracy / sync run's time to its final accuracy
(target <= 0.6) and both final accuracies (target: within 1 point), and writes
bench/async_curves.png (accuracy vs wall-clock).

usage: .venv/bin/python bench/async.py [--rounds 3] [--max-train 2400]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "mpi_scripts" / "run_protocol.py"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")


def run(clients: int, **kw: str) -> dict:
    out = Path(tempfile.mkdtemp()) / "run.npz"
    args = [f"{k}={v}" for k, v in kw.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([MPIEXEC, "-n", str(clients + 1), sys.executable, str(SCRIPT), str(out),
                    f"clients={clients}", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return dict(np.load(out))


def time_to(curve: np.ndarray, wall: np.ndarray, target: float) -> float:
    hit = np.nonzero(curve[:, 0] >= target - 1e-12)[0]
    return float(wall[hit[0]]) if len(hit) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", default="3")
    ap.add_argument("--max-train", default="2400")
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args()
    common = {"rounds": a.rounds, "max_train": a.max_train, "probe_size": "8",
              "batch_size": "32", "lr": "0.001"}
    # the straggler's delay: twice a normal step (so its steps take 3x as long)
    calib = run(a.clients, protocol="splitfed", rounds="1", max_train=a.max_train, probe_size="8",
                batch_size="32")
    steps = int(a.max_train) // a.clients // 32
    step = float(calib["train_seconds"]) / max(steps, 1)
    slow = f"{a.clients}:{2 * step:.4f}"
    print(f"normal step ~{step * 1e3:.1f} ms (from an unslowed sync epoch); straggler {slow}")
    sync = run(a.clients, protocol="splitfed", straggler=slow, **common)
    asyn = run(a.clients, protocol="splitfed-async", straggler=slow, async_every="5", **common)
    final = float(sync["curve"][-1, 0])
    t_sync = time_to(sync["curve"], sync["wall"], final)
    t_async = time_to(asyn["curve"], asyn["wall"], final)
    print(f"sync  SplitFed: final accuracy {final:.4f}, reached at {t_sync:.1f} s")
    print(f"async SplitFed: final accuracy {asyn['curve'][-1, 0]:.4f}, "
          f"reached sync's final accuracy at {t_async:.1f} s")
    print(f"ratio async/sync time-to-accuracy = {t_async / t_sync:.3f} (target <= 0.6)")
    print(f"final accuracy difference = {100 * (asyn['curve'][-1, 0] - final):+.2f} points "
          f"(target within 1)")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sync["wall"], sync["curve"][:, 0], "o-", label="SplitFed (sync)")
    ax.plot(asyn["wall"], asyn["curve"][:, 0], "s-", label="SplitFed (async, FedAsync merge)")
    ax.axhline(final, color="grey", ls=":", lw=1)
    ax.set_xlabel("wall-clock (s)"), ax.set_ylabel("test accuracy")
    ax.set_title(f"{a.clients} clients over MPI, client {a.clients} 3x slower")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "async_curves.png", dpi=120)
    print(f"curves: {ROOT / 'bench' / 'async_curves.png'}")


if __name__ == "__main__":
    main()
