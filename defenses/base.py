"""Defense interface: middleware on the cut message, composable in order.

Hooks (each default is the identity / nothing):
- `smashed`: client side, transforms the smashed tensor before it leaves (DP noise at the cut).
- `regularizer`: extra client loss term from inputs and smashed data (NoPeek).
- `labels`: label holder, before the loss (randomized-response label DP).
- `cut_grad`: label-holding side, transforms the gradient before it is sent back (max-norm).
- client-side monitoring (detectors of a hijacking server, defenses/detector.py): `attach`
  (once, the client's model and cuts), `decoy` (labels to send instead of the batch's, for a
  batch the client will not learn from), `inspect` (what came back, after the backward),
  `withholding` (the client has stopped sending), `report` (numbers for the run's result).
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC
from typing import Any, ClassVar

import torch
from torch import Tensor

from slsec.errors import UserError
from slsec.params import Param
from slsec.threat import Mechanism
from slsec.registry import Registry

# a DP defense's noise solved for a target epsilon (`calibrate`), shared by dp and dpsgd
TARGET_EPSILON = Param("target_epsilon", "float", None, "solve the noise (dp: sigma; dpsgd: "
                       "noise multiplier) for this epsilon", check=("positive",),
                       unused="calibrates --defense dp or dpsgd", deferred=True)


class Defense(ABC):
    """Base class: subclasses set `name`, `protocols` and override the hooks they need."""

    name: ClassVar[str]
    protocols: ClassVar[frozenset[str]]   # protocols the defense applies to
    point: ClassVar[str]                  # "cut" | "regularizer" | "labels" | "grad" | "train" | "pre"
    # it reads the client's labels, so it cannot run where the server holds them (two-party SL)
    needs_client_labels: ClassVar[bool] = False
    # what a frontier sweep of this defense varies: a RunConfig field and its useful values
    # (a comma list, as `slsec sweep` takes it); None: the defense has no strength parameter
    sweep_param: ClassVar[str | None] = None
    sweep_values: ClassVar[str] = ""
    sweep_cuts: ClassVar[bool] = False    # the cut matters as much as the parameter: sweep it too
    # its parameters (slsec.params): RunConfig fields, flags, TOML keys and checks come from
    # these; the constructor gets each one given as `Param.keyword`
    params: ClassVar[tuple[Param, ...]] = ()
    # a DP defense: it reports an epsilon, so its constructor also gets the run's accounting
    # settings `delta` and `accountant` (the core's parameters, shared by every DP defense)
    reports_epsilon: ClassVar[bool] = False
    # the run report's section on it: a heading and a paragraph (default: the name, and the
    # class docstring with "No DP claim."); a text that depends on the run overrides report_text
    report_heading: ClassVar[str] = ""
    report_body: ClassVar[str] = ""

    def check_protocol(self, protocol: str) -> None:
        """Raise a UserError if this defense cannot be used with `protocol`."""
        if protocol not in self.protocols:
            raise UserError(f"defense '{self.name}' does not apply to protocol '{protocol}'; "
                            f"it applies to {', '.join(sorted(self.protocols))}")

    def smashed(self, h: Tensor, *, train: bool, gen: torch.Generator | None) -> Tensor:
        return h

    def changes_smashed(self) -> bool:
        """Whether `smashed` may change what crosses the cut (then it acts at inference too)."""
        return type(self).smashed is not Defense.smashed

    def regularizer(self, x: Tensor, h: Tensor) -> Tensor | None:
        return None

    def labels(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor:
        return y

    def cut_grad(self, g: Tensor, *, gen: torch.Generator | None) -> Tensor:
        return g

    def label_grad(self, g: Tensor, y: Tensor, *, gen: torch.Generator | None) -> Tensor:
        """The label holder's returned gradient rows, given the labels (e.g. Marvell)."""
        return g

    def public_mechanism(self) -> Mechanism:
        """The public mechanism (Kerckhoffs): what an adaptive attacker is told, typed."""
        return Mechanism(self.name)

    def attach(self, model: Any, cuts: tuple[str, ...]) -> None:
        return None

    def decoy(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor | None:
        return None

    def inspect(self, *, g: Tensor, head: Any, x: Tensor, y: Tensor | None, decoy: bool,
                feats: dict[str, Tensor] | None = None) -> None:
        return None

    @property
    def withholding(self) -> bool:
        return False

    def report(self) -> dict[str, float]:
        return {}

    def public(self) -> dict[str, Any]:
        """The public mechanism as plain data (for reports)."""
        return dataclasses.asdict(self.public_mechanism())

    def epsilon(self, *, steps: int, sample_rate: float, delta: float) -> float | None:
        """Privacy loss of this mechanism per training sample, or None if it has no DP claim."""
        return None

    def fit_public(self, setup: Any) -> None:
        """Derive what the defense takes from public data and weights (slsec.run.setup.Setup)
        before training; the default derives nothing."""

    def check_numbers(self) -> None:
        """Raise a UserError if the calibrated numbers make no sense (e.g. noise std inf)."""

    def used(self) -> dict[str, Any]:
        """Values the run report records as used (e.g. a clip derived from public data)."""
        return {}

    def guess_bounds(self, *, eps: float, steps: int, sample_rate: float,
                     kappa: float | None, num_classes: int) -> dict[str, Any]:
        """Bounds this mechanism's guarantee puts on an attacker's guessing (see
        slsec/privacy/reid_bound.py): {"reid_bound": b} for top-1 re-identification among 1/kappa
        candidates; {"labels_only": True, ...} for a label-only guarantee; {} (the default):
        the run's (eps, delta) bound is used."""
        return {}

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        """(heading, paragraph) for a run report: the mechanism, its sensitivity and what its
        epsilon covers, from the stored config and metrics of the run."""
        return (cls.report_heading or cls.name,
                cls.report_body or (cls.__doc__ or "").strip() + " No DP claim.")


class DefenseStack(Defense):
    """Several defenses applied in order at every hook."""

    name = "stack"
    protocols = frozenset()
    point = "stack"

    def __init__(self, defenses: list[Defense]) -> None:
        self.defenses = list(defenses)

    def check_protocol(self, protocol: str) -> None:
        for d in self.defenses:
            d.check_protocol(protocol)

    def smashed(self, h: Tensor, *, train: bool, gen: torch.Generator | None) -> Tensor:
        for d in self.defenses:
            h = d.smashed(h, train=train, gen=gen)
        return h

    def changes_smashed(self) -> bool:
        return any(d.changes_smashed() for d in self.defenses)

    def regularizer(self, x: Tensor, h: Tensor) -> Tensor | None:
        terms = [t for d in self.defenses if (t := d.regularizer(x, h)) is not None]
        return sum(terms) if terms else None  # type: ignore[return-value]

    def labels(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor:
        for d in self.defenses:
            y = d.labels(y, num_classes=num_classes, gen=gen)
        return y

    def cut_grad(self, g: Tensor, *, gen: torch.Generator | None) -> Tensor:
        for d in self.defenses:
            g = d.cut_grad(g, gen=gen)
        return g

    def label_grad(self, g: Tensor, y: Tensor, *, gen: torch.Generator | None) -> Tensor:
        for d in self.defenses:
            g = d.label_grad(g, y, gen=gen)
        return g

    def attach(self, model: Any, cuts: tuple[str, ...]) -> None:
        for d in self.defenses:
            d.attach(model, cuts)

    def decoy(self, y: Tensor, *, num_classes: int, gen: torch.Generator | None) -> Tensor | None:
        for d in self.defenses:
            if (fake := d.decoy(y, num_classes=num_classes, gen=gen)) is not None:
                return fake
        return None

    def inspect(self, *, g: Tensor, head: Any, x: Tensor, y: Tensor | None, decoy: bool,
                feats: dict[str, Tensor] | None = None) -> None:
        for d in self.defenses:
            d.inspect(g=g, head=head, x=x, y=y, decoy=decoy, feats=feats)

    @property
    def withholding(self) -> bool:
        return any(d.withholding for d in self.defenses)

    def report(self) -> dict[str, float]:
        return {k: v for d in self.defenses for k, v in d.report().items()}

    def public(self) -> dict[str, Any]:
        return {"defenses": [d.public() for d in self.defenses]}

    def mechanisms(self) -> list[Mechanism]:
        """Each defense's public mechanism, in the order applied."""
        return [d.public_mechanism() for d in self.defenses]

    def epsilon(self, *, steps: int, sample_rate: float, delta: float) -> float | None:
        eps = [e for d in self.defenses
               if (e := d.epsilon(steps=steps, sample_rate=sample_rate, delta=delta)) is not None]
        return sum(eps) if eps else None  # basic composition across mechanisms

    def __bool__(self) -> bool:
        return bool(self.defenses)


DEFENSES: Registry[type[Defense]] = Registry("defense")


def overflow_check(flag: str, noise: float | None, clip: float | None) -> None:
    """Noise std = noise * clip must be finite, or the data would be pure noise."""
    if noise is not None and clip is not None and not math.isfinite(noise * clip):
        raise UserError(f"{flag} {noise:g} times the clip {clip:g} overflows (noise std "
                        f"inf): the data would be pure noise; use a smaller {flag}")


def positive(name: str, value: float, *, allow_zero: bool = False, allow_inf: bool = False) -> float:
    """Validate a numeric defense parameter; a UserError names the flag and the value."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--{name} must be a number, got {value!r}") from None
    if v != v or (v == float("inf") and not allow_inf) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"--{name} must be {bound}{' (or inf)' if allow_inf else ''}, got {value}")
    return v


def dp_accounting(delta: float, accountant: str) -> tuple[float, str]:
    """The (delta, accountant) of a DP defense, checked by the core parameters' declarations
    (--delta in (0, 1), --accountant one of the Opacus accountants)."""
    from slsec.config import PARAMS
    from slsec.params import check_given
    check_given((PARAMS["delta"][0], PARAMS["accountant"][0]), delta=delta, accountant=accountant)
    return float(delta), accountant
