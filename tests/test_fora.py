"""FORA (`--attack fora`): a substitute head fitted to the observed smashed data, then its
inverse, for a server that holds the architecture and aux data only.

- it uses only its role's holdings: the head and head queries are Vaults, the private images
  never enter the View (only smashed data computed from them), and with poisoned aux data
  (inverted images) its reconstructions follow the poisoned aux, not the private inputs;
- it is adaptive to the public cut defense (the substitute's features pass the same clip+noise);
- `slsec evaluate --attack fora` runs end to end and is scored like every inversion.
"""
from __future__ import annotations

import json

import pytest
import torch

from conftest import train_epoch
from slsec.attacks import inversion
from slsec.attacks.base import ATTACKS
from slsec.attacks.fora import Fora, mk_mmd
from slsec.cli import main
from slsec.data import Split, load_dataset
from slsec.errors import UserError
from slsec.data.models import build_model
from slsec.threat import CutNoise, View
from test_inversion import Vault

KNOW = frozenset({"architecture", "aux_data"})
QUICK = dict(steps=30, decoder_steps=150)


@pytest.fixture(scope="module")
def world():
    """A CNN trained one epoch on 1,000 private images, the aux split, 32 private probes."""
    torch.set_num_threads(1)
    data = load_dataset("mnist")
    perm = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    aux, private = data.train.subset(perm[:500]), data.train.subset(perm[500:1500])
    torch.manual_seed(0)
    model = build_model("cnn")
    train_epoch(model, private)
    model.eval().requires_grad_(False)
    return model, aux, data.test.subset(torch.arange(32))


def server_view(world, aux, cut="pool1", defenses=()) -> tuple[View, dict]:
    """A vanilla server after training: the smashed probe data with their labels, its own tail;
    the head and head queries are Vaults (FORA's role holds neither)."""
    model, _, probe = world
    head, tail = model.split([cut])
    channel = inversion.CutChannel.from_public({"defenses": list(defenses)})
    with torch.no_grad():
        h = channel.sample(head({"x": probe.inputs})["x"], torch.Generator().manual_seed(1))
    vaults = {"head": Vault("the head"), "query": Vault("head queries")}
    view = View(role="server", protocol="vanilla",
                smashed=[{"x": h[:16], "y": probe.y[:16]}, {"x": h[16:], "y": probe.y[16:]}],
                parts={"head": vaults["head"], "tail": tail}, knowledge=KNOW,
                build_model=lambda: build_model("cnn"), cuts=(cut,), aux=aux,
                query_head=vaults["query"],
                public={"input_shape": (1, 28, 28), "num_classes": 10,
                        "defenses": list(defenses)})
    return view, vaults


def test_registered_as_an_honest_server_inversion():
    cls = ATTACKS.get("fora")
    assert cls.kind == "inversion" and not cls.malicious
    assert cls.methods["fora"] == KNOW and cls.pick_method(KNOW) == "fora"
    assert cls.roles["vanilla"] == "server" and cls.roles["splitfed"] == "server"
    with pytest.raises(UserError, match="no method fits"):
        cls.pick_method(frozenset({"architecture"}))


def test_mk_mmd_measures_distribution_and_label_mismatch():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    y = torch.arange(64) % 4
    assert float(mk_mmd(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(mk_mmd(a, b + 2.0)) > 10 * float(mk_mmd(a, b))
    # the same features with the labels shuffled: equal marginals, different joint
    shuffled = y[torch.randperm(64, generator=g)]
    assert float(mk_mmd(a, a, y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(mk_mmd(a, a, y, shuffled)) > 0.01


def test_uses_only_aux_data_and_observations_poisoned_aux(world):
    """Poisoned data: every aux image carries a white 6x6 stamp in its top-left corner, which
    no private image has. FORA's reconstructions of the private probes carry the stamp: what
    it knows of images comes from its aux data; the probes reach it only as smashed data
    (never as images), and the head and head queries (Vaults) stay untouched."""
    _, aux, probe = world
    stamped = aux.inputs.clone()
    stamped[..., :6, :6] = 1.0
    view, vaults = server_view(world, Split(stamped, aux.y), cut="fc1")
    guess = Fora(method="fora", seed=0, **QUICK).run(view)
    assert not any(v.touched for v in vaults.values())
    assert guess.images.shape == probe.inputs.shape
    # the stamp's core (white in every aux image after the decoder's 2-pixel shifts)
    corner = float(guess.images[..., 1:5, 1:5].mean())
    truth_corner = float(probe.inputs[..., 1:5, 1:5].mean())
    print(f"stamp core: reconstructions {corner:.3f}, private probes {truth_corner:.3f}")
    assert truth_corner == 0.0 and corner > 0.5
    assert guess.info["method"] == "fora" and guess.info["task_anchor"]


def test_substitute_features_pass_the_public_cut_defense(world, monkeypatch):
    """DP at the cut: every substitute feature FORA compares or decodes is clipped and noised
    with the public mechanism (noise std sigma * C)."""
    _, aux, _ = world
    view, _ = server_view(world, aux, defenses=[CutNoise("dp", clip=5.0, sigma=0.2)])
    seen = []
    real = inversion.CutChannel.sample

    def sample(self, h, gen=None):
        seen.append((self.clip, self.noise_std))
        return real(self, h, gen)
    monkeypatch.setattr(inversion.CutChannel, "sample", sample)
    guess = Fora(method="fora", seed=0, steps=5, decoder_steps=5).run(view)
    assert len(seen) >= 10
    assert all(clip == 5.0 and std == pytest.approx(1.0) for clip, std in seen)
    assert guess.info["channel"]["noise_std"] == pytest.approx(1.0)
    assert torch.isfinite(guess.images).all()


def test_slsec_evaluate_attack_fora_end_to_end(tmp_path, capsys):
    rc = main(["evaluate", "--attack", "fora", "--knowledge", "architecture,aux_data",
               "--cut", "pool2", "--clients", "1", "--max-train", "128", "--aux-size", "64",
               "--probe-size", "8", "--attack-iters", "5", "--batch-size", "32",
               "--out", str(tmp_path), "--run-id", "run"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    m = json.loads((tmp_path / "run" / "result.json").read_text())["metrics"]
    assert m["attack_method"] == "fora" and m["attack_role"] == "server"
    assert m["attack_knowledge"] == ["architecture", "aux_data"]
    for key in ("attack_ssim_mean", "baseline_ssim_mean", "prior_ssim_mean", "ssim_gain_mean",
                "reid_top1"):
        assert 0 <= m[key] <= 1 or key == "ssim_gain_mean", key
    assert m["prior_label_source"] == "held"
    rc = main(["evaluate", "--attack", "fora", "--knowledge", "architecture",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and "no method fits" in err and "Traceback" not in err


def test_substitute_fits_the_training_observations_the_server_saw(world):
    """`view.seen` joins the probes' observations in the substitute's fit (MMD and
    discriminator); `seen=False` keeps the probes alone; the images are the probes'."""
    model, aux, probe = world
    view, _ = server_view(world, aux)
    with torch.no_grad():
        extra = model.split(["pool1"])[0]({"x": aux.inputs[:24]})["x"]
    view.seen = [{"x": extra, "y": aux.y[:24]}]
    both = Fora(method="fora", seed=0, steps=2, decoder_steps=2).run(view)
    alone = Fora(method="fora", seed=0, steps=2, decoder_steps=2, seen=False).run(view)
    assert both.info["observations"] == 56 and alone.info["observations"] == 32
    assert both.images.shape == alone.images.shape == probe.inputs.shape
    # a training message without a label: the labelled comparison keeps the probes alone
    view.seen = [{"x": extra}]
    assert Fora(method="fora", seed=0, steps=2, decoder_steps=2).run(view).info[
        "observations"] == 32
