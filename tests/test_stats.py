"""Seeds and confidence intervals: the t-interval math against scipy.stats.t, generic aggregation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from slsec.report import stats

SAMPLE = [0.912, 0.897, 0.921, 0.905, 0.930]     # a fixed sample (e.g. five seeds' accuracy)


def test_half_width_matches_scipy_t_interval_on_a_fixed_sample() -> None:
    mean, hw = stats.t_interval(SAMPLE)
    low, high = sps.t.interval(0.95, len(SAMPLE) - 1, loc=np.mean(SAMPLE), scale=sps.sem(SAMPLE))
    assert mean == pytest.approx(np.mean(SAMPLE), abs=1e-15)
    assert mean - hw == pytest.approx(low, abs=1e-12)
    assert mean + hw == pytest.approx(high, abs=1e-12)
    # and by hand: t_{0.975,4} = 2.7764451..., s = sample std (ddof=1)
    assert hw == pytest.approx(2.7764451051977987 * np.std(SAMPLE, ddof=1) / math.sqrt(5),
                               rel=1e-12)


@pytest.mark.parametrize("n", [2, 3, 10])
def test_half_width_matches_scipy_for_three_seeds_and_other_sizes(n: int) -> None:
    xs = list(np.random.default_rng(n).normal(0.3, 0.05, n))
    mean, hw = stats.t_interval(xs)
    low, high = sps.t.interval(0.95, n - 1, loc=np.mean(xs), scale=sps.sem(xs))
    assert (mean - hw, mean + hw) == pytest.approx((low, high), abs=1e-12)


def test_one_seed_has_no_interval_and_says_so() -> None:
    mean, hw = stats.t_interval([0.5])
    assert mean == 0.5 and math.isnan(hw)
    assert stats.fmt_ci(mean, hw) == "0.500"
    assert "single seed" in stats.seeds_text(1, 0)
    assert stats.seed_list(3, 3) == [3, 4, 5] and stats.seed_list(7, 1) == [7]


def test_identical_values_give_a_zero_width_interval() -> None:
    assert stats.t_interval([0.25, 0.25, 0.25]) == (0.25, 0.0)


def test_aggregation_is_generic_over_numeric_keys_csv_text_included() -> None:
    rows = [{"accuracy": "0.9", "prior_ssim_mean": 0.41, "cut": "conv1", "sent": "True",
             "reid_top1": 1, "maybe": ""},
            {"accuracy": "0.8", "prior_ssim_mean": 0.43, "cut": "conv1", "sent": "True",
             "reid_top1": 0, "maybe": "nan"},
            {"accuracy": "0.7", "prior_ssim_mean": 0.45, "cut": "conv1", "sent": "True",
             "reid_top1": 1, "maybe": None}]
    assert stats.numeric_keys(rows) == ["accuracy", "prior_ssim_mean", "reid_top1"]
    row = stats.mean_row(rows)
    assert row["accuracy"] == pytest.approx(0.8)
    assert row["accuracy_ci95"] == pytest.approx(stats.t_interval([0.9, 0.8, 0.7])[1])
    assert row["prior_ssim_mean"] == pytest.approx(0.43)
    assert row["cut"] == "conv1" and row["sent"] == "True"
    assert "cut_ci95" not in row and "sent_ci95" not in row
    mixed = stats.mean_row([{"m": "whitebox"}, {"m": "decoder"}])
    assert mixed["m"] == "whitebox|decoder"
