"""MID (Zou et al. 2023, mutual-information regularisation): a variational information
bottleneck at the cut, weight λ (`--mid-weight`).

The sender's embedding h is the mean of a Gaussian encoder; what crosses the cut is a sample
z = h + σ·ε, ε ~ N(0, I), at training and at inference alike, and the sender's loss gains
λ · KL(N(h, σ²I) || N(0, I)) averaged over the batch's samples, which bounds I(inputs; z).
Here the encoder's variance is fixed at the prior's (σ = 1): the KL is then ½‖h‖² per sample,
the head learns how much of its signal to keep above the unit noise, and the receiving part
(the tail) is the decoder. The published MID layer adds a small MLP encoder that also learns σ
and an MLP decoder on the receiving side; this one keeps the bottleneck and its λ trade-off
without changing either party's architecture.

Public mechanism: `Bottleneck` (a `CutNoise` without clipping, σ = 1, plus λ): an adaptive
inversion models the sampling as the noise it is (`attacks/inverse.py` CutChannel), so a λ that
only shrinks h relative to the noise is measured against an attacker that knows the noise.
No DP claim: h is not clipped, so the noise has no finite sensitivity to calibrate against.

`sample` and `kl` are functions of a batch of embedding rows [B, ...]: any protocol that sends
per-sample embeddings (vanilla, U-shaped, SplitFed, a vertical party) uses the same two.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slsec.defenses.base import DEFENSES, Defense
from slsec.params import Param, check_given
from slsec.threat import Bottleneck

SIGMA = 1.0   # the encoder's (fixed) standard deviation, the prior's


def sample(h: Tensor, gen: torch.Generator | None, sigma: float = SIGMA) -> Tensor:
    """z = h + sigma * N(0, I), drawn from `gen` (the gradient flows to h)."""
    eps = torch.randn(h.shape, generator=gen, dtype=h.dtype, device="cpu").to(h.device)
    return h + sigma * eps


def kl(h: Tensor, sigma: float = SIGMA) -> Tensor:
    """Mean over rows of KL(N(h_i, sigma² I) || N(0, I))."""
    flat = h.reshape(h.shape[0], -1)
    d = flat.shape[1]
    var = sigma ** 2
    per = 0.5 * (flat.square().sum(1) + d * (var - 1.0 - math.log(var)))
    return per.mean()


@DEFENSES.register("mid")
class MID(Defense):
    """Variational information bottleneck at the cut (MID), weight --mid-weight."""

    name = "mid"
    protocols = frozenset({"vanilla", "ushaped", "splitfed", "splitfed-async", "vertical"})
    point = "cut"
    sweep_param = "mid_weight"
    sweep_values = "0,0.001,0.01,0.1,1"
    params = (Param("mid_weight", "float", 0.01, "mid: weight λ of the bottleneck's KL in the "
                    "sender's loss", check=("non_negative",), kw="weight",
                    unused="weighs --defense mid"),)

    def __init__(self, *, weight: float = 0.01) -> None:
        check_given(type(self).params, weight=weight)
        self.weight = float(weight)

    def smashed(self, h: Tensor, *, train: bool, gen: torch.Generator | None) -> Tensor:
        return sample(h, gen)

    def regularizer(self, x: Tensor, h: Tensor) -> Tensor | None:
        return None if self.weight == 0 else self.weight * kl(h)

    def public_mechanism(self) -> Bottleneck:
        return Bottleneck(self.name, clip=math.inf, sigma=SIGMA, weight=self.weight)

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        return "MID: an information bottleneck at the cut", (
            f"The smashed data are a sample h + N(0, I) (training and inference), and the "
            f"client's loss gains {cfg.get('mid_weight', 0.01):g} x KL(N(h, I) || N(0, I)) = "
            "½‖h‖² per sample (Zou et al. 2023's MID with the encoder's variance fixed at the "
            "prior's). No DP claim (h is not clipped); the adaptive inversion models the noise.")
