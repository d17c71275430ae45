"""NoPeek (Vepakomma et al. 2019): penalise the distance correlation between inputs and smashed data.

The client adds weight * dCor(x, h) to its loss, where dCor is Székely's sample distance
correlation (V-statistic) of the flattened inputs x [B, ...] and smashed data h [B, ...],
computed per batch from double-centred pairwise Euclidean distance matrices:

    a_ij = ||x_i - x_j||,  A = a - row means - column means + grand mean  (same for h -> B)
    dCov^2 = mean(A * B),  dVar_x^2 = mean(A * A),  dCor = sqrt(dCov^2 / sqrt(dVar_x^2 dVar_h^2))

dCor is 0 iff x and h are independent (in the population) and 1 iff h is a similarity transform
of x. The batch estimate (V-statistic) is biased upwards for small batches and high dimensions:
independent 784-d inputs and 6272-d activations give about 0.99 at B=64, so read the value as
a relative training signal at a fixed batch size, not as an absolute measure of leakage.
No DP claim: `epsilon` stays None.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slsec.defenses.base import DEFENSES, Defense
from slsec.errors import UserError
from slsec.params import Param, check_given
from slsec.threat import Regularizer

EPS = 1e-12   # keeps sqrt differentiable at 0 (zero distances on the diagonal, independent data)


def _centred_distances(z: Tensor) -> Tensor:
    """Double-centred pairwise Euclidean distance matrix of the rows of z [B, D]."""
    z = z - z.mean(dim=0, keepdim=True)          # distances are shift invariant; less cancellation
    sq = (z * z).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp_min(0.0)
    d = torch.sqrt(d2 + EPS)
    return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, h: Tensor) -> Tensor:
    """Sample distance correlation (Székely et al. 2007) of the rows of x and h; differentiable."""
    if x.shape[0] != h.shape[0]:
        raise UserError(f"nopeek needs one row per sample in the inputs and the smashed data; "
                        f"got {x.shape[0]} input rows and {h.shape[0]} smashed rows")
    a = _centred_distances(x.reshape(x.shape[0], -1).to(h.dtype))
    b = _centred_distances(h.reshape(h.shape[0], -1))
    dcov2 = (a * b).mean()
    dvar = torch.sqrt((a * a).mean() * (b * b).mean() + EPS)
    return torch.sqrt((dcov2 / dvar).clamp_min(0.0) + EPS)


@DEFENSES.register("nopeek")
class NoPeek(Defense):
    """Regulariser weight * dCor(inputs, smashed) on the client's loss (NoPeek)."""

    name = "nopeek"
    protocols = frozenset({"vanilla", "ushaped", "splitfed", "splitfed-async"})
    point = "regularizer"
    sweep_param = "nopeek_weight"
    sweep_values = "0,0.5,2,5"
    params = (Param("nopeek_weight", "float", 0.5, "NoPeek: weight of dCor(inputs, smashed) in "
                    "the client loss", check=("non_negative",), unused="weighs --defense nopeek"),)

    def __init__(self, *, weight: float | None = None, nopeek_weight: float | None = None) -> None:
        if weight is not None and nopeek_weight is not None and weight != nopeek_weight:
            raise UserError(f"--nopeek-weight given twice ({weight} and {nopeek_weight})")
        w = weight if weight is not None else nopeek_weight
        w = 0.1 if w is None else w
        check_given(type(self).params, nopeek_weight=w)
        self.weight = float(w)

    def regularizer(self, x: Tensor, h: Tensor) -> Tensor | None:
        """weight * dCor(x, h) for this batch; None when the weight is 0."""
        if self.weight == 0:
            return None
        return self.weight * distance_correlation(x, h)

    def public_mechanism(self) -> Regularizer:
        return Regularizer(self.name, weight=self.weight)

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        return "NoPeek", (
            f"NoPeek (Vepakomma et al. 2019): the client adds {cfg.get('nopeek_weight', 0.5):g} "
            "x dCor(inputs, smashed data) to its loss, the sample distance correlation of a "
            "batch, pushing the smashed data towards independence from the inputs. A "
            "regulariser: no DP claim and no epsilon; the batch estimate is biased upwards in "
            "high dimensions, so it is a relative training signal, not a leakage measure.")
