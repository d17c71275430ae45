"""Client sampling (--fraction) and the local backend's client pool.

With --fraction F < 1 (splitfed, fedavg) a seeded sample of the K clients takes part in each
round; the local backend then runs clients as round tasks of a bounded pool and builds a
client's model and optimiser only while it runs. Both execution paths (the pool, and one
role program per rank as MPI runs it) must compute the same numbers.
"""
from __future__ import annotations

import pytest
import torch

from slsec.cli import main
from slsec.config import make_config
from slsec.run.harness import evaluate
from slsec.protocols.base import Plan, participants
from slsec.protocols.fedavg import FedAvg
from slsec.protocols.splitfed import SplitFed
from slsec.run.experiment import resolve
from slsec.run.runner import run_local

TINY = dict(max_train=256, aux_size=100, probe_size=8, rounds=2, batch_size=32)


def _plan(**kw) -> Plan:
    base = dict(protocol="splitfed", clients=20, rounds=3, batch_size=8, lr=1e-3,
                optimizer="adam", cuts=("conv1",), seed=0, num_classes=10)
    return Plan(**{**base, **kw})


def test_participants_are_a_seeded_sample_that_holds_the_observed_client():
    plan = _plan(fraction=0.25)
    rounds = [participants(plan, r) for r in range(plan.rounds)]
    assert rounds == [participants(plan, r) for r in range(plan.rounds)]   # same on every rank
    assert all(len(ks) == 5 and ks == sorted(set(ks)) and 1 <= ks[0] and ks[-1] <= 20
               for ks in rounds)
    assert len({tuple(ks) for ks in rounds}) > 1            # the sample changes per round
    assert 1 in rounds[-1]                                   # the observed (last) round
    assert participants(_plan(fraction=0.25, seed=1), 0) != rounds[0]
    assert participants(_plan(), 0) == list(range(1, 21))   # fraction 1: everyone
    assert len(participants(_plan(fraction=0.001), 0)) == 1


@pytest.mark.parametrize("protocol,variant,cls", [("splitfed", "v1", SplitFed),
                                                   ("splitfed", "v2", SplitFed),
                                                   ("fedavg", "v1", FedAvg)])
def test_client_pool_computes_what_one_program_per_rank_computes(protocol, variant, cls,
                                                                 monkeypatch):
    # 10 of 20 clients per round: FedAvg and SplitFed v1 train them in two waves (8 + 2)
    cfg = make_config(dict(protocol=protocol, variant=variant, clients=20, fraction=0.5, **TINY))
    pooled = run_local(resolve(cfg))
    with monkeypatch.context() as m:      # without client_round: one thread per rank (as MPI)
        m.delattr(cls, "client_round")
        per_rank = run_local(resolve(cfg))
    assert len(per_rank) == 21 and len(pooled) == 2         # the pool keeps rank 0 and client 1
    for a, b in zip(pooled[0].model.state_dict().values(), per_rank[0].model.state_dict().values()):
        assert torch.equal(a, b)
    assert [r.accuracy for r in pooled[0].records] == [r.accuracy for r in per_rank[0].records]
    assert pooled[0].bytes_total == per_rank[0].bytes_total
    assert torch.equal(pooled[0].truth_inputs, per_rank[0].truth_inputs)
    for a, b in zip(pooled[1].model.state_dict().values(), per_rank[1].model.state_dict().values()):
        assert torch.equal(a, b)


def test_waves_group_independent_sampled_clients():
    ks = participants(_plan(fraction=0.5), 0)
    from slsec.protocols.base import WAVE, waves
    assert waves(_plan(fraction=0.5), ks, independent=True) == [ks[:WAVE], ks[WAVE:]]
    assert waves(_plan(fraction=0.5), ks, independent=False) == [ks]      # SplitFed v2
    assert waves(_plan(), list(range(1, 21)), independent=True) == [list(range(1, 21))]


def test_fraction_one_keeps_one_program_per_rank():
    cfg = make_config(dict(protocol="splitfed", clients=3, **TINY))
    assert len(run_local(resolve(cfg))) == 4


def test_sampled_splitfed_is_attacked_through_the_sampled_client(tmp_path):
    cfg = make_config(dict(protocol="splitfed", clients=8, fraction=0.25, attack="inversion",
                           method="whitebox", attack_iters=20, out=str(tmp_path), **TINY))
    m = evaluate(cfg).metrics
    assert 0 <= m["attack_ssim_mean"] <= 1 and m["rounds"] == 2


@pytest.mark.parametrize("argv,msg", [
    (["train", "--fraction", "0"], "--fraction must be in (0, 1], got 0.0"),
    (["train", "--fraction", "1.5"], "--fraction must be in (0, 1], got 1.5"),
    (["train", "--protocol", "vanilla", "--fraction", "0.5"],
     "--fraction (clients sampled per round) is for fedavg, splitfed; protocol 'vanilla' runs "
     "every client"),
])
def test_bad_fraction_is_one_line(argv, msg, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {msg}\n"
