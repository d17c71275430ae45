"""Under `mpiexec -n 3`: preflight checks.

Usage: mpiexec -n 3 python tests/mpi_scripts/preflight.py MODE
  wrong   expect 4 ranks: every rank gets the UserError; rank 0 prints it, all exit 2
  silent  rank 2 never pings: rank 0 prints the PeerError naming rank 2 and aborts
"""
from __future__ import annotations

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
    if rank == 2:
        time.sleep(120)
        return 0
    try:
        preflight(comm, expected_world=3, timeout=1.0)
    except PeerError as e:
        print(f"rank {rank}: PeerError: {e}", flush=True)
        comm.Abort(3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
