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


# ------------------------------------------------------------ leakage beyond the prior, re-id

def test_gain_over_prior_is_per_sample_attack_minus_prior():
    truth = torch.rand(4, 1, 16, 16)
    prior = torch.full_like(truth, 0.5)
    attack = truth.clone()
    attack[2:] = 0.5                                    # two exact, two no better than the prior
    g = metrics.gain_over_prior(truth, attack, prior)
    sp = metrics.ssim(truth, prior)
    assert g["attack_ssim_mean"] == pytest.approx(float(np.mean([1, 1, sp[2], sp[3]])))
    assert g["prior_ssim_mean"] == pytest.approx(float(sp.mean()))
    assert g["ssim_gain_mean"] == pytest.approx(float(((1 - sp[:2]).sum()) / 4))
    # PSNR gain: the exact copies have PSNR inf and are left out; the others gain 0 dB
    assert g["psnr_gain_mean"] == pytest.approx(0.0)
    same = metrics.gain_over_prior(truth, prior, prior)
    assert same["ssim_gain_mean"] == 0.0 and same["psnr_gain_mean"] == 0.0


def test_reidentification_exact_guesses_are_found_and_chance_is_k_over_n():
    gen = torch.Generator().manual_seed(0)
    cands = torch.rand(50, 1, 8, 8, generator=gen)
    idx = torch.arange(10)
    r = metrics.reidentification(cands, cands[:10], idx)
    assert r["reid_top1"] == 1.0 and r["reid_top5"] == 1.0 and r["reid_candidates"] == 50
    assert r["reid_chance_top1"] == pytest.approx(1 / 50)
    assert r["reid_chance_top5"] == pytest.approx(5 / 50)
    # guessing another record exactly: the true one is never first
    wrong = metrics.reidentification(cands, cands[10:20], idx)
    assert wrong["reid_top1"] == 0.0
    # a constant guess ties every candidate: random tie-breaking gives exactly chance
    flat = metrics.reidentification(cands, torch.full((10, 1, 8, 8), 0.3), idx)
    assert flat["reid_top1"] == pytest.approx(1 / 50) and flat["reid_top5"] == pytest.approx(5 / 50)


def test_reidentification_ranks_by_pixel_correlation():
    """Pearson correlation: a contrast-reduced, brightened copy still ranks its original first."""
    gen = torch.Generator().manual_seed(1)
    cands = torch.rand(30, 1, 8, 8, generator=gen)
    guess = 0.2 + 0.3 * cands[[3, 7]]
    r = metrics.reidentification(cands, guess, torch.tensor([3, 7]))
    assert r["reid_top1"] == 1.0
    # the top-5 rule with g more similar and t ties: clip((k - g) / (t + 1), 0, 1)
    two = torch.stack([cands[0], cands[0]])            # candidates 0 and 1 identical
    both = torch.cat([two, cands[2:]])
    tie = metrics.reidentification(both, cands[:1], torch.tensor([0]))
    assert tie["reid_top1"] == pytest.approx(0.5) and tie["reid_top5"] == 1.0
