"""End-to-end: what the attacked role observes lines up with what the harness scores.

- U-shaped SL: the server's View keeps training traffic (body outputs, gradients from the
  client's tail) apart from the smashed probe queries, so inversion of the probes works and
  label inference sees one tail input per gradient;
- vanilla SL with several clients: the probing client uses the final head (the one the server
  relayed last), so a server holding the head weights inverts the probes as well as with one
  client: no stale-head penalty for the attacker, no accidental "defense" for the user.
"""
from __future__ import annotations

import pytest
import torch

from slsec.config import make_config
from slsec.run.harness import evaluate

SMALL = dict(max_train=400, probe_size=16, aux_size=200, batch_size=32, rounds=1, threads=1,
             attack_iters=300, observe_samples=64)


def run(**values):
    result = evaluate(make_config({**SMALL, **values}))
    return result.metrics, result


def test_ushaped_server_inverts_the_probe_queries():
    m, result = run(protocol="ushaped", attack="inversion", method="whitebox")
    assert result.reconstructions.images.shape == result.reconstructions.inputs.shape
    print("ushaped whitebox SSIM", m["attack_ssim_mean"])
    assert m["attack_ssim_mean"] >= 0.9
    # the U-shaped server receives no labels: its prior predicts them (and says how well)
    assert m["prior_label_source"] == "predicted" and 0 <= m["prior_label_accuracy"] <= 1
    print("ushaped prior label-prediction accuracy", m["prior_label_accuracy"])


def test_ushaped_label_inference_sees_one_tail_input_per_gradient():
    m, _ = run(protocol="ushaped", attack="label-inference", method="cluster")
    print("ushaped cluster label accuracy", m["label_accuracy"])
    assert m["label_accuracy"] > m["label_baseline_accuracy"] + 0.3


@pytest.mark.parametrize("clients", [1, 3])
def test_vanilla_probe_uses_the_final_head(clients):
    m, _ = run(protocol="vanilla", clients=clients, attack="inversion", method="whitebox")
    print(f"vanilla K={clients} whitebox SSIM", m["attack_ssim_mean"])
    assert m["attack_ssim_mean"] >= 0.9


def test_without_a_method_the_stronger_inversion_is_reported():
    """No --method: whitebox and decoder both attack the same observations; the report carries
    the one with the higher SSIM (the defender's worst case) and both scores."""
    m, result = run(protocol="vanilla", attack="inversion", cut="pool2", defense=("dp",),
                    sigma=0.05, attack_iters=150)
    by = m["attack_ssim_mean_by_method"]
    print("SSIM by method", by)
    assert m["methods_compared"] == "whitebox,decoder,prior"
    assert set(by) == {"whitebox", "decoder", "prior"}
    assert m["attack_method"] == max(by, key=by.get)
    assert m["attack_ssim_mean"] == by[m["attack_method"]]
    # the reported leakage is never below the prior; the vanilla server received the labels
    assert m["attack_ssim_mean"] >= m["prior_ssim_mean"] and m["ssim_gain_mean"] >= 0
    assert m["prior_label_source"] == "held" and "prior_label_accuracy" not in m
    assert result.reconstructions.images.shape == result.reconstructions.inputs.shape


@pytest.mark.parametrize("protocol, held", [("vanilla", True), ("ushaped", False)])
def test_only_a_server_that_receives_labels_holds_the_probe_labels(protocol, held):
    """Vanilla SL sends each record's label with its smashed data, so the server's View holds
    the probe labels (exactly the true ones); the U-shaped server receives none."""
    import torch

    from slsec.attacks.prior import received_labels
    from slsec.run.harness import attacker_knowledge, make_view, prepare, resolve
    from slsec.run.runner import run_local
    cfg = make_config({**SMALL, "protocol": protocol, "attack": "inversion"})
    setup = prepare(cfg)
    exp = resolve(cfg, setup)
    outcome = run_local(exp)[0]
    view = make_view(exp, outcome, "server", attacker_knowledge(cfg, "server"))
    labels = received_labels(view)
    assert (labels is not None) == held
    if held:
        assert torch.equal(labels, setup.probe.y)
    else:
        assert all("y" not in msg for msg in view.smashed)


@pytest.mark.parametrize("protocol, labels", [("vanilla", True), ("ushaped", False),
                                              ("splitfed", True)])
def test_only_the_server_holds_the_training_observations(protocol, labels):
    """`View.seen`: the smashed data of the training batches in the observation window (the last
    `observe_samples` samples of client 1's last round), exactly as the server received them,
    with their labels only where they arrived with one. The clients, which send those tensors
    but receive none, hold none."""
    from slsec.run.harness import attacker_knowledge, make_view, prepare, resolve
    from slsec.run.runner import run_local
    cfg = make_config({**SMALL, "max_train": 160, "protocol": protocol, "attack": "inversion",
                       "clients": 2})
    setup = prepare(cfg)
    exp = resolve(cfg, setup)
    outcomes = run_local(exp)
    server = make_view(exp, outcomes[0], "server", attacker_knowledge(cfg, "server"))
    # the window: 64 samples = the last two batches of client 1's shard of 80 (32 + 16)
    assert [len(m["x"]) for m in server.seen] == [32, 16]
    assert all(m["x"].shape[1:] == server.smashed[0]["x"].shape[1:] for m in server.seen)
    assert all(("y" in m) == labels for m in server.seen)
    if labels:
        shard_y = setup.shard(1).y
        got = torch.cat([m["y"] for m in server.seen])
        assert all(int((shard_y == c).sum()) >= int((got == c).sum()) for c in got.unique())
    client = make_view(exp, outcomes[1], "client", attacker_knowledge(cfg, "client"))
    assert client.role == "client" and client.seen == []


def test_a_curious_client_holds_no_training_observations():
    """Two-party SL: the client records what it sent and the gradients it got back, never the
    server's `seen`; the label-owning server's training observations carry its own labels."""
    from slsec.run.runner import run_local
    from slsec.run.harness import prepare, resolve
    cfg = make_config({**SMALL, "max_train": 96, "protocol": "vanilla", "clients": 1,
                       "label_party": "server", "attack": "label-inference"})
    outcomes = run_local(resolve(cfg, prepare(cfg)))
    client = outcomes[1].observer.view()
    assert client.grads and client.seen == []
    server = outcomes[0].observer.view()
    assert server.seen and all("y" in m and "i" in m for m in server.seen)
