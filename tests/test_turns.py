"""slsec.wire.turns: ranks that take turns run as greenlets of one thread over LocalHub."""
from __future__ import annotations

import threading

import pytest
import torch

from slsec.config import make_config
from slsec.errors import PeerError
from slsec.run import runner
from slsec.run.experiment import resolve
from slsec.run.setup import prepare
from slsec.wire.transport import LocalHub
from slsec.wire.turns import Turns


def test_ping_pong_runs_on_the_calling_thread():
    turns = Turns()
    hub = LocalHub(2, timeout=5, turns=turns)
    threads, got = set(), []

    def server() -> None:
        link = hub.link(0)
        for i in range(5):
            threads.add(threading.get_ident())
            x = link.recv(1, 2)["x"]
            link.give(1, {"g": x * 2}, 3)

    def client() -> None:
        link = hub.link(1)
        for i in range(5):
            threads.add(threading.get_ident())
            link.give(0, {"x": torch.tensor([float(i)])}, 2)
            got.append(float(link.recv(0, 3)["g"]))

    turns.run([server, client])
    assert got == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert threads == {threading.get_ident()}


def test_idle_ranks_are_not_visited_while_others_talk(monkeypatch):
    """Ranks run only when something was put where they wait: ten idle clients wait once each
    through 50 exchanges between ranks 0 and 1, then once more for their own message."""
    turns = Turns()
    hub = LocalHub(12, timeout=5, turns=turns)
    waits: dict[str, int] = {}
    real = Turns.wait

    def counting(self, what: str) -> None:
        waits[what] = waits.get(what, 0) + 1
        real(self, what)

    monkeypatch.setattr(Turns, "wait", counting)

    def server() -> None:
        link = hub.link(0)
        for _ in range(50):
            link.give(1, {"g": link.recv(1, 2)["x"]}, 3)
        for k in range(2, 12):
            link.send(k, {"w": torch.zeros(1)}, 4)

    def active() -> None:
        link = hub.link(1)
        for i in range(50):
            link.give(0, {"x": torch.tensor([float(i)])}, 2)
            link.recv(0, 3)

    def idle(k: int) -> None:
        hub.link(k).recv(0, 4)

    turns.run([server, active] + [lambda k=k: idle(k) for k in range(2, 12)])
    assert all(waits[f"rank {k} waits for rank 0 (tag 4)"] == 1 for k in range(2, 12)), waits
    assert waits["rank 1 waits for rank 0 (tag 3)"] == 50


def test_a_deadlock_is_named_at_once_not_after_the_timeout():
    turns = Turns()
    hub = LocalHub(3, timeout=3600, turns=turns)
    with pytest.raises(PeerError) as err:
        turns.run([lambda: hub.link(0).recv(1, 5), lambda: hub.link(1).recv(2, 6),
                   lambda: hub.link(2).recv_any(7)])
    assert str(err.value) == ("the ranks wait for one another and none can go on: "
                              "rank 0 waits for rank 1 (tag 5); rank 1 waits for rank 2 (tag 6); "
                              "rank 2 waits for any rank (tag 7)")


def test_a_failing_rank_is_raised_and_the_others_unwind():
    turns = Turns()
    hub = LocalHub(2, timeout=3600, turns=turns)
    unwound = []

    def waiter() -> None:
        try:
            hub.link(0).recv(1, 1)
        finally:
            unwound.append(True)

    def failing() -> None:
        raise ValueError("client broke")

    with pytest.raises(ValueError, match="client broke"):
        turns.run([waiter, failing])
    assert unwound == [True]


def test_each_rank_keeps_its_own_grad_mode():
    """torch's grad mode belongs to the thread: a rank waiting inside no_grad() must not switch
    it off for the rank that runs meanwhile."""
    turns = Turns()
    hub = LocalHub(2, timeout=5, turns=turns)
    seen = {}

    def quiet() -> None:
        with torch.no_grad():
            hub.link(0).recv(1, 1)
            seen["quiet"] = torch.is_grad_enabled()

    def learning() -> None:
        w = torch.ones(2, requires_grad=True)
        seen["learning"] = (w * 2).requires_grad
        hub.link(1).send(0, {"x": torch.zeros(1)}, 1)

    turns.run([quiet, learning])
    assert seen == {"quiet": False, "learning": True}
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("protocol", ["vanilla", "ushaped"])
def test_turns_give_the_same_numbers_as_threads(monkeypatch, protocol):
    """run_local runs alternating protocols as greenlets: the same run as threads, to the bit."""
    cfg = make_config({"protocol": protocol, "rounds": 2, "clients": 2, "max_train": 96,
                       "batch_size": 16, "probe_size": 8, "aux_size": 0})
    exp = resolve(cfg, prepare(cfg))
    assert runner.take_turns(exp) is not None
    as_greenlets = runner.run_local(exp)
    monkeypatch.setattr(runner, "take_turns", lambda exp: None)
    as_threads = runner.run_local(exp)
    for a, b in zip(as_greenlets, as_threads):
        assert [(r.accuracy, r.loss, r.bytes) for r in a.records] == \
            [(r.accuracy, r.loss, r.bytes) for r in b.records]
        for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(v, w), k
    assert len(as_greenlets[0].records) == 2


def test_protocols_that_run_side_by_side_keep_threads():
    assert runner.take_turns(resolve(make_config({"protocol": "splitfed"}))) is None
