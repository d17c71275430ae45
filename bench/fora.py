"""FORA (`--attack fora`) against the mean-image baseline and UnSplit, per cut.

Embedded MNIST, CNN, vanilla SL, one client, the server knowing only the public architecture
and its aux data (`--knowledge architecture,aux_data`: no head weights, no head queries). For
every cut, two evaluations with the same seed (so the same trained model and the same 64
private probe images): `--attack fora --method fora` and `--attack inversion --method unsplit`.
Each row prints SSIM of both, the mean-image baseline, the attacker's prior (class image of the
label the server received), FORA's gain over that prior and its top-1 re-identification, and the
CPU seconds of each evaluation (training included).

    nice -n 10 .venv/bin/python bench/fora.py --cuts conv1,pool1,conv2,pool2,fc1
"""
from __future__ import annotations

import argparse
import time

from _common import one_thread, table

from slsec.config import make_config
from slsec.run.harness import evaluate

KNOWLEDGE = ("architecture", "aux_data")


def run(cut: str, seed: int, **attack) -> tuple[dict, float]:
    cfg = make_config({"cut": cut, "clients": 1, "seed": seed, "knowledge": KNOWLEDGE, **attack})
    t0 = time.process_time()
    m = evaluate(cfg).metrics
    return m, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", default="conv1,pool1,conv2,pool2,fc1")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    one_thread()
    rows = []
    for cut in args.cuts.split(","):
        fora, cpu_f = run(cut, args.seed, attack="fora", method="fora")
        unsplit, cpu_u = run(cut, args.seed, attack="inversion", method="unsplit")
        f, u, b = fora["attack_ssim_mean"], unsplit["attack_ssim_mean"], fora["baseline_ssim_mean"]
        rows.append([cut, f"{f:.3f}", f"{u:.3f}", f"{b:.3f}", f"{fora['prior_ssim_mean']:.3f}",
                     f"{fora['ssim_gain_mean']:+.3f}", f"{fora['reid_top1']:.3f}",
                     "yes" if f > b else "NO", "yes" if f > u else "NO",
                     f"{cpu_f:.0f}", f"{cpu_u:.0f}"])
        print(f"{cut}: FORA {f:.3f}  UnSplit {u:.3f}  mean image {b:.3f}", flush=True)
    table("FORA vs UnSplit vs mean image (SSIM over 64 private probes; vanilla, 1 client, "
          "knowledge architecture,aux_data)",
          ["cut", "FORA", "UnSplit", "mean image", "prior", "FORA gain", "FORA reid@1",
           "FORA > mean", "FORA > UnSplit", "FORA eval CPU s", "UnSplit eval CPU s"], rows)


if __name__ == "__main__":
    main()
