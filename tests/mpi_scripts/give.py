"""Under `mpiexec -n 2`: MPILink.give returns before the receiver has posted its receive, and
the given tensors stay alive (and intact) until MPI has read them; flush waits for that.

Rank 1 enters a barrier before it receives anything. Rank 0 gives two 6.4 MB tensors it holds
no reference to, overwrites freed memory, then enters the barrier: if give waited for the
receiver, rank 0 would never reach it and the job would hang.
"""
from __future__ import annotations

import gc
import time

import torch
from mpi4py import MPI

from slsec.wire.transport import MPILink

comm = MPI.COMM_WORLD
link = MPILink(comm, timeout=30)
N = 1_600_000


def barrier() -> None:
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.001)


if link.rank == 0:
    link.give(1, {"x": torch.full((N,), 7.0)}, 1)
    link.give(1, {"x": torch.full((N,), 8.0)}, 1)
    gc.collect()
    scratch = [torch.full((N,), -1.0) for _ in range(4)]   # reuses freed memory, if any
    barrier()
    link.flush()
    print("rank 0: gave twice before rank 1 received", flush=True)
else:
    barrier()
    a, b = link.recv(0, 1)["x"], link.recv(0, 1)["x"]
    assert torch.equal(a, torch.full((N,), 7.0)) and torch.equal(b, torch.full((N,), 8.0))
    print("rank 1: both intact", flush=True)
