"""Test accuracy of a cut defense as deployed, beside the accuracy the run reports.

A cut defense (DP at the cut, MID, compression) changes what crosses the cut at inference too,
so the accuracy users get is that of head -> defense -> tail. Runs used to report the assembled
model (head + tail) with nothing between them; `slsec.run.runner.evaluate_model` now reports the
deployed one. This script trains each (defense setting, seed) exactly as `slsec sweep` does
(same config, seeds 0..N-1, no attack) and prints, on the same trained model, the reported
accuracy, the `clean` one (nothing at the cut) and its own `deployed` one:

    .venv/bin/python bench/deployed_accuracy.py --out acc.jsonl [--seeds 3] [--only mid]
        [--cut fc1] [--sigma 0.05,0.5]

`clean` equals the `accuracy` of sweep rows written before the change (same training);
`deployed` draws the defense's noise (MID, DP) from a generator seeded by the seed (the run's
own draw differs, so noisy defenses' `reported` and `deployed` differ by the noise alone). One
JSON line per (setting, seed) is appended to --out as it finishes; settings already in it are
skipped (rerun to resume).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402

from slsec.config import make_config  # noqa: E402
from slsec.run.experiment import resolve  # noqa: E402
from slsec.run.runner import run_local  # noqa: E402

BASE = dict(protocol="vanilla", dataset="mnist", attack="inversion", cut="pool2", rounds=2,
            max_train=2000, probe_size=32)
SETTINGS = [{"defense": "mid", "mid_weight": w} for w in (0, 0.0001, 0.001, 0.003, 0.01)] + \
    [{"defense": "compress", "compress_keep": k} for k in (0.5, 0.1, 0.01)] + \
    [{"defense": "compress", "compress_bits": b} for b in (2, 1)] + \
    [{"defense": "dp", "sigma": s} for s in (0.1, 0.2)]


def accuracy(head, stack, tail, split, gen: torch.Generator | None) -> float:
    correct = 0
    with torch.no_grad():
        for idx in torch.arange(len(split)).split(500):
            feats, y = split.batch(idx)
            h = head(feats)["x"]
            if stack is not None:
                h = stack.smashed(h, train=False, gen=gen)
            correct += int((tail({"x": h})["x"].argmax(1) == y).sum())
    return correct / len(split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", default=None, help="a defense name: only its settings")
    ap.add_argument("--cut", default=BASE["cut"])
    ap.add_argument("--values", default=None, help="with --only: that defense's setting values "
                    "(comma list) to run, of the defaults")
    ap.add_argument("--sigma", default=None, help="DP noise multipliers (comma list) instead of "
                    "the default 0.1,0.2")
    args = ap.parse_args()
    base = {**BASE, "cut": args.cut}
    settings = SETTINGS if args.sigma is None else \
        [s for s in SETTINGS if s["defense"] != "dp"] + \
        [{"defense": "dp", "sigma": float(x)} for x in args.sigma.split(",")]
    one_thread()
    done = set()
    if args.out.exists():
        done = {json.dumps({"cut": r.get("cut", BASE["cut"]), **r["setting"]}, sort_keys=True)
                + str(r["seed"]) for r in map(json.loads, args.out.read_text().splitlines())}
    for setting in settings:
        if args.only and setting["defense"] != args.only:
            continue
        value = [v for k, v in setting.items() if k != "defense"][0]
        if args.values and float(value) not in [float(x) for x in args.values.split(",")]:
            continue
        for seed in range(args.seeds):
            if json.dumps({**setting, "cut": args.cut}, sort_keys=True) + str(seed) in done:
                continue
            exp = resolve(make_config({**base, **setting, "seed": seed}))
            server = run_local(exp)[0]
            model = server.model.eval()
            head, tail = model.split([args.cut])
            test = exp.setup.data.test
            row = {"setting": setting, "seed": seed, "cut": args.cut,
                   "reported": server.records[-1].accuracy,
                   "clean": accuracy(head, None, tail, test, None),
                   "deployed": accuracy(head, exp.fresh_defense(), tail, test,
                                        torch.Generator().manual_seed(seed))}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
