"""The attacker's prior: its best guess of a private input WITHOUT inverting the smashed data.

A reconstruction only shows leakage where it beats this guess. What the guess can use depends
on what the attacked role already holds (`aux_data`: a public sample of the data):

- no label: the aux mean image;
- label held (the server of vanilla SL / SplitFed receives every record's label with its
  smashed data; in two-party SL it owns them): the class-conditional image of that label;
- label predicted (the U-shaped server, or a role without labels): predict each label from
  what the role observes, then take the class-conditional image of the predicted label:
  with the model parts the role holds past the cut (U-shaped server: body and relayed tail),
  else with a classifier trained on aux data pushed through the head it may query.

The class-conditional image is the best of class mean, class median and class medoid, chosen
by mean SSIM on a held-out part of the aux data (fit on the rest): never on the probes.
"""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from slsec.run.result import LABEL_SOURCES
from slsec.threat import View

KINDS = ("mean", "median", "medoid")
HOLDOUT = 0.3          # share of aux data that scores the template kinds
# a guess's info["label_source"]: an index into the engine's LABEL_SOURCES (none/held/predicted)
LABEL_NONE, LABEL_HELD, LABEL_PREDICTED = map(LABEL_SOURCES.index, LABEL_SOURCES)


def class_templates(images: Tensor, labels: Tensor, num_classes: int, kind: str) -> Tensor:
    """One image per class [K, C, H, W]: the class mean, pixel-wise median or medoid (the class
    member with the least summed squared distance to the others). Classes absent from `labels`
    get the overall mean."""
    if kind not in KINDS:
        raise ValueError(f"unknown template kind {kind!r}; valid: {', '.join(KINDS)}")
    x = images.float()
    out = x.mean(0, keepdim=True).repeat(num_classes, *([1] * (x.dim() - 1)))
    for c in range(num_classes):
        xc = x[labels == c]
        if len(xc) == 0:
            continue
        if kind == "mean":
            out[c] = xc.mean(0)
        elif kind == "median":
            out[c] = xc.median(0).values
        else:
            flat = xc.flatten(1)
            out[c] = xc[int(torch.cdist(flat, flat).square().sum(1).argmin())]
    return out


def choose_kind(aux_x: Tensor, aux_y: Tensor, num_classes: int,
                gen: torch.Generator) -> tuple[str, dict[str, float]]:
    """The template kind with the best mean SSIM on a held-out part of the aux data (the
    templates fit on the rest, the held-out images scored against their class's template)."""
    from slsec import metrics
    perm = torch.randperm(len(aux_y), generator=gen)
    n_out = max(1, int(round(HOLDOUT * len(aux_y))))
    held, fit = perm[:n_out], perm[n_out:]
    if len(fit) == 0:
        return "mean", {}
    scores = {}
    for kind in KINDS:
        t = class_templates(aux_x[fit], aux_y[fit], num_classes, kind)
        scores[kind] = float(metrics.ssim(aux_x[held], t[aux_y[held]]).mean())
    return max(KINDS, key=lambda k: scores[k]), scores


def received_labels(view: View) -> Tensor | None:
    """The labels that arrived with the observed smashed data (None unless every message
    carried them: only roles that really receive labels hold them)."""
    if not view.smashed or any("y" not in m for m in view.smashed):
        return None
    return torch.cat([m["y"] for m in view.smashed]).long().cpu()


@dataclass
class Prior:
    """The attacker's prior for the observed probes."""

    images: Tensor                  # [N, C, H, W]: the prior guess per probe
    labels: Tensor | None           # [N] labels used (held or predicted), None without labels
    source: int                     # LABEL_NONE | LABEL_HELD | LABEL_PREDICTED
    templates: Tensor | None        # [K, C, H, W] class images (None without labels)
    info: dict[str, Any]


_LAST: list[Any] = []   # (view, seed, prior) of the last call: every method shares one prior
_LAST_LOCK = threading.Lock()


def build_prior(view: View, obs: Tensor, channel: Any, seed: int) -> Prior:
    """The best guess the role can make without inverting: see the module doc. Computed once
    per view and seed (the methods compared on one view all start from the same prior)."""
    with _LAST_LOCK:   # methods running side by side (threads) build it once, not each
        if _LAST and _LAST[0] is view and _LAST[1] == seed:
            return _LAST[2]
        prior = _build_prior(view, obs, channel, torch.Generator().manual_seed(seed))
        _LAST[:] = [view, seed, prior]
        return prior


def _build_prior(view: View, obs: Tensor, channel: Any, gen: torch.Generator) -> Prior:
    aux_x, aux_y = view.aux.inputs.float().cpu(), view.aux.y.long().cpu()
    k = int(view.public.get("num_classes") or int(aux_y.max()) + 1)
    labels, source, info = received_labels(view), LABEL_HELD, {}
    if labels is None:
        labels, info = predict_labels(view, obs, channel, aux_x, aux_y, k, gen)
        source = LABEL_PREDICTED if labels is not None else LABEL_NONE
    if labels is None:
        mean = aux_x.mean(0)
        return Prior(mean.expand(len(obs), *mean.shape).clone(), None, LABEL_NONE, None,
                     {"prior": "aux mean image"})
    kind, scores = choose_kind(aux_x, aux_y, k, gen)
    templates = class_templates(aux_x, aux_y, k, kind)
    info.update(prior=f"class {kind}", heldout_ssim_by_kind=scores)
    return Prior(templates[labels], labels, source, templates, info)


def predict_labels(view: View, obs: Tensor, channel: Any, aux_x: Tensor, aux_y: Tensor,
                   k: int, gen: torch.Generator) -> tuple[Tensor | None, dict[str, Any]]:
    """Predict each probe's label from what the role observes: through the model parts it
    holds past the cut (body and tail), else with a linear classifier trained on aux data
    pushed through the head it may query (with the public cut defense simulated)."""
    parts = view.parts
    if "tail" in parts and ("body" in parts or len(view.cuts) == 1):
        with torch.no_grad():
            h = {"x": obs}
            for name in ("body", "tail"):
                if name in parts:
                    h = copy.deepcopy(parts[name]).cpu().eval()(h)
            return h["x"].argmax(1).long(), {"label_predictor": "held model parts past the cut"}
    forward = view.query_head if "query_head" in view.knowledge else None
    if forward is None and "head_weights" in view.knowledge and "head" in parts:
        head = copy.deepcopy(parts["head"]).cpu().eval()
        forward = lambda f: head(f)  # noqa: E731
    if forward is None:
        return None, {}
    with torch.no_grad():
        h = torch.cat([forward({"x": aux_x[i:i + 256]})["x"].float().cpu()
                       for i in range(0, len(aux_x), 256)])
        # nearest class centroid of the (clipped) aux features: under the cut's Gaussian noise
        # the centroid rule is the likelihood classifier of a class-mean model; no training
        centroids = torch.stack([channel.forward(h[aux_y == c]).flatten(1).mean(0)
                                 if (aux_y == c).any() else torch.full((h[0].numel(),), math.inf)
                                 for c in range(k)])
        pred = torch.cdist(obs.flatten(1).float(), centroids).argmin(1).long()
    return pred, {"label_predictor": "nearest class centroid of aux data through the head"}
