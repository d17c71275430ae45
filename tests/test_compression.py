"""Compression at the cut (top-k, b-bit quantisation) and sparsified returned gradients: the
maps, their public mechanisms, and the adaptive inversion that knows them (a defense that only
rounds or drops small coordinates must not look safe)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from slsec import metrics
from slsec.attacks.inverse import CutChannel
from slsec.attacks.inversion import Inversion
from slsec.data import load_dataset
from slsec.data.models import build_model
from slsec.defenses.base import DEFENSES, Defense
from slsec.defenses.compression import Compress, compress
from slsec.defenses.dp_cut import DPCut
from slsec.defenses.grad_sparsify import GradSparsify
from slsec.errors import UserError
from slsec.threat import CutCompression, GradientSparsification, View
from conftest import train_epoch


def test_maps_keep_the_top_fraction_and_quantise_each_row():
    h = torch.randn(4, 3, 5, 5)
    out = compress(h, keep=0.2)
    kept = (out.flatten(1) != 0).sum(1)
    assert (kept == 15).all()   # ceil(0.2 * 75)
    # the kept ones are each row's largest magnitudes, unchanged
    flat, o = h.flatten(1), out.flatten(1)
    for r in range(4):
        top = flat[r].abs().topk(15).indices
        assert torch.equal(o[r, top], flat[r, top])
    q = compress(h, bits=2).flatten(1)
    assert all(len(row.unique()) <= 4 for row in q)
    assert (q - h.flatten(1)).abs().max() <= (h.flatten(1).amax(1) - h.flatten(1).amin(1)).max() / 6 + 1e-6
    g = GradSparsify(keep=0.1).cut_grad(torch.randn(8, 100), gen=None)
    assert ((g != 0).sum(1) == 10).all()


def test_training_passes_the_gradient_through_the_rounding():
    h = torch.randn(3, 10, requires_grad=True)
    Compress(bits=1).smashed(h, train=True, gen=None).sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))


def test_declared_and_public():
    assert DEFENSES.get("compress") is Compress and DEFENSES.get("grad-sparsify") is GradSparsify
    assert Compress(keep=0.5, bits=4).public_mechanism() == CutCompression("compress", 0.5, 4)
    assert GradSparsify(keep=0.2).public_mechanism() == GradientSparsification("grad-sparsify", 0.2)
    ch = CutChannel.from_public({"defenses": [CutCompression("compress", 0.5, 4)]})
    h = torch.randn(6, 20)
    assert torch.equal(ch.forward(h), Compress(keep=0.5, bits=4).smashed(h, train=False, gen=None))
    for bad in (dict(keep=0.0), dict(keep=1.5), dict(bits=-1), dict(bits=2.5)):
        with pytest.raises(UserError):
            Compress(**bad)
    with pytest.raises(UserError):
        GradSparsify(keep=0)


@pytest.fixture(scope="module")
def world() -> SimpleNamespace:
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    perm = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_model("cnn")
    train_epoch(model, data.train.subset(perm[500:]))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return SimpleNamespace(model=model, probe=data.test.inputs[:8])


def _whitebox(world, cut: str, defense: Defense | None) -> float:
    head = world.model.split([cut])[0]
    with torch.no_grad():
        h = head({"x": world.probe})["x"]
        obs = defense.smashed(h, train=False, gen=None) if defense else h
    view = View(role="server", protocol="vanilla", smashed=[{"x": obs}], parts={"head": head},
                knowledge=frozenset({"architecture", "head_weights"}),
                build_model=lambda: build_model("cnn"), cuts=(cut,),
                public={"input_shape": (1, 28, 28), "num_classes": 10,
                        "defenses": _mechanisms(defense)})
    images = Inversion(method="whitebox", iterations=200).run(view).images
    return metrics.image_summary(world.probe, images)["ssim_mean"]


def _mechanisms(defense) -> list:
    if defense is None:
        return []
    m = defense.public_mechanism()
    return m if isinstance(m, list) else [m]


def test_rounding_and_dropping_do_not_look_safe_against_the_adaptive_attack(world):
    """2-bit quantisation (4 levels per row) and keeping 10% of the coordinates at conv1: the
    white-box inversion that applies the public map to its own guess still reconstructs."""
    clean = _whitebox(world, "conv1", None)
    for d in (Compress(bits=2), Compress(keep=0.1)):
        ssim = _whitebox(world, "conv1", d)
        print(f"conv1 whitebox SSIM: undefended {clean:.3f}, {d.public_mechanism()} {ssim:.3f}")
        assert ssim >= 0.7 and ssim >= clean - 0.2


def test_rescaling_does_not_look_safe_against_the_adaptive_attack(world):
    """Clipping without noise (`--defense dp --sigma 0` with a small clip) only rescales each
    smashed row, here to 1/20 of the median row norm, so every row is shrunk; alone and
    followed by 2-bit rounding, the white-box inversion that models the public clip still
    reconstructs at conv1."""
    head = world.model.split(["conv1"])[0]
    with torch.no_grad():
        median = DPCut.suggest_clip(head({"x": world.probe})["x"])
    clean = _whitebox(world, "conv1", None)
    rescale = DPCut(sigma=0.0, clip=median / 20)
    for d in (rescale, _Chain(rescale, Compress(bits=2))):
        ssim = _whitebox(world, "conv1", d)
        print(f"conv1 whitebox SSIM: undefended {clean:.3f}, {d.public_mechanism()} {ssim:.3f}")
        assert ssim >= 0.7 and ssim >= clean - 0.2


class _Chain:
    """Two cut defenses applied in order (as `--defense dp,compress` applies them)."""

    def __init__(self, *parts: Defense) -> None:
        self.parts = parts

    def smashed(self, h: torch.Tensor, *, train: bool, gen: torch.Generator | None) -> torch.Tensor:
        for p in self.parts:
            h = p.smashed(h, train=train, gen=gen)
        return h

    def public_mechanism(self) -> list:
        return [p.public_mechanism() for p in self.parts]
