"""Deliberately broken DP mechanisms: the audit must catch each one (`slsec audit --broken`).

Each variant keeps the defense's parameters and its claimed epsilon (the accountant sees the
same numbers) and changes only what the code does, as real bugs do:

- `weak-noise`: noise ten times smaller than the claim (DP at the cut, DP-SGD; for label DP a
  flip probability ten times smaller);
- `clip-after-noise`: the clip applied after the noise, so the noise no longer covers the
  sensitivity (DP at the cut: clip(h + noise); DP-SGD: the unclipped sum noised, then clipped);
- `reused-noise`: one noise draw reused where each must be fresh (DP at the cut: one noise row
  for the whole batch; DP-SGD: one noise vector for every step; label DP: one coin and shift
  for the whole batch).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slsec.defenses.dp_cut import DPCut, _noise, clip_rows
from slsec.defenses.dpsgd import DPSGD
from slsec.defenses.label_dp import LabelRR
from slsec.errors import UserError

KINDS = ("weak-noise", "clip-after-noise", "reused-noise")


class _BrokenCut(DPCut):
    kind = ""

    def smashed(self, h: Tensor, *, train: bool, gen: torch.Generator | None) -> Tensor:
        std = self._sigma() * self.clip
        if self.kind == "weak-noise":
            return clip_rows(h, self.clip) + _noise(h.shape, mechanism=self.mechanism,
                                                    std=std / 10, like=h, gen=gen)
        if self.kind == "clip-after-noise":
            return clip_rows(h + _noise(h.shape, mechanism=self.mechanism, std=std, like=h,
                                        gen=gen), self.clip)
        one = _noise(h.shape[1:], mechanism=self.mechanism, std=std, like=h, gen=gen)
        return clip_rows(h, self.clip) + one            # reused-noise: one row for all rows


class _BrokenSGD(DPSGD):
    kind = ""
    _kept: list[Tensor] | None = None

    def noisy_sum(self, per_sample: list[Tensor], *, gen: torch.Generator | None = None
                  ) -> tuple[list[Tensor], Tensor, Tensor]:
        std = self._nm() * self.max_grad_norm
        if self.kind == "weak-noise":
            self.noise_multiplier, nm = self._nm() / 10, self._nm()
            try:
                return super().noisy_sum(per_sample, gen=gen)
            finally:
                self.noise_multiplier = nm
        if self.kind == "clip-after-noise":
            batch = per_sample[0].shape[0]
            sums = [g.sum(0) + std * torch.randn(g.shape[1:], generator=gen) for g in per_sample]
            norm = torch.sqrt(sum(s.pow(2).sum() for s in sums))
            factor = (batch * self.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
            ones = torch.ones(batch)
            return [s * factor for s in sums], ones, ones
        if self._kept is None:                      # reused-noise: the first draw, for ever
            self._kept = [std * torch.randn(g.shape[1:], generator=gen) for g in per_sample]
        nm = self._nm()
        self.noise_multiplier = 0.0
        try:
            sums, norms, factor = super().noisy_sum(per_sample, gen=gen)
        finally:
            self.noise_multiplier = nm
        return [s + k for s, k in zip(sums, self._kept)], norms, factor


class _BrokenRR(LabelRR):
    kind = ""

    def labels(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor:
        if self.kind == "weak-noise":
            flip = (1 - self.keep_probability(num_classes)) / 10
            keep = torch.rand(y.shape, generator=gen) >= flip
            shift = torch.randint(1, num_classes, y.shape, generator=gen)
        else:                                       # reused-noise: one coin, one shift
            keep = (torch.rand(1, generator=gen) < self.keep_probability(num_classes)).expand(y.shape)
            shift = torch.randint(1, num_classes, (1,), generator=gen).expand(y.shape)
        return torch.where(keep, y, (y + shift) % num_classes)


def broken(defense: Any, kind: str) -> Any:
    """A copy of `defense` with the bug `kind` (same parameters, same claimed epsilon)."""
    if kind not in KINDS:
        raise UserError(f"--broken must be one of {', '.join(KINDS)}, got {kind!r}")
    for base, cls in ((DPCut, _BrokenCut), (DPSGD, _BrokenSGD), (LabelRR, _BrokenRR)):
        if isinstance(defense, base):
            if cls is _BrokenRR and kind == "clip-after-noise":
                raise UserError("--broken clip-after-noise does not apply to --defense label-rr "
                                "(randomized response has no clip)")
            if cls is _BrokenCut and (defense.mechanism != "gaussian"
                                      or not math.isfinite(defense.clip)):
                raise UserError("--broken needs --defense dp with --mechanism gaussian and a "
                                "finite --clip")
            copy = cls.__new__(cls)
            copy.__dict__.update(defense.__dict__)
            copy.kind = kind
            return copy
    raise UserError(f"--broken applies to --defense dp, dpsgd or label-rr, not {defense.name!r}")
