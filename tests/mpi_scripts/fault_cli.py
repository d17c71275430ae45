"""Run the real `slsec` command line under mpiexec with a fault injected into one rank.

usage: mpiexec -n K+1 python tests/mpi_scripts/fault_cli.py train --backend mpi ...

The fault comes from the environment, SLSEC_FAULT="<rank>:<kind>:<after>": on rank <rank>,
just before its (<after>+1)-th protocol message out (MPILink.send or give, so mid-round), the rank

  kill    prints "FAULT <rank> kill pid <pid> at <unix time>", then SIGKILLs itself (a crash:
          no Python cleanup, no MPI_Finalize)
  stall   prints "FAULT <rank> stall pid <pid> at <unix time>" and sleeps for an hour (alive
          but silent)
  pause   writes its pid to $SLSEC_FAULT_PIDFILE and sleeps (the test kills it from outside)

Every rank first prints "RANK <rank> pid <pid>", then runs slsec.cli.main unchanged (the
faulty rank with the wrapped send and give); the script exits with main's exit code.
"""
from __future__ import annotations

import os
import signal
import sys
import time


def install_fault(spec: str) -> None:
    """Wrap MPILink.send and give on the faulty rank: the fault fires after `after` messages."""
    rank_s, kind, after_s = spec.split(":")
    if os.environ.get("PMI_RANK") != rank_s:
        return
    from slsec.wire.transport import MPILink

    count = [0]

    def fault() -> None:
        if count[0] >= int(after_s):
            if kind == "pause":
                path = os.environ["SLSEC_FAULT_PIDFILE"]
                with open(path + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(path + ".tmp", path)
            else:
                print(f"FAULT {rank_s} {kind} pid {os.getpid()} at {time.time():.3f}", flush=True)
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)
        count[0] += 1

    def wrapped(real):  # noqa: ANN001, ANN202
        def out(self, dest, tensors, tag):  # noqa: ANN001 - same signature as MPILink.send
            fault()
            return real(self, dest, tensors, tag)
        return out

    MPILink.send = wrapped(MPILink.send)  # type: ignore[method-assign]
    MPILink.give = wrapped(MPILink.give)  # type: ignore[method-assign]


def main() -> int:
    import torch

    torch.set_num_threads(1)
    print(f"RANK {os.environ.get('PMI_RANK')} pid {os.getpid()}", flush=True)
    spec = os.environ.get("SLSEC_FAULT")
    if spec:
        install_fault(spec)
    from slsec.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
