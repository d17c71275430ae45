"""Why direction scoring missed on one ticdata seed (issue 30): per seed, the direction scores'
AUC, the accuracy at the Bayes threshold (two Gaussians under the public positive rate), at a
2-means split and at the sign split, and what the attack does now.

    .venv/bin/python bench/vertical_threshold.py [0,1,2]
"""
import argparse
import sys
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import one_thread
from vertical import config
from slsec.run.setup import prepare
from slsec.run.runner import run_local
from slsec.run.experiment import resolve
from slsec.run.harness import make_view
from slsec.attacks.label_gradients import observe, unit, bayes_threshold, two_means_threshold
from slsec.attacks.label_inference import LabelInference, public_rate
from slsec.metrics import label_auc
one_thread()
a = argparse.Namespace(rounds=10, observe=1024)
for seed in [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "0,1,2").split(",")]:
    cfg = config("ticdata.csv", seed, a)
    setup = prepare(cfg); exp = resolve(cfg, setup); outs = run_local(exp)
    plan = exp.attack
    view = make_view(exp, outs[1], plan.role, plan.knowledge)
    y = outs[0].truth_labels
    torch.manual_seed(seed)
    g = LabelInference(method="cosine", seed=seed).run(view)
    obs = observe(view)
    u = unit(obs.grads); axis = torch.linalg.svd(u, full_matrices=False)[2][0]
    s = -(u @ axis)
    if label_auc(y, s) < 0.5: s = -s
    q = public_rate(view)
    tb = bayes_threshold(s, q); t2 = two_means_threshold(s)
    acc = lambda t: float(((s > t).long() == y).double().mean())
    print(f"seed {seed}: pos {float(y.double().mean()):.3f} public rate {q:.3f} AUC {label_auc(y, s):.4f} "
          f"acc@Bayes {acc(tb):.4f} (t={float(tb):.3f}, labelled 1: {float((s > tb).double().mean()):.3f}) "
          f"acc@2means {acc(t2):.4f} acc@0 {acc(0.0):.4f} (labelled 1: {float((s > 0).double().mean()):.3f}); "
          f"attack now: {g.info.get('threshold')}, {g.info.get('oriented_by')}, "
          f"acc {float(((g.label_scores > 0.5).long() == y).double().mean()):.4f}; "
          f"positives with s<0: {int(((s < 0) & (y == 1)).sum())}, negatives with s>0: {int(((s > 0) & (y == 0)).sum())}", flush=True)
