"""Attacks on Fashion-MNIST beside MNIST (issue 29): the inversion table per cut (every method,
the server's label prior, each method's gain over it, re-identification) and FSHA, over seeds.

Each (dataset, cut, seed) is one `slsec.evaluate` of vanilla SL, the server attacking: the
white-box and decoder inversions and the prior side by side (the run's own metrics
`attack_ssim_mean_by_method`, `prior_ssim_mean`, `reid_top1_by_method`). With `--fsha`, also
`--attack hijack` at conv1. Rows are appended to a JSON-lines file as they finish (a rerun
skips finished rows), then the table (mean ± 95% t half-width over seeds) is printed.

    nice -n 10 .venv/bin/python bench/fashion.py --datasets fashion-mnist --seeds 3 \
        --cuts conv1,pool1,conv2,pool2,fc1 --probe-size 32 --fsha --out /tmp/fashion.jsonl
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import one_thread

import slsec
from slsec.report.stats import fmt_ci, t_interval


def one(dataset: str, cut: str, seed: int, attack: str, probe: int, extra: dict) -> dict:
    r = slsec.evaluate(dataset=dataset, cut=cut, seed=seed, attack=attack, probe_size=probe,
                       **extra)
    m = r.metrics
    return {"dataset": dataset, "cut": cut, "seed": seed, "attack": attack,
            "accuracy": m["accuracy"], "method": m["attack_method"],
            "ssim": m["attack_ssim_mean"], "prior_ssim": m["prior_ssim_mean"],
            "gain": m["ssim_gain_mean"],
            "by_method": m.get("attack_ssim_mean_by_method", {m["attack_method"]: m["attack_ssim_mean"]}),
            "reid_by_method": m.get("reid_top1_by_method", {}),
            "reid_chance": m.get("reid_chance_top1"), "seconds": m["total_seconds"],
            "hijack_steps": m.get("hijack_steps"), "hijack_stop": m.get("hijack_converged_at"),
            "extra": extra}


def table(rows: list[dict]) -> str:
    """Markdown: one line per (dataset, attack, cut): accuracy, prior, each method, gains."""
    out = ["| dataset | attack | cut | seeds | accuracy | prior SSIM | method: SSIM (gain over prior) "
           "| re-id top-1 by method |", "|---|---|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["dataset"], r["attack"], r["cut"]) for r in rows)
    for d, a, c in keys:
        rs = [r for r in rows if (r["dataset"], r["attack"], r["cut"]) == (d, a, c)]
        ci = lambda xs: fmt_ci(*t_interval(xs), 3)  # noqa: E731
        methods = [k for k in rs[0]["by_method"] if k != "prior"]
        parts = [f"{k}: {ci([r['by_method'][k] for r in rs])} "
                 f"({ci([r['by_method'][k] - r['prior_ssim'] for r in rs])})" for k in methods]
        reid = [f"{k} {ci([r['reid_by_method'][k] for r in rs])}"
                for k in rs[0]["reid_by_method"]]
        out.append(f"| {d} | {a} | {c} | {len(rs)} | {ci([r['accuracy'] for r in rs])} | "
                   f"{ci([r['prior_ssim'] for r in rs])} | {'; '.join(parts)} | "
                   f"{', '.join(reid)} (chance {rs[0]['reid_chance']:.4f}) |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="fashion-mnist")
    ap.add_argument("--cuts", default="conv1,pool1,conv2,pool2,fc1")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only-seed", type=int, default=None, help="run this one seed of the range")
    ap.add_argument("--probe-size", type=int, default=32)
    ap.add_argument("--fsha", action="store_true", help="also --attack hijack at conv1")
    ap.add_argument("--fsha-only", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("fashion.jsonl"))
    ap.add_argument("--hijack", action="append", default=[], metavar="KEY=VALUE",
                    help="a hijack setting for the FSHA runs, e.g. hijack_min_steps=600")
    args = ap.parse_args()
    one_thread()
    hijack = {k: float(v) if "." in v or "e" in v else int(v)
              for k, v in (kv.split("=", 1) for kv in args.hijack)}
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    have = {(r["dataset"], r["cut"], r["seed"], r["attack"]) for r in done}
    jobs = []
    for d in args.datasets.split(","):
        for s in range(args.seeds):
            if args.only_seed is not None and s != args.only_seed:
                continue
            if not args.fsha_only:
                jobs += [(d, c, s, "inversion", {}) for c in args.cuts.split(",")]
            if args.fsha or args.fsha_only:
                jobs.append((d, "conv1", s, "hijack", hijack))
    for d, c, s, a, extra in jobs:
        if (d, c, s, a) in have:
            continue
        row = one(d, c, s, a, args.probe_size, extra)
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
    print(table(done))


if __name__ == "__main__":
    main()
