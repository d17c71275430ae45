"""Reconstruction grids: private inputs (top row) against the prior and attacks' reconstructions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from slsec.results import save_figure


def _hwc(img: np.ndarray) -> np.ndarray:
    """[C, H, W] in [0, 1] -> what imshow wants: [H, W] (grey) or [H, W, C]."""
    img = np.clip(img, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def _numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().float().numpy()
    a = np.asarray(a, dtype=np.float32)
    return a[:, None] if a.ndim == 3 else a


def reconstruction_grid(truth: Any, guess: Any, path: str | Path, title: str | None = None,
                        n: int = 16) -> Path:
    """Write a PNG: the first `n` originals on top, their reconstructions below; returns path."""
    return reconstruction_rows([("input", truth), ("attack", guess)], path, title=title, n=n)


def reconstruction_rows(rows: list[tuple[str, Any]], path: str | Path, title: str | None = None,
                        n: int = 16) -> Path:
    """Write a PNG with one labelled row per (label, images) pair, the same first `n` samples
    in every column (e.g. original / prior / undefended attack / defended attack).

    The rows are tiled into one mosaic (2 px gaps, light grey between tiles so that dark
    reconstructions stay visible as tiles) drawn with a single imshow: a figure of one axes
    per image took ~2.5 s to lay out and render, this takes a fraction of that."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [(label, _numpy(images)) for label, images in rows if images is not None]
    k = min([n] + [len(b) for _, b in batches])
    if k == 0 or len(batches) < 2:
        raise ValueError("reconstruction_grid needs at least one image pair")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = batches[0][1]
    h, w = t.shape[2], t.shape[3]
    gap = max(1, round(h / 14))
    rgb = t.shape[1] != 1
    r = len(batches)
    mosaic = np.full((r * (h + gap) - gap, k * (w + gap) - gap) + ((3,) if rgb else ()), 0.75,
                     np.float32)
    for i in range(k):
        for row, (_, batch) in enumerate(batches):
            y0, x0 = row * (h + gap), i * (w + gap)
            mosaic[y0:y0 + h, x0:x0 + w] = _hwc(batch[i])
    width = max(1.1 * k, 2.5) + 1.6
    fig, ax = plt.subplots(figsize=(width, 0.95 * r + (0.7 if title else 0.4)), dpi=100)
    ax.imshow(mosaic, cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([row * (h + gap) + h / 2 for row in range(r)], [lbl for lbl, _ in batches],
                  fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
