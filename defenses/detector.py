"""Client-side detection of a malicious (training-hijacking) server: the shared decision loop.

A detector sees only what the client holds: its own batches and labels, the cut gradients the
server returns, and the gradients they induce on its own head. After every batch it computes a
score (`score`, None while it lacks evidence) and keeps the last `window` scores; the decision
rule is "flag when the mean of the last `window` scores falls below `threshold`" (each detector
documents its scale). On detection the client stops sending: every later message carries zeros
in place of smashed data (training batches and the final probe inference alike), decoy labels
in place of its labels, and the client no longer learns from what comes back. The client
reports the step at which it flagged (`report`, into the run's result).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from slsec.defenses.base import Defense, positive
from slsec.errors import UserError
from slsec.threat import Detection

DETECTOR_PROTOCOLS = frozenset({"vanilla", "splitfed", "splitfed-async"})


def head_gradient(head: nn.Module) -> Tensor:
    """The client's own parameter gradient, flattened (what the received gradient did to it)."""
    return torch.cat([p.grad.detach().flatten().float().cpu() for p in head.parameters()
                      if p.grad is not None])


def wrong_labels(y: Tensor, num_classes: int, gen: torch.Generator | None) -> Tensor:
    """Labels that are all wrong: each replaced by one of the other classes, uniformly."""
    shift = torch.randint(1, num_classes, y.shape, generator=gen)
    return ((y.cpu() + shift) % num_classes).to(device=y.device, dtype=y.dtype)


class Detector(Defense):
    """Base class: per-step score, windowed threshold rule, withholding once flagged."""

    protocols = DETECTOR_PROTOCOLS
    point = "monitor"
    higher_is_honest = True
    needs_client_labels = True   # refused where the server holds the labels (two-party SL)

    def __init__(self, *, threshold: float, window: int, start: int) -> None:
        self.threshold = float(threshold)
        self.window = int(positive(f"{self.name}-window", window))
        self.start = int(start)
        self.step = 0                  # client training steps seen
        self.flagged_at: int | None = None
        self.scores: list[float] = []  # one per step that produced a score
        self.trace: list[tuple[int, float]] = []

    def fit_public(self, setup: Any) -> None:
        """Refuse two-party SL before training: the detector needs the client's labels."""
        if setup.label_party != "client":
            need_labels(self.name, None)

    # --- what the client does ------------------------------------------------------------
    @property
    def withholding(self) -> bool:
        return self.flagged_at is not None

    def smashed(self, h: Tensor, *, train: bool, gen: torch.Generator | None) -> Tensor:
        return torch.zeros_like(h).detach() if self.withholding else h

    def decoy(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor | None:
        return wrong_labels(y, num_classes, gen) if self.withholding else None

    def inspect(self, *, g: Tensor, head: nn.Module, x: Tensor, y: Tensor | None, decoy: bool,
                feats: dict[str, Tensor] | None = None) -> None:
        """After the backward of one batch: score it, apply the decision rule."""
        if self.withholding:
            return
        self.step += 1
        s = self.score(g=g, head=head, x=x, y=y, decoy=decoy, feats=feats)
        if s is None:
            return
        self.scores.append(float(s))
        self.trace.append((self.step, float(s)))
        last = self.scores[-self.window:]
        if len(last) == self.window and self.flags(sum(last) / len(last)):
            self.flagged_at = self.step

    def flags(self, mean_score: float) -> bool:
        return mean_score < self.threshold if self.higher_is_honest else mean_score > self.threshold

    # --- to fill in ----------------------------------------------------------------------
    def score(self, *, g: Tensor, head: nn.Module, x: Tensor, y: Tensor | None, decoy: bool,
              feats: dict[str, Tensor] | None = None) -> float | None:
        """The score of this step (None: no evidence this step). `g`: the cut gradients the
        server returned; `head`: the client's head after the backward (its .grad); `x`: the
        smashed data sent; `y`: the client's true labels; `decoy`: whether the batch was sent
        with decoy labels."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """The client's detection report: flagged or not, at which step, the last score."""
        key = self.name.replace("-", "_")
        return {f"{key}_flagged": float(self.flagged_at is not None),
                f"{key}_step": float(self.flagged_at) if self.flagged_at is not None else float("nan"),
                f"{key}_steps_seen": float(self.step),
                f"{key}_last_score": self.scores[-1] if self.scores else float("nan")}

    def public_mechanism(self) -> Detection:
        return Detection(self.name, threshold=self.threshold, window=self.window,
                         start=self.start)

    summary: str = ""   # one paragraph on the mechanism, for the run report

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        key = cls.name.replace("-", "_")
        seen = m.get(f"{key}_steps_seen")
        if m.get(f"{key}_flagged") == 1.0:
            verdict = (f"The client flagged the server at its step {m[f'{key}_step']:.0f} and "
                       "stopped sending (zeros in place of smashed data, decoy labels, no "
                       "further learning), the final probe queries included.")
        elif seen is not None:
            verdict = f"The client did not flag the server in its {seen:.0f} steps."
        else:
            verdict = "No report from the client."
        return f"Detection: {cls.name}", f"{cls.summary} {verdict} No DP claim."


def need_labels(name: str, y: Tensor | None) -> Tensor:
    """The detector's labels; a UserError when the client sends no labels (two-party SL)."""
    if y is None:
        raise UserError(f"defense '{name}' needs the client's labels: use --label-party client")
    return y
