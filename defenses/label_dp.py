"""Label protection on the label-holding side: max-norm gradient noise and randomized response.

- `max-norm` (Li et al. 2022, "Label Leakage and Protection in Two-party Split Learning",
  their max-norm heuristic): before the per-sample cut gradients go back, each row g_j is
  multiplied by a scalar (1 + sigma_j z_j), z_j ~ N(0, 1), with
  sigma_j = sqrt(max(||g_max||^2 / ||g_j||^2 - 1, 0)) and g_max the largest row of the batch,
  so every row's expected squared norm equals the batch maximum (norm scoring sees no
  difference between classes) and rows with small norm may flip sign. No DP claim.
- `label-rr`: randomized response on the labels before the loss (label DP): the true label
  is kept with probability e^eps / (e^eps + K - 1), otherwise replaced by one of the other
  K - 1 labels uniformly. One use of a label is eps-label-DP; a label drawn afresh each time
  its sample is used composes (basic composition) over the uses.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slsec.defenses.base import DEFENSES, Defense
from slsec.errors import UserError
from slsec.params import Param, check_given
from slsec.threat import GradientScaling, LabelNoise

LABEL_HOLDER_PROTOCOLS = frozenset({"vanilla", "splitfed", "ushaped", "vertical"})


@DEFENSES.register("max-norm")
class MaxNorm(Defense):
    """Scale each per-sample cut gradient by random noise so its norm looks like the batch max."""

    name = "max-norm"
    protocols = LABEL_HOLDER_PROTOCOLS
    point = "grad"
    report_heading = "Label protection: max-norm"
    report_body = (
        "Max-norm (Li et al. 2022): before the per-sample cut gradients go back to the client, "
        "each row g_j is scaled by (1 + sigma_j z_j), z_j ~ N(0, 1), with sigma_j chosen so "
        "that every row's expected squared norm equals the largest of the batch; norm-based "
        "label scoring then sees no difference between classes. A heuristic: no DP claim and "
        "no epsilon; it covers only the gradients returned at the cut.")

    def cut_grad(self, g: Tensor, *, gen: torch.Generator | None) -> Tensor:
        """Perturbed copy of the [B, ...] per-sample gradients (same shape, device, dtype)."""
        if g.shape[0] == 0:
            return g
        flat = g.reshape(g.shape[0], -1)
        norm2 = flat.double().pow(2).sum(1)
        ratio = norm2.max() / norm2.clamp_min(1e-300)
        sigma = (ratio - 1.0).clamp_min(0.0).sqrt()
        sigma = torch.where(norm2 > 0, sigma, torch.zeros_like(sigma))
        z = torch.randn(g.shape[0], generator=gen, dtype=torch.float64)
        scale = (1.0 + sigma * z.to(sigma.device)).to(g.dtype)
        return (flat * scale[:, None]).reshape(g.shape)

    def public_mechanism(self) -> GradientScaling:
        return GradientScaling(self.name)



@DEFENSES.register("label-rr")
class LabelRR(Defense):
    """Randomized-response label DP with parameter `--label-epsilon` (per use of a label)."""

    name = "label-rr"
    protocols = LABEL_HOLDER_PROTOCOLS
    point = "labels"
    sweep_param = "label_epsilon"
    sweep_values = "0.5,1,2,4"
    params = (Param("label_epsilon", "float", 1.0, "label-rr: randomized-response epsilon per use "
                    "of a label", check=("positive",), kw="epsilon",
                    unused="is the epsilon of --defense label-rr"),)

    def __init__(self, *, epsilon: float | None = None, label_epsilon: float | None = None) -> None:
        if epsilon is not None and label_epsilon is not None and epsilon != label_epsilon:
            raise UserError(f"--label-epsilon given twice ({epsilon} and {label_epsilon})")
        value = epsilon if epsilon is not None else label_epsilon
        if value is None:
            raise UserError("defense 'label-rr' needs --label-epsilon (a number > 0)")
        check_given(type(self).params, epsilon=value)
        self.eps = float(value)

    def keep_probability(self, num_classes: int) -> float:
        """Probability that a label goes through unchanged."""
        return 1.0 / (1.0 + (num_classes - 1) * math.exp(-self.eps))

    def labels(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor:
        """Randomized labels: kept w.p. e^eps/(e^eps+K-1), else uniform over the other K-1."""
        if num_classes < 2 or y.numel() == 0:
            return y
        keep = torch.rand(y.shape, generator=gen) < self.keep_probability(num_classes)
        shift = torch.randint(1, num_classes, y.shape, generator=gen)  # a different label
        other = (y.cpu() + shift) % num_classes
        return torch.where(keep, y.cpu(), other).to(device=y.device, dtype=y.dtype)

    def public_mechanism(self) -> LabelNoise:
        return LabelNoise(self.name, epsilon=self.eps)

    def guess_bounds(self, *, eps: float, steps: int, sample_rate: float,
                     kappa: float | None, num_classes: int) -> dict[str, Any]:
        """Protects labels only: a bound on guessing the label (prior 1/K)."""
        from slsec.privacy.reid_bound import eps_delta_bound
        return {"labels_only": True,
                "label_guess_bound": eps_delta_bound(eps, 0.0, 1.0 / num_classes)}

    def epsilon(self, *, steps: int = 0, sample_rate: float = 0.0,
                delta: float = 0.0) -> float | None:
        """Label-DP epsilon per sample: eps per use of its label, times its expected uses (>= 1)."""
        uses = max(1, round(steps * sample_rate))
        return self.eps * uses

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        eps = m.get("epsilon_label-rr")
        return "Label differential privacy: randomized response", (
            f"Randomized response on the labels before the loss: with K classes the true label "
            f"is kept with probability e^eps / (e^eps + K - 1) (eps = "
            f"{cfg.get('label_epsilon', 1.0):g} per use), otherwise replaced by one of the other "
            "K - 1 labels uniformly; a label is redrawn at every use and uses compose (basic "
            "composition)"
            + (f": epsilon = {eps:.3f} per sample's label over the run" if isinstance(eps, (int, float)) else "")
            + ". Label DP covers the labels only: not the inputs, the smashed data or the "
            "gradients' dependence on the inputs.")
