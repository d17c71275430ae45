"""The DP bound on re-identification (slsec/privacy/reid_bound.py) and that no measured rate exceeds it."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from slsec.privacy import reid_bound as rb


def gaussian_profile(eps: np.ndarray, mu: float) -> np.ndarray:
    """delta(eps) of a mu-GDP mechanism (Balle & Wang 2018, Dong et al. 2019)."""
    return norm.cdf(-eps / mu + mu / 2) - np.exp(eps) * norm.cdf(-eps / mu - mu / 2)


@pytest.mark.parametrize("mu, kappa", [(0.5, 1 / 1064), (1.0, 0.01), (4.0, 1 / 1064),
                                       (2.0, 0.2)])
def test_gaussian_bound_is_the_minimum_over_the_privacy_profile(mu, kappa):
    """Phi(Phi^-1(kappa) + mu) equals min over eps of e^eps kappa + delta(eps)."""
    eps = np.linspace(-5, 60, 200001)
    profile_min = float(np.min(np.exp(eps) * kappa + gaussian_profile(eps, mu)))
    assert rb.gaussian_bound(mu, kappa) == pytest.approx(profile_min, rel=1e-4, abs=1e-7)


def test_bound_limits_and_fallback():
    assert rb.gaussian_bound(0.0, 0.01) == pytest.approx(0.01)       # no information: the prior
    assert rb.gaussian_bound(math.inf, 0.01) == 1.0
    assert rb.eps_delta_bound(26.0, 1e-5, 1 / 1064) == 1.0            # the card: vacuous
    assert rb.vacuous(1.0) and not rb.vacuous(0.5)
    assert rb.eps_delta_bound(1.0, 1e-5, 0.01) == pytest.approx(math.e * 0.01 + 1e-5)


def test_subsampled_bound_is_no_looser_than_eps_delta_and_exact_at_rate_one():
    from slsec.privacy import accounting
    kappa = 1 / 1064
    kw = dict(noise_multiplier=1.0, sample_rate=0.01, steps=500)
    eps = accounting.epsilon(delta=1e-5, **kw)
    b = rb.subsampled_gaussian_bound(kappa=kappa, **kw)
    assert kappa <= b <= rb.eps_delta_bound(eps, 1e-5, kappa) + 1e-12
    assert rb.subsampled_gaussian_bound(noise_multiplier=2.0, sample_rate=1.0, steps=4,
                                        kappa=kappa) == pytest.approx(rb.gaussian_bound(1.0, kappa))


def test_epsilons_equal_epsilon_at_each_delta():
    """accounting.epsilons (one Renyi curve, converted at each delta) gives epsilon's numbers."""
    from slsec.privacy import accounting
    deltas = [1e-12, 1e-5, 0.3]
    for kw in (dict(noise_multiplier=1.0, sample_rate=64 / 600, steps=9),
               dict(noise_multiplier=0.5, sample_rate=0.01, steps=500),
               dict(noise_multiplier=0.0, sample_rate=0.1, steps=3)):
        assert accounting.epsilons(deltas=deltas, **kw) == [
            accounting.epsilon(delta=d, **kw) for d in deltas]


def test_describe_says_vacuous_and_flags_a_rate_above_the_bound():
    assert "vacuous" in rb.describe(1.0, 0.5, 1064)
    assert "ABOVE THE BOUND" in rb.describe(0.01, 0.5, 1064)
    assert "ABOVE" not in rb.describe(0.8, 0.01, 1064)


def _evaluate(**values):
    from slsec.config import make_config
    from slsec.run.harness import evaluate
    return evaluate(make_config(values)).metrics


@pytest.mark.slow
def test_card_reid_never_exceeds_its_dp_bound():
    """The card (vanilla, conv1, DP at the cut sigma 0.5): measured top-1 re-id <= the bound."""
    m = _evaluate(protocol="vanilla", attack="inversion", defense="dp", sigma=0.5, cut="conv1")
    assert m["reid_candidates"] >= 1064
    assert 0 < m["reid_bound"] < 1 and m["reid_bound_eps_delta"] == 1.0   # eps ~ 26: vacuous
    worst = max([m["reid_top1"], *m.get("reid_top1_by_method", {}).values()])
    print(f"card: re-id top-1 {m['reid_top1']:.4f} (every method: {worst:.4f}), chance "
          f"{m['reid_chance_top1']:.4f}, bound {m['reid_bound']:.4f}")
    assert worst <= m["reid_bound"]


@pytest.mark.slow
def test_dpsgd_fedavg_reid_never_exceeds_its_dp_bound():
    """DP-SGD FedAvg with eps < 10: gradient inversion's measured top-1 re-id <= the bound of
    the reported (eps, delta) and <= the bound of the probe's own (one-step) release."""
    m = _evaluate(protocol="fedavg", attack="gradient-inversion", defense="dpsgd",
                  noise_multiplier=1.0, probe_size=8, attack_iters=100, max_train=600,
                  timeout=900)
    worst = max([m["reid_top1"], *m.get("reid_top1_by_method", {}).values()])
    print(f"dpsgd fedavg: eps {m['epsilon']:.2f}, re-id top-1 {worst:.4f}, chance "
          f"{m['reid_chance_top1']:.4f}, bound {m['reid_bound']:.4f}, probe release bound "
          f"{m['reid_bound_probe_release']:.4f}")
    assert m["epsilon"] < 10
    assert worst <= m["reid_bound"] < 1
    assert worst <= m["reid_bound_probe_release"]


def test_harness_bounds_per_defense_without_training():
    """The card's defense: n = 1 release at noise multiplier sigma/2 = 0.25, so mu = 4 and the
    bound is Phi(Phi^-1(1/1064) + 4) ~ 0.81 while e^eps/N + delta is vacuous; DP-SGD FedAvg
    gets a non-vacuous bound; label DP bounds label guessing only."""
    from slsec.config import make_config
    from slsec.run.harness import privacy_budget, reid_bounds, resolve

    def bounds(**values):
        exp = resolve(make_config(values))
        m = {"reid_candidates": 1064, **privacy_budget(exp)}
        return m, reid_bounds(exp, m)
    m, b = bounds(protocol="vanilla", attack="inversion", defense="dp", sigma=0.5)
    assert m["epsilon"] == pytest.approx(24.4, abs=0.1)        # PRV, the default accountant
    assert m["epsilon_rdp"] == pytest.approx(25.9, abs=0.1)    # RDP beside it
    assert b["reid_bound"] == pytest.approx(rb.gaussian_bound(4.0, 1 / 1064))
    assert 0.8 < b["reid_bound"] < 0.82 and not b["reid_bound_vacuous"]
    assert b["reid_bound_eps_delta"] == 1.0
    m, b = bounds(protocol="fedavg", attack="gradient-inversion", defense="dpsgd",
                  noise_multiplier=1.0)
    assert m["epsilon"] < 10 and b["reid_bound"] < b["reid_bound_eps_delta"] <= 1
    assert b["reid_bound"] < 0.05 and b["reid_bound_probe_release"] < 0.05
    m, b = bounds(protocol="vanilla", attack="inversion", defense="label-rr", label_epsilon=1.0)
    assert "reid_bound" not in b and b["label_guess_bound"] == pytest.approx(math.e / 10)
