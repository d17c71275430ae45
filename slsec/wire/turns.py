"""Ranks that take turns, run as greenlets of one thread (the local backend's alternating runs).

In vanilla and U-shaped SL one role computes while every other waits for its message. Run as
threads, every hand-off wakes a thread through the kernel and the interpreter lock, and an epoch
at the conv1 cut costs ~6% more CPU than the same roles run as greenlets of one thread
(bench/overhead.py: "SL roles" vs "SL roles as threads"). Here a rank whose mailbox holds
nothing it can take hands the thread to the next rank: a switch costs about a microsecond.

`Turns.run(programs)` runs the programs round-robin until all have returned. A full round in
which no rank sent anything while some still wait can never end: it is raised at once as a
PeerError naming what each rank waits for (threads would wait out the timeout). The first
exception of any rank ends the run: the other ranks are unwound (GreenletExit at their wait,
so their `finally` blocks run) and that exception is raised.

torch's grad mode belongs to the thread, so each rank gets its own back after every switch.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from slsec.errors import PeerError


class Turns:
    """The scheduler that LocalHub(turns=...) mailboxes hand the thread to while they wait."""

    def __init__(self) -> None:
        self.sent = 0                        # messages put into a mailbox, by any rank
        self.waiting: dict[Any, str] = {}    # waiting greenlet -> what it waits for

    def wait(self, what: str) -> None:
        """A rank finds nothing to take: let the other ranks run, then look again."""
        from greenlet import getcurrent
        me, grad = getcurrent(), torch.is_grad_enabled()
        if me.parent is None:
            raise RuntimeError("a LocalHub with turns is used outside Turns.run")
        self.waiting[me] = what
        try:
            me.parent.switch()
        finally:
            self.waiting.pop(me, None)
            torch.set_grad_enabled(grad)

    def run(self, programs: list[Callable[[], None]]) -> None:
        """Run every program to its end, one at a time, on this thread."""
        from greenlet import greenlet
        grad = torch.is_grad_enabled()
        ranks = [greenlet(p) for p in programs]
        try:
            while any(not g.dead for g in ranks):
                before = self.sent
                for g in ranks:
                    if not g.dead:
                        g.switch()
                        torch.set_grad_enabled(grad)
                if self.sent == before and any(not g.dead for g in ranks):
                    raise PeerError("the ranks wait for one another and none can go on: " +
                                    "; ".join(w for g, w in self.waiting.items() if not g.dead))
        finally:
            for g in ranks:
                if not g.dead:
                    g.throw()
            torch.set_grad_enabled(grad)
