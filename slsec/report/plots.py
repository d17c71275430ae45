"""Reconstruction grids: private inputs (top row) against the prior and attacks' reconstructions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from slsec.report.results import save_figure


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


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend. Imported on first use (~0.4 s); a
    command may call it early, e.g. while it waits for its undefended twin, so that writing
    the report later does not pay for it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def reconstruction_rows(rows: list[tuple[str, Any]], path: str | Path, title: str | None = None,
                        n: int = 16) -> Path:
    """Write a PNG with one labelled row per (label, images) pair, the same first `n` samples
    in every column (e.g. original / prior / undefended attack / defended attack).

    The rows are tiled into one mosaic (2 px gaps, light grey between tiles so that dark
    reconstructions stay visible as tiles) drawn with a single imshow: a figure of one axes
    per image took ~2.5 s to lay out and render, this takes a fraction of that."""
    plt = pyplot()

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
                  fontsize=10)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def training_curves(curves: dict[str, list[dict[str, Any]]], path: str | Path,
                    title: str | None = None) -> Path | None:
    """Accuracy and loss against round and against wall-clock, one line per run (e.g. the
    defended run and its undefended twin, or every run of a comparison). None if no curve."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    from slsec.report.results import legend_outside

    curves = {k: c for k, c in curves.items() if c}
    if not curves:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), dpi=110, sharey="row")
    all_rounds = sorted({r["round"] for c in curves.values() for r in c})
    for label, curve in curves.items():
        rounds = [r["round"] for r in curve]
        wall = [r["wall_s"] for r in curve]
        for row, key in enumerate(("accuracy", "loss")):
            ys = [r[key] for r in curve]
            axes[row][0].plot(rounds, ys, marker="o", ms=4, label=label)
            axes[row][1].plot(wall, ys, marker="o", ms=4, label=label)
    for row, name in enumerate(("test accuracy", "test loss")):
        axes[row][0].set_ylabel(name)
        for col, xname in enumerate(("round", "wall-clock s (training)")):
            ax = axes[row][col]
            ax.set_xlabel(xname)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=9)
            if col == 0 and len(all_rounds) <= 12:
                ax.set_xticks(all_rounds)
            elif col == 0:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            else:
                ax.set_xlim(left=0)
    for ax in axes[0]:
        ax.set_title(f"accuracy vs {ax.get_xlabel().split(' (')[0]}", fontsize=10)
    for ax in axes[1]:
        ax.set_title(f"loss vs {ax.get_xlabel().split(' (')[0]}", fontsize=10)
    legend_outside(axes[0][1], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    plt.close(fig)
    return path
