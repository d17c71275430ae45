"""Scaling with the number of clients: epoch wall-clock for K = 1, 2, 4 (MPI, one rank each).

Usage (from the repo root; the driver starts mpiexec itself):

    .venv/bin/python bench/scaling.py [--ks 1,2,4] [--samples 2000] [--cut pool2] [--reps 3]

For each K, one `mpiexec -n K+1` job runs SplitFed (v1), vanilla and U-shaped SL alternately
(order flipped every repetition) on the same total data (--samples embedded MNIST images split
IID over the K clients), one torch thread per rank, and times every round (epoch) on the server
without the experimenter's evaluation. Reported: median epoch seconds per protocol and K, and
SplitFed / vanilla at each K (the card's target: <= 0.7 at K = 2), measured in the same job.
Then two more jobs at K = 4 give the server's (rank 0) peak RSS for SplitFed and for vanilla.

With --simulate it measures the local backend as a client simulator instead: SplitFed (v1) at
K = 4 and 100 with every client in every round, and K = 1,000 with --fraction 0.1, 3 rounds on
the embedded MNIST (3,500 private images), default cut conv1; each run in a fresh process
(peak RSS of the whole process) and the pair K = 100 / K = 1,000 alternating over --reps.
Targets: peak memory <= 2 GB at K = 1,000 and its round time <= 1.5x that of K = 100.

    .venv/bin/python bench/scaling.py --simulate [--reps 2]

The default cut is pool2, where most of the CNN's compute sits on the clients (what SplitFed's
parallel clients can overlap); --cut conv1 gives the package default (most compute on the
server). On a 2-core machine K = 4 means 5 ranks on 2 cores: nothing can run truly in parallel
beyond 2 ranks, so K = 4 numbers measure oversubscription as much as the protocol.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, med, one_thread, peak_rss_mb, role_context, table

PROTOS = ("splitfed", "vanilla", "ushaped")


def _config(proto: str, k: int, args: argparse.Namespace):
    from slsec.config import make_config
    return make_config({"dataset": "mnist", "protocol": proto, "clients": k, "rounds": args.rounds,
                        "aux_size": 0, "max_train": args.samples, "batch_size": args.batch,
                        "cut": args.cut, "backend": "mpi", "timeout": 600})


def worker(args: argparse.Namespace) -> None:
    """One mpiexec job: every protocol in `args.protos`, alternating; rank 0 prints JSON."""
    from mpi4py import MPI

    from slsec.protocols.base import PROTOCOLS
    from slsec.run.setup import prepare
    from slsec.wire.transport import MPILink

    comm = MPI.COMM_WORLD
    rank, k = comm.Get_rank(), comm.Get_size() - 1

    def sync() -> None:
        req = comm.Ibarrier()
        while not req.Test():
            time.sleep(0.001)

    import psutil
    protos = args.protos.split(",")
    setups = {p: prepare(_config(p, k, args)) for p in protos}
    epochs: dict[str, list[float]] = {p: [] for p in protos}
    rss0 = psutil.Process().memory_info().rss / 2**20
    for rep in range(-1, args.reps):   # rep -1: warm-up, not recorded
        for p in (protos if rep % 2 == 0 else protos[::-1]):
            setup = setups[p]
            ctx = role_context(setup.cfg, setup, rank, MPILink(comm, timeout=600))
            marks: list[float] = []
            if rank == 0:
                ctx.on_round = lambda rnd, m, marks=marks: marks.append(time.perf_counter())
            sync()
            start = time.perf_counter()
            proto = PROTOCOLS.get(p)
            (proto.server if rank == 0 else proto.client)(ctx)
            sync()
            if rank == 0 and rep >= 0:
                stamps = [start] + marks
                epochs[p] += [b - a for a, b in zip(stamps, stamps[1:])]
    if rank == 0:
        print("RESULT " + json.dumps({"k": k, "epochs": epochs, "rss_before_mb": rss0,
                                      "rss_peak_mb": peak_rss_mb(), "cut": list(setups[protos[0]].cuts)}),
              flush=True)


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else (shutil.which("mpiexec") or "mpiexec")


def launch(k: int, protos: str, args: argparse.Namespace, reps: int) -> dict:
    cmd = [mpiexec(), "-n", str(k + 1), sys.executable, str(Path(__file__).resolve()), "--worker",
           "--protos", protos, "--reps", str(reps), "--rounds", str(args.rounds),
           "--samples", str(args.samples), "--batch", str(args.batch), "--cut", args.cut]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"mpiexec -n {k + 1} failed (exit {proc.returncode})")
    return json.loads(line[7:])


SIMULATED = [(4, 1.0), (100, 1.0), (1000, 0.1)]


def sim_worker(k: int, fraction: float) -> None:
    """One local-backend SplitFed run; prints JSON: round seconds, peak RSS."""
    from slsec.config import make_config
    from slsec.run.experiment import resolve
    from slsec.run.runner import run_local
    from slsec.run.setup import prepare
    cfg = make_config({"dataset": "mnist", "protocol": "splitfed", "clients": k,
                       "fraction": fraction, "rounds": 3, "timeout": 600})
    setup = prepare(cfg)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    server = run_local(resolve(cfg, setup))[0]
    ends = [r.wall_s for r in server.records]
    rounds = [b - a for a, b in zip([0.0] + ends, ends)]
    print(json.dumps({"k": k, "fraction": fraction, "rounds_s": rounds, "rss_before_mb": rss0,
                      "rss_peak_mb": peak_rss_mb(), "total_s": time.perf_counter() - t0}))


def simulate(args: argparse.Namespace) -> None:
    import statistics

    def run(k: int, f: float) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--sim-worker", f"{k}:{f}"],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"K={k} fraction={f}: rounds {', '.join(f'{x:.2f}' for x in r['rounds_s'])} s, "
              f"peak RSS {r['rss_peak_mb']:.0f} MB", flush=True)
        return r

    res: dict[tuple[int, float], list[dict]] = {c: [] for c in SIMULATED}
    res[SIMULATED[0]].append(run(*SIMULATED[0]))
    for i in range(args.reps):
        for c in (SIMULATED[1:] if i % 2 == 0 else SIMULATED[:0:-1]):
            res[c].append(run(*c))
    med_round = {c: statistics.median(x for r in v for x in r["rounds_s"]) for c, v in res.items()}
    ratio = statistics.median(
        statistics.median(b["rounds_s"]) / statistics.median(a["rounds_s"])
        for a, b in zip(res[SIMULATED[1]], res[SIMULATED[2]]))
    rows = [[k, f, f"{max(1, round(f * k))}", f"{med_round[(k, f)]:.2f}",
             f"{max(r['rss_peak_mb'] for r in res[(k, f)]):.0f}"] for k, f in SIMULATED]
    table(f"SplitFed v1, local backend, embedded MNIST, cut conv1, 3 rounds, "
          f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} "
          f"(targets at K = 1000: peak <= 2048 MB, round <= 1.5x K = 100's)",
          ["K", "fraction", "clients per round", "median round s", "peak RSS MB"], rows)
    print(f"round time K = 1000 (fraction 0.1) / K = 100 (all), median of paired runs: "
          f"{ratio:.2f} (target <= 1.5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--protos", default=",".join(PROTOS))
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--samples", type=int, default=2000, help="total training samples (fixed)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="epochs per protocol run")
    ap.add_argument("--reps", type=int, default=3,
                    help="timed runs per protocol per K (alternating, after one warm-up run)")
    ap.add_argument("--cut", default="pool2")
    ap.add_argument("--no-rss", action="store_true", help="skip the K = 4 peak-RSS jobs")
    ap.add_argument("--simulate", action="store_true",
                    help="local-backend client simulator: K = 4, 100, 1000 (fraction 0.1)")
    ap.add_argument("--sim-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    one_thread()
    if args.worker:
        worker(args)
        return
    if args.sim_worker:
        k, f = args.sim_worker.split(":")
        sim_worker(int(k), float(f))
        return
    if args.simulate:
        simulate(args)
        return
    ks = [int(k) for k in args.ks.split(",")]
    print(f"{os.cpu_count()} CPU cores; K clients = K+1 MPI ranks (K = 4: 5 ranks on "
          f"{os.cpu_count()} cores, oversubscribed)", flush=True)
    res = {}
    for k in ks:
        t0 = time.perf_counter()
        res[k] = launch(k, args.protos, args, args.reps)
        print(f"K={k}: " + ", ".join(f"{p} {med(v):.2f}s" for p, v in res[k]["epochs"].items())
              + f"  (job {time.perf_counter() - t0:.0f}s)", flush=True)
    protos = args.protos.split(",")
    rows = [[k] + [f"{med(res[k]['epochs'][p]):.2f}" for p in protos]
            + ([f"{med([a / b for a, b in zip(res[k]['epochs']['splitfed'], res[k]['epochs']['vanilla'])]):.3f}"]
               if {"splitfed", "vanilla"} <= set(protos) else [])
            for k in ks]
    table(f"median epoch wall-clock s, {args.samples} samples in total, cut {args.cut}, "
          f"batch {args.batch}, MPI 1 thread/rank, {time.strftime('%Y-%m-%d')} "
          "(target: SplitFed/vanilla <= 0.70 at K = 2)",
          ["K"] + protos + (["SplitFed / vanilla"] if {"splitfed", "vanilla"} <= set(protos) else []),
          rows)
    if not args.no_rss:
        rss = {p: launch(4, p, args, 1) for p in ("splitfed", "vanilla")}
        table("server (rank 0) memory at K = 4, one run each (MB)",
              ["protocol", "RSS before training", "peak RSS (ru_maxrss)", "growth"],
              [[p, f"{r['rss_before_mb']:.0f}", f"{r['rss_peak_mb']:.0f}",
                f"{r['rss_peak_mb'] - r['rss_before_mb']:.0f}"] for p, r in rss.items()])


if __name__ == "__main__":
    main()
