"""Colour end to end: a CIFAR-10 binary batch (the official layout, made-up pixels, written by
tests/test_fashion_cifar.py's helper) through `--dataset cifar10 --data-root` with the CNN and
ResNet-18; three-channel reconstructions from the white-box and decoder inversions, FORA, FSHA
and the prior; SSIM/PSNR over three channels; `images:FOLDER` with RGB files; the grid in
colour. Small settings: the whole file runs in well under a minute on 2 cores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import slsec
from slsec import metrics
from slsec.cli import main
from test_fashion_cifar import write_cifar_bin

SMALL = dict(aux_size=60, probe_size=4, attack_iters=15, rounds=1, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar_bin(tmp_path_factory.mktemp("cifar"), n_train=40, n_test=20)


def _check_colour(r, method: str) -> None:
    assert r.metrics["attack_method"] == method
    assert r.images is not None and r.images.shape == (4, 3, 32, 32), r.images
    assert r.inputs.shape == (4, 3, 32, 32)
    # the three channels are reconstructed, not one grey plane copied three times
    assert float((r.images[:, 0] - r.images[:, 1]).abs().mean()) > 1e-3
    s = metrics.ssim(r.inputs, r.images)
    assert r.metrics["attack_ssim_mean"] == pytest.approx(float(s.mean()), abs=1e-6)
    assert np.isfinite(r.metrics["prior_ssim_mean"]) and np.isfinite(r.metrics["attack_psnr_mean"])


@pytest.mark.parametrize("model,attack,method", [
    ("cnn", "inversion", "whitebox"), ("resnet18", "inversion", "whitebox"),
    ("cnn", "inversion", "decoder"), ("cnn", "inversion", "prior"),
    ("cnn", "fora", "fora"), ("cnn", "hijack", "fsha")])
def test_colour_attacks_reconstruct_three_channels(cifar_root, model, attack, method):
    r = slsec.evaluate(dataset="cifar10", data_root=str(cifar_root), model=model, attack=attack,
                       method=method, **SMALL)
    _check_colour(r, method)
    if method == "whitebox":   # undefended white-box at conv1 is near exact in colour too
        assert r.metrics["attack_ssim_mean"] > 0.9, r.metrics["attack_ssim_mean"]


def test_ssim_psnr_weigh_every_channel():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, 2] = 1 - y[:, 2]        # only the blue plane is wrong
    assert metrics.ssim(x, y).max() < 0.8 and metrics.psnr(x, y).max() < 15
    assert metrics.ssim(x, x).min() == pytest.approx(1.0)


def test_cli_colour_grid_and_rgb_image_folder(cifar_root, tmp_path):
    from PIL import Image
    code = main(["evaluate", "--dataset", "cifar10", "--data-root", str(cifar_root), "--model",
                 "cnn", "--attack", "inversion", "--aux-size", "60", "--probe-size", "4",
                 "--attack-iters", "10", "--out", str(tmp_path), "--run-id", "c"])
    assert code == 0
    grid = np.asarray(Image.open(tmp_path / "c" / "reconstructions.png").convert("RGB")).astype(int)
    # a colour grid: many pixels whose R, G, B differ (a grey grid has R == G == B everywhere)
    assert (np.abs(grid[..., 0] - grid[..., 2]) > 30).mean() > 0.05
    # images:FOLDER with RGB PNGs, one sub-folder per class
    d = slsec.data.load_dataset("cifar10", data_root=cifar_root)
    folder = tmp_path / "imgs"
    for i in range(60):
        c = int(d.train.y[i])
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        arr = (d.train.inputs[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr, "RGB").save(folder / f"class{c}" / f"{i}.png")
    r = slsec.evaluate(dataset=f"images:{folder}", model="cnn", attack="inversion",
                       method="whitebox", aux_size=10, probe_size=4, attack_iters=15)
    assert r.images.shape[1] == 3 and r.metrics["attack_ssim_mean"] > 0.9
