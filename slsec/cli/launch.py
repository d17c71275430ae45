"""Running under mpiexec: whether this process is a launched rank (and rank 0), and launching
`slsec train|evaluate --backend mpi` as K+1 ranks when it was typed without mpiexec; how the
process ends when it is stopped (Ctrl-C, or SIGTERM from a scheduler or `kill`)."""
from __future__ import annotations

import os
import sys
from typing import Any

from slsec.config import RunConfig
from slsec.errors import UserError

_LAUNCHER_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
ARGV: list[str] = []   # this command line, for launching it under mpiexec


def _under_mpiexec() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS)


def launch_under_mpiexec(cfg: RunConfig) -> None:
    """`slsec train|evaluate --backend mpi` typed without mpiexec: run this same command line as
    K+1 ranks. With MPICH's hydra, survivors of a dead rank are kept alive
    (-disable-auto-cleanup) long enough to name it; the job still ends within seconds."""
    if cfg.backend != "mpi" or _under_mpiexec() or os.environ.get("SLSEC_LAUNCHED"):
        return
    import shutil
    import subprocess

    from slsec.run.runner import load_mpi
    load_mpi(initialize=False)   # no working MPI: say so here, not once per launched rank
    venv = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = venv if os.access(venv, os.X_OK) else shutil.which("mpiexec")
    if mpiexec is None:
        raise UserError("--backend mpi needs mpiexec (pip install mpich), or run slsec under "
                        f"your own: mpiexec -n {cfg.clients + 1} slsec ...")
    try:
        info = subprocess.run([mpiexec, "-version"], capture_output=True, text=True, timeout=30)
        hydra = "HYDRA" in info.stdout
    except (OSError, subprocess.SubprocessError):
        hydra = False
    cmd = [mpiexec, *(["-disable-auto-cleanup"] if hydra else []), "-n", str(cfg.clients + 1),
           sys.executable, "-m", "slsec.cli", *ARGV]
    print(f"launching {cfg.clients + 1} ranks: {' '.join(cmd[:len(cmd) - len(ARGV)])} ...",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.environ["SLSEC_LAUNCHED"] = "1"
    os.execv(mpiexec, cmd)


def is_rank0() -> bool:
    """True outside mpiexec, and on rank 0 under it (the one rank that prints user errors)."""
    for var in _LAUNCHER_VARS:
        if var in os.environ:
            return os.environ[var] == "0"
    return True


def on_sigterm() -> list[int]:
    """SIGTERM (a batch scheduler's time limit, `kill`) is handled as Ctrl-C: the command
    stops where Ctrl-C would, keeping what it finished, and exits 143. Returns the list the
    handler marks (empty until a SIGTERM arrives)."""
    import signal
    import threading
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return seen

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    return seen


def interrupted(terminated: list[int]) -> int:
    if terminated:
        print("error: terminated (SIGTERM); finished results are kept, nothing is "
              "half-written", file=sys.stderr)
        return 143
    print("error: interrupted", file=sys.stderr)
    return 130
