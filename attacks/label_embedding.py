"""Label inference from the embeddings a role observes, without any gradient (for
`label_inference.py`, method `embedding`): the forward-embedding leakage of Sun et al. 2022
and SecretFlow's similarity attack.

The attacker holds a few labelled public samples (default 10 per class) and can map them to the
space of what it observes: the U-shaped server through the client's head (its weights, or
black-box queries) and its own body, comparing with the body outputs it sent on; the client of
two-party SL through its own head, comparing with its own smashed data. Each observed
embedding is labelled by similarity to the public ones: class centroids of the public
embeddings (cosine, after centring on the observed mean), refined by a few rounds of k-means on
the observed embeddings that start from those centroids and keep the public samples' labels
fixed (the many unlabelled observations sharpen what ten labelled ones give). Where the role
also holds the model part that consumes what it observed (the U-shaped server relays the
client's tail), it labels each observation by that part's forward pass instead: the trained
tail separates the classes better than ten public samples per class do (U-shaped, conv1 | fc1,
3 rounds: 0.944 / 0.953 vs similarity 0.930 / 0.893 on seeds 0 / 1; bench/README). It reads
only forward messages, so a defense of the returned gradients does not touch it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slsec.errors import UserError
from slsec.threat import View

from .label_gradients import per_sample, unit
from .label_surrogate import aux_batch


def observed(view: View) -> Tensor:
    """[N, D] float64: the embeddings the role observed, one row per sample, in the order of
    its observations (U-shaped server: its body outputs; otherwise the smashed data)."""
    msgs = view.outputs if view.role == "server" and view.outputs else view.smashed
    rows = []
    for m in msgs:
        msg = m if isinstance(m, dict) else {"x": m}
        if "x" not in msg:
            raise UserError("embedding label inference needs the observed embeddings")
        rows.append(per_sample(msg["x"], msg, "mean"))
    if not rows:
        raise UserError("embedding label inference: this view holds no observed embeddings")
    return torch.cat(rows)


def held_part_scores(view: View, n: int) -> Tensor | None:
    """[N, K] probabilities from the forward pass of the part the role holds past what it
    observed (the U-shaped server's relayed tail on its body outputs); None without one."""
    tail = view.parts.get("tail")
    if view.role != "server" or not view.outputs or tail is None:
        return None
    with torch.no_grad():
        logits = [tail(m if isinstance(m, dict) else {"x": m})["x"] for m in view.outputs]
    out = torch.cat([x.reshape(len(x), -1) for x in logits]).double()
    return torch.softmax(out, 1) if out.shape[0] == n else None


def scores(view: View, per_class: int, seed: int, rounds: int = 10,
           temperature: float = 20.0) -> tuple[Tensor, dict[str, Any]]:
    """Label scores [N, K] (probabilities) of every observed embedding, and what was used."""
    k = int(view.public.get("num_classes") or 0)
    if k < 2:
        raise UserError("label inference needs public num_classes >= 2")
    held = held_part_scores(view, len(observed(view)))
    if held is not None and held.shape[1] == k:
        return held, {"labeler": "held tail (forward pass)"}
    aux = aux_batch(view, per_class * k, seed)
    if aux is None:
        raise UserError("method 'embedding' needs labelled aux samples this role can embed "
                        "(its own head, the relayed head, or head queries)")
    obs = observed(view)
    pub = per_sample(aux[0]["x"], aux[0], "mean")
    y = aux[1].long()
    if pub.shape[1] != obs.shape[1]:
        raise UserError(f"embedding label inference: public embeddings have {pub.shape[1]} "
                        f"features, the observed {obs.shape[1]}")
    centre = obs.mean(0, keepdim=True)
    o, p = unit(obs - centre), unit(pub - centre)
    present = [c for c in range(k) if (y == c).any()]
    cent = torch.zeros(k, o.shape[1], dtype=o.dtype)
    for c in present:
        cent[c] = unit(p[y == c].mean(0, keepdim=True))[0]
    missing = torch.ones(k, dtype=torch.bool)
    missing[present] = False
    for _ in range(rounds):   # k-means from the public centroids, public labels fixed
        assign = (o @ cent.T).masked_fill(missing, -2.0).argmax(1)
        new = cent.clone()
        for c in present:
            members = torch.cat([o[assign == c], p[y == c]])
            new[c] = unit(members.mean(0, keepdim=True))[0]
        if torch.allclose(new, cent):
            break
        cent = new
    sim = (o @ cent.T).masked_fill(missing, -2.0)
    info = {"labeler": "similarity", "public_embedded": int(len(y)), "per_class": per_class,
            "rounds": rounds}
    return torch.softmax(temperature * sim, 1), info
