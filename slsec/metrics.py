"""Privacy metrics as pure functions: image reconstruction quality and label inference."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

IDENTIFIABLE_SSIM = 0.5  # a reconstruction with SSIM above this counts as identifiable


def _images(a: Any) -> np.ndarray:
    """[N, C, H, W] (or [N, H, W]) tensor/array -> float64 numpy clamped to [0, 1]."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {a.shape}")
    return a


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _images(a), _images(b)
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {a.shape} vs {b.shape}")
    return a, b


def ssim(a: Any, b: Any) -> np.ndarray:
    """Per-image SSIM of two [N, C, H, W] batches in [0, 1] (data_range 1)."""
    a, b = _pair(a, b)
    out = np.empty(len(a))
    for i in range(len(a)):
        if a.shape[1] == 1:
            out[i] = structural_similarity(a[i, 0], b[i, 0], data_range=1.0)
        else:
            out[i] = structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0)
    return out


def psnr(a: Any, b: Any) -> np.ndarray:
    """Per-image PSNR in dB of two [N, C, H, W] batches in [0, 1] (data_range 1; inf if equal)."""
    a, b = _pair(a, b)
    with np.errstate(divide="ignore"):
        return np.array([peak_signal_noise_ratio(a[i], b[i], data_range=1.0)
                         for i in range(len(a))])


def image_summary(truth: Any, guess: Any) -> dict[str, float]:
    """Mean/median SSIM and PSNR of `guess` against `truth`, the mean per-pixel squared error,
    and the identifiable fraction."""
    s, p = ssim(truth, guess), psnr(truth, guess)
    t, g = _pair(truth, guess)
    return {"ssim_mean": float(s.mean()), "ssim_median": float(np.median(s)),
            "mse_mean": float(np.mean((t - g) ** 2)),
            "psnr_mean": float(p.mean()), "psnr_median": float(np.median(p)),
            "identifiable": float((s > IDENTIFIABLE_SSIM).mean()), "n": int(len(s))}


def mean_image_baseline(truth: Any, reference_mean: Any) -> dict[str, float]:
    """`image_summary` of guessing the dataset mean image ([C, H, W]) for every sample."""
    t = _images(truth)
    m = _images(np.asarray(reference_mean.detach().cpu() if isinstance(reference_mean, torch.Tensor)
                           else reference_mean)[None])
    return image_summary(t, np.broadcast_to(m, t.shape))


def match_order(truth: Any, guess: Any) -> np.ndarray:
    """Permutation `perm` so that guess[perm] best matches truth (max total PSNR, Hungarian).

    Gradient inversion of a batch recovers the images in no particular order."""
    t, g = _pair(truth, guess)
    mse = ((t[:, None] - g[None]) ** 2).reshape(len(t), len(g), -1).mean(-1)
    cost = 10 * np.log10(np.maximum(mse, 1e-12))  # = -PSNR
    _, cols = linear_sum_assignment(cost)
    return cols


def match_labels(y_true: Any, scores: Any) -> np.ndarray:
    """Permutation `perm` so that scores[perm] best matches the true labels of one unordered
    batch: the most hard labels right (the recovered multiset's overlap with the true one),
    then the largest score at the true label (Hungarian).

    Gradient inversion of a batch recovers its labels as a multiset in no order; scoring them
    in their original order would count a right multiset as wrong."""
    y, s = _labels(y_true), _scores(scores)
    if s.ndim == 1:   # binary: one score per sample, P(label 1)
        s = np.stack([1 - s, s], 1)
    hit = (s.argmax(1)[None, :] == y[:, None]).astype(np.float64)   # [truth i, guess j]
    at_true = s[:, y].T                                              # score of guess j at y_i
    span = np.ptp(at_true) if at_true.size else 0.0
    tie = 0.5 / max(len(y), 1) * (at_true - at_true.min()) / (span or 1.0)   # sums to < 1 hit
    _, cols = linear_sum_assignment(-(hit + tie))
    return cols


def _scores(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64)


def _labels(y: Any) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    return np.asarray(y).astype(np.int64).ravel()


def label_accuracy(y_true: Any, scores: Any) -> float:
    """Fraction of samples whose highest score is the true label ([N] scores: binary, > 0.5)."""
    y, s = _labels(y_true), _scores(scores)
    pred = (s > 0.5).astype(np.int64) if s.ndim == 1 else s.argmax(1)
    return float((pred == y).mean())


def label_auc(y_true: Any, scores: Any) -> float:
    """ROC AUC: binary from [N] or [N, 2] scores; multi-class macro one-vs-rest from [N, K]."""
    from sklearn.metrics import roc_auc_score   # ~1 s to import: only label attacks need it

    y, s = _labels(y_true), _scores(scores)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1] - s[:, 0]
    if s.ndim == 1:
        return float(roc_auc_score(y, s))
    k = s.shape[1]
    present = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
    if not present:
        raise ValueError("label AUC needs at least two classes among the true labels")
    # macro one-vs-rest over the classes present (sklearn's multi_class='ovr' needs all K present)
    return float(np.mean([roc_auc_score(y == c, s[:, c]) for c in present]))


def majority_baseline(y_true: Any, prior_labels: Any) -> float:
    """Accuracy of always guessing the most common label of `prior_labels` (public prior)."""
    y, prior = _labels(y_true), _labels(prior_labels)
    return float((y == np.bincount(prior).argmax()).mean())


def gain_over_prior(truth: Any, attack: Any, prior: Any) -> dict[str, float]:
    """Leakage beyond the attacker's prior: per-sample attack minus prior SSIM and PSNR,
    averaged (`ssim_gain_mean`, `psnr_gain_mean`), beside both means."""
    sa, sp = ssim(truth, attack), ssim(truth, prior)
    pa, pp = psnr(truth, attack), psnr(truth, prior)
    finite = np.isfinite(pa) & np.isfinite(pp)   # an exact copy has PSNR inf: no finite gain
    return {"attack_ssim_mean": float(sa.mean()), "prior_ssim_mean": float(sp.mean()),
            "ssim_gain_mean": float((sa - sp).mean()),
            "attack_psnr_mean": float(pa.mean()), "prior_psnr_mean": float(pp.mean()),
            "psnr_gain_mean": float((pa - pp)[finite].mean()) if finite.any() else float("nan")}


def _standardised(a: np.ndarray) -> np.ndarray:
    """Rows zero-mean, unit-norm (a constant row stays all zeros)."""
    a = a - a.mean(1, keepdims=True)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, n, out=np.zeros_like(a), where=n > 1e-12)


def reidentification(candidates: Any, guesses: Any, true_index: Any,
                     ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Re-identification: rank every candidate by its similarity to each guess and report how
    often the true record (candidates[true_index[i]] for guesses[i]) is among the top k.

    Similarity: Pearson correlation of the pixels (normalised cross-correlation), one matrix
    product for all pairs. Ties are broken at random in expectation: with g candidates more
    similar and t others exactly as similar as the true one, top-k succeeds with probability
    clip((k - g) / (t + 1), 0, 1). Returns `reid_top{k}` and `reid_chance_top{k}` = k/N."""
    c = _images(candidates).reshape(len(candidates), -1)
    g = _images(guesses).reshape(len(guesses), -1)
    idx = np.asarray(true_index, dtype=np.int64)
    sim = _standardised(g) @ _standardised(c).T                  # [n_guess, N]
    sim = np.round(sim, 9)                                       # float noise is not a tie
    true = sim[np.arange(len(g)), idx][:, None]
    greater = (sim > true).sum(1)
    ties = (sim == true).sum(1) - 1
    n = c.shape[0]
    out: dict[str, float] = {"reid_candidates": n}
    for k in ks:
        p = np.clip((k - greater) / (ties + 1), 0.0, 1.0)
        out[f"reid_top{k}"] = float(p.mean())
        out[f"reid_chance_top{k}"] = min(1.0, k / n)
    return out
