"""The feature-reconstruction part of bench/vertical.py (see its docstring)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from slsec.attacks.feature_reconstruction import FeatureReconstruction
from slsec.config import make_config
from slsec.report.stats import fmt_ci, t_interval
from slsec.run.experiment import resolve
from slsec.run.runner import run_local
from slsec.run.setup import prepare
from slsec.run.tabular_scoring import party_encoding, record_scores

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tabular"
KNOWS_BOTTOM = frozenset({"architecture", "head_weights", "aux_data"})
ARCH_ONLY = frozenset({"architecture", "aux_data"})
METHODS = {"whitebox": KNOWS_BOTTOM, "inverse": KNOWS_BOTTOM, "substitute": ARCH_ONLY,
           "prior": ARCH_ONLY}
OTHERS = 1000   # re-identification: the targets plus this many other records


def seed_scores(name: str, seed: int, args: argparse.Namespace, extra: dict[str, Any]
                ) -> dict[str, dict[str, float]]:
    """Train once; every method attacks party 1's columns of the probe rows (the test set)."""
    cfg = make_config({"protocol": "vertical", "dataset": f"csv:{DATA / name}", "clients": 2,
                       "rounds": args.rounds, "batch_size": 64, "lr": 1e-3, "seed": seed,
                       "aux_size": 200, "probe_size": 100_000, "threads": 1, **extra})
    setup = prepare(cfg)
    outcomes = run_local(resolve(cfg, setup))
    server = outcomes[0]
    truth = server.truth_inputs                   # party 1's columns of the probe rows
    cols = setup.model_groups()[0]
    enc = party_encoding(setup.data.encoding, cols)
    others = setup.data.train.inputs[setup.shards[0][:OTHERS]][:, cols]
    trained = outcomes[1].model.party_head(1)     # party 1's trained bottom
    public = resolve(cfg, setup).public()
    out = {}
    prior = None
    for method in ("prior", "whitebox", "inverse", "substitute"):
        knowledge = METHODS[method]
        parts = {"head": trained} if "head_weights" in knowledge else {}
        view = server.observer.view(parts=parts, knowledge=knowledge, build_model=setup.build,
                                    cuts=setup.cuts, public=public, aux=setup.aux)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rows = FeatureReconstruction(method=method, seed=seed,
                                         iterations=args.iters).run(view).rows
        prior = rows if method == "prior" else prior
        out[method] = record_scores(truth, rows, prior, enc, others)
    return out


def features_bench(args: argparse.Namespace, name: str = "spam.csv",
                   extra: dict[str, Any] | None = None) -> dict[str, dict[str, list[float]]]:
    keys = ("attack_numeric_r2", "numeric_r2_gain", "attack_numeric_rmse", "prior_numeric_rmse",
            "reid_top1", "reid_top5", "reid_chance_top5")
    table: dict[str, dict[str, list[float]]] = {}
    for seed in range(args.seeds):
        for method, m in seed_scores(name, seed, args, extra or {}).items():
            for k in keys:
                table.setdefault(method, {}).setdefault(k, []).append(m[k])
        print(f"  {name} seed {seed}: " + ", ".join(
            f"{meth} R² {v['attack_numeric_r2'][-1]:.3f}" for meth, v in table.items()),
            flush=True)
    print(f"feature reconstruction of party 1 (of 2) on {name}: {args.seeds} seeds, 200 public "
          f"rows, every test row a target, {OTHERS} other records as extra candidates")
    print(f"  {'method':11s} " + " ".join(f"{k:>22s}" for k in keys))
    for method, cols in table.items():
        print(f"  {method:11s} " + " ".join(f"{fmt_ci(*t_interval(cols[k])):>22s}" for k in keys))
        lo = t_interval(cols["numeric_r2_gain"])
        print(f"  {'':11s} R² gain over the prior: lower 95% bound {lo[0] - lo[1]:.3f}")
    return table
