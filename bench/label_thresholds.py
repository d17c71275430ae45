"""Label inference's hard labels beside the label prior, in two-party SL (the server holds the
labels, one digit against the rest) and U-shaped SL, on what the attacking role observes.

Each seed trains the CNN one epoch in the setting (Adam 1e-3, batch 64, embedded MNIST), then
observes the next `--observe` training samples as the role does (its smashed data or body
outputs and the per-sample cut gradients it gets back) and runs every label-inference method
the role's knowledge allows on those same observations. Printed per cut: each method's label
accuracy and AUC, the min-max-normalised 0.5 threshold on the same score (VFLAIR's rule), the
majority-class prior, mean ± 95% CI over the seeds.

    nice -n 10 .venv/bin/python bench/label_thresholds.py --cuts fc1,pool2 --seeds 3
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

from _common import one_thread  # noqa: F401  (puts the checkout on sys.path)

import torch
import torch.nn.functional as F

from slsec.data import load_dataset
from slsec.data.models import build_model
from slsec.threat import View


class Public:
    """The role's public labelled aux data."""

    def __init__(self, inputs: torch.Tensor, y: torch.Tensor) -> None:
        self.inputs, self.y = inputs, y


def two_party(cut: str, seed: int, positive: int = 0, observe: int = 512,
              aux_size: int = 500) -> tuple[View, torch.Tensor]:
    """Vanilla SL, labels at the server (one digit against the rest): the client's view."""
    ds = load_dataset("mnist")
    tr = ds.train
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(tr), generator=gen)
    aux_idx, priv = perm[:aux_size], perm[aux_size:]
    y_all = (tr.y == positive).long()
    torch.manual_seed(seed)
    model = build_model("cnn", num_classes=2)
    head, tail = model.split([cut])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    smashed, grads, ys = [], [], []
    for epoch in range(2):
        seen = 0
        for idx in priv[torch.randperm(len(priv), generator=gen)].split(64):
            if epoch == 1 and seen >= observe:
                break
            y = y_all[idx]
            s = head({"x": tr.inputs[idx]})["x"]
            s_in = s.detach().requires_grad_(True)
            opt.zero_grad()
            F.cross_entropy(tail({"x": s_in})["x"], y).backward()
            if epoch == 1:
                smashed.append({"x": s.detach().clone()})
                grads.append(s_in.grad.clone())
                ys.append(y)
            s.backward(s_in.grad)
            opt.step()
            seen += len(idx)
    view = View(role="client", protocol="vanilla", smashed=smashed, grads=grads,
                parts={"head": head}, knowledge=frozenset({"architecture", "aux_data"}),
                build_model=lambda: build_model("cnn", num_classes=2), cuts=(cut,),
                aux=Public(tr.inputs[aux_idx], y_all[aux_idx]),
                public={"num_classes": 2, "defenses": []})
    return view, torch.cat(ys)


def minmax_half(y: torch.Tensor, score: torch.Tensor) -> float:
    """VFLAIR's rule: min-max-normalise the raw score, label 1 above 0.5."""
    s = (score - score.min()) / (score.max() - score.min()).clamp_min(1e-300)
    return float(((s > 0.5).long() == y).float().mean())


def one(cut: str, seed: int, methods: list[str]) -> dict[str, float]:
    from slsec.attacks.label_inference import LabelInference
    from slsec.metrics import label_accuracy, label_auc, majority_baseline
    view, y = two_party(cut, seed)
    out: dict[str, float] = {"prior": majority_baseline(y, view.aux.y)}
    for m in methods:
        g = LabelInference(method=m, seed=seed).run(view)
        out[f"{m} acc"] = label_accuracy(y, g.label_scores)
        out[f"{m} auc"] = label_auc(y, g.label_scores)
    norms = torch.cat([g.reshape(len(g), -1).norm(dim=1) for g in view.grads])
    out["norm minmax-0.5 acc"] = minmax_half(y, norms)
    return out


def main() -> None:
    one_thread()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", default="fc1,pool2")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default="norm,cosine,cluster,completion")
    a = ap.parse_args()
    from slsec.report.stats import t_interval
    for cut in a.cuts.split(","):
        rows = [one(cut, s, a.methods.split(",")) for s in range(a.seeds)]
        print(f"two-party SL (label party: server), digit 0 against the rest, cut {cut}, "
              f"{a.seeds} seeds:")
        for k in rows[0]:
            vals = [r[k] for r in rows]
            m, ci = t_interval(vals)
            print(f"  {k:24s} {m:.3f} ± {ci:.3f}   ({', '.join(f'{v:.3f}' for v in vals)})")


if __name__ == "__main__":
    main()
