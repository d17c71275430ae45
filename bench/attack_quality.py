"""Attack quality per inversion method, to check that a speed change leaves it as it was.

Usage (from the repo root):

    .venv/bin/python bench/attack_quality.py --save after.json
    /path/to/other/checkout/.venv/bin/python bench/attack_quality.py --save before.json
    .venv/bin/python bench/attack_quality.py --compare before.json after.json

For each cut and DP sigma at the cut (`none`: no defense, the card's undefended twin) this
trains vanilla SL once (seed 0, one thread, the card's defaults otherwise), runs the inversion
attack from the server's view with every contender, and scores each method's SSIM against the
probes. It prints SSIM per method and the attack's CPU seconds. Training is deterministic, so
two checkouts see identical views; `--compare` prints both SSIMs and their difference per
method (the speed work's target: within 0.01).
"""
from __future__ import annotations

import argparse
import json
import time

from _common import one_thread, table


def cell(cut: str, sigma: str) -> dict:
    from slsec.run import harness
    from slsec.config import make_config
    from slsec.run.runner import run_local
    from slsec.run.experiment import resolve
    values: dict = {"protocol": "vanilla", "attack": "inversion", "cut": cut}
    if sigma != "none":
        values.update(defense=("dp",), sigma=float(sigma))
    cfg = make_config(values)
    exp = resolve(cfg)
    outcomes = run_local(exp)
    cpu = time.process_time()
    guess = harness.run_attack(exp, outcomes[exp.attack.rank])
    cpu = time.process_time() - cpu
    server = outcomes[0]
    m, _ = harness.score(exp, guess, server.truth_inputs, server.truth_labels)
    by_method = m.get("attack_ssim_mean_by_method", {m["attack_method"]: m["attack_ssim_mean"]})
    return {"ssim": by_method,
            "reported": m["attack_ssim_mean"], "attack_cpu_s": cpu,
            "seconds": {k: round(g.seconds, 2) for k, g in guess.methods.items()}}


def compare(before: dict, after: dict) -> None:
    rows = []
    for key in before:
        if key not in after:
            continue
        for method, b in before[key]["ssim"].items():
            a = after[key]["ssim"].get(method)
            rows.append([key, method, f"{b:.4f}", "-" if a is None else f"{a:.4f}",
                         "-" if a is None else f"{a - b:+.4f}",
                         "yes" if a is not None and abs(a - b) <= 0.01 else "NO"])
        rows.append([key, "attack CPU s", f"{before[key]['attack_cpu_s']:.1f}",
                     f"{after[key]['attack_cpu_s']:.1f}",
                     f"x{after[key]['attack_cpu_s'] / before[key]['attack_cpu_s']:.2f}", ""])
    table("SSIM per method, before -> after (target: within 0.01)",
          ["cut / sigma", "method", "before", "after", "change", "within 0.01"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", default="conv1,conv2,fc1")
    ap.add_argument("--sigmas", default="none,0,0.01,0.5", help="'none': no defense")
    ap.add_argument("--save", help="write the results to this JSON file")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                    help="print two saved results side by side (runs nothing)")
    args = ap.parse_args()
    if args.compare:
        b, a = (json.load(open(p)) for p in args.compare)
        compare(b, a)
        return
    one_thread()
    out: dict[str, dict] = {}
    for cut in args.cuts.split(","):
        for sigma in args.sigmas.split(","):
            key = f"{cut} / {sigma}"
            out[key] = cell(cut, sigma)
            print(key, json.dumps(out[key]), flush=True)
            if args.save:
                with open(args.save, "w") as f:
                    json.dump(out, f, indent=1)
    table("SSIM per method", ["cut / sigma", "SSIM by method", "attack CPU s"],
          [[k, ", ".join(f"{m} {v:.4f}" for m, v in r["ssim"].items()), f"{r['attack_cpu_s']:.1f}"]
           for k, r in out.items()])


if __name__ == "__main__":
    main()
