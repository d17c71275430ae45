"""Reconstruction grids: private inputs (top row) against an attack's reconstructions (bottom)."""
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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, g = _numpy(truth), _numpy(guess)
    k = min(n, len(t), len(g))
    if k == 0:
        raise ValueError("reconstruction_grid needs at least one image pair")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, k, figsize=(max(1.1 * k, 2.5), 2.6 if title else 2.3),
                             squeeze=False, dpi=100)
    grey = t.shape[1] == 1
    for i in range(k):
        for row, batch in enumerate((t, g)):
            ax = axes[row, i]
            ax.imshow(_hwc(batch[i]), cmap="gray" if grey else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("attack", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
