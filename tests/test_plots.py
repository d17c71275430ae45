"""reconstructions.png: original / prior / undefended attack / defended attack, labelled."""
from __future__ import annotations

from pathlib import Path

import torch

from slsec.cli.commands import grid_rows
from slsec.run.result import Reconstructions


def test_grid_has_a_labelled_row_per_guess_and_dark_tiles_stay_visible(tmp_path: Path, monkeypatch):
    import slsec.report.plots as plots
    seen = {}
    real = plots.reconstruction_rows

    def spy(rows, path, title=None, n=16):
        seen["labels"] = [label for label, _ in rows]
        return real(rows, path, title=title, n=n)
    monkeypatch.setattr(plots, "reconstruction_rows", spy)
    truth = torch.rand(8, 1, 28, 28)
    result = {"config": {"defense": ["dp"]},
              "metrics": {"attack_method": "prior", "attack_ssim_mean": 0.47,
                          "prior_ssim_mean": 0.47, "prior_label_source": "held"}}
    result["undefended"] = {"metrics": {"attack_method": "whitebox", "attack_ssim_mean": 1.0}}
    shown = Reconstructions(truth, torch.zeros(8, 1, 28, 28), torch.full((8, 1, 28, 28), 0.3))
    path = tmp_path / "reconstructions.png"
    grid_rows(path, result, shown, {"images": truth.clone()})
    assert seen["labels"] == ["original", "prior: held label\nSSIM 0.47",
                              "undefended: whitebox\nSSIM 1.00", "dp: prior\nSSIM 0.47"]
    import matplotlib.image
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 200          # four rows of tiles
    # an all-black guess row is still a row of separate tiles on a grey background
    grey = (abs(img[..., :3] - 0.75) < 0.05).all(-1)
    assert grey.any()
