"""The surrogate of the label holder's part, for label inference (`label_inference.py`): the
public tail, how this role maps raw inputs to the tail's input space, a surrogate tail fit to
labelled aux data, and the match of its per-label gradients with the observed ones.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.errors import UserError
from slsec.threat import View

from .label_gradients import Feats, Observed, per_sample, unflipped, unit


def tail_for(view: View) -> nn.Module:
    if view.build_model is None or not view.cuts:
        raise UserError("label inference needs the public architecture and cuts")
    return view.build_model().split(list(view.cuts))[-1]


def embedder(view: View) -> Callable[[Feats], Feats] | None:
    """How this role maps raw inputs to the tail's input space, if it can."""
    head = view.parts.get("head")
    to_cut = (lambda f: head(f)) if head is not None else view.query_head
    if to_cut is None:
        return None
    if view.role == "server" and view.outputs:  # U-shaped: head, then the server's own body
        body = view.parts.get("body")
        if body is None:
            return None
        return lambda f: body({k: v for k, v in to_cut(f).items()})
    return to_cut


def aux_batch(view: View, n: int, seed: int) -> tuple[Feats, Tensor] | None:
    """Up to n labelled aux samples (balanced over classes when possible) as tail inputs."""
    aux, embed = view.aux, embedder(view)
    if aux is None or embed is None or len(aux.y) == 0:
        return None
    y = aux.y.long()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    classes = y[order].unique()
    per = max(1, n // len(classes))
    pick = torch.cat([order[y[order] == c][:per] for c in classes])
    rest = order[~torch.isin(order, pick)]
    pick = torch.cat([pick, rest[: max(0, n - len(pick))]])[:n]
    feats, labels = aux.batch(pick) if hasattr(aux, "batch") else ({"x": aux.inputs[pick]}, y[pick])
    with torch.no_grad():
        out = embed(feats)
    return {k: v.detach() for k, v in out.items()}, labels.long()


def train_surrogate(tail: nn.Module, feats: Feats, y: Tensor, *, steps: int,
                     lr: float) -> nn.Module:
    """Fit the surrogate tail to the labelled aux samples (full batch, Adam, weight decay)."""
    tail.train()
    opt = torch.optim.Adam(tail.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(tail(feats)["x"], y).backward()
        opt.step()
    return tail.eval()


def predict(tail: nn.Module, feats: list[Feats]) -> Tensor:
    with torch.no_grad():
        return torch.cat([F.log_softmax(tail(f)["x"].double(), 1) for f in feats])


def grad_match(tail: nn.Module, obs: Observed) -> Tensor:
    """Cosine between each observed gradient and the tail's gradient for every candidate label."""
    k = obs.num_classes
    sims = []
    for f in obs.feats:
        x = f["x"].detach().float().requires_grad_(True)
        logits = tail({**f, "x": x})["x"]
        cand = []
        for c in range(k):
            (g,) = torch.autograd.grad(F.cross_entropy(logits, torch.full((len(logits),), c),
                                                       reduction="sum"), x, retain_graph=True)
            cand.append(per_sample(g, f, "sum"))
        sims.append(torch.stack(cand, 1))
    cand = torch.cat(sims)  # [N, K, D]
    return (F.normalize(cand, dim=2) * unit(unflipped(obs))[:, None, :]).sum(2)


def identity(f: Feats) -> Feats:
    return f


def projector(obs: Observed) -> Callable[[Feats], Feats]:
    """Map tail inputs onto the gradients' span (about the observed mean) when that span is
    small (a linear tail: rank <= K - 1): lossless for the true tail's label decision, and a
    surrogate fit on a few aux labels there cannot overfit the other directions."""
    g, x = obs.grads, obs.inputs
    if g.shape[1] != x.shape[1] or any(f["x"].shape[0] != len(f["x"]) or "batch" in f
                                       for f in obs.feats):
        return identity
    s = torch.linalg.svdvals(unit(g))
    energy = (s ** 2).cumsum(0) / (s ** 2).sum().clamp_min(1e-300)
    rank = int((energy < 0.999).sum()) + 1
    if rank > 2 * obs.num_classes:
        return identity
    _, _, vh = torch.linalg.svd(unit(g), full_matrices=False)
    basis, mean = vh[:rank].T, x.mean(0)

    def project(f: Feats) -> Feats:
        flat = f["x"].reshape(f["x"].shape[0], -1).double()
        out = mean + (flat - mean) @ basis @ basis.T
        return {**f, "x": out.to(f["x"].dtype).reshape(f["x"].shape)}
    return project
