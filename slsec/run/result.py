"""The engine's typed outputs: what the attacked role hands the scorer (`Guesses`, one
`MethodGuess` per attack method) and what one run returns (`RunResult`, with the
`Reconstructions` the report draws).

Between MPI ranks guesses travel as named tensors (the transport carries tensors, never
pickled objects): `Guesses.to_tensors` / `Guesses.from_tensors` are that wire form and the
only place its names are spelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # torch is imported where tensors are made: the CLI's start-up stays light
    from torch import Tensor

LABEL_SOURCES = ("none", "held", "predicted")   # where the prior's labels came from


def present(t: Tensor | None) -> Tensor | None:
    """`t`, or None when it is missing or empty (an attack that made no images, say)."""
    return t if t is not None and t.numel() else None


@dataclass
class MethodGuess:
    """One attack method's output on the probes and what it cost."""

    images: Tensor | None = None         # [N, C, H, W] in [0, 1], probe order
    label_scores: Tensor | None = None   # [N, classes] (or [N]), higher = more likely
    seconds: float = 0.0
    hijack_steps: int | None = None      # a malicious server: client steps it served
    hijack_converged_at: int | None = None   # ... and the step where it stopped (converged)
    rows: Tensor | None = None           # tabular rows [N, D] (encoded columns), probe order


@dataclass
class Guesses:
    """Every method's guesses (in run order) and what the attacker's prior knew of the labels.
    `prior_reference`: the prior ran only as the reference the gain is measured against."""

    methods: dict[str, MethodGuess] = field(default_factory=dict)
    prior_labels: Tensor | None = None
    prior_label_source: str = "none"    # one of LABEL_SOURCES
    prior_reference: bool = False

    def to_tensors(self) -> dict[str, Tensor]:
        """The wire form: '<method>.<field>' tensors plus 'prior.*' (an empty tensor = None)."""
        import torch

        def t(v: Tensor | None) -> Tensor:
            return v if v is not None else torch.empty(0)
        out: dict[str, Tensor] = {}
        for name, g in self.methods.items():
            out[f"{name}.images"], out[f"{name}.label_scores"] = t(g.images), t(g.label_scores)
            out[f"{name}.seconds"] = torch.tensor(g.seconds, dtype=torch.float64)
            out[f"{name}.rows"] = t(g.rows)
            for key in ("hijack_steps", "hijack_converged_at"):
                if getattr(g, key) is not None:
                    out[f"{name}.{key}"] = torch.tensor(int(getattr(g, key)))
        out["prior.labels"] = t(self.prior_labels)
        out["prior.label_source"] = torch.tensor(LABEL_SOURCES.index(self.prior_label_source))
        out["prior.reference"] = torch.tensor(int(self.prior_reference))
        return out

    @classmethod
    def from_tensors(cls, wire: dict[str, Tensor]) -> "Guesses":
        """Rebuild what `to_tensors` sent (methods in the order they were sent)."""
        import torch

        def opt(k: str) -> Tensor | None:
            return present(wire.get(k))
        names = dict.fromkeys(k.split(".")[0] for k in wire if k.endswith(".seconds"))
        methods = {}
        for n in names:
            steps, stop = opt(f"{n}.hijack_steps"), opt(f"{n}.hijack_converged_at")
            methods[n] = MethodGuess(opt(f"{n}.images"), opt(f"{n}.label_scores"),
                                     float(wire[f"{n}.seconds"]),
                                     None if steps is None else int(steps),
                                     None if stop is None else int(stop), opt(f"{n}.rows"))
        source = int(wire.get("prior.label_source", torch.tensor(0)))
        return cls(methods, opt("prior.labels"), LABEL_SOURCES[source],
                   bool(int(wire.get("prior.reference", torch.tensor(0)))))


@dataclass(frozen=True)
class Reconstructions:
    """The reported method's guesses beside the private inputs they target (probe order) and
    the attacker's prior guesses of the same inputs (None when the attack has no prior)."""

    inputs: Tensor
    images: Tensor
    prior: Tensor | None = None

    def to_tensors(self) -> dict[str, Tensor]:
        """What the undefended twin's cache keeps for the report's grid (its inputs are the
        defended run's: same seed, same probes)."""
        out = {"images": self.images.detach().cpu()}
        if self.prior is not None:
            out["prior"] = self.prior.detach().cpu()
        return out


@dataclass
class RunResult:
    """One run: the config it ran (as stored), its metrics, the per-round curve, the versions
    that produced it, the seed, and the reconstructions when the attack made any.
    `to_dict()` is what result.json stores."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    curve: list[dict[str, Any]]
    versions: dict[str, str]
    seed: int
    reconstructions: Reconstructions | None = None
    # tabular data: how each column was encoded (slsec.data.tabular), to decode reconstructions
    encoding: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"config": self.config, "metrics": self.metrics, "curve": self.curve,
               "versions": self.versions, "seed": self.seed}
        if self.encoding is not None:
            out["encoding"] = self.encoding
        return out
