"""Every figure of the suite can be written as PNG, SVG and PDF (--plot-format)."""
from __future__ import annotations

import math

import pytest
import torch

from slsec.report import results
from slsec.errors import UserError


@pytest.fixture
def all_formats():
    before = list(results.FIGURE_FORMATS)
    results.set_figure_formats("png,svg,pdf")
    yield
    results.FIGURE_FORMATS[:] = before


def _check(path) -> None:
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in path.with_suffix(".svg").read_bytes()[:2000]
    assert path.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_every_figure_as_svg_and_pdf(tmp_path, all_formats) -> None:
    from slsec.report.frontier import frontier_plot
    from slsec.report.plots import reconstruction_grid, training_curves
    from slsec.study.review import leakage_plot

    reconstruction_grid(torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28), tmp_path / "rec.png",
                        title="t")
    _check(tmp_path / "rec.png")
    curve = [{"round": i, "accuracy": 0.5 + i / 10, "loss": 1 / i, "wall_s": 2.0 * i,
              "bytes": 1e6 * i} for i in (1, 2, 3)]
    training_curves({"undefended": curve, "dp": curve}, tmp_path / "curves.png")
    _check(tmp_path / "curves.png")
    rows = [{"accuracy": a, "attack_ssim_mean": s, "cut": c, "sigma": sg,
             "baseline_ssim_mean": 0.17, "undefended_accuracy": 0.9,
             "undefended_attack_ssim_mean": 1.0 if c == "conv1" else 0.7}
            for a, s, c, sg in [(0.9, 0.9, "conv1", 0.0), (0.5, 0.3, "conv1", 0.1),
                                (0.95, 0.6, "fc1", 0.0), (0.9, 0.2, "fc1", 0.5)]]
    frontier_plot(rows, "attack_ssim_mean", "attack SSIM", tmp_path / "frontier.png",
                  axes=["cut", "sigma"], color_by="cut")
    _check(tmp_path / "frontier.png")
    leakage_plot([{"protocol": "vanilla", "cut": c, "attack_ssim_mean": s,
                   "baseline_ssim_mean": 0.17, "recommended": c == "fc1"}
                  for c, s in (("conv1", 1.0), ("fc1", 0.7))] +
                 [{"protocol": "ushaped", "cut": "conv1", "attack_ssim_mean": 0.9,
                   "baseline_ssim_mean": math.nan}], tmp_path / "leak.png")
    _check(tmp_path / "leak.png")


def test_plot_format_is_validated() -> None:
    before = list(results.FIGURE_FORMATS)
    try:
        assert results.set_figure_formats("svg") == ["png", "svg"]
        with pytest.raises(UserError, match="--plot-format: unknown format 'jpg'"):
            results.set_figure_formats("png,jpg")
    finally:
        results.FIGURE_FORMATS[:] = before
