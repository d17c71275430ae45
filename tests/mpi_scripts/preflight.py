"""Under `mpiexec -n 3`: preflight checks.

Usage: mpiexec -n 3 python tests/mpi_scripts/preflight.py MODE
  wrong   expect 4 ranks: every rank gets the UserError; rank 0 prints it, all exit 2
  silent  rank 2 never pings: rank 0 prints the PeerError naming rank 2 and aborts
  procs   every rank prints "PROCS <rank> <pid> <json of the rank -> [pid, host] table>"
  dead    (run with -disable-auto-cleanup) after the preflight rank 1 SIGKILLs itself while
          rank 0 waits for it with a 60 s timeout: rank 0 prints "DIED <seconds> <error>"
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> int:
    from mpi4py import MPI

    from slsec.errors import PeerError, UserError
    from slsec.transport import preflight

    mode = sys.argv[1]
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if mode == "wrong":
        try:
            preflight(comm, expected_world=4, timeout=10)
        except UserError as e:
            if rank == 0:
                print(f"error: {e}", flush=True)
            return 2
        return 0
    if mode in ("procs", "dead"):
        return procs_or_dead(comm, mode)
    if rank == 2:
        time.sleep(120)
        return 0
    try:
        preflight(comm, expected_world=3, timeout=1.0)
    except PeerError as e:
        print(f"rank {rank}: PeerError: {e}", flush=True)
        comm.Abort(3)
    return 0


def procs_or_dead(comm, mode: str) -> int:
    from slsec.errors import PeerError
    from slsec.runner import abort_job
    from slsec.transport import MPILink, preflight

    rank = comm.Get_rank()
    procs = preflight(comm, expected_world=3, timeout=30)
    if mode == "procs":
        table = {r: list(p) for r, p in procs.items()}
        print(f"PROCS {rank} {os.getpid()} {json.dumps(table, sort_keys=True)}", flush=True)
        return 0
    link = MPILink(comm, timeout=60, procs=procs)
    if rank == 1:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    if rank == 0:
        t0 = time.monotonic()
        try:
            link.recv(1, tag=7)
        except PeerError as e:
            print(f"DIED {time.monotonic() - t0:.2f} {e}", flush=True)
        abort_job(comm, 4)   # lets hydra forward the line first
    time.sleep(120)   # rank 2: ended by rank 0's Abort
    return 0


if __name__ == "__main__":
    sys.exit(main())
