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
    """Mean/median SSIM and PSNR of `guess` against `truth`, and the identifiable fraction."""
    s, p = ssim(truth, guess), psnr(truth, guess)
    return {"ssim_mean": float(s.mean()), "ssim_median": float(np.median(s)),
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
