"""Gradient check: does each returned cut gradient agree with a task gradient the client
computes itself?

The client holds its labels, its smashed data and the public architecture. It keeps a
*shadow tail* (the layers after the cut, freshly initialised with its own seed, never the
server's weights) and trains it like the server trains its tail: cross-entropy on the smashed
batch and the labels, Adam at the run's learning rate. For every sample i it compares the cut
gradient g_i the server returned with its shadow's gradient s_i:

    score = mean_i cos(g_i, s_i)

An honest server's gradient is the gradient of the same task loss through a tail trained on
the same data, so the two agree (measured on MNIST at pool1: 0.6 to 0.8 after the first 20
steps); a hijacking server's gradient follows its own objective and is orthogonal to the task
gradient (about 0), and one that mixes the task gradient into its answer agrees only in part
(0.2 to 0.3 with half and half). Decision rule: from step `start` (the shadow needs a few
steps to learn), flag when the mean score over the last `window` steps is below `threshold`.
No extra batches; the cost is the shadow tail's forward and backward on the client at every
step. It needs the client's labels (vanilla SL and SplitFed with labels on the client).

Built after the intrinsic-attribute checks of Fu et al. 2023 ("Gradients Scrutinizer", NDSS)
and the local honest simulation of SplitOut (Erdogan et al. 2024). The Scrutinizer's own
statistic (same-label minus different-label similarity of the returned gradients) misses the
label-conditioned FSHA of `attacks/hijack.py`, whose critic gives its gradients the same label
structure as a task loss (bench/README.md).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.defenses.base import DEFENSES, positive
from slsec.defenses.detector import Detector, need_labels
from slsec.params import Param


@DEFENSES.register("gradient-check")
class GradientCheck(Detector):
    """Flag when returned cut gradients stop agreeing with a client-side shadow tail's."""

    name = "gradient-check"
    protocols = frozenset({"vanilla", "splitfed", "splitfed-async"})   # label-sending clients
    point = "monitor"
    params = (Param("check_threshold", "float", 0.3, "gradient-check: flag the server when the "
                    "mean cosine of the last 5 steps is below this", kw="threshold",
                    unused="is the flag rule of --defense gradient-check"),)
    summary = ("Gradient check: the client trains a shadow tail of the public architecture on "
               "its own smashed data and labels and compares, per sample, the cut gradient the "
               "server returned with its shadow's task gradient; a hijacking server's gradient "
               "is orthogonal to it. Flag rule: mean cosine of the last steps below the "
               "threshold.")

    def __init__(self, *, threshold: float = 0.3, window: int = 5, start: int = 30,
                 lr: float = 1e-3, seed: int = 0) -> None:
        super().__init__(threshold=threshold, window=window, start=start)
        self.lr = positive("gradient-check-lr", lr)
        self.seed = int(seed)
        self.shadow: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None

    def fit_public(self, setup: Any) -> None:
        """The shadow tail trains at the run's learning rate, seeded from the run's seed."""
        super().fit_public(setup)
        self.lr, self.seed = float(setup.cfg.lr), int(setup.cfg.seed)

    def attach(self, model: Any, cuts: tuple[str, ...]) -> None:
        """Build the shadow tail from the public architecture, with fresh weights of its own."""
        if self.shadow is not None:
            return
        tail = copy.deepcopy(model.split(list(cuts))[-1]).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 7717)
            for m in tail.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        self.shadow = tail
        self.opt = torch.optim.Adam(tail.parameters(), lr=self.lr)

    def score(self, *, g: Tensor, head: nn.Module, x: Tensor, y: Tensor | None, decoy: bool,
              feats: dict[str, Tensor] | None = None) -> float | None:
        y = need_labels(self.name, y)
        if self.shadow is None or self.opt is None:
            raise RuntimeError("gradient-check: attach() the shadow tail before the first step")
        z = x.detach().float().cpu().requires_grad_(True)
        extra = {k: v.detach().cpu() for k, v in (feats or {}).items()   # graph structure
                 if k not in ("x", "y", "i")}
        loss = F.cross_entropy(self.shadow({**extra, "x": z})["x"], y.cpu())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.step <= self.start or decoy:
            return None
        cos = F.cosine_similarity(g.detach().float().cpu().flatten(1), z.grad.flatten(1), dim=1)
        return float(cos.mean())

