"""SDAR's label inference in U-shaped SL beside the other label-inference methods (issue 28).

Trains U-shaped SL once per seed (embedded MNIST or `--dataset`, CNN, the given cut pair),
freezes the server's view as `slsec evaluate --attack label-inference` does, and runs every
label-inference method on the same observations; SDAR with each `--sdar` setting
(steps:weight:batch). One JSON
line per method and setting is appended to `--out` as it comes (label accuracy, macro AUC,
seconds), beside the prior (the public majority class).

    nice -n 19 .venv/bin/python bench/label_sdar.py --seed 0 --rounds 3 --out /tmp/sdar.jsonl
    .venv/bin/python bench/label_sdar.py --summary /tmp/sdar.jsonl   # mean ± 95% CI per row
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from slsec.attacks.label_inference import LabelInference
from slsec.config import make_config
from slsec.metrics import label_accuracy, label_auc
from slsec.run.harness import make_view, prepare, resolve
from slsec.run.runner import run_local


def summary(paths: list[str]) -> None:
    """Per cut pair, rounds and method (SDAR per setting): per-seed values, mean ± 95% t CI."""
    from slsec.report.stats import t_interval
    groups: dict[tuple, dict[int, tuple[float, float]]] = {}
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            name = r["method"] + (f" w={r['sdar_weight']:g} steps={r['sdar_steps']} "
                                  f"batch={r['sdar_batch']}" if r["method"] == "sdar" else "")
            key = (r.get("dataset", "mnist") + " " + r["cuts"], r["rounds"],
                   r.get("observe_samples", 256), name)
            groups.setdefault(key, {})[r["seed"]] = (r["label_accuracy"], r["label_auc"])
    print("| data, cuts | rounds | window | method | seeds | label accuracy | mean ± 95% CI "
          "| AUC mean |")
    print("|---|---|---|---|---|---|---|---|")
    for (cuts, rounds, window, name), by in sorted(groups.items()):
        seeds = sorted(by)
        acc = [by[s][0] for s in seeds]
        m, h = t_interval(acc)
        auc = sum(by[s][1] for s in seeds) / len(seeds)
        print(f"| {cuts} | {rounds} | {window} | {name} | {','.join(map(str, seeds))} | "
              f"{' / '.join(f'{a:.3f}' for a in acc)} | {m:.3f} ± {h:.3f} | {auc:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--cut", default="conv1")
    ap.add_argument("--cut2", default="fc1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default="completion,embedding,cluster,cosine,prior")
    ap.add_argument("--sdar", default="300:0.5:32,300:0:32", help="steps:weight:batch[,...]")
    ap.add_argument("--observe-samples", type=int, default=256)
    ap.add_argument("--out")
    ap.add_argument("--summary", nargs="+", help="print the table of these JSON-lines files")
    a = ap.parse_args()
    if a.summary:
        return summary(a.summary)
    if not a.out:
        ap.error("--out is required")
    torch.set_num_threads(1)
    cfg = make_config(dict(protocol="ushaped", attack="label-inference", cut=a.cut, cut2=a.cut2,
                           dataset=a.dataset,
                           rounds=a.rounds, seed=a.seed, threads=1,
                           observe_samples=a.observe_samples))
    setup = prepare(cfg)
    exp = resolve(cfg, setup)
    server = run_local(exp)[0]
    view = make_view(exp, server, "server", exp.attack.knowledge)
    # the scorer holds the observed batches' labels, then the probes': the first n are scored
    y = server.truth_labels[: sum(len(o["x"]) for o in view.outputs)]
    acc_model = server.records[-1].accuracy
    base = dict(seed=a.seed, dataset=a.dataset, cuts=f"{a.cut}|{a.cut2}", rounds=a.rounds,
                model_accuracy=acc_model, samples=int(len(y)),
                observe_samples=a.observe_samples)
    runs = [(m, {}) for m in a.methods.split(",") if m]
    for s in a.sdar.split(","):
        if s:
            steps, weight, batch = s.split(":")
            runs.append(("sdar", dict(sdar_steps=int(steps), sdar_weight=float(weight),
                                      sdar_batch=int(batch))))
    for method, kw in runs:
        start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        # built as `slsec evaluate` builds it (slsec.run.harness.run_attack: the declared
        # params and the run's seed), on the same view
        guess = LabelInference(method=method, seed=cfg.seed, **kw).run(view)
        row = dict(base, method=method, **kw, seconds=round(time.perf_counter() - start, 1),
                   label_accuracy=label_accuracy(y, guess.label_scores),
                   label_auc=label_auc(y, guess.label_scores))
        print(json.dumps(row), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
