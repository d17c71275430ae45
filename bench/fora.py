"""SDAR and FORA (the server's passive inversions) against UnSplit and the attacker's prior,
per cut.

Embedded MNIST (or `--dataset fashion-mnist`), CNN, vanilla SL, one client, the server knowing
only the public architecture and its aux data (`--knowledge architecture,aux_data`: no head
weights, no head queries). For every cut and seed, one evaluation per attack with the same seed
(so the same trained model and the same 64 private probe images): `--attack sdar --method
sdar`, `--attack fora --method fora`, `--attack inversion --method unsplit`. Printed per cut:
each attack's SSIM (mean ± 95% CI over the seeds), the attacker's prior (class image of the
label the server received), the gain over that prior, top-1 re-identification, SDAR − FORA
per seed, and CPU seconds per evaluation.

    nice -n 10 .venv/bin/python bench/fora.py --cuts conv1,pool1,conv2,pool2,fc1 --seeds 3
"""
from __future__ import annotations

import argparse
import time

from _common import one_thread, table

from slsec.config import make_config
from slsec.report.stats import t_interval
from slsec.run.harness import evaluate

KNOWLEDGE = ("architecture", "aux_data")
ATTACKS = {"sdar": dict(attack="sdar", method="sdar"), "fora": dict(attack="fora", method="fora"),
           "unsplit": dict(attack="inversion", method="unsplit")}


def run(cut: str, seed: int, dataset: str = "mnist", **attack) -> tuple[dict, float]:
    cfg = make_config({"cut": cut, "clients": 1, "seed": seed, "dataset": dataset,
                       "knowledge": KNOWLEDGE, **attack})
    t0 = time.process_time()
    m = evaluate(cfg).metrics
    return m, time.process_time() - t0


def ci(values: list[float], signed: bool = False) -> str:
    m, h = t_interval(values)
    return (f"{m:+.3f}" if signed else f"{m:.3f}") + (f" ± {h:.3f}" if h == h else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", default="conv1,pool1,conv2,pool2,fc1")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--seed-from", type=int, default=0, help="first seed (to resume a run)")
    ap.add_argument("--attacks", default="sdar,fora,unsplit")
    ap.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist (embedded)")
    args = ap.parse_args()
    one_thread()
    names = args.attacks.split(",")
    rows = []
    for cut in args.cuts.split(","):
        res: dict[str, list[dict]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for seed in range(args.seed_from, args.seeds):
            for n in names:
                m, c = run(cut, seed, args.dataset, **ATTACKS[n])
                res[n].append(m)
                cpu[n].append(c)
                print(f"{cut} seed {seed}: {n} SSIM {m['attack_ssim_mean']:.3f} (prior "
                      f"{m['prior_ssim_mean']:.3f}, gain {m['ssim_gain_mean']:+.3f}, "
                      f"re-id@1 {m['reid_top1']:.3f}) {c:.0f} s CPU", flush=True)
        ssim = {n: [m["attack_ssim_mean"] for m in res[n]] for n in names}
        first = res[names[0]]
        row = [cut] + [ci(ssim[n]) for n in names]
        row += [ci([m["prior_ssim_mean"] for m in first])]
        row += [ci([m["ssim_gain_mean"] for m in res[n]], signed=True)
                for n in names if n != "unsplit"]
        row += [ci([m["reid_top1"] for m in res[n]]) for n in names if n != "unsplit"]
        if "sdar" in names and "fora" in names:
            row.append(ci([s - f for s, f in zip(ssim["sdar"], ssim["fora"])], signed=True))
        row += [f"{sum(cpu[n]) / len(cpu[n]):.0f}" for n in names]
        rows.append(row)
    gained = [n for n in names if n != "unsplit"]
    n = args.seeds - args.seed_from
    table(f"SSIM over 64 private probes, mean ± 95% CI over {n} seed(s); vanilla, "
          "1 client, knowledge architecture,aux_data",
          ["cut"] + names + ["prior"] + [f"{n} gain" for n in gained]
          + [f"{n} reid@1" for n in gained]
          + (["SDAR − FORA"] if "sdar" in names and "fora" in names else [])
          + [f"{n} CPU s" for n in names], rows)


if __name__ == "__main__":
    main()
