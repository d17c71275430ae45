"""Compression at the cut: top-k sparsification and b-bit quantisation of the smashed data.

Deployed to save bandwidth and often claimed to protect the inputs. Per smashed row (one
sample), in this order:
- `--compress-keep f`: the ceil(f * D) coordinates of largest magnitude are kept, the others
  set to zero (f = 1: no sparsification);
- `--compress-bits b`: the row is quantised to 2**b evenly spaced levels between its min and
  max (nearest level; min and max travel with it), b = 0: no quantisation.
The client's training passes the gradient straight through the rounding (and through the kept
coordinates), so it trains as the compressed model would. Inference queries are compressed
alike. The mechanism is public (`CutCompression`): an adaptive inversion applies the same
sparsifier and quantiser to its own simulated smashed data (`attacks/inverse.py` CutChannel),
so a defense that only rounds or drops small coordinates is measured against an attacker that
knows it. No DP claim: both maps are deterministic.

`compress` is one function of a batch of rows [B, ...]; any protocol that sends per-sample
embeddings can call it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slsec.defenses.base import DEFENSES, Defense
from slsec.params import Param, check_given
from slsec.threat import CutCompression


def top_k_rows(h: Tensor, keep: float) -> Tensor:
    """Each row's ceil(keep * D) coordinates of largest magnitude, the rest zero."""
    if keep >= 1.0 or h.numel() == 0:
        return h
    flat = h.reshape(h.shape[0], -1)
    k = max(1, math.ceil(keep * flat.shape[1]))
    idx = flat.abs().topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return (flat * mask).reshape(h.shape)


def quantise_rows(h: Tensor, bits: int | None) -> Tensor:
    """Each row rounded to 2**bits evenly spaced levels between its min and max; the gradient
    goes straight through the rounding."""
    if not bits or h.numel() == 0:
        return h
    flat = h.reshape(h.shape[0], -1)
    lo = flat.min(1, keepdim=True).values.detach()
    hi = flat.max(1, keepdim=True).values.detach()
    step = ((hi - lo) / (2 ** int(bits) - 1)).clamp_min(1e-12)
    q = torch.round((flat - lo) / step) * step + lo
    out = flat + (q - flat).detach() if flat.requires_grad else q
    return out.reshape(h.shape)


def compress(h: Tensor, keep: float = 1.0, bits: int | None = None) -> Tensor:
    """Top-k sparsification, then quantisation, row by row (the public mechanism's map)."""
    return quantise_rows(top_k_rows(h, keep), bits)


@DEFENSES.register("compress")
class Compress(Defense):
    """Top-k sparsification and b-bit quantisation of each smashed row (bandwidth savers)."""

    name = "compress"
    protocols = frozenset({"vanilla", "ushaped", "splitfed", "splitfed-async"})
    point = "cut"
    sweep_param = "compress_bits"
    sweep_values = "8,4,2,1"
    params = (
        Param("compress_keep", "float", 1.0, "compress: fraction of each smashed row's "
              "coordinates kept (largest magnitude)", check=("unit_interval",), kw="keep",
              unused="is the sparsification of --defense compress"),
        Param("compress_bits", "int", 0, "compress: bits per smashed coordinate (0: not "
              "quantised)", check=("zero_or_more", "at_most_32"), kw="bits",
              unused="is the quantisation of --defense compress"),
    )

    def __init__(self, *, keep: float = 1.0, bits: int | None = 0) -> None:
        check_given(type(self).params, keep=keep, bits=bits)
        self.keep, self.bits = float(keep), (int(bits) or None) if bits is not None else None

    def smashed(self, h: Tensor, *, train: bool, gen: torch.Generator | None) -> Tensor:
        return compress(h, self.keep, self.bits)

    def public_mechanism(self) -> CutCompression:
        return CutCompression(self.name, keep=self.keep, bits=self.bits)

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        keep, bits = cfg.get("compress_keep", 1.0), cfg.get("compress_bits", 0)
        return "Compression at the cut", (
            f"Each smashed row keeps its {keep:g} fraction of largest-magnitude coordinates"
            + (f" and is quantised to {2 ** int(bits)} levels ({bits} bits) between its min "
               "and max" if bits else "") + ". Deterministic, public, no DP claim: the "
            "adaptive inversion applies the same map to its own simulated smashed data.")
