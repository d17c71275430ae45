"""A small privacy/utility sweep from Python: DP noise sigma x cut, rows as a DataFrame.

    python examples/sweep.py [OUT_FOLDER]

A list in a keyword is a grid axis (here 2 sigmas x 2 cuts = 4 cells, plus one undefended
run per cut); rows are also appended to OUT_FOLDER/example-sweep/results.csv, like `slsec sweep`.
"""
import sys

import slsec

out = sys.argv[1] if len(sys.argv) > 1 else "reports"
rows = slsec.sweep(attack="inversion", defense="dp", sigma=[0.1, 0.5], cut=["conv1", "fc1"],
                   method="whitebox", max_train=200, rounds=1, probe_size=4, attack_iters=30,
                   out=out, run_id="example-sweep", resume=True)
print(rows[["cut", "sigma", "accuracy", "attack_ssim_mean", "undefended_attack_ssim_mean",
            "epsilon"]].to_string(index=False))
