"""Vertical SL attacks and defenses: feature reconstruction by the active party, Marvell."""
from __future__ import annotations

import pytest
import torch

from slsec.attacks.feature_reconstruction import FeatureReconstruction
from slsec.config import make_config
from slsec.defenses.marvell import Marvell, marvell_variances
from slsec.run.experiment import resolve
from slsec.run.harness import evaluate, make_view
from slsec.run.runner import run_local
from slsec.run.setup import prepare
from slsec.run.tabular_scoring import party_encoding, record_scores
from slsec.threat import ClassGradientNoise

SMALL = {"protocol": "vertical", "dataset": "spam", "clients": "2", "rounds": "3",
         "batch_size": "64", "aux_size": "200", "probe_size": "300", "threads": "1",
         "lr": "0.005", "attack": "feature-reconstruction"}


@pytest.fixture(scope="module")
def trained():
    cfg = make_config(SMALL)
    setup = prepare(cfg)
    return cfg, setup, run_local(resolve(cfg, setup))


def test_active_party_view_holds_embeddings_and_public_rows_only(trained):
    cfg, setup, outcomes = trained
    plan = resolve(cfg, setup).attack
    view = make_view(resolve(cfg, setup), outcomes[0], plan.role, plan.knowledge)
    truth = outcomes[0].truth_inputs          # party 1's raw columns: the scorer's alone
    cols = setup.model_groups()[0]
    assert truth.shape[1] == len(cols) and len(view.smashed)
    assert all(set(m) == {"x"} and m["x"].shape[1] == 16 for m in view.smashed)
    assert view.grads == [] and view.outputs == []
    assert all(m["x"].shape[1] != len(cols) for m in view.smashed)
    # the bottom it holds is the one it initialised, not party 1's trained one
    init = setup.fresh_model().party_head(1)
    for a, b in zip(view.parts["head"].parameters(), init.parameters()):
        assert torch.equal(a, b)
    assert view.aux is setup.aux                  # public rows only


def test_learned_inverse_with_the_trained_bottom_beats_the_prior(trained):
    cfg, setup, outcomes = trained
    server = outcomes[0]
    cols = setup.model_groups()[0]
    parts = {"head": outcomes[1].model.party_head(1)}   # the bottom, known (deployment)
    view = server.observer.view(parts=parts, knowledge=frozenset(
        {"architecture", "head_weights", "aux_data"}), build_model=setup.build,
        cuts=setup.cuts, public=resolve(cfg, setup).public(), aux=setup.aux)
    inv = FeatureReconstruction(method="inverse", iterations=400).run(view).rows
    prior = FeatureReconstruction(method="prior").run(view).rows
    others = setup.data.train.inputs[setup.shards[0][:1000]][:, cols]
    m = record_scores(server.truth_inputs, inv, prior,
                      party_encoding(setup.data.encoding, cols), others)
    assert abs(m["prior_numeric_r2"]) < 0.1
    assert m["numeric_r2_gain"] > 0.15, m
    assert m["reid_top5"] > 10 * m["reid_chance_top5"], m


def test_feature_reconstruction_card_reports_r2_beside_the_prior():
    cfg = make_config({**SMALL, "rounds": "1", "probe_size": "64", "attack_iters": "50"})
    m = evaluate(cfg).metrics
    for k in ("attack_numeric_r2", "prior_numeric_r2", "numeric_r2_gain", "reid_top1",
              "reid_chance_top1", "reid_candidates"):
        assert k in m, k
    assert m["reid_candidates"] >= 1000


def test_marvell_variances_are_the_constrained_optimum():
    gsq, p, power = 2.0, 0.1, 4.0
    u0, u1 = marvell_variances(gsq, p, power)
    assert p * u1 + (1 - p) * u0 == pytest.approx(power * gsq, rel=1e-6)

    def kl(a, b):
        return b / a + a / b + gsq * (1 / a + 1 / b)
    for t in (0.05, 0.3, 0.6, 0.95):   # other splits of the budget are no better
        a, b = t * power * gsq / (1 - p), (1 - t) * power * gsq / p
        assert kl(u0, u1) <= kl(a, b) + 1e-6


def test_marvell_noise_lies_along_the_class_mean_difference():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(64, 8, generator=gen)
    y = (torch.arange(64) % 4 == 0).long()
    g[y == 1] += 3.0
    d = Marvell(power=4.0)
    out = d.label_grad(g, y, gen=torch.Generator().manual_seed(1))
    delta = g[y == 1].mean(0) - g[y == 0].mean(0)
    axis = delta / delta.norm()
    noise = out - g
    across = noise - (noise @ axis)[:, None] * axis[None, :]
    assert across.abs().max() < 1e-5 and noise.abs().max() > 0.1
    assert d.public_mechanism() == ClassGradientNoise("marvell", power=4.0)


def test_residual_scoring_sees_through_marvell_noise():
    """The adaptive attack: Marvell's noise lies along one axis per batch, so each batch's
    dominant direction is removed; the norm of what is left ranks the labels, while the plain
    norm score is at chance (both beside the prior's 0.5)."""
    from slsec.attacks.label_gradients import Observed, off_axis
    from slsec.metrics import label_auc
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    d, w = Marvell(power=16.0), torch.randn(16)
    grads, labels = [], []
    for _ in range(16):
        y = (torch.rand(64) < 0.1).long()
        y[0] = 1
        jac = w[None] + 0.3 * torch.randn(64, 16)     # the top's Jacobian varies per record
        g = (0.2 * torch.rand(64) - y.float())[:, None] * jac   # (p - y) J
        grads.append(d.label_grad(g, y, gen=gen))
        labels.append(y)
    g, y = torch.cat(grads).double(), torch.cat(labels)
    obs = Observed([], g, torch.zeros(len(g)), g, 2, sizes=[64] * 16)
    assert label_auc(y, g.norm(dim=1)) < 0.6
    assert label_auc(y, off_axis(obs).norm(dim=1)) > 0.95
    # one row per batch: nothing is left (no noise-free part to read)
    assert off_axis(Observed([], g[:3], torch.zeros(3), g[:3], 2, sizes=[1, 1, 1])).abs().max() == 0
