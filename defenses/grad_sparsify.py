"""Sparsification of the returned cut gradients: each sample's gradient row keeps its
`--grad-keep` fraction of coordinates of largest magnitude, the rest are zero.

Deployed to save bandwidth on the way back. The label holder (the server in vanilla SL and
SplitFed with labels at the server, the client's tail in U-shaped SL) applies it before the
gradient leaves; the public mechanism (`GradientSparsification`) tells every role the
fraction. No DP claim: deterministic.

`sparsify_rows` is one function of a batch of per-sample gradient rows [B, ...]: any protocol
that returns per-sample (or per-party) gradients applies it the same way.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slsec.defenses.base import DEFENSES, Defense
from slsec.defenses.compression import top_k_rows
from slsec.params import Param, check_given
from slsec.threat import GradientSparsification


def sparsify_rows(g: Tensor, keep: float) -> Tensor:
    """Each row's largest-magnitude `keep` fraction of coordinates, the rest zero."""
    return top_k_rows(g, keep)


@DEFENSES.register("grad-sparsify")
class GradSparsify(Defense):
    """Top-k sparsification of each returned cut-gradient row."""

    name = "grad-sparsify"
    protocols = frozenset({"vanilla", "ushaped", "splitfed", "splitfed-async", "vertical"})
    point = "grad"
    sweep_param = "grad_keep"
    sweep_values = "0.5,0.1,0.01"
    params = (Param("grad_keep", "float", 0.1, "grad-sparsify: fraction of each returned "
                    "gradient row's coordinates kept (largest magnitude)",
                    check=("unit_interval",), kw="keep",
                    unused="is the fraction of --defense grad-sparsify"),)

    def __init__(self, *, keep: float = 0.1) -> None:
        check_given(type(self).params, keep=keep)
        self.keep = float(keep)

    def cut_grad(self, g: Tensor, *, gen: torch.Generator | None) -> Tensor:
        return sparsify_rows(g, self.keep)

    def public_mechanism(self) -> GradientSparsification:
        return GradientSparsification(self.name, keep=self.keep)

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        return "Sparsified returned gradients", (
            f"Each sample's returned cut gradient keeps its {cfg.get('grad_keep', 0.1):g} "
            "fraction of largest-magnitude coordinates, the rest zero. Deterministic, public, "
            "no DP claim.")
