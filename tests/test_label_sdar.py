"""SDAR's label inference in U-shaped SL (`attacks/label_sdar.py`, label-inference method `sdar`):
it reads only what the U-shaped server holds of its own (never the relayed client parts, head
queries, gradients or probe queries), is seeded, joins the strongest-method selection, beats
the label prior end to end, and is refused where it does not apply."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from slsec.attacks.label_inference import LabelInference
from slsec.cli import main
from slsec.config import make_config
from slsec.errors import UserError
from slsec.run.harness import evaluate, make_view, prepare, resolve
from slsec.run.runner import run_local

SMALL = dict(max_train=400, probe_size=16, aux_size=200, batch_size=32, rounds=1, threads=1,
             observe_samples=64, protocol="ushaped", cut="conv1", cut2="fc1",
             attack="label-inference")
FAST = dict(sdar_steps=40, sdar_batch=16)


class _Untouchable(list):
    """A holding the method must not read: any access fails the test."""

    def _no(self, *a, **k):
        raise AssertionError("sdar read something outside the server's own holdings")

    __iter__ = __len__ = __getitem__ = __bool__ = _no


class _Sealed:
    """A relayed client part (or head queries) the method must not use."""

    def __call__(self, *a, **k):
        raise AssertionError("sdar used a relayed client part")

    def __getattr__(self, name):
        raise AssertionError(f"sdar touched a relayed client part ({name})")


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    cfg = make_config(SMALL)
    setup = prepare(cfg)
    exp = resolve(cfg, setup)
    server = run_local(exp)[0]
    view = make_view(exp, server, "server", exp.attack.knowledge)
    n = sum(len(o["x"]) for o in view.outputs)
    return view, server.truth_labels[:n]


def test_reads_only_the_servers_own_holdings_and_is_seeded(trained):
    view, y = trained
    assert {"head", "tail", "body"} <= set(view.parts) and view.query_head is not None
    full = LabelInference(method="sdar", seed=3, **FAST).run(view)
    # the relayed head and tail, head queries, the returned gradients and the probe queries
    # sealed: any read fails; what is left is the body, aux data, seen smashed data, outputs
    own = dataclasses.replace(view, parts={"head": _Sealed(), "body": view.parts["body"],
                                           "tail": _Sealed()},
                              query_head=_Sealed(), grads=_Untouchable(),
                              smashed=_Untouchable())
    sealed = LabelInference(method="sdar", seed=3, **FAST).run(own)
    assert torch.equal(full.label_scores, sealed.label_scores)   # same, and seeded
    assert full.label_scores.shape == (len(y), 10)
    other = LabelInference(method="sdar", seed=4, **FAST).run(view)
    assert not torch.equal(full.label_scores, other.label_scores)
    assert full.info["observations"] == sum(len(m["x"]) for m in view.seen)
    # the server's body is used as a frozen copy: the view's own is unchanged
    assert all(p.requires_grad for p in view.parts["body"].parameters())


def test_adapts_to_the_public_cut_mechanism(trained):
    """Under DP at the cut the simulated head's features pass through the public clipping and
    noise before the body and the discriminator see them (other draws, other scores)."""
    from slsec.threat import CutNoise
    view, _ = trained
    plain = LabelInference(method="sdar", seed=0, **FAST).run(view)
    noisy = dataclasses.replace(view, public={**view.public,
                                              "defenses": [CutNoise("dp", clip=1.0, sigma=0.5)]})
    adapted = LabelInference(method="sdar", seed=0, **FAST).run(noisy)
    assert plain.info["adapted_to"] == [] and adapted.info["adapted_to"] == ["dp"]
    assert not torch.equal(plain.label_scores, adapted.label_scores)


def test_needs_observations_and_aux_labels(trained):
    view, _ = trained
    with pytest.raises(UserError, match="observe-samples"):
        LabelInference(method="sdar", **FAST).run(dataclasses.replace(view, seen=[]))
    with pytest.raises(UserError, match="aux-size"):
        LabelInference(method="sdar", **FAST).run(dataclasses.replace(view, aux=None))
    with pytest.raises(UserError, match="body"):
        LabelInference(method="sdar", **FAST).run(dataclasses.replace(view, parts={}))


def test_beats_the_prior_end_to_end_and_contends():
    """`slsec evaluate --protocol ushaped --attack label-inference`: sdar runs beside the other
    methods on the same observations and labels far above the public majority guess."""
    m = evaluate(make_config({**SMALL, "rounds": 2, "li_sdar_steps": 150})).metrics
    assert "sdar" in m["methods_compared"].split(",")
    acc = m["label_accuracy_by_method"]
    print("U-shaped label accuracy by method:", acc, "prior", m["label_baseline_accuracy"])
    assert acc["sdar"] >= m["label_baseline_accuracy"] + 0.3
    assert m["label_auc_by_method"]["sdar"] >= 0.8


@pytest.mark.parametrize("protocol", ["vanilla", "splitfed"])
def test_not_a_contender_where_it_does_not_apply(protocol):
    from slsec.run.experiment import plan_attack
    plan = plan_attack(make_config({"protocol": protocol, "attack": "label-inference"}))
    assert "sdar" not in plan.methods and "embedding" in plan.methods
    assert "sdar" in plan_attack(make_config(SMALL)).methods


def test_method_sdar_elsewhere_is_one_line_exit_2(capsys, tmp_path):
    rc = main(["evaluate", "--protocol", "vanilla", "--attack", "label-inference",
               "--method", "sdar", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "applies to protocol ushaped only" in err
    rc = main(["evaluate", "--protocol", "ushaped", "--attack", "label-inference",
               "--li-sdar-steps", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--li-sdar-steps" in err
    assert not list(tmp_path.iterdir())   # nothing written



def test_listed_with_its_protocol():
    from rich.console import Console

    from slsec.report.catalog_tables import catalog_tables
    console = Console(width=400, record=True)
    for part in catalog_tables():
        console.print(part)
    assert "sdar (architecture, aux_data; ushaped only)" in console.export_text()


def test_attack_iters_sets_its_steps():
    """As for SDAR's inversion, --attack-iters sets the steps where given (a review or sweep
    with few attack iterations stays cheap); else --li-sdar-steps (default 300)."""
    assert LabelInference(method="sdar").sdar["steps"] == 300
    assert LabelInference(method="sdar", sdar_steps=9).sdar["steps"] == 9
    assert LabelInference(method="sdar", iterations=7, sdar_steps=300).sdar["steps"] == 7
    cfg = make_config({**SMALL, "attack_iters": 5})
    from slsec.run.harness import declared_params
    params = {"iterations": cfg.attack_iters, **declared_params(cfg, LabelInference)}
    assert LabelInference(method="sdar", **params).sdar["steps"] == 5
    with pytest.raises(UserError, match="--li-sdar-steps"):
        LabelInference(method="sdar", sdar_steps=0)
