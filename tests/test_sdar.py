"""SDAR (`--attack sdar`, Zhu et al. NDSS 2025): a simulator of the head and a decoder, both
regularised adversarially against the observed smashed data, for a server holding the
architecture and aux data only. The same holdings checks as FORA's (`test_fora.py`)."""
from __future__ import annotations

import json

import pytest
import torch

from slsec import metrics
from slsec.attacks import inversion
from slsec.attacks.base import ATTACKS
from slsec.attacks.sdar import Sdar
from slsec.cli import main
from slsec.data import Split
from slsec.errors import UserError
from slsec.threat import CutNoise
from test_fora import KNOW, server_view, world  # noqa: F401  (the fixture)


def test_registered_as_an_honest_server_inversion():
    cls = ATTACKS.get("sdar")
    assert cls is Sdar and cls.kind == "inversion" and not cls.malicious
    assert cls.pick_method(KNOW) == "sdar" and set(cls.roles) == set(ATTACKS.get("fora").roles)
    with pytest.raises(UserError, match="no method fits"):
        cls.pick_method(frozenset({"architecture"}))


def test_uses_only_aux_data_and_observations_poisoned_aux(world):  # noqa: F811
    """Stamped aux images: the reconstructions of the private probes carry the stamp; the head
    and head queries (Vaults) stay untouched; the images beat the mean image at pool1."""
    _, aux, probe = world
    stamped = aux.inputs.clone()
    stamped[..., :6, :6] = 1.0
    view, vaults = server_view(world, Split(stamped, aux.y), cut="pool1")
    guess = Sdar(method="sdar", seed=0, steps=100, decoder_steps=150).run(view)
    assert not any(v.touched for v in vaults.values())
    assert guess.images.shape == probe.inputs.shape
    corner = float(guess.images[..., 1:5, 1:5].mean())
    assert float(probe.inputs[..., 1:5, 1:5].mean()) == 0.0 and corner > 0.5
    assert guess.info["method"] == "sdar" and guess.info["conditional"]


def test_simulator_features_pass_the_public_cut_defense(world, monkeypatch):  # noqa: F811
    _, aux, _ = world
    view, _ = server_view(world, aux, defenses=[CutNoise("dp", clip=5.0, sigma=0.2)])
    seen = []
    real = inversion.CutChannel.sample

    def sample(self, h, gen=None):
        seen.append((self.clip, self.noise_std))
        return real(self, h, gen)
    monkeypatch.setattr(inversion.CutChannel, "sample", sample)
    guess = Sdar(method="sdar", seed=0, steps=5, decoder_steps=5).run(view)
    assert len(seen) >= 5 and all(c == 5.0 and s == pytest.approx(1.0) for c, s in seen)
    assert torch.isfinite(guess.images).all()


def test_decoder_conditioned_on_the_held_labels_only_when_asked(world):  # noqa: F811
    _, aux, probe = world
    view, _ = server_view(world, aux)
    plain = Sdar(method="sdar", seed=0, steps=3, decoder_steps=3).run(view)
    cond = Sdar(method="sdar", seed=0, steps=3, decoder_steps=3, decoder_labels=True).run(view)
    assert not plain.info["decoder_labels"] and cond.info["decoder_labels"]
    assert cond.images.shape == probe.inputs.shape and torch.isfinite(cond.images).all()


@pytest.mark.parametrize("cut,feat,img,mmd", [("conv1", 2.0, 0.001, 0.0),
                                              ("pool1", 2.0, 0.001, 0.0),
                                              ("pool2", 0.1, 0.001, 1.0)])
def test_discriminator_weights_follow_the_public_head_depth(world, cut, feat, img, mmd):  # noqa: F811
    """Not set, the feature, image and MMD weights are 2.0, 0.001 and 0 for a one-layer head,
    0.1, 0.001 and 1.0 deeper; set, as given. The depth comes from the public architecture, not
    from the head's weights."""
    _, aux, _ = world
    view, vaults = server_view(world, aux, cut=cut)
    info = Sdar(method="sdar", seed=0, steps=2, decoder_steps=2).run(view).info
    assert (info["feat_weight"], info["img_weight"], info["mmd_weight"]) == (feat, img, mmd)
    assert info["fit_mmd"] >= 0
    assert not any(v.touched for v in vaults.values())
    info = Sdar(method="sdar", seed=0, steps=2, decoder_steps=2, feat_weight=0.3,
                img_weight=0.05, mmd_weight=0.2).run(view).info
    assert (info["feat_weight"], info["img_weight"], info["mmd_weight"]) == (0.3, 0.05, 0.2)


def test_slsec_evaluate_attack_sdar_end_to_end(tmp_path, capsys):
    rc = main(["evaluate", "--attack", "sdar", "--knowledge", "architecture,aux_data",
               "--cut", "pool2", "--clients", "1", "--max-train", "128", "--aux-size", "64",
               "--probe-size", "8", "--attack-iters", "5", "--batch-size", "32",
               "--out", str(tmp_path), "--run-id", "run"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    m = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]
    assert m["attack_method"] == "sdar" and m["attack_role"] == "server"
    for key in ("attack_ssim_mean", "prior_ssim_mean", "reid_top1"):
        assert 0 <= m[key] <= 1, key
    assert metrics is not None


def test_discriminators_train_on_the_training_observations(world, monkeypatch):  # noqa: F811
    """`view.seen` (training batches' smashed data, with labels) joins the probes as the
    discriminators' real samples; `seen=False` keeps the probes alone, and the final images
    are still the probes' reconstructions."""
    model, aux, probe = world
    view, _ = server_view(world, aux)
    head = model.split(["pool1"])[0]
    with torch.no_grad():
        extra = head({"x": aux.inputs[:24]})["x"]
    view.seen = [{"x": extra[:12], "y": aux.y[:12]}, {"x": extra[12:], "y": aux.y[12:24]}]
    reals = []
    real = Sdar._batch

    def spy(obs, obs_y, *a, **k):
        reals.append((len(obs), None if obs_y is None else obs_y.clone()))
        return real(obs, obs_y, *a, **k)
    monkeypatch.setattr(Sdar, "_batch", staticmethod(spy))
    both = Sdar(method="sdar", seed=0, steps=3, decoder_steps=3).run(view)
    assert both.info["observations"] == 32 + 24 and both.images.shape == probe.inputs.shape
    assert {n for n, _ in reals} == {56}
    assert all(torch.equal(y, torch.cat([probe.y, aux.y[:24]])) for _, y in reals)
    reals.clear()
    alone = Sdar(method="sdar", seed=0, steps=3, decoder_steps=3, seen=False).run(view)
    assert alone.info["observations"] == 32 and {n for n, _ in reals} == {32}
