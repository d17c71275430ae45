"""SplitGuard (Erdogan, Küpçü, Çiçek, WPES 2022): decoy batches with wrong labels.

With probability `p_fake` a training batch becomes a *fake* batch: the client sends it with
every label replaced by a wrong one and does not learn from the answer. An honest server's
task gradient depends on the labels, so the gradient a fake batch induces on the client's head
points elsewhere and is larger than that of regular batches; a hijacking server whose answer
ignores the labels (FSHA) returns fake and regular gradients alike. The client keeps running
means of its head-parameter gradients for the fake batches F and for the regular ones, split
alternately into R1 and R2 (R = both), and after every fake batch computes the score of the
paper:

    M = | |F| - |R| | + | |R1| - |R2| |          (|.|: mean gradient norm of a set)
    x = angle(mean F, mean R) * | |F| - |R| | / M  -  angle(mean R1, mean R2) * | |R1| - |R2| | / M
    SG = sigmoid(mult * x) ** exp                 (mult = 5, exp = 2, as the authors' code)

SG is near 1 when fake batches stand apart from regular ones as much as an honest server makes
them (angle in radians), and near sigmoid(0)^2 = 0.25 or below when they do not. Decision
rule: flag when the mean SG over the last `window` fake batches is below `threshold`. Fake
batches start after `start` client steps (none before: the first regular gradients are the
reference). Cost: a share `p_fake` of the client's batches teaches its head nothing, and the
server's tail trains on their wrong labels.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from slsec.defenses.base import DEFENSES
from slsec.defenses.detector import Detector, head_gradient, need_labels, wrong_labels
from slsec.params import Param, check_given
from slsec.threat import Detection


class _Mean:
    """Running mean of vectors and of their norms."""

    def __init__(self) -> None:
        self.n, self.vec, self.norm = 0, None, 0.0

    def add(self, v: Tensor) -> None:
        self.vec = v.double() if self.vec is None else self.vec + v.double()
        self.norm += float(v.double().norm())
        self.n += 1

    def mean(self) -> Tensor:
        return self.vec / self.n

    def mag(self) -> float:
        return self.norm / self.n


def _angle(a: Tensor, b: Tensor) -> float:
    cos = float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))
    return math.acos(max(-1.0, min(1.0, cos)))


def sg_score(f: _Mean, r1: _Mean, r2: _Mean, mult: float = 5.0, exp: float = 2.0) -> float:
    """The SplitGuard score from the running means of fake (F) and regular (R1, R2) gradients."""
    r_mean, r_mag = (r1.mean() + r2.mean()) / 2, (r1.mag() + r2.mag()) / 2
    d_fr, d_rr = abs(f.mag() - r_mag), abs(r1.mag() - r2.mag())
    m = d_fr + d_rr
    if m == 0:
        return 0.0
    x = _angle(f.mean(), r_mean) * d_fr / m - _angle(r1.mean(), r2.mean()) * d_rr / m
    return (1.0 / (1.0 + math.exp(-mult * x))) ** exp


@DEFENSES.register("splitguard")
class SplitGuard(Detector):
    """Decoy batches with wrong labels; flag when their gradients look like the regular ones."""

    name = "splitguard"
    protocols = frozenset({"vanilla", "splitfed", "splitfed-async"})   # label-sending clients
    point = "monitor"
    params = (
        Param("splitguard_p_fake", "float", 0.1, "splitguard: probability that a batch is sent "
              "as a decoy with wrong labels", check=("positive", "below_one"), kw="p_fake",
              unused="is the decoy rate of --defense splitguard"),
        Param("splitguard_threshold", "float", 0.5, "splitguard: flag the server when the mean "
              "score of the last 3 decoys is below this", check=("non_negative",),
              kw="threshold", unused="is the flag rule of --defense splitguard"),
    )
    summary = ("SplitGuard (Erdogan et al. 2022): the client sends a share of its batches as "
               "decoys with wrong labels, does not learn from them, and compares the head "
               "gradients they induce with those of regular batches; an honest server's answers "
               "depend on the labels, a hijacking server's do not. Flag rule: mean SplitGuard "
               "score of the last decoys below the threshold.")

    def __init__(self, *, p_fake: float = 0.1, threshold: float = 0.5, window: int = 3,
                 start: int = 20) -> None:
        super().__init__(threshold=threshold, window=window, start=start)
        check_given(type(self).params, p_fake=p_fake, threshold=threshold)
        self.p_fake = float(p_fake)
        self.f, self.r = _Mean(), (_Mean(), _Mean())
        self.fakes = 0
        self._regular = 0

    def decoy(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor | None:
        """Wrong labels for a fake batch (probability p_fake after `start` steps), else None."""
        if self.withholding:
            return wrong_labels(y, num_classes, gen)
        if self.step < self.start or float(torch.rand(1, generator=gen)) >= self.p_fake:
            return None
        self.fakes += 1
        return wrong_labels(y, num_classes, gen)

    def score(self, *, g: Tensor, head: nn.Module, x: Tensor, y: Tensor | None, decoy: bool,
              feats: dict[str, Tensor] | None = None) -> float | None:
        need_labels(self.name, y)
        v = head_gradient(head)
        if decoy:
            self.f.add(v)
        else:
            self.r[self._regular % 2].add(v)
            self._regular += 1
        if not decoy or min(self.r[0].n, self.r[1].n) == 0:
            return None
        return sg_score(self.f, *self.r)

    def report(self) -> dict[str, Any]:
        return {**super().report(), "splitguard_fake_batches": float(self.fakes)}

    def public_mechanism(self) -> Detection:
        return Detection(self.name, threshold=self.threshold, window=self.window,
                         start=self.start, p_fake=self.p_fake)
