"""Model inversion at the cut: the attack reads only its View and reaches the measured targets.

Setting (as in the acceptance numbers): embedded MNIST, the CNN trained one epoch (Adam 1e-3,
batch 32) on 3,500 training images; 500 other training images are the public auxiliary set;
the attack inverts 64 test images. Seeds are fixed.
"""
from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from slsec import metrics
from slsec.attacks.base import ATTACKS
from slsec.attacks.inversion import CutChannel, Inversion, Decoder
from slsec.data import load_dataset
from slsec.defenses.dp_cut import clip_rows
from slsec.errors import UserError
from slsec.data.models import build_model
from slsec.threat import CutNoise, Regularizer, View
from conftest import train_epoch

ALL = frozenset({"architecture", "head_weights", "aux_data", "query_head"})


class Vault:
    """Stands where private or unheld things would be: any use raises (and is recorded)."""

    def __init__(self, what: str) -> None:
        object.__setattr__(self, "_what", what)
        object.__setattr__(self, "touched", False)

    def _deny(self, *_: Any, **__: Any) -> Any:
        object.__setattr__(self, "touched", True)
        raise AssertionError(f"the attack touched {object.__getattribute__(self, '_what')}")

    def __getattr__(self, name: str) -> Any:
        return self._deny()

    __call__ = __getitem__ = __iter__ = __len__ = __bool__ = __array__ = _deny

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: D105
        raise AssertionError("the attack used a private tensor")


@pytest.fixture(scope="module")
def world() -> SimpleNamespace:
    """The trained CNN, the public aux split, the 64 private probe images, the mean image."""
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(data.train), generator=g)
    aux, private = data.train.subset(perm[:500]), data.train.subset(perm[500:])
    torch.manual_seed(0)
    model = build_model("cnn")
    train_epoch(model, private)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return SimpleNamespace(model=model, aux=aux, probe=data.test.inputs[:64],
                           mean=private.inputs.mean(0))


def make_view(w: SimpleNamespace, cut: str, x: torch.Tensor, knowledge: frozenset[str],
              defenses: list | None = None, noise_seed: int = 1) -> tuple[View, dict]:
    """What the server of a vanilla run holds: smashed data (two messages) and, per knowledge,
    the head, the aux split, head queries. Things it does not hold are Vaults."""
    head = w.model.split([cut])[0]
    channel = CutChannel.from_public({"defenses": defenses or []})
    with torch.no_grad():
        h = channel.sample(head({"x": x})["x"], torch.Generator().manual_seed(noise_seed))
    vaults = {"head": Vault("the head"), "aux": Vault("the aux data"),
              "query": Vault("head queries")}

    def query(feats: dict) -> dict:
        with torch.no_grad():
            return head(feats)

    half = len(h) // 2
    view = View(role="server", protocol="vanilla",
                smashed=[{"x": h[:half]}, {"x": h[half:]}],
                parts={"head": head} if "head_weights" in knowledge else {"head": vaults["head"]},
                knowledge=knowledge, build_model=lambda: build_model("cnn"), cuts=(cut,),
                aux=w.aux if "aux_data" in knowledge else vaults["aux"],
                query_head=query if "query_head" in knowledge else vaults["query"],
                public={"input_shape": (1, 28, 28), "num_classes": 10,
                        "defenses": defenses or []})
    return view, vaults


def attack(w, cut, method, knowledge=ALL, n=64, defenses=None, **params):
    x = w.probe[:n]
    view, vaults = make_view(w, cut, x, knowledge, defenses)
    t0 = time.process_time()
    guess = Inversion(method=method, **params).run(view)
    cpu = time.process_time() - t0
    assert not any(v.touched for v in vaults.values())
    assert guess.images.shape == x.shape
    assert float(guess.images.min()) >= 0 and float(guess.images.max()) <= 1
    return metrics.image_summary(x, guess.images), cpu


# ------------------------------------------------------------------ declarations and parts

def test_registered_with_roles_and_methods():
    cls = ATTACKS.get("inversion")
    assert cls is Inversion and cls.kind == "inversion"
    assert set(cls.roles) == {"vanilla", "ushaped", "splitfed", "splitfed-async"}
    assert all(r == "server" for r in cls.roles.values())
    with pytest.raises(UserError):
        cls.role_for("fedavg")
    assert cls.pick_method(ALL) == "whitebox"
    assert cls.pick_method(frozenset({"architecture", "aux_data", "query_head"})) == "decoder"
    assert cls.pick_method(frozenset({"architecture"})) == "unsplit"
    with pytest.raises(UserError):
        cls.pick_method(frozenset({"architecture"}), "whitebox")


def test_channel_reads_the_public_dp_mechanism_and_clips_like_the_defense():
    ch = CutChannel.from_public({"defenses": [Regularizer("nopeek", weight=0.5),
                                              CutNoise("dp", clip=2.0, sigma=0.5,
                                                       mechanism="laplace")]})
    assert (ch.clip, ch.noise_std, ch.mechanism) == (2.0, 1.0, "laplace")
    h = torch.randn(5, 3, 4, 4) * 3
    assert torch.allclose(ch.forward(h), clip_rows(h, 2.0))
    assert CutChannel.from_public({}).forward(h) is h
    inf = CutChannel.from_public({"defenses": [CutNoise("dp", clip=math.inf, sigma=0.1)]})
    assert inf.clip is None and inf.noise_std == pytest.approx(0.1)


def test_match_loss_is_scale_invariant():
    ch = CutChannel()
    h = torch.rand(4, 8)
    pred = h + 0.1 * torch.randn(4, 8)
    assert torch.allclose(ch.loss(pred, h), ch.loss(10 * pred, 10 * h))


@pytest.mark.parametrize("cut", ["conv1", "pool1", "conv2", "pool2", "fc1"])
def test_decoder_maps_every_cut_back_to_the_input_shape(cut):
    head = build_model("cnn").split([cut])[0]
    h = head({"x": torch.rand(2, 1, 28, 28)})["x"]
    assert Decoder(tuple(h.shape[1:]), (1, 28, 28), 8)(h).shape == (2, 1, 28, 28)


def test_every_method_uses_only_its_view(world):
    """Short runs of each method with every unheld item behind a Vault (the private inputs
    never enter the View: only smashed data computed from them does)."""
    for method, knowledge, params in [
            ("whitebox", frozenset({"architecture", "head_weights"}), {"iterations": 150}),
            ("decoder", frozenset({"architecture", "aux_data", "query_head"}), {"steps": 150}),
            ("unsplit", frozenset({"architecture"}), {"rounds": 5})]:
        s, _ = attack(world, "conv1", method, knowledge, n=8, **params)
        assert s["ssim_mean"] > 0.3, (method, s)


def test_whitebox_quick_at_conv1(world):
    s, _ = attack(world, "conv1", "whitebox", n=16, iterations=200)
    assert s["ssim_mean"] >= 0.9


def test_whitebox_stops_once_converged_without_losing_quality(world):
    """The early stop (objective gains < 0.5% per 50 iterations) ends a converged fit well
    before the budget and lands where the full budget does; tol=0 runs the whole budget."""
    x = world.probe[:16]
    view, _ = make_view(world, "pool1", x, ALL)
    early = Inversion(method="whitebox").run(view)
    full = Inversion(method="whitebox", tol=0.0).run(view)
    assert early.info["iterations_run"][0] < 600 == full.info["iterations_run"][0]
    s_early = metrics.image_summary(x, early.images)["ssim_mean"]
    s_full = metrics.image_summary(x, full.images)["ssim_mean"]
    print(f"pool1: early stop after {early.info['iterations_run']} iterations SSIM {s_early:.4f}, "
          f"600 iterations {s_full:.4f}")
    assert s_early >= s_full - 0.01 and s_full >= 0.9


def test_adaptive_clipping_quick(world):
    """Clipping to half the typical norm costs the adaptive whitebox attack almost nothing."""
    head = world.model.split(["conv1"])[0]
    c = float(head({"x": world.probe})["x"].flatten(1).norm(dim=1).median()) / 2
    clean, _ = attack(world, "conv1", "whitebox", n=16, iterations=300)
    clipped, _ = attack(world, "conv1", "whitebox", n=16, iterations=300,
                        defenses=[CutNoise("dp", clip=c, sigma=0.0, mechanism="gaussian")])
    assert clipped["ssim_mean"] >= clean["ssim_mean"] - 0.05


# ------------------------------------------------------------------ acceptance (slow)

@pytest.mark.slow
def test_whitebox_conv1_reaches_ssim_090_in_time(world):
    s, cpu = attack(world, "conv1", "whitebox")
    print(f"whitebox conv1: {s}, cpu {cpu:.1f}s")
    assert s["ssim_mean"] >= 0.90
    assert cpu < 60


@pytest.mark.slow
def test_adaptive_clipping_costs_at_most_005_ssim(world):
    head = world.model.split(["conv1"])[0]
    c = float(head({"x": world.probe})["x"].flatten(1).norm(dim=1).median()) / 2
    clean, _ = attack(world, "conv1", "whitebox")
    clipped, cpu = attack(world, "conv1", "whitebox",
                          defenses=[CutNoise("dp", clip=c, sigma=0.0, mechanism="gaussian")])
    print(f"clip C={c:.2f}: clean {clean['ssim_mean']:.4f} clipped {clipped['ssim_mean']:.4f}")
    assert clipped["ssim_mean"] >= clean["ssim_mean"] - 0.05
    assert cpu < 60


@pytest.mark.slow
def test_decoder_conv1_reaches_ssim_060_in_time(world):
    s, cpu = attack(world, "conv1", "decoder",
                    frozenset({"architecture", "aux_data", "query_head"}))
    print(f"decoder conv1: {s}, cpu {cpu:.1f}s")
    assert s["ssim_mean"] >= 0.60
    assert cpu < 60


@pytest.mark.slow
def test_unsplit_conv1_beats_the_mean_image_in_time(world):
    s, cpu = attack(world, "conv1", "unsplit", frozenset({"architecture"}))
    base = metrics.mean_image_baseline(world.probe, world.mean)
    print(f"unsplit conv1: {s}, baseline {base}, cpu {cpu:.1f}s")
    assert s["ssim_mean"] > base["ssim_mean"] and s["psnr_mean"] > base["psnr_mean"]
    assert cpu < 60
