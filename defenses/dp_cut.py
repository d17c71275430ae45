"""Differential privacy at the cut: clip each smashed row, add Gaussian (or Laplace) noise.

The client applies this to its smashed tensor before it leaves, in training and at inference.

Sensitivity argument (Gaussian), written out once for the whole package:

- Unit of privacy: one row of the smashed tensor h [B, ...] (one image; for graph batches
  cut before the readout a row is one *node*, so a graph of k nodes gets group privacy k*eps).
- Adjacency: replace-one (the sample x is swapped for any x'). The head is a fixed function
  at the moment of the release.
- Each row is clipped to L2 norm <= C, so the released row changes by at most
  ||clip(f(x)) - clip(f(x'))||_2 <= 2C. The other rows of the batch do not depend on x.
- The noise is N(0, (sigma*C)^2) per coordinate, i.e. std sigma*C = (sigma/2) * 2C: the
  Gaussian mechanism with *noise multiplier sigma/2* relative to the sensitivity 2C.
- Every training sample is released once per epoch whatever the batch size, so there is no
  amplification by subsampling: sample rate 1, one composition step per epoch. After E epochs
  epsilon = accountant(noise_multiplier=sigma/2, sample_rate=1, steps=E) at delta.
  `epsilon(steps, sample_rate, delta)` takes the run's optimizer steps and batch sample rate
  and counts E = ceil(steps * sample_rate) releases per sample.

What the claim does NOT cover:

- the head's weights: they are trained on the same samples without DP, so later rows (of any
  sample) depend on x through the weights; the claim holds only as far as the head is treated as
  independent of x (train the head with DP-SGD for an end-to-end guarantee);
- the labels (vanilla and SplitFed send them to the server), the gradients the server returns,
  SplitFed's averaged head weights, and the server's model;
- inference: each inference-time query of a training sample is one more release and composes
  (add those queries to `steps`); a fresh test sample has its own budget.

Laplace: the noise is Laplace with scale b = sigma*C/sqrt(2), so its std (sqrt(2)*b) equals the
Gaussian's sigma*C and the two are comparable at equal sigma. The Laplace mechanism needs L1
sensitivity; after L2 clipping a d-dimensional row moves by at most 2C*sqrt(d) in L1, so each
release is pure eps_1 = 2C*sqrt(d)/b = 2*sqrt(2)*sqrt(d)/sigma, and E releases compose linearly
to E*eps_1 (valid for every delta). This is an honest but loose bound: d is thousands at typical
cuts, so the number is large. d is the largest row size seen by `smashed`.

Choosing C: noise scales with C, so C sets the trade-off only through the rows it shrinks.
A good C is near the median unclipped row norm, measured on public data
(`DPCut.suggest_clip(h)`); choosing it from private data is itself a leak. The command-line
default does exactly that on public data: C = the median row norm of the public aux samples
through the initial (seeded, public) head at the cut (`DPCut.fit_public`; about 23 at the
CNN's conv1, 0.58 at fc1). The class default C = 1.0 is only for direct construction.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slsec.privacy import accounting
from slsec.privacy import reid_bound
from slsec.defenses.base import DEFENSES, TARGET_EPSILON, Defense, dp_accounting, overflow_check
from slsec.errors import UserError
from slsec.params import Param, check_given
from slsec.threat import CutNoise



def clip_rows(h: Tensor, clip: float) -> Tensor:
    """Scale each row of h (any trailing shape) to L2 norm <= clip; differentiable."""
    if math.isinf(clip):
        return h
    norms = h.reshape(h.shape[0], -1).norm(dim=1)
    factor = (clip / norms.clamp_min(torch.finfo(h.dtype).tiny)).clamp(max=1.0)
    return h * factor.reshape(-1, *([1] * (h.dim() - 1)))


def _noise(shape: torch.Size, *, mechanism: str, std: float, like: Tensor,
           gen: torch.Generator | None) -> Tensor:
    """Zero-mean noise of per-coordinate std `std`, drawn from `gen`, on like's device/dtype."""
    device = gen.device if gen is not None else like.device
    kw: dict[str, Any] = dict(generator=gen, device=device, dtype=like.dtype)
    if mechanism == "gaussian":
        z = torch.randn(shape, **kw) * std
    else:  # Laplace(0, b) = b * (E1 - E2), E ~ Exp(1) = -log(1 - U), U in [0, 1)
        b = std / math.sqrt(2.0)
        z = b * (torch.log1p(-torch.rand(shape, **kw)) - torch.log1p(-torch.rand(shape, **kw)))
    return z.to(like.device)


@DEFENSES.register("dp")
class DPCut(Defense):
    """Clip each smashed row to L2 norm C, then add noise of std sigma*C per coordinate."""

    name = "dp"
    protocols = frozenset({"vanilla", "ushaped", "splitfed", "splitfed-async", "vertical"})
    point = "cut"
    reports_epsilon = True
    sweep_param = "sigma"
    sweep_values = "0,0.01,0.05,0.2"
    sweep_cuts = True
    params = (
        Param("sigma", "float", None, "DP noise multiplier at the cut (noise std = sigma * clip; "
              "1.0 when not set)", check=("non_negative",), unused="is the noise of --defense dp",
              excludes=("target_epsilon", "the target solves sigma")),
        Param("clip", "float", None, "per-sample L2 clip C of smashed data (inf = off; not set: "
              "the median row norm of public aux data at the cut)", check=("positive_or_inf",),
              unused="is the clip of --defense dp"),
        Param("mechanism", "str", "gaussian", "DP noise at the cut",
              choices=("gaussian", "laplace"), unused="is the noise mechanism of --defense dp"),
        TARGET_EPSILON,
    )
    def __init__(self, *, sigma: float | None = None, clip: float | None = None,
                 mechanism: str = "gaussian", delta: float = 1e-5, accountant: str = "prv",
                 target_epsilon: float | None = None) -> None:
        check_given(type(self).params, sigma=sigma, clip=clip, mechanism=mechanism,
                    target_epsilon=target_epsilon)
        # not given: C comes from public data (fit_public); 1.0 until then
        self.clip_from_public = clip is None
        self.clip = float(1.0 if clip is None else clip)
        self.mechanism = mechanism
        self.delta, self.accountant = dp_accounting(delta, accountant)
        self.target_epsilon = None if target_epsilon is None else float(target_epsilon)
        if target_epsilon is not None and (mechanism != "gaussian" or math.isinf(self.clip)):
            flag = {p.name: p.flag for p in self.params}
            raise UserError(f"{flag['target_epsilon']} needs {flag['mechanism']} gaussian "
                            f"and a finite {flag['clip']}")
        # sigma stays None until calibrate() when a target epsilon is given
        self.sigma: float | None = (None if target_epsilon is not None
                                    else float(1.0 if sigma is None else sigma))
        self.dim: int | None = None   # largest row size seen (Laplace L1 bound)

    @staticmethod
    def suggest_clip(h: Tensor, quantile: float = 0.5) -> float:
        """The `quantile` of per-row L2 norms of unclipped smashed data (measure on public data)."""
        return float(torch.quantile(h.detach().reshape(h.shape[0], -1).norm(dim=1).float(), quantile))

    @staticmethod
    def releases(steps: int, sample_rate: float) -> int:
        """How many times each training sample is released: the number of epochs."""
        return max(0, math.ceil(steps * sample_rate - 1e-9))

    def calibrate(self, *, epochs: int | None = None, steps: int | None = None,
                  sample_rate: float = 1.0) -> float:
        """Solve sigma so that `epsilon` after `epochs` (or steps at sample_rate) is <= the target."""
        if self.target_epsilon is None:
            raise UserError(f"calibration needs {TARGET_EPSILON.flag}")
        if (epochs is None) == (steps is None):
            raise ValueError("calibrate takes exactly one of epochs or steps")
        n = int(epochs) if epochs is not None else self.releases(int(steps), sample_rate)  # type: ignore[arg-type]
        nm = accounting.noise_for_epsilon(target_epsilon=self.target_epsilon, delta=self.delta,
                                          sample_rate=1.0, steps=n, accountant=self.accountant)
        self.sigma = 2.0 * nm   # noise multiplier is sigma/2 (sensitivity 2C; see module doc)
        return self.sigma

    def fit_public(self, setup: Any) -> None:
        """Default C: the median per-sample L2 norm of the smashed data of public aux samples
        through the initial (seeded, public) head, so clipping keeps the activations' natural
        scale at the chosen cut (a fixed C = 1 would shrink a conv1 row ~20x and stall
        training). Public data and public weights only: choosing C leaks nothing private."""
        if not self.clip_from_public:
            return
        if "dp_cut.public_clip" not in setup.memo:   # once per setup
            clip = 1.0
            if setup.cuts and len(setup.aux):
                model = setup.fresh_model()
                # vertical SL: each passive party clips its own embedding (one party's scale)
                head = model.party_head(1) if hasattr(model, "party_head") else \
                    model.split([setup.cuts[0]])[0]
                feats, _ = setup.aux.batch(torch.arange(min(256, len(setup.aux))))
                with torch.no_grad():
                    clip = self.suggest_clip(head(feats)["x"])
            setup.memo["dp_cut.public_clip"] = clip
        self.clip = setup.memo["dp_cut.public_clip"]

    def check_numbers(self) -> None:
        overflow_check("--sigma", self.sigma, self.clip)

    def used(self) -> dict[str, Any]:
        return {"clip_used": self.clip}

    def guess_bounds(self, *, eps: float, steps: int, sample_rate: float,
                     kappa: float | None, num_classes: int) -> dict[str, Any]:
        """The Gaussian mechanism's exact bound over the run's releases (f-DP)."""
        if kappa is None or self.mechanism != "gaussian" or not self.sigma:
            return {}
        n = self.releases(steps, sample_rate)
        return {"reid_bound": reid_bound.gaussian_bound(math.sqrt(n) / (self.sigma / 2.0), kappa)}

    def _sigma(self) -> float:
        if self.sigma is None:
            raise RuntimeError("DPCut with a target epsilon needs calibrate(epochs=...) first")
        return self.sigma

    def smashed(self, h: Tensor, *, train: bool, gen: torch.Generator | None) -> Tensor:
        """Clip each row to norm <= C and add noise (training and inference alike)."""
        sigma = self._sigma()
        if sigma == 0 and math.isinf(self.clip):
            return h
        row = h[0].numel() if h.shape[0] else 0
        self.dim = row if self.dim is None else max(self.dim, row)
        out = clip_rows(h, self.clip)
        if sigma > 0:
            std = sigma * (1.0 if math.isinf(self.clip) else self.clip)
            out = out + _noise(h.shape, mechanism=self.mechanism, std=std, like=h, gen=gen)
        return out

    def epsilon(self, *, steps: int, sample_rate: float, delta: float,
                accountant: str | None = None) -> float | None:
        """Per-sample epsilon of the smashed releases (see the module doc for what it covers);
        `accountant` overrides the defense's own (RDP is printed beside the tight one)."""
        sigma = self._sigma()
        n = self.releases(steps, sample_rate)
        if n == 0:
            return 0.0
        if sigma == 0 or math.isinf(self.clip):
            return math.inf               # unbounded sensitivity or no noise: no guarantee
        if self.mechanism == "laplace":
            if self.dim is None:
                raise RuntimeError("Laplace epsilon needs the row size; it is recorded by smashed()")
            return n * 2.0 * math.sqrt(2.0) * math.sqrt(self.dim) / sigma
        return accounting.epsilon(noise_multiplier=sigma / 2.0, sample_rate=1.0, steps=n,
                                  delta=delta, accountant=accountant or self.accountant)

    def public_mechanism(self) -> CutNoise:
        return CutNoise(self.name, clip=self.clip, sigma=self.sigma, mechanism=self.mechanism,
                        delta=self.delta)

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        clip = m.get("clip_used", cfg.get("clip"))
        sigma = m.get("sigma_used", cfg.get("sigma"))
        eps = m.get("epsilon_dp", m.get("epsilon"))
        laplace = cfg.get("mechanism") == "laplace"
        text = ("DP at the cut: each sample's smashed tensor is clipped to L2 norm C"
                + (f" = {clip:.4g}" if isinstance(clip, (int, float)) else "")
                + (" (the median row norm of public aux data at the cut)"
                   if cfg.get("clip") is None and clip is not None else "")
                + (f", then {'Laplace' if laplace else 'Gaussian'} noise of std sigma*C"
                   + (f" (sigma = {sigma:g})" if isinstance(sigma, (int, float)) else "")
                   + " is added per coordinate, in training and at inference. Replace-one "
                   "adjacency: one sample changes a release by at most 2C")
                + ("; the Laplace bound uses the L1 sensitivity 2C*sqrt(d) of a d-dimensional "
                   "row, so each release is pure eps = 2*sqrt(2)*sqrt(d)/sigma"
                   if laplace else
                   ", so the noise is the Gaussian mechanism with noise multiplier sigma/2")
                + "; every sample is released once per epoch (no subsampling amplification).")
        if isinstance(eps, (int, float)):
            text += (f" epsilon = {eps:.3f} at delta = {m.get('delta', cfg.get('delta')):g} per "
                     f"training sample ({m.get('accountant_dp', cfg.get('accountant', 'prv'))} "
                     "accountant"
                     + (f"; RDP gives {m['epsilon_dp_rdp']:.3f}"
                        if isinstance(m.get("epsilon_dp_rdp"), (int, float)) else "") + ")"
                     + (" — no guarantee: without noise (sigma = 0) or without clipping the "
                        "sensitivity is unbounded" if eps == math.inf else "") + ".")
        text += (" The claim covers the smashed data only: not the labels, the returned "
                 "gradients, the head's weights or the server's model.")
        return "Differential privacy at the cut", text
