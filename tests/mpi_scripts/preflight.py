"""Under `mpiexec -n 3`: preflight checks.

Usage: mpiexec -n 3 python tests/mpi_scripts/preflight.py MODE
  wrong   expect 4 ranks: every rank gets the UserError; rank 0 prints it, all exit 2
  silent  rank 2 never pings: rank 0 prints the PeerError naming rank 2 and aborts
  procs   every rank prints "PROCS <rank> <pid> <json of the rank -> [pid, host] table>"
  dead    rank 0 waits for rank 1 (60 s timeout) while the process it watches for rank 1 (a
          stand-in child, SIGKILLed after 0.5 s) dies: rank 0 prints "DIED <seconds> <error>"
"""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    from mpi4py import MPI

    from slsec.errors import PeerError, UserError
    from slsec.wire.transport import preflight

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
        from slsec.run.runner import abort_job  # the line reaches mpiexec before the job ends
        abort_job(comm, 3)
    return 0


def procs_or_dead(comm, mode: str) -> int:
    from slsec.errors import PeerError
    from slsec.run.runner import abort_job
    from slsec.wire.transport import MPILink, preflight

    rank = comm.Get_rank()
    procs = preflight(comm, expected_world=3, timeout=30)
    if mode == "procs":
        table = {r: list(p) for r, p in procs.items()}
        print(f"PROCS {rank} {os.getpid()} {json.dumps(table, sort_keys=True)}", flush=True)
        return 0
    if rank == 0:
        # rank 1 stays alive but silent; the pid rank 0 watches for it is a plain child process
        # that hydra does not manage, killed after 0.5 s: no process manager races the check
        import subprocess
        import threading
        stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        procs = {**procs, 1: procs[1]._replace(pid=stand_in.pid)}
        link = MPILink(comm, timeout=60, procs=procs)
        threading.Timer(0.5, stand_in.kill).start()   # left unreaped: a zombie counts as gone
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
