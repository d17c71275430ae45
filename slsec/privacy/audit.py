"""One-run privacy audits: an empirical *lower* bound on epsilon from guesses about canaries.

The setting of both methods: m canaries, each with a secret bit S_i drawn uniformly (included
or not; for replace-one adjacency, which of two fixed inputs was used); one run of the
mechanism; the auditor makes r guesses (abstaining on the rest) and v of them are right. If
the mechanism is (eps, delta)-DP, many right guesses are unlikely, so a large v rejects every
eps below some value: that value is eps_lower, at the chosen confidence.

- `eps_lower_steinke`: Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training
  Run" (NeurIPS 2023), Theorem 3.1 / Proposition 5.2: under (eps, delta)-DP the number of right
  guesses is dominated by Binomial(r, e^eps / (1 + e^eps)), up to a delta term
  2 m delta max_i P[v - i <= Binomial < v] / i.
- `eps_lower_fdp`: Mahloujifar, Melis and Chaudhuri, "Auditing f-Differential Privacy in One
  Run" (ICML 2025), their recursive bound on right guesses for a hypothesised trade-off curve
  f, here the Gaussian f_mu(a) = Phi(Phi^-1(1 - a) - mu): it finds the largest mu that the
  guesses reject, and reports the epsilon of mu-GDP at delta. Tighter for Gaussian mechanisms.

The auditor guesses on its `r` most confident canaries; trying several r is a multiple test,
so `eps_lower` splits the significance evenly over the r it tries (Bonferroni) and over the
scores it tries, and the maximum over all of them holds at the stated confidence.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np
from scipy import optimize, special, stats

from slsec.errors import UserError

_N = NormalDist()
EPS_CAP = 50.0           # an audit never reports more than this (all guesses right at huge m)
GUESS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _check_counts(m: int, r: int, v: int) -> None:
    if not (0 <= v <= r <= m) or m < 1:
        raise UserError(f"audit counts must satisfy 0 <= correct <= guesses <= canaries and "
                        f"canaries >= 1, got canaries={m}, guesses={r}, correct={v}")


def steinke_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least v of r guesses right] under the (eps, delta)-DP null (one-run theorem)."""
    _check_counts(m, r, v)
    q = float(special.expit(eps))
    tail = float(stats.binom.sf(v - 1, r, q))            # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return tail
    i = np.arange(1, v + 1)
    window = stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - 1 - i, r, q)
    return float(min(1.0, tail + 2 * m * delta * float(np.max(window / i))))


def _largest_rejected(reject, above: float = 0.0) -> float:
    """The largest x > `above` with reject(x) (reject is true on [0, x*) and false above),
    to 1e-4, on the rejected side; 0 when reject(above) is false."""
    if not reject(above):
        return 0.0
    lo, hi = above, max(1.0, 2 * above)
    while reject(hi):
        lo, hi = hi, hi * 2
        if hi > EPS_CAP:
            return EPS_CAP
    while hi - lo > 1e-4 * max(1.0, lo):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reject(mid) else (lo, mid)
    return lo                             # the rejected end: the bound errs low, never high


def eps_lower_steinke(m: int, r: int, v: int, *, delta: float, confidence: float = 0.95,
                      above: float = 0.0) -> float:
    """The largest eps whose (eps, delta) claim v right guesses out of r reject (0 if none,
    or if none above `above`)."""
    _check_counts(m, r, v)
    alpha = 1.0 - confidence
    if r == 0 or steinke_p_value(m, r, v, 0.0, 0.0) >= alpha:
        return 0.0
    return _largest_rejected(lambda e: steinke_p_value(m, r, v, e, delta) < alpha, above)


def gdp_epsilon(mu: float, delta: float) -> float:
    """Epsilon at delta of a mu-GDP mechanism (exact: the Gaussian privacy profile)."""
    if mu <= 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf

    def profile(eps: float) -> float:
        a, b = -eps / mu + mu / 2, -eps / mu - mu / 2
        return _N.cdf(a) - math.exp(min(eps, 700.0)) * _N.cdf(b) - delta
    if profile(0.0) <= 0:
        return 0.0
    hi = 1.0
    while profile(hi) > 0:
        hi *= 2
    return float(optimize.brentq(profile, 0.0, hi, xtol=1e-9))


def _gdp_delta(mu: float, eps: float) -> float:
    """delta(eps) of mu-GDP: Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    return _N.cdf(-eps / mu + mu / 2) - math.exp(min(eps, 700.0)) * _N.cdf(-eps / mu - mu / 2)


def gdp_mu(eps: float, delta: float) -> float:
    """The mu whose mu-GDP has exactly `eps` at `delta` (delta(eps) grows with mu)."""
    lo, hi = 0.0, 1.0
    while _gdp_delta(hi, eps) < delta:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-9 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gdp_delta(mid, eps) < delta else (lo, mid)
    return lo


def _gaussian_inverse(mu: float):
    """The inverse blow-up of mu-GDP: the least wrong-guess mass that right-guess mass y
    forces, Phi(Phi^-1(y) - mu)."""
    def inv(y: float) -> float:
        return _N.cdf(_N.inv_cdf(min(max(y, 1e-300), 1 - 1e-16)) - mu)
    return inv


def _eps_delta_inverse(eps: float, delta: float):
    """The same for the trade-off curve of (eps, delta)-DP itself, which every
    (eps, delta)-DP mechanism satisfies: max(0, (y - delta) e^-eps, 1 - delta - e^eps (1 - y))."""
    def inv(y: float) -> float:
        return max(0.0, (y - delta) * math.exp(-eps), 1 - delta - math.exp(min(eps, 700.0)) * (1 - y))
    return inv


def fdp_rejects(m: int, r: int, v: int, inverse, alpha: float) -> bool:
    """Whether v right guesses of r reject the trade-off curve (given by its inverse blow-up)
    at level alpha: the recursive bound on the mass of right and wrong guesses of Mahloujifar
    et al. 2025 (right guesses force wrong ones, one guess at a time)."""
    right, wrong = alpha * v / m, alpha * (r - v) / m
    for i in range(v - 1, -1, -1):
        grown = max(wrong, inverse(right))
        if grown == wrong:
            break                     # neither mass can change any more
        right = min(right + i / (r - i) * (grown - wrong), 1.0)
        wrong = grown
    return right + wrong > r / m


def eps_lower_fdp(m: int, r: int, v: int, *, delta: float, confidence: float = 0.95,
                  curve: str = "gaussian", above: float = 0.0) -> float:
    """The f-DP one-run bound. curve="gaussian": the largest mu-GDP claim the guesses reject,
    as epsilon at delta (valid where the claim is Gaussian: DP at the cut); curve="eps-delta":
    the largest eps whose (eps, delta)-DP trade-off curve they reject (valid for any mechanism)."""
    _check_counts(m, r, v)
    alpha = 1.0 - confidence
    if curve == "gaussian":
        def reject(u: float) -> bool:
            return fdp_rejects(m, r, v, _gaussian_inverse(max(u, 1e-9)), alpha)
    elif curve == "eps-delta":
        def reject(u: float) -> bool:
            return fdp_rejects(m, r, v, _eps_delta_inverse(u, delta), alpha)
    else:
        raise ValueError(f"curve must be gaussian or eps-delta, got {curve!r}")
    if r == 0 or v == 0 or not reject(0.0):
        return 0.0
    if curve == "gaussian":               # `above` is an epsilon: search mu above its mu
        x = _largest_rejected(reject, gdp_mu(above, delta) if above > 0 else 0.0)
        return min(EPS_CAP, gdp_epsilon(x, delta)) if x > 0 else 0.0
    return min(EPS_CAP, _largest_rejected(reject, above))


METHODS = {"one-run": eps_lower_steinke, "f-dp": eps_lower_fdp}


def guess_counts(scores: np.ndarray, secrets: np.ndarray, r: int,
                 policy: str = "both") -> tuple[int, int]:
    """The auditor's r guesses; returns (r, right guesses). "both": guess the sign of the
    score on the r largest |score| (each construction's score is 0 where in and out are
    equally likely); "in": guess S = +1 on the r largest scores (for mechanisms where an
    included canary may leave no trace, as when DP-SGD never samples it)."""
    if policy == "in":
        order = np.argsort(-scores, kind="stable")[:r]
        return int(len(order)), int(np.sum(secrets[order] == 1))
    order = np.argsort(-np.abs(scores), kind="stable")[:r]
    right = int(np.sum(np.sign(scores[order]) == secrets[order]))
    return int(len(order)), right


POLICIES = ("both", "in")


def eps_lower(score_sets: Sequence[np.ndarray], secrets: np.ndarray, *, delta: float,
              confidence: float = 0.95, curve: str = "gaussian",
              fractions: Sequence[float] = GUESS_FRACTIONS) -> dict[str, dict]:
    """Both methods' lower bounds from the auditor's scores (score > 0: guess S = +1).

    `curve` is the trade-off curve the f-DP method tests (see `eps_lower_fdp`).
    Several score functions, guess policies and numbers of guesses are tried, by both methods;
    the significance is split evenly over all of them (Bonferroni), so both methods' maxima
    (and so the larger of the two) hold together at `confidence`.
    Returns {method: {"eps_lower", "guesses", "correct", "score", "policy", "eps_lower_max"}},
    eps_lower_max being what m canaries could prove at best (all m guesses right).
    """
    if not 0 < confidence < 1:
        raise UserError(f"--confidence must be in (0, 1), got {confidence}")
    m = len(secrets)
    rs = sorted({max(1, int(round(f * m))) for f in fractions})
    tries = max(1, len(score_sets) * len(rs) * len(POLICIES) * len(METHODS))
    level = 1.0 - (1.0 - confidence) / tries
    out: dict[str, dict] = {}
    for name, bound in METHODS.items():
        best = {"eps_lower": 0.0, "guesses": 0, "correct": 0, "score": 0, "policy": ""}
        for k, scores in enumerate(score_sets):
            for r, policy in ((r, p) for r in rs for p in POLICIES):
                r_, v = guess_counts(np.asarray(scores, dtype=float), secrets, r, policy)
                extra = {"curve": curve} if bound is eps_lower_fdp else {}
                if v <= r_ / 2:
                    continue                  # no better than chance: rejects nothing
                e = bound(m, r_, v, delta=delta, confidence=level, above=best["eps_lower"],
                          **extra)
                if e > best["eps_lower"]:
                    best = {"eps_lower": e, "guesses": r_, "correct": v, "score": k,
                            "policy": policy}
        extra = {"curve": curve} if bound is eps_lower_fdp else {}
        # the most these m canaries can prove: every one of m guesses right
        best["eps_lower_max"] = bound(m, m, m, delta=delta, confidence=level, **extra)
        out[name] = best
    return out
