"""How tight can one run get? eps_lower / eps of the white-box audit of DP at the cut.

Usage (from the repo root):

    .venv/bin/python bench/audit.py                    # eps 1, 2, 4, 8; m = 1,000 and 100,000
    .venv/bin/python bench/audit.py --canaries 1000 --seeds 5 --epochs 1

For each target epsilon, DP at the cut (clip 1, Gaussian, one release per canary unless
--epochs) is calibrated with the default (PRV) accountant; the server-side auditor of
slsec.privacy.canaries watches the noisy releases of m canaries (each in with probability 1/2)
and slsec.privacy.audit bounds epsilon from below at 95% confidence with both methods
(one-run: Steinke et al. 2023; f-DP: Mahloujifar et al. 2025, Gaussian curve). Printed per
(eps, m): the claimed eps, the mean and the least eps_lower over the seeds, and the mean of
eps_lower / eps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", default="1,2,4,8")
    ap.add_argument("--canaries", default="1000,100000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--confidence", type=float, default=0.95)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from slsec.defenses.dp_cut import DPCut
    from slsec.privacy import audit, canaries

    print(f"{'eps':>4} {'m':>7} {'claimed':>8} {'one-run mean':>13} {'(least)':>8} "
          f"{'f-DP mean':>10} {'(least)':>8} {'one-run/eps':>12} {'f-DP/eps':>9} {'s/audit':>8}")
    for target in (float(e) for e in a.eps.split(",")):
        d = DPCut(target_epsilon=target, clip=1.0)
        d.calibrate(epochs=a.epochs)
        eps = d.epsilon(steps=a.epochs, sample_rate=1.0, delta=d.delta)
        for m in (int(x) for x in a.canaries.split(",")):
            one, fdp, start = [], [], time.perf_counter()
            for seed in range(a.seeds):
                scores, secrets = canaries.cut_canaries(d, m=m, releases=a.epochs, seed=seed)
                b = audit.eps_lower(scores, secrets, delta=d.delta, confidence=a.confidence)
                one.append(b["one-run"]["eps_lower"])
                fdp.append(b["f-dp"]["eps_lower"])
            per = (time.perf_counter() - start) / a.seeds
            print(f"{target:>4g} {m:>7} {eps:>8.3f} {np.mean(one):>13.3f} {min(one):>8.3f} "
                  f"{np.mean(fdp):>10.3f} {min(fdp):>8.3f} {np.mean(one) / eps:>12.3f} "
                  f"{np.mean(fdp) / eps:>9.3f} {per:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
