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

from slsec.config import make_config
from slsec.harness import evaluate

SMALL = dict(max_train=400, probe_size=16, aux_size=200, batch_size=32, rounds=1, threads=1,
             attack_iters=300, observe_samples=64)


def run(**values):
    result = evaluate(make_config({**SMALL, **values}))
    return result["metrics"], result


def test_ushaped_server_inverts_the_probe_queries():
    m, result = run(protocol="ushaped", attack="inversion", method="whitebox")
    assert result["_guess"]["images"].shape == result["_truth"].shape
    print("ushaped whitebox SSIM", m["attack_ssim_mean"])
    assert m["attack_ssim_mean"] >= 0.9


def test_ushaped_label_inference_sees_one_tail_input_per_gradient():
    m, _ = run(protocol="ushaped", attack="label-inference", method="cluster")
    print("ushaped cluster label accuracy", m["label_accuracy"])
    assert m["label_accuracy"] > m["label_baseline_accuracy"] + 0.3


@pytest.mark.parametrize("clients", [1, 3])
def test_vanilla_probe_uses_the_final_head(clients):
    m, _ = run(protocol="vanilla", clients=clients, attack="inversion", method="whitebox")
    print(f"vanilla K={clients} whitebox SSIM", m["attack_ssim_mean"])
    assert m["attack_ssim_mean"] >= 0.9
