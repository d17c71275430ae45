"""What a DP guarantee promises about re-identification, beside what the attack achieves.

Reconstruction robustness (Hayes, Mahloujifar, Balle 2023, "Bounding training data
reconstruction in DP-SGD"): if a mechanism's privacy is dominated by a pair of distributions
(P, Q), an adversary whose guess is right with prior probability kappa (here: pick the true
record among N candidates, kappa = 1/N) succeeds with probability at most

    sup { Q(E) : P(E) <= kappa }  =  min over eps of  e^eps * kappa + delta(eps),

where delta(eps) is the mechanism's privacy profile (hockey-stick divergence). Here:

- Gaussian releases without subsampling (DP at the cut): n releases of noise multiplier z are
  mu-GDP with mu = sqrt(n) / z, and the bound is exact: Phi(Phi^-1(kappa) + mu).
- Subsampled Gaussian (DP-SGD): the minimum over a grid of (eps(delta), delta) pairs from the
  run's accountant; each pair is a valid guarantee, so the minimum is a valid (if not the
  tightest) upper bound.
- Anything else, and as the plain fallback: e^eps * kappa + delta from the reported (eps, delta).

A bound >= 1 is vacuous: the guarantee does not rule out re-identifying every record.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm


def eps_delta_bound(epsilon: float, delta: float, kappa: float) -> float:
    """The simple bound e^eps * kappa + delta, capped at 1."""
    if not math.isfinite(epsilon):
        return 1.0
    return float(min(1.0, math.exp(min(epsilon, 700.0)) * kappa + delta))


def gaussian_bound(mu: float, kappa: float) -> float:
    """Exact bound for a mu-GDP mechanism (Gaussian, no subsampling): Phi(Phi^-1(kappa) + mu)."""
    if not math.isfinite(mu):
        return 1.0
    return float(norm.cdf(norm.ppf(kappa) + mu))


def subsampled_gaussian_bound(*, noise_multiplier: float, sample_rate: float, steps: int,
                              kappa: float, accountant: str = "rdp") -> float:
    """Bound for `steps` Poisson-subsampled Gaussian releases (DP-SGD): the exact GDP bound at
    sample rate 1, else the least e^eps(delta) * kappa + delta over a grid of delta."""
    if steps == 0:
        return float(kappa)
    if not noise_multiplier > 0:
        return 1.0
    if sample_rate >= 1.0:
        return gaussian_bound(math.sqrt(steps) / noise_multiplier, kappa)
    from slsec.privacy import accounting
    deltas = [float(d) for d in np.logspace(-12, -0.5, 24)]
    eps = accounting.epsilons(noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                              steps=steps, deltas=deltas, accountant=accountant)
    return float(min([1.0, *(eps_delta_bound(e, d, kappa) for e, d in zip(eps, deltas))]))


def vacuous(bound: float) -> bool:
    return not bound < 1.0


def describe(bound: float, measured: float | None, n: int) -> str:
    """One plain sentence: the bound, whether it says anything, and the measured rate."""
    text = (f"DP bound on top-1 re-identification among {n} candidates (prior 1/{n} = "
            f"{1 / n:.4f}): {bound:.4f}")
    text += " (vacuous: the guarantee does not rule out re-identifying every record)" \
        if vacuous(bound) else ""
    if measured is not None and not math.isnan(measured):
        text += f"; measured {measured:.4f}"
        if measured > bound + 1e-12:
            text += " — ABOVE THE BOUND: a bug in the accounting or the measurement"
    return text + "."
