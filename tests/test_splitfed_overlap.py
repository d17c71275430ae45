"""SplitFed v1 runs the clients' tails at once (protocols/splitfed.py): same numbers as one client
after the other, the tails really on the pool's threads, and serial where a tail draws random
numbers."""
from __future__ import annotations

import threading

import torch

import slsec.protocols.splitfed as splitfed
from slsec.config import make_config
from slsec.run.experiment import resolve
from slsec.run.runner import run_local

SMALL = {"protocol": "splitfed", "clients": 3, "rounds": 2, "max_train": 192, "aux_size": 0,
         "batch_size": 32, "probe_size": 8, "device": "cpu"}


def train(**extra) -> tuple[list[float], dict[str, torch.Tensor]]:
    cfg = make_config({**SMALL, **extra})
    outcomes = run_local(resolve(cfg))
    server = outcomes[0]
    return [r.loss for r in server.records], {k: v.clone() for k, v in server.model.state_dict().items()}


def tail_threads(monkeypatch) -> list[str]:
    """Record the thread that runs every tail pass."""
    seen: list[str] = []
    real = splitfed.tail_backward

    def spy(*args):
        seen.append(threading.current_thread().name)
        return real(*args)
    monkeypatch.setattr(splitfed, "tail_backward", spy)
    return seen


def test_tails_at_once_give_the_serial_numbers(monkeypatch):
    seen = tail_threads(monkeypatch)
    losses, weights = train()
    assert seen and all(name.startswith("tail") for name in seen), set(seen)
    # every module counts as random: the server falls back to one client after the other
    monkeypatch.setattr(splitfed, "STOCHASTIC", (torch.nn.Module,))
    seen.clear()
    serial_losses, serial_weights = train()
    assert not seen   # the serial path runs serve_batch, not the pool's tail pass
    assert losses == serial_losses
    assert all(torch.equal(weights[k], serial_weights[k]) for k in weights)


def test_v2_and_one_client_stay_serial(monkeypatch):
    seen = tail_threads(monkeypatch)
    train(variant="v2")
    train(clients=1)
    assert not seen
