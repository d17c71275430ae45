"""The inversion attack's methods side by side (threads) vs one after the other, same trained run.

Usage (from the repo root):

    .venv/bin/python bench/side_by_side.py [--reps 3] [--cuts conv1] [--sigma none]

Trains vanilla SL once per cut (seed 0, one thread, the card's defaults; `--sigma`: DP at the
cut, `none`: the card's undefended twin), then runs `harness.run_attack` in turns with the
methods one by one (slsec/run/side_by_side.py limited to one core) and side by side (as
installed: one per free core), the order flipped every repetition. Prints the median
per-repetition ratio side by side / one by one of wall-clock and of CPU seconds (all threads),
the load average, and whether every guess is identical (it must be: the methods draw only from
generators of their own).
"""
from __future__ import annotations

import argparse
import os

import torch

from _common import Clock, interleaved, med, one_thread, paired_ratio, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cuts", default="conv1")
    ap.add_argument("--sigma", default="none", help="DP sigma at the cut; 'none': no defense")
    args = ap.parse_args()
    one_thread()
    from slsec.config import make_config
    from slsec.run import harness, side_by_side
    from slsec.run.runner import run_local
    from slsec.run.experiment import resolve
    installed = side_by_side.free_cores
    rows = []
    for cut in args.cuts.split(","):
        values: dict = {"protocol": "vanilla", "attack": "inversion", "cut": cut}
        if args.sigma != "none":
            values.update(defense=("dp",), sigma=float(args.sigma))
        cfg = make_config(values)
        exp = resolve(cfg)
        outcome = run_local(exp)[exp.attack.rank]
        guesses: dict[str, list[dict]] = {"one by one": [], "side by side": []}

        def timed(name: str, cores):
            def run() -> tuple[float, float]:
                side_by_side.free_cores = cores
                with Clock() as c:
                    guesses[name].append(harness.run_attack(exp, outcome))
                side_by_side.free_cores = installed
                return c.pair
            return run

        got = interleaved({"one by one": timed("one by one", lambda threads: 1),
                           "side by side": timed("side by side", installed)}, args.reps,
                          warmup=0, log=print)
        a, b = guesses["one by one"][0], guesses["side by side"][0]
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a
                                            if not k.endswith(".seconds"))
        rows.append([f"{cut} / {args.sigma}", f"{med(got['one by one']['wall']):.1f} / "
                     f"{med(got['one by one']['cpu']):.1f}",
                     f"{med(got['side by side']['wall']):.1f} / {med(got['side by side']['cpu']):.1f}",
                     f"{paired_ratio(got['side by side']['wall'], got['one by one']['wall']):.2f}",
                     f"{paired_ratio(got['side by side']['cpu'], got['one by one']['cpu']):.2f}",
                     "yes" if same else "NO"])
    table(f"inversion attack, side by side / one by one, {args.reps} reps, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}",
          ["cut / sigma", "one by one wall / CPU s", "side by side wall / CPU s", "wall ratio",
           "CPU ratio", "identical guesses"], rows)


if __name__ == "__main__":
    main()
