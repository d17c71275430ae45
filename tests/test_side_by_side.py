"""An attack's independent methods side by side (slsec/run/side_by_side.py): the same results,
bit for bit, as one after the other; the decoder's initialisation from its own generator."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from slsec import progress
from slsec.attacks.inverse import Decoder
from slsec.run import side_by_side
from slsec.run.side_by_side import run_methods


@pytest.mark.parametrize("smashed", [(32, 28, 28), (64, 7, 7), (128,)])
@pytest.mark.parametrize("labelled", [False, True])
def test_decoder_draws_from_its_generator_what_the_global_one_gave(smashed, labelled):
    templates = torch.rand(10, 1, 28, 28) if labelled else None
    torch.manual_seed(3)
    old = Decoder(smashed, (1, 28, 28), 16, templates)
    torch.manual_seed(99)   # the global generator's state no longer matters
    new = Decoder(smashed, (1, 28, 28), 16, templates, generator=torch.Generator().manual_seed(3))
    a, b = old.state_dict(), new.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_methods_keep_their_order_and_the_rest_run_after(monkeypatch):
    monkeypatch.setattr(side_by_side, "free_cores", lambda threads: 2)
    seen: list[tuple[str, str]] = []

    def one(method: str) -> str:
        seen.append((method, threading.current_thread().name))
        return method.upper()

    got = run_methods(["a", "b", "c"], one, frozenset({"a", "c"}), threads=1)
    assert list(got.items()) == [("a", "A"), ("b", "B"), ("c", "C")]
    where = dict(seen)
    assert where["a"].startswith("slsec-attack") and where["c"].startswith("slsec-attack")
    assert where["b"] == threading.current_thread().name and seen[-1][0] == "b"


def test_one_core_or_running_statistics_keep_them_one_by_one(monkeypatch):
    assert side_by_side.free_cores(threads=10**6) == 1
    names: list[str] = []
    one = lambda m: names.append(threading.current_thread().name) or m  # noqa: E731
    monkeypatch.setattr(side_by_side, "free_cores", lambda threads: 1)
    run_methods(["a", "b"], one, frozenset({"a", "b"}), threads=1)
    monkeypatch.setattr(side_by_side, "free_cores", lambda threads: 2)
    run_methods(["a", "b"], one, frozenset({"a", "b"}), threads=1,
                model=nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train())
    assert set(names) == {threading.current_thread().name}


def test_a_failing_method_fails_the_call(monkeypatch):
    monkeypatch.setattr(side_by_side, "free_cores", lambda threads: 2)

    def one(method: str) -> str:
        if method == "b":
            raise ValueError("b broke")
        return method

    with pytest.raises(ValueError, match="b broke"):
        run_methods(["a", "b"], one, frozenset({"a", "b"}), threads=1)


def test_each_thread_ticks_its_own_attack_phase(monkeypatch):
    monkeypatch.setattr(side_by_side, "free_cores", lambda threads: 2)
    both = threading.Barrier(2)

    def one(method: str) -> int:
        with progress.attack(method):
            both.wait(timeout=10)   # both phases are open at once
            for _ in range({"a": 3, "b": 5}[method]):
                progress.tick_attack()
            done = progress.REPORTER.phases[f"attack {method}"].done
            both.wait(timeout=10)
        return done

    assert run_methods(["a", "b"], one, frozenset({"a", "b"}), threads=1) == {"a": 3, "b": 5}


def test_inversion_side_by_side_equals_one_by_one(monkeypatch):
    """The real attack (whitebox, decoder, the reference prior) on a tiny trained run."""
    from slsec.config import make_config
    from slsec.run import harness
    from slsec.run.experiment import resolve
    from slsec.run.runner import run_local
    cfg = make_config({"protocol": "vanilla", "attack": "inversion", "max_train": 128,
                       "probe_size": 8, "aux_size": 100, "batch_size": 32, "rounds": 1,
                       "attack_iters": 30})
    exp = resolve(cfg)
    outcome = run_local(exp)[exp.attack.rank]
    runs = {}
    for cores in (1, 2):
        monkeypatch.setattr(side_by_side, "free_cores", lambda threads, n=cores: n)
        before = torch.get_rng_state()
        runs[cores] = harness.run_attack(exp, outcome)
        assert torch.equal(torch.get_rng_state(), before)   # the caller's global state is kept
    one, two = (runs[n].to_tensors() for n in (1, 2))   # every guess as named tensors
    assert {"whitebox.images", "decoder.images", "prior.images"} <= one.keys()
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one if not k.endswith(".seconds"))


def test_a_failure_stops_the_other_methods_at_their_next_tick(monkeypatch):
    import time
    monkeypatch.setattr(side_by_side, "free_cores", lambda threads: 2)
    ticks = {"slow": 0}

    def one(method: str) -> str:
        if method == "bad":
            time.sleep(0.2)
            raise ValueError("bad broke")
        for _ in range(1000):   # 10 s unless stopped
            progress.tick_attack()
            ticks["slow"] += 1
            time.sleep(0.01)
        return method

    start = time.perf_counter()
    with pytest.raises(ValueError, match="bad broke"):
        run_methods(["slow", "bad"], one, frozenset({"slow", "bad"}), threads=1)
    assert time.perf_counter() - start < 5 and 0 < ticks["slow"] < 1000
    progress.tick_attack()   # this thread was never told to stop
