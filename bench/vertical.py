"""Vertical split learning on real tabular sets: utility beside centralised training, label
inference by a passive party, feature reconstruction by the active party.

Usage (from the repo root; the sets are in ../shared/data/tabular):

    .venv/bin/python bench/vertical.py [--seeds 3] [--rounds 10] [--only labels|features]

- labels (spam.csv, ticdata.csv; 2 passive parties; seeds 0..S-1): the vertical model's test
  accuracy (and ROC AUC on the imbalanced ticdata) beside the same architecture trained in one
  place on all columns (same initial weights, batch order and optimiser: a "centralised MLP of
  the same total size trained the same way"); then party 1 (a passive party) attacks the labels
  of the last `--observe` rows of the last epoch from the gradients it received: direction
  scoring (`cosine`) and norm scoring (`norm`, Li et al. 2022), accuracy and AUC beside the
  majority-class prior.
- features (spam.csv): the active party reconstructs party 1's columns of every test row from
  the embeddings the joint inference sent it, with 200 public rows of those columns
  (attacks/feature_reconstruction.py): white-box optimisation and a learned inverse with the
  trained bottom known, a substitute inverse with the architecture only, and the prior
  (public column means); R² and RMSE in standardised units, re-identification among >= 1,000
  candidates.
Every number is mean ± 95% t-interval over the seeds (slsec/report/stats.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import one_thread  # noqa: E402

from slsec.config import make_config  # noqa: E402
from slsec.metrics import label_auc  # noqa: E402
from slsec.report.stats import fmt_ci, t_interval  # noqa: E402
from slsec.run.harness import resolve, run_attack  # noqa: E402
from slsec.run.runner import evaluate_model, make_plan, run_local  # noqa: E402
from slsec.run.scoring import score  # noqa: E402
from slsec.run.setup import prepare  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tabular"


def config(name: str, seed: int, args: argparse.Namespace, **extra: Any) -> Any:
    return make_config({"protocol": "vertical", "dataset": f"csv:{DATA / name}", "clients": 2,
                        "rounds": args.rounds, "batch_size": 64, "lr": 1e-3, "seed": seed,
                        "aux_size": 200, "observe_samples": args.observe, "threads": 1,
                        "attack": "label-inference", "method": "cosine", **extra})


def assembled(setup: Any, outcomes: list) -> torch.nn.Module:
    """The experimenter's copy of the trained model: each party's bottom and the active
    party's top (only to measure ROC AUC; no role ever holds it)."""
    model = setup.fresh_model()
    bottoms = model.blocks["bottoms"].nets
    for k, o in enumerate(outcomes[1:], start=1):
        bottoms[k - 1].load_state_dict(o.model.blocks["bottoms"].nets[k - 1].state_dict())
    model.blocks["top"].load_state_dict(outcomes[0].model.blocks["top"].state_dict())
    return model


def test_auc(model: torch.nn.Module, split: Any) -> float:
    model.eval()
    with torch.no_grad():
        logits = model({"x": split.inputs})["x"]
    return label_auc(split.y, torch.softmax(logits, 1)[:, 1])


def centralised(cfg: Any, setup: Any) -> torch.nn.Module:
    """The same architecture trained in one place on all columns, the same way."""
    from slsec.protocols.base import make_optimizer
    from slsec.protocols.vertical import shared_order
    model = setup.fresh_model()
    plan = make_plan(cfg, setup)
    opt = make_optimizer(model.parameters(), plan)
    rows = setup.shards[0]
    x, y = setup.data.train.inputs[rows], setup.data.train.y[rows]
    for rnd in range(cfg.rounds):
        for idx in shared_order(plan, rnd, len(y)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model({"x": x[idx]})["x"], y[idx]).backward()
            opt.step()
    return model


def labels_bench(name: str, args: argparse.Namespace) -> None:
    rows: dict[str, list[float]] = {}

    def put(k: str, v: float) -> None:
        rows.setdefault(k, []).append(float(v))

    for seed in range(args.seeds):
        cfg = config(name, seed, args)
        setup = prepare(cfg)
        outcomes = run_local(resolve(cfg, setup))
        put("vertical accuracy", outcomes[0].records[-1].accuracy)
        central = centralised(cfg, setup)
        put("centralised accuracy", evaluate_model(central, setup.data.test)[0])
        if setup.data.num_classes == 2:
            put("vertical ROC AUC", test_auc(assembled(setup, outcomes), setup.data.test))
            put("centralised ROC AUC", test_auc(central, setup.data.test))
        server = outcomes[0]
        for method in ("cosine", "norm"):
            c = cfg.replace(method=method)
            m, _ = score(e := resolve(c, setup), run_attack(e, outcomes[1]), server.truth_inputs,
                         server.truth_labels)
            put(f"{method} label accuracy", m["label_accuracy"])
            put(f"{method} label AUC", m["label_auc"])
        put("prior (majority) accuracy", m["label_baseline_accuracy"])
        put("prior AUC", 0.5)
        print(f"  {name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in rows.items()),
              flush=True)
    print(f"{name}: {args.seeds} seeds, 2 parties, {args.rounds} epochs, "
          f"{args.observe} observed rows")
    for k, v in rows.items():
        print(f"  {k:28s} {fmt_ci(*t_interval(v))}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--observe", type=int, default=1024)
    p.add_argument("--only", choices=("labels", "features"), default=None)
    p.add_argument("--sets", default="spam.csv,ticdata.csv")
    p.add_argument("--iters", type=int, default=1500, help="feature attacks: optimiser steps")
    args = p.parse_args()
    one_thread()
    if args.only in (None, "labels"):
        for name in args.sets.split(","):
            labels_bench(name, args)
    if args.only in (None, "features"):
        from feature_bench import features_bench  # noqa: E402
        features_bench(args)


if __name__ == "__main__":
    main()
