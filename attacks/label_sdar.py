"""SDAR's label inference in U-shaped SL (Zhu et al., "Passive Inference Attacks on Split
Learning via Adversarial Regularization", NDSS 2025), for `label_inference.py`, method `sdar`.

The honest-but-curious U-shaped server of the paper holds none of the client's parts. What it
reads here is only that: the public architecture, its labelled aux data, its own body, the
smashed data of the training batches it served in its observation window (`View.seen`) and the
body outputs it sent back for them (`View.outputs`). It never reads the relayed head or tail,
head queries, or the returned gradients (tests/test_label_sdar.py proves it). It trains

- a simulated head f~ and a simulated tail h~ (fresh parts of the public architecture) on the
  aux data through its own (frozen) body: cross-entropy of h~(body(f~(x))) with the aux label;
- with an adversarial regulariser: a discriminator tells f~'s features from the smashed data
  the server observed, and f~ learns to fool it (weight `weight`), so that what f~ feeds the
  body looks like what the client fed it, and h~, trained on the body's outputs for those
  features, applies to the body's outputs for the client's.

Each observation is labelled h~(body(observed smashed data)), the body outputs as the server
computed and sent them. Adaptive to the public cut mechanisms (`CutChannel`: clipping,
compression, noise, MID's sampling): f~'s features pass through them before the body and the
discriminator see them. Seeded: the same view and seed give the same scores.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from slsec.errors import UserError
from slsec.threat import View

from .fora import _Discriminator
from .inverse import CutChannel, frozen, shift

Feats = dict[str, Tensor]


def _observed_smashed(view: View) -> Tensor:
    """[M, ...] the training batches' smashed data the server received (its window)."""
    if not view.seen:
        raise UserError("method 'sdar' needs the smashed data of the training batches the "
                        "server observed (--observe-samples must be at least 1)")
    return torch.cat([m["x"] for m in view.seen]).detach().float().cpu()


def _aux(view: View) -> tuple[Any, int]:
    aux = view.aux if "aux_data" in view.knowledge else None
    y = getattr(aux, "y", None)
    if y is None or len(y) == 0:
        raise UserError("method 'sdar' needs labelled aux samples (--aux-size must be at least 1)")
    return aux, len(y)


def _aux_batch(aux: Any, idx: Tensor, gen: torch.Generator) -> tuple[Feats, Tensor]:
    """Aux features (images shifted by up to one pixel) and labels of rows `idx`."""
    if hasattr(aux, "batch"):
        feats, y = aux.batch(idx)
    else:
        feats, y = {"x": aux.inputs[idx]}, aux.y[idx]
    x = feats["x"].float().cpu()
    if x.dim() == 4:
        x = shift(x, gen, 1)
    return {**feats, "x": x}, torch.as_tensor(y).long().cpu()


def scores(view: View, *, steps: int, lr: float, weight: float, batch: int,
           seed: int) -> tuple[Tensor, dict[str, Any]]:
    """Label probabilities [N, K] for every observed body output, and what was used."""
    k = int(view.public.get("num_classes") or 0)
    if k < 2:
        raise UserError("label inference needs public num_classes >= 2")
    if view.role != "server" or not view.outputs or view.parts.get("body") is None:
        raise UserError("method 'sdar' infers labels from the U-shaped server's view: it needs "
                        "the server's body and the body outputs it sent on")
    if view.build_model is None or len(view.cuts) != 2:
        raise UserError("method 'sdar' needs the public architecture and both cuts")
    real = _observed_smashed(view)
    aux, n_aux = _aux(view)
    channel = CutChannel.from_public(view.public)
    body = frozen(view.parts["body"])
    gen = torch.Generator().manual_seed(seed)
    bs = max(1, min(batch, n_aux))
    with torch.random.fork_rng(devices=[]):   # seeded inits, the caller's generator untouched
        torch.manual_seed(seed)
        parts = view.build_model().split(list(view.cuts))
        head, tail = parts[0].cpu().train(), parts[-1].cpu().train()
        disc = _Discriminator(tuple(real.shape[1:]), 0)
        with torch.no_grad():
            disc(real[:2])   # materialise its lazy layer
    opt = torch.optim.Adam(list(head.parameters()) + list(tail.parameters()), lr=lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr / 5, betas=(0.5, 0.999))
    task = fool = torch.tensor(0.0)
    for _ in range(steps):
        feats, y = _aux_batch(aux, torch.randint(0, n_aux, (bs,), generator=gen), gen)
        h = head(feats)
        z = channel.sample(h["x"], gen)
        zo = real[torch.randint(0, len(real), (bs,), generator=gen)]
        loss_d = F.softplus(-disc(zo)).mean() + F.softplus(disc(z.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        task = F.cross_entropy(tail(body({**h, "x": z}))["x"], y)
        fool = F.softplus(-disc(z)).mean()
        opt.zero_grad(set_to_none=True)
        (task + weight * fool).backward()
        opt.step()
    tail.eval()
    with torch.no_grad():
        logits = [tail(o if isinstance(o, dict) else {"x": o})["x"] for o in view.outputs]
    out = torch.cat([x.reshape(len(x), -1) for x in logits]).double()
    if out.shape[1] != k:
        raise UserError(f"method 'sdar': the simulated tail gives {out.shape[1]} scores, the "
                        f"task has {k} classes")
    info = {"labeler": "sdar: simulated head and tail through the server's body",
            "observations": int(len(real)), "aux_used": int(n_aux), "steps": int(steps),
            "final_task_ce": float(task.detach()), "final_fool": float(fool.detach()),
            "adapted_to": sorted({m.name for m in view.public.get("defenses", []) or []})
            if channel != CutChannel() else []}
    return torch.softmax(out, 1), info
