"""Under `mpiexec -n 3`: rank 2 stays silent; rank 0's recv must raise PeerError naming it.

Usage: mpiexec -n 3 python tests/mpi_scripts/silent.py TIMEOUT_S
Rank 0 prints one line and ends the job with slsec.run.runner.abort_job (exit non-zero).
"""
from __future__ import annotations

import sys
import time

import torch


def main() -> None:
    from mpi4py import MPI

    from slsec.errors import PeerError
    from slsec.wire.transport import MPILink

    torch.set_num_threads(1)
    timeout = float(sys.argv[1])
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 2:
        time.sleep(120)             # alive but silent; Abort ends it
        return
    link = MPILink(comm, timeout=timeout if comm.Get_rank() == 0 else 120)
    t0 = time.monotonic()
    try:
        link.recv(2 if link.rank == 0 else 0, 5)
    except PeerError as e:
        print(f"PeerError: {e} [after {time.monotonic() - t0:.3f} s]", flush=True)
        from slsec.run.runner import abort_job  # the line reaches mpiexec before the job ends
        abort_job(comm, 3)


if __name__ == "__main__":
    main()
