"""Marvell (Li et al., "Label Leakage and Protection in Two-party Split Learning", ICLR 2022):
optimised Gaussian noise on the returned gradients, for binary labels, at the label holder.

Per batch, with g the per-sample gradient rows, mu_k the mean row of label k, Delta = mu_1 -
mu_0 (the direction the labels are read along) and p the share of label 1, each row of label k
gets noise sqrt(u_k) z Delta/||Delta||, z ~ N(0, 1). The variances minimise the symmetrised KL
divergence between the two perturbed class distributions (each modelled by its mean),

    u_1/u_0 + u_0/u_1 + ||Delta||^2 (1/u_0 + 1/u_1),

under the power budget p u_1 + (1 - p) u_0 = P, with P = power * ||Delta||^2 (the paper's
scale s). Within Marvell's family of covariances (u_k along Delta, v_k across it) spending
power across Delta only raises the budget, so v_k = 0 here; the attacks are told so
(`ClassGradientNoise`). A batch with one label reuses the last Delta and p seen. No DP claim.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slsec.defenses.base import DEFENSES, Defense
from slsec.params import Param, check_given
from slsec.threat import ClassGradientNoise

GRID = torch.linspace(1e-3, 1 - 1e-3, 999, dtype=torch.float64)


def marvell_variances(gsq: float, p: float, power: float) -> tuple[float, float]:
    """(u_0, u_1) minimising the symmetrised KL under p u_1 + (1 - p) u_0 = power * gsq."""
    budget = power * gsq
    u0 = GRID * budget / (1 - p)
    u1 = (1 - GRID) * budget / p
    kl = u1 / u0 + u0 / u1 + gsq * (1 / u0 + 1 / u1)
    i = int(kl.argmin())
    return float(u0[i]), float(u1[i])


@DEFENSES.register("marvell")
class Marvell(Defense):
    """Optimised label-dependent gradient noise along the class-mean difference (binary)."""

    name = "marvell"
    protocols = frozenset({"vertical"})
    point = "grad"
    sweep_param = "marvell_power"
    sweep_values = "0.25,1,4,16"
    params = (
        Param("marvell_power", "float", 1.0, "Marvell's power budget, as a multiple of the "
              "squared class-mean gradient difference (the paper's s)", check=("positive",),
              kw="power", unused="is the power budget of --defense marvell"),
    )

    def __init__(self, *, power: float = 1.0) -> None:
        check_given(type(self).params, power=power)
        self.power = float(power)
        self.last: tuple[Tensor, float] | None = None

    def label_grad(self, g: Tensor, y: Tensor, *, gen: torch.Generator | None) -> Tensor:
        flat = g.reshape(len(g), -1).double()
        pos = y == 1
        if pos.any() and (~pos).any():
            self.last = (flat[pos].mean(0) - flat[~pos].mean(0), float(pos.double().mean()))
        if self.last is None:
            return g
        delta, p = self.last
        gsq = float(delta.pow(2).sum())
        if gsq <= 0:
            return g
        u0, u1 = marvell_variances(gsq, p, self.power)
        std = torch.where(pos, u1 ** 0.5, u0 ** 0.5).double()
        z = torch.randn(len(g), generator=gen, dtype=torch.float64)
        noise = (std * z)[:, None] * (delta / gsq ** 0.5)[None, :]
        return (flat + noise).to(g.dtype).reshape(g.shape)

    def public_mechanism(self) -> ClassGradientNoise:
        return ClassGradientNoise(self.name, power=self.power)

    def used(self) -> dict[str, Any]:
        return {"marvell_power": self.power}
