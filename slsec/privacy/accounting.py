"""Privacy accounting for the Gaussian defenses, through the Opacus accountants.

Both functions speak Opacus' vocabulary: a *noise multiplier* is the Gaussian std divided by
the L2 sensitivity of what is released, a *sample rate* is the probability that one sample
takes part in one step (Poisson subsampling), and *steps* is how many such releases compose.

How a defense's own parameters map to these three numbers (its sensitivity argument) is
written out once, next to the mechanism, in the module docstrings of `defenses/dp_cut.py`
and `defenses/dpsgd.py`; this module only runs the accountant.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from slsec.errors import UserError

ACCOUNTANTS = ("rdp", "prv")
# PRV (the default) is run only where RDP's epsilon is at most this: above it PRV's grid grows
# with the privacy loss (nm 0.1 at one release: 15 s and 600 MB; nm 0.05 over 10 releases:
# out of memory; nm <= 0.02: a RuntimeError inside Opacus), and the guarantee is vacuous anyway.
# There the RDP value is returned, a valid (looser) upper bound; `used` says which one ran.
PRV_MAX_EPSILON = 50.0
# Noise multipliers above this are accounted as this value: epsilon only falls as the noise
# grows, so the result is a valid upper bound, and both accountants sit at their floor long
# before it (RDP 0.1029, PRV 0.00999 at delta 1e-5 for nm 1e6 and 1e154 alike), while nm
# near 1e308 overflows inside them.
MAX_ACCOUNTED_NOISE = 1e6
# Below this the accountants' sigma**2 underflows to 0 (a division by zero inside them): such
# noise guarantees nothing, and epsilon = inf is the (valid) bound reported, as for no noise.
MIN_ACCOUNTED_NOISE = 1e-100
MAX_SOLVER_STEPS = 200      # noise_for_epsilon: bisection steps (Opacus' own loop has no bound)
MIN_SOLVED_NOISE = 1e-3     # a target met by less noise than this is met by this much noise


def _check(*, sample_rate: float, steps: int, delta: float, accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise UserError(f"--accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")
    if not 0 < delta < 1:
        raise UserError(f"--delta must be in (0, 1), got {delta}")
    if not 0 < sample_rate <= 1:
        raise UserError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 0 or int(steps) != steps:
        raise UserError(f"steps must be a whole number >= 0, got {steps}")


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float,
            accountant: str = "rdp") -> float:
    """Epsilon at `delta` after `steps` Poisson-subsampled Gaussian releases (Opacus accountant;
    PRV falls back to RDP above PRV_MAX_EPSILON, see `used`)."""
    _check(sample_rate=sample_rate, steps=steps, delta=delta, accountant=accountant)
    if steps == 0:
        return 0.0
    if not noise_multiplier >= MIN_ACCOUNTED_NOISE:   # no noise (or nan): no guarantee at all
        return math.inf
    nm = min(float(noise_multiplier), MAX_ACCOUNTED_NOISE)
    rdp = _opacus_epsilon("rdp", nm, float(sample_rate), int(steps), delta)
    if accountant == "rdp" or not rdp <= PRV_MAX_EPSILON:
        return rdp
    return _opacus_epsilon("prv", nm, float(sample_rate), int(steps), delta)


def used(*, eps_rdp: float, accountant: str) -> str:
    """The accountant whose number `epsilon` returned, given RDP's epsilon at the same point."""
    return "prv" if accountant == "prv" and eps_rdp <= PRV_MAX_EPSILON else "rdp"


def _opacus_epsilon(accountant: str, nm: float, q: float, steps: int, delta: float) -> float:
    from opacus.accountants import create_accountant   # lazy: opacus takes ~2 s to import
    acc = create_accountant(mechanism=accountant)
    acc.history = [(nm, q, steps)]
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # PRV at sample rate 1 takes log(0) on a branch it then discards; RDP warns when the
        # best order is at the edge of its grid (the bound is still a valid upper bound).
        warnings.filterwarnings("ignore", message="Optimal order is the")
        try:
            return float(acc.get_epsilon(delta=delta))
        except (RuntimeError, MemoryError, ValueError):
            if accountant == "rdp":
                raise
            return _opacus_epsilon("rdp", nm, q, steps, delta)   # PRV outside its range


def epsilons(*, noise_multiplier: float, sample_rate: float, steps: int, deltas: list[float],
             accountant: str = "rdp") -> list[float]:
    """`epsilon` at each of `deltas`, for one mechanism. RDP: the Renyi curve, which the
    accountant recomputes for every delta (the slow part, ~0.3 s), is computed once and then
    converted at each delta by Opacus' own conversion, so each value equals `epsilon(delta=d)`
    exactly (tests/test_reid_bound.py checks it)."""
    for d in deltas:
        _check(sample_rate=sample_rate, steps=steps, delta=d, accountant=accountant)
    if steps == 0 or not noise_multiplier >= MIN_ACCOUNTED_NOISE:
        return [epsilon(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps,
                        delta=d, accountant=accountant) for d in deltas]
    if accountant == "prv":
        rdp = epsilons(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps,
                       deltas=deltas, accountant="rdp")
        return _prv_epsilons(min(float(noise_multiplier), MAX_ACCOUNTED_NOISE), float(sample_rate),
                             int(steps), deltas, rdp)
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis
    alphas = RDPAccountant.DEFAULT_ALPHAS        # what RDPAccountant.get_epsilon uses
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the")
        curve = analysis.compute_rdp(q=float(sample_rate), steps=int(steps), orders=alphas,
                                     noise_multiplier=min(float(noise_multiplier),
                                                          MAX_ACCOUNTED_NOISE))
        return [float(analysis.get_privacy_spent(orders=alphas, rdp=curve, delta=d)[0])
                for d in deltas]


def _prv_epsilons(nm: float, q: float, steps: int, deltas: list[float],
                  rdp: list[float]) -> list[float]:
    """PRV's epsilon at each delta where RDP's is <= PRV_MAX_EPSILON (RDP's elsewhere), from one
    composed PRV built for the smallest of those deltas (Opacus' get_epsilon rebuilds it for
    every delta; a smaller delta error only makes each value a safer upper bound)."""
    todo = [d for d, r in zip(deltas, rdp) if r <= PRV_MAX_EPSILON]
    if not todo:
        return list(rdp)
    from opacus.accountants import PRVAccountant
    acc, eps_error, delta_error = PRVAccountant(), 0.01, min(todo) / 1000
    acc.history = [(nm, q, steps)]
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        try:
            dprv = acc._get_dprv(eps_error=eps_error, delta_error=delta_error)
            tight = {d: float(dprv.compute_epsilon(d, delta_error, eps_error)[2]) for d in todo}
        except (RuntimeError, MemoryError, ValueError):
            return list(rdp)                                # PRV outside its range
    return [min(r, tight[d]) if d in tight else r for d, r in zip(deltas, rdp)]


def noise_for_epsilon(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str = "rdp") -> float:
    """The smallest noise multiplier (to Opacus' tolerance 0.01 in epsilon) reaching `target_epsilon`."""
    _check(sample_rate=sample_rate, steps=steps, delta=delta, accountant=accountant)
    if not target_epsilon > 0 or math.isinf(target_epsilon):
        raise UserError(f"--target-epsilon must be a finite number > 0, got {target_epsilon}")
    if steps == 0:
        return 0.0
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return _solve_noise(target_epsilon=target_epsilon, delta=delta,
                            sample_rate=sample_rate, steps=int(steps), accountant=accountant)


def _solve_noise(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                 accountant: str, tolerance: float = 0.01) -> float:
    """Opacus' get_noise_multiplier search (double from 10, then bisect to `tolerance` in
    epsilon), with a bounded number of steps: Opacus loops for ever when the target lies above
    the epsilon of any noise it can reach (e.g. 1e300). Stopping early returns a noise whose
    epsilon is within the target (the upper end of the bracket), so the guarantee holds."""
    def eps(nm: float) -> float:
        try:
            v = epsilon(noise_multiplier=nm, sample_rate=sample_rate, steps=steps, delta=delta,
                        accountant=accountant)
        except (ValueError, OverflowError, ZeroDivisionError, FloatingPointError, RuntimeError):
            return math.inf
        return v if v == v else math.inf

    low, high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target_epsilon:
        high *= 2
        eps_high = eps(high)
        if high > MAX_ACCOUNTED_NOISE:
            raise UserError(f"--target-epsilon {target_epsilon} is out of reach at delta={delta} "
                            f"for {steps} steps at sample rate {sample_rate}: the privacy budget "
                            f"is too low (noise multiplier {MAX_ACCOUNTED_NOISE:g} does not reach it)")
    for _ in range(MAX_SOLVER_STEPS):
        if (target_epsilon - eps_high <= tolerance or high < MIN_SOLVED_NOISE
                or high - low <= 1e-4 * high):   # bracket narrower than 0.01% of the noise
            break
        mid = (low + high) / 2
        if not low < mid < high:          # the bracket cannot shrink any further
            break
        e = eps(mid)
        if e < target_epsilon:
            high, eps_high = mid, e
        else:
            low = mid
    return high
