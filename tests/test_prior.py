"""The attacker's prior (attacks/prior.py, inversion method 'prior'): built from what the role
holds only, its template kind chosen on held-out aux data, never on the probes."""
from __future__ import annotations

import pytest
import torch

from slsec import metrics
from slsec.attacks import prior as priors
from slsec.attacks.inversion import CutChannel, Inversion
from slsec.data import Split, load_dataset
from slsec.data.models import build_model
from slsec.threat import CutNoise, View
from test_inversion import Vault


@pytest.fixture(scope="module")
def mnist():
    data = load_dataset("mnist")
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(data.train), generator=g)
    return data.train.subset(perm[:500]), data.test.subset(torch.arange(32))


def server_view(aux, probe, knowledge, *, labels=True, head=None) -> tuple[View, dict]:
    """A vanilla server's view of the probe: smashed data (+ the labels sent with it); what the
    role does not hold is a Vault. The probe images themselves are never in the view."""
    head = head or build_model("cnn").split(["fc1"])[0].eval()
    with torch.no_grad():
        h = head({"x": probe.inputs})["x"]
    vaults = {"head": Vault("the head"), "query": Vault("head queries"), "aux": Vault("aux")}
    msgs = [{"x": h[:16]}, {"x": h[16:]}]
    if labels:
        msgs[0]["y"], msgs[1]["y"] = probe.y[:16], probe.y[16:]

    def query(feats):
        with torch.no_grad():
            return head(feats)
    view = View(role="server", protocol="vanilla", smashed=msgs,
                parts={"head": head if "head_weights" in knowledge else vaults["head"]},
                knowledge=frozenset(knowledge), build_model=lambda: build_model("cnn"),
                cuts=("fc1",), aux=aux if "aux_data" in knowledge else vaults["aux"],
                query_head=query if "query_head" in knowledge else vaults["query"],
                public={"input_shape": (1, 28, 28), "num_classes": 10, "defenses": []})
    return view, vaults


def test_prior_is_registered_and_needs_only_aux_data():
    assert Inversion.methods["prior"] == frozenset({"aux_data"})
    assert "prior" in Inversion.contenders
    assert Inversion.pick_method(frozenset({"aux_data"})) == "prior"


def test_prior_with_held_labels_is_built_from_poisoned_aux_not_from_the_probes(mnist):
    """Poisoned data: aux images inverted (1 - x). The held-label prior must be exactly the
    class template of the poisoned aux for each received label, so nothing of the probes'
    ground truth can have entered it; it touches neither head nor queries."""
    aux, probe = mnist
    poisoned = Split(1.0 - aux.inputs, aux.y)
    view, vaults = server_view(poisoned, probe, {"aux_data"})
    guess = Inversion(method="prior").run(view)
    assert not any(v.touched for v in vaults.values())
    assert guess.info["label_source"] == priors.LABEL_HELD
    kind = guess.info["prior"].removeprefix("class ")
    templates = priors.class_templates(poisoned.inputs, poisoned.y, 10, kind)
    assert torch.equal(guess.images, templates[probe.y].clamp(0, 1))
    # poisoned templates look nothing like the real digits: SSIM with the truth collapses
    clean = Inversion(method="prior").run(server_view(aux, probe, {"aux_data"})[0])
    assert metrics.ssim(probe.inputs, clean.images).mean() > \
        metrics.ssim(probe.inputs, guess.images).mean() + 0.3


def test_prior_without_labels_or_queries_is_the_aux_mean(mnist):
    aux, probe = mnist
    view, vaults = server_view(aux, probe, {"aux_data"}, labels=False)
    guess = Inversion(method="prior").run(view)
    assert not any(v.touched for v in vaults.values())
    assert guess.info["label_source"] == priors.LABEL_NONE and "labels" not in guess.info
    assert torch.allclose(guess.images, aux.inputs.mean(0).expand_as(probe.inputs))


def test_predicted_labels_come_from_the_observation_and_aux_only(mnist):
    """No labels sent (U-shaped-like): labels predicted through the queried head; the true
    probe labels are nowhere in the view (the messages carry only 'x')."""
    aux, probe = mnist
    torch.manual_seed(0)
    model = build_model("cnn")
    from conftest import train_epoch
    train_epoch(model, aux)          # a head that separates the classes a little
    view, vaults = server_view(aux, probe, {"aux_data", "query_head"}, labels=False,
                               head=model.split(["fc1"])[0].eval())
    assert all(set(m) == {"x"} for m in view.smashed)
    guess = Inversion(method="prior").run(view)
    assert not any(v.touched for v in vaults.values())
    assert guess.info["label_source"] == priors.LABEL_PREDICTED
    acc = float((guess.info["labels"] == probe.y).float().mean())
    assert acc > 0.3                 # well above the 0.1 of guessing (measured: printed)
    print(f"label-prediction accuracy {acc:.3f}")


def test_template_kind_is_chosen_on_held_out_aux_only(mnist, monkeypatch):
    """Every image the selection scores is a held-out aux image, never a probe, and the
    templates it scores them against are fit on the other aux images."""
    aux, probe = mnist
    scored: list[torch.Tensor] = []
    real = metrics.ssim

    def spy(a, b):
        scored.append(torch.as_tensor(a))
        return real(a, b)
    monkeypatch.setattr(metrics, "ssim", spy)
    fits: list[torch.Tensor] = []
    real_templates = priors.class_templates

    def spy_templates(images, labels, k, kind):
        fits.append(images)
        return real_templates(images, labels, k, kind)
    monkeypatch.setattr(priors, "class_templates", spy_templates)
    kind, scores = priors.choose_kind(aux.inputs, aux.y, 10, torch.Generator().manual_seed(0))
    assert kind in priors.KINDS and set(scores) == set(priors.KINDS)
    assert scores[kind] == max(scores.values())
    aux_rows = {tuple(r.flatten().tolist()) for r in aux.inputs}
    probe_rows = {tuple(r.flatten().tolist()) for r in probe.inputs}
    for batch in scored:
        rows = {tuple(r.flatten().tolist()) for r in batch}
        assert rows <= aux_rows and not rows & probe_rows
        for fit in fits:
            assert not rows & {tuple(r.flatten().tolist()) for r in fit}  # held out of the fit
    assert len(scored) == 3 and len(scored[0]) == round(priors.HOLDOUT * len(aux))


def test_class_templates_mean_median_medoid():
    x = torch.tensor([0.0, 0.2, 1.0, 0.5, 0.5]).view(5, 1, 1, 1)
    y = torch.tensor([0, 0, 0, 1, 1])
    assert priors.class_templates(x, y, 3, "mean")[0].item() == pytest.approx(0.4)
    assert priors.class_templates(x, y, 3, "median")[0].item() == pytest.approx(0.2)
    assert priors.class_templates(x, y, 3, "medoid")[0].item() == pytest.approx(0.2)
    # a class absent from the aux data falls back to the overall mean
    assert priors.class_templates(x, y, 3, "mean")[2].item() == pytest.approx(x.mean().item())


def _drowned_view(mnist):
    """The server's view with the label held and every observation drowned in public noise."""
    aux, probe = mnist
    view, _ = server_view(aux, probe, {"aux_data", "query_head", "architecture", "head_weights"})
    view.public["defenses"] = [CutNoise("dp", clip=1.0, sigma=50.0)]
    ch = CutChannel.from_public(view.public)
    view.smashed = [{"x": ch.sample(m["x"], torch.Generator().manual_seed(1)), "y": m["y"]}
                    for m in view.smashed]
    return view


@pytest.mark.parametrize("method, params", [("decoder", {"steps": 60}),
                                            ("whitebox", {"iterations": 60})])
def test_labelled_attacks_are_not_worse_than_the_prior_on_noise(mnist, method, params):
    """With the label held and the observation drowned in noise, the label-aware decoder and
    whitebox start from the class image and keep it unless they beat it on held-out aux data."""
    _, probe = mnist
    view = _drowned_view(mnist)
    prior = Inversion(method="prior").run(view).images
    guess = Inversion(method=method, **params).run(view)
    s_prior = metrics.ssim(probe.inputs, prior).mean()
    s_attack = metrics.ssim(probe.inputs, guess.images).mean()
    print(method, "held-out check:", guess.info.get("heldout_ssim"),
          guess.info.get("heldout_prior_ssim"), "probes:", s_attack, s_prior)
    assert s_attack >= s_prior - 0.02, (s_attack, s_prior)


def test_noise_that_drowns_the_signal_ends_the_labelled_attacks_early(mnist):
    """Where the held-out aux check cannot be won, the decoder gives up at `give_up_at` (its
    held-out loss is not 10% below the class images'; give_up_at=0: the whole budget), and
    whitebox skips the probes' fit: both return the class images, as the full runs would."""
    view = _drowned_view(mnist)
    prior = Inversion(method="prior").run(view).images
    early = Inversion(method="decoder", steps=400, give_up_at=30).run(view)
    full = Inversion(method="decoder", steps=40, give_up_at=0).run(view)
    assert early.info["steps_run"] == 30 and full.info["steps_run"] == 40, \
        (early.info["steps_run"], full.info["steps_run"])
    assert early.info["fell_back_to_prior"] and torch.equal(early.images, prior)
    wb = Inversion(method="whitebox", iterations=60).run(view)
    assert wb.info["fell_back_to_prior"] and "iterations_run" not in wb.info
    assert torch.equal(wb.images, prior)
