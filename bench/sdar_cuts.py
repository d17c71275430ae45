"""SDAR beside FORA, UnSplit and the attacker's prior, per cut, on the same trained model.

Embedded MNIST (or `--dataset fashion-mnist`), CNN, vanilla SL, one client, the server knowing
only the public architecture and its aux data (`--knowledge architecture,aux_data`). For every (cut, seed) the model is
trained once and every attack runs on the same server view (the same 64 private probes, and the
smashed data of the training batches in the server's observation window, `View.seen`, of
`--observe-samples` samples), with the attack's seed = the run's seed: `sdar` and `fora` at
their defaults, `inversion --method unsplit`, and the label prior (the class image of the label
the server received). Each result is appended to a jsonl file as it comes (SSIM over the
probes, CPU seconds); `--table` prints mean ± 95% CI over the seeds per cut from that file,
with SDAR − FORA and SDAR − prior per seed. `bench/fora.py` measures the same through `slsec
evaluate` (one training run per attack).

    nice -n 19 .venv/bin/python bench/sdar_cuts.py --cut pool2 --seed 0 --out sdar.jsonl
    .venv/bin/python bench/sdar_cuts.py --table sdar.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from _common import one_thread, table

ATTACKS = {"prior": ("sdar", {"method": "prior"}), "sdar": ("sdar", {"method": "sdar"}),
           "fora": ("fora", {"method": "fora"}), "unsplit": ("inversion", {"method": "unsplit"})}
# variants for tuning (not in the table): SDAR and FORA on the probes' observations alone
# (their defaults also use the training batches' the server saw, `View.seen`)
VARIANTS = {"sdar-probes": ("sdar", {"method": "sdar", "seen": False}),
            "fora-probes": ("fora", {"method": "fora", "seen": False})}


def trained_view(exp, cache: str | None) -> tuple:
    """The attacked server's view and the probes' truth after training `exp`; with `cache`, the
    trained model and what the server observed are kept in CACHE (keyed by dataset, cut, seed
    and observation window; tensors only, read back with `weights_only=True`), so that a second
    measurement on the same (deterministic) training skips it."""
    import os
    from types import SimpleNamespace

    import torch

    from slsec.run import harness
    from slsec.run.runner import run_local
    from slsec.threat import Observer
    cfg, plan = exp.cfg, exp.attack
    path = None
    if cache:
        os.makedirs(cache, exist_ok=True)
        path = os.path.join(cache, f"{cfg.dataset}-{cfg.cut}-s{cfg.seed}-o{cfg.observe_samples}"
                                   f"-r{cfg.rounds}.pt")
    if path and os.path.exists(path):
        got = torch.load(path, weights_only=True)
        model = exp.setup.build()
        model.load_state_dict(got["model"])
        obs = Observer(plan.role, cfg.protocol)
        obs.recording = True
        for m in got["smashed"]:
            obs.smashed(m)
        for m in got["seen"]:
            obs.seen(m)
        outcome = SimpleNamespace(rank=plan.rank, observer=obs, model=model)
        return harness.make_view(exp, outcome, plan.role, plan.knowledge), got["truth"]
    outcomes = run_local(exp)
    outcome = outcomes[plan.rank]
    view = harness.make_view(exp, outcome, plan.role, plan.knowledge)
    truth = outcomes[0].truth_inputs
    if path:
        torch.save({"model": outcome.model.state_dict(), "smashed": view.smashed,
                    "seen": view.seen, "truth": truth}, path + ".tmp")
        os.replace(path + ".tmp", path)
    return view, truth


def measure(cut: str, seed: int, names: list[str], out: str, observe: int,
            extra: dict, dataset: str = "mnist", cache: str | None = None) -> None:
    import torch

    import slsec.attacks  # noqa: F401  (registration)
    from slsec import metrics
    from slsec.attacks.base import ATTACKS as REGISTRY
    from slsec.config import make_config
    from slsec.run.experiment import resolve
    cfg = make_config({"cut": cut, "clients": 1, "seed": seed, "attack": "sdar", "dataset": dataset,
                       "knowledge": ("architecture", "aux_data"), "observe_samples": observe})
    exp = resolve(cfg)
    plan = exp.attack
    view, truth = trained_view(exp, cache)
    for name in names:
        attack, params = {**ATTACKS, **VARIANTS}[name]
        params = {**params, **extra.get(attack, {})}
        t0 = time.process_time()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            guess = REGISTRY.get(attack)(seed=seed, **params).run(view)
        ssim = float(metrics.ssim(truth[: len(guess.images)], guess.images).mean())
        rec = {"dataset": dataset, "cut": cut, "seed": seed, "name": name, "ssim": ssim,
               "cpu": round(time.process_time() - t0, 1), "observe_samples": observe,
               "seen": sum(len(m["x"]) for m in view.seen),
               "params": extra.get(attack, {})}
        print(json.dumps(rec), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")


def show(path: str) -> None:
    from slsec.report.stats import t_interval

    def ci(v: list[float], signed: bool = False) -> str:
        m, h = t_interval(v)
        return (f"{m:+.3f}" if signed else f"{m:.3f}") + (f" ± {h:.3f}" if h == h else "")
    got: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for line in open(path):
        r = json.loads(line)
        data = r.get("dataset", "mnist")   # rows before --dataset: embedded MNIST
        got[r["cut"] if data == "mnist" else f"{data} {r['cut']}"][r["name"]][r["seed"]] = r["ssim"]
    rows = []
    for cut, by in got.items():
        seeds = sorted(set.intersection(*(set(by[n]) for n in ATTACKS if n in by)))
        if "prior" not in by or not seeds:
            continue
        col = {n: [by[n][s] for s in seeds] for n in ATTACKS if n in by}
        rows.append([cut, str(len(seeds))] + [ci(col[n]) if n in col else "–" for n in ATTACKS]
                    + [ci([a - b for a, b in zip(col[x], col["prior"])], True) if x in col
                       else "–" for x in ("sdar", "fora")]
                    + [ci([a - b for a, b in zip(col["sdar"], col["fora"])], True)
                       if "sdar" in col and "fora" in col else "–"])
    table("SSIM over 64 private probes, mean ± 95% CI over seeds; vanilla, 1 client, knowledge "
          "architecture,aux_data", ["cut", "seeds"] + list(ATTACKS)
          + ["SDAR gain", "FORA gain", "SDAR − FORA"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cut", default="pool2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="mnist", help="mnist or fashion-mnist (embedded)")
    ap.add_argument("--attacks", default="prior,sdar,fora,unsplit")
    ap.add_argument("--out", default="sdar_cuts.jsonl")
    ap.add_argument("--observe-samples", type=int, default=256,
                    help="training samples whose smashed data the server keeps (its window)")
    ap.add_argument("--set", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                    help="an attack parameter for tuning, e.g. sdar.feat_weight=0.3")
    ap.add_argument("--cache", metavar="DIR",
                    help="keep each (dataset, cut, seed, window) trained view in DIR and reuse it")
    ap.add_argument("--table", metavar="JSONL", help="print the table of a results file")
    args = ap.parse_args()
    if args.table:
        show(args.table)
        return
    one_thread()
    extra: dict = {}
    for item in args.set:
        key, value = item.split("=", 1)
        attack, kw = key.split(".", 1)
        extra.setdefault(attack, {})[kw] = json.loads(value)
    measure(args.cut, args.seed, args.attacks.split(","), args.out, args.observe_samples, extra,
            args.dataset, args.cache)


if __name__ == "__main__":
    main()
