"""Ranks that take turns, run as greenlets of one thread (the local backend's alternating runs).

In vanilla and U-shaped SL one role computes while every other waits for its message. Run as
threads, every hand-off wakes a thread through the kernel and the interpreter lock, and an epoch
at the conv1 cut costs ~6% more CPU than the same roles run as greenlets of one thread
(bench/overhead.py: "SL roles" vs "SL roles as threads"). Here a rank whose mailbox holds
nothing it can take hands the thread to the next rank: a switch costs about a microsecond.

`Turns.run(programs)` starts the programs in order, then runs whichever rank a message was put
for (a rank left waiting costs nothing, so a vanilla run with many clients does not visit the
idle ones). When no rank can run but some still wait, none ever will: that deadlock is raised at
once as a PeerError naming what each rank waits for (threads would wait out the timeout). The
first exception of any rank ends the run: the other ranks are unwound (GreenletExit at their
wait, so their `finally` blocks run) and that exception is raised.

torch's grad mode belongs to the thread, so each rank gets its own back after every switch.
"""
from __future__ import annotations

import collections
from typing import Any, Callable

import torch

from slsec.errors import PeerError


class Turns:
    """The scheduler that LocalHub(turns=...) mailboxes hand the thread to while they wait."""

    def __init__(self) -> None:
        self.waiting: dict[Any, str] = {}    # waiting greenlet -> what it waits for
        self._ready: collections.deque = collections.deque()   # ranks to run, in order
        self._queued: set[Any] = set()

    def wait(self, what: str) -> None:
        """A rank finds nothing to take: let the others run until `wake` is called for it."""
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

    def current(self) -> Any:
        """The rank running now (its greenlet), for a mailbox to `wake` later."""
        from greenlet import getcurrent
        return getcurrent()

    def wake(self, rank: Any) -> None:
        """Something was put where `rank` (from `current`) waits: let it look again."""
        if rank in self.waiting and rank not in self._queued:
            self._ready.append(rank)
            self._queued.add(rank)

    def run(self, programs: list[Callable[[], None]]) -> None:
        """Run every program to its end, one at a time, on this thread."""
        from greenlet import greenlet
        grad = torch.is_grad_enabled()
        ranks = [greenlet(p) for p in programs]
        self._ready.extend(ranks)
        self._queued.update(ranks)
        try:
            while self._ready:
                g = self._ready.popleft()
                self._queued.discard(g)
                g.switch()
                torch.set_grad_enabled(grad)
            if any(not g.dead for g in ranks):
                raise PeerError("the ranks wait for one another and none can go on: " +
                                "; ".join(self.waiting[g] for g in ranks if g in self.waiting))
        finally:
            self._ready.clear()
            self._queued.clear()
            for g in ranks:
                if not g.dead:
                    g.throw()
            torch.set_grad_enabled(grad)
