"""Evaluate DP at the cut against the inversion attack from Python, beside its undefended twin.

    python examples/evaluate.py [OUT_FOLDER]

Small settings (200 private images, 1 round, 8 probes) so it finishes in well under a minute on
a laptop CPU; drop max_train/attack_iters for the real thing.
"""
import sys

import slsec

out = sys.argv[1] if len(sys.argv) > 1 else "reports/example-evaluate"
r = slsec.evaluate(protocol="vanilla", attack="inversion", defense="dp", sigma=0.5,
                   max_train=200, rounds=1, probe_size=8, attack_iters=50)
print(r.to_frame()[["run", "accuracy", "attack_ssim_mean", "attack_psnr_mean", "epsilon"]]
      .to_string(index=False))
print("reconstructions:", tuple(r.images.shape), "of", tuple(r.inputs.shape))
print("report:", r.save(out) / "report.html")
