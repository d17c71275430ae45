"""Metric functions against hand-computed values."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from slsec import metrics


def test_psnr_of_a_constant_offset_is_hand_computed():
    truth = torch.zeros(2, 1, 8, 8)
    guess = torch.full((2, 1, 8, 8), 0.1)          # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert np.allclose(metrics.psnr(truth, guess), 20.0)


def test_psnr_clamps_to_unit_range_and_is_infinite_when_equal():
    truth = torch.ones(1, 1, 8, 8)
    assert math.isinf(metrics.psnr(truth, 2.0 * truth)[0])  # 2.0 is clamped to 1.0


def test_ssim_identical_is_one_and_constant_images_follow_the_formula():
    x = torch.rand(3, 1, 16, 16)
    assert np.allclose(metrics.ssim(x, x), 1.0)
    # constants a=0, b=0.1: only the luminance term differs from 1: C1 / (0.1^2 + C1), C1=(0.01)^2
    c1 = (0.01 * 1.0) ** 2
    s = metrics.ssim(torch.zeros(1, 1, 16, 16), torch.full((1, 1, 16, 16), 0.1))
    assert s[0] == pytest.approx(c1 / (0.1 ** 2 + c1), rel=1e-6)


def test_ssim_handles_colour_and_per_image_values():
    a = torch.rand(2, 3, 16, 16)
    b = a.clone()
    b[1] = torch.rand(3, 16, 16)
    s = metrics.ssim(a, b)
    assert s.shape == (2,) and s[0] == pytest.approx(1.0) and s[1] < 0.5


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metrics.ssim(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8))


def test_image_summary_and_identifiable_fraction():
    truth = torch.rand(4, 1, 16, 16)
    guess = truth.clone()
    guess[2:] = 1 - truth[2:]                     # two good, two inverted (SSIM < 0.5)
    s = metrics.image_summary(truth, guess)
    assert s["identifiable"] == 0.5 and s["n"] == 4
    per = metrics.ssim(truth, guess)
    assert s["ssim_mean"] == pytest.approx(per.mean())
    assert s["ssim_median"] == pytest.approx(np.median(per))


def test_mean_image_baseline_is_hand_computed():
    truth = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    base = metrics.mean_image_baseline(truth, torch.full((1, 8, 8), 0.5))
    assert base["psnr_mean"] == pytest.approx(10 * math.log10(1 / 0.25))  # 6.02 dB each


def test_match_order_recovers_a_permutation():
    truth = torch.rand(5, 1, 8, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    guess = truth[perm]
    order = metrics.match_order(truth, guess)
    assert torch.equal(guess[order], truth)


def test_label_accuracy_multiclass_and_binary():
    y = torch.tensor([0, 1, 2, 2])
    scores = torch.tensor([[3.0, 0, 0], [0, 1, 0], [0, 2, 1], [0, 0, 5]])
    assert metrics.label_accuracy(y, scores) == 0.75
    assert metrics.label_accuracy([0, 1, 1], [0.2, 0.9, 0.4]) == pytest.approx(2 / 3)


def test_label_auc_binary_hand_computed():
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) -> 3/4
    assert metrics.label_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    two_col = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert metrics.label_auc([0, 0, 1, 1], two_col) == pytest.approx(0.75)


def test_label_auc_multiclass_is_macro_one_vs_rest():
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    p = rng.random((30, 3))
    p /= p.sum(1, keepdims=True)
    ref = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert metrics.label_auc(y, p) == pytest.approx(ref)
    perfect = np.eye(3)[y]
    assert metrics.label_auc(y, perfect) == 1.0


def test_majority_baseline():
    assert metrics.majority_baseline([1, 2, 1, 1], [1, 1, 2]) == 0.75
