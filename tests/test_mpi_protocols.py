"""Same seed, same numbers on the local and MPI backends (runs mpiexec -n 3)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slsec.config import make_config
from slsec.run.experiment import resolve
from slsec.run.runner import run_local

SCRIPT = Path(__file__).parent / "mpi_scripts" / "run_protocol.py"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
SMALL = {"clients": "2", "max_train": "192", "rounds": "2", "probe_size": "8", "batch_size": "32",
         "aux_size": "100"}


CASES = [
    ("vanilla", {}), ("ushaped", {}), ("splitfed", {"variant": "v2"}), ("fedavg", {}),
    # v1: the server runs both clients' tails at once (a thread pool beside the MPI link)
    ("splitfed", {"variant": "v1"}),
    ("splitfed-async", {"async_order": "fixed", "async_every": "2"}),
    # client sampling: the local backend's client pool against one MPI rank per client
    ("splitfed", {"fraction": "0.5"}), ("fedavg", {"fraction": "0.5"})]


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Every case's MPI run, one after another in one `mpiexec -n 3` job (each run has its own
    preflight and links, as a fresh job would; one job instead of seven saves six start-ups
    of three interpreters importing torch, ~6 s each on 2 cores)."""
    folder = tmp_path_factory.mktemp("mpi")
    words: list[str] = []
    for i, (protocol, extra) in enumerate(CASES):
        args = [f"{k}={v}" for k, v in {**SMALL, "protocol": protocol, **extra}.items()]
        words += (["--"] if words else []) + [str(folder / f"out{i}.npz"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([MPIEXEC, "-n", "3", sys.executable, str(SCRIPT), *words],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [dict(np.load(folder / f"out{i}.npz")) for i in range(len(CASES))]


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)),
                         ids=[f"{p}-{'-'.join(f'{k}={v}' for k, v in e.items())}".rstrip("-")
                              for p, e in CASES])
def test_local_and_mpi_give_the_same_run(mpi_runs, case):
    protocol, extra = CASES[case]
    mpi = mpi_runs[case]
    cfg = make_config({**SMALL, "protocol": protocol, **extra})
    server = run_local(resolve(cfg))[0]
    local_curve = np.array([[r.accuracy, r.loss] for r in server.records])
    print(f"{protocol}: local curve {local_curve.tolist()} mpi curve {mpi['curve'].tolist()}")
    np.testing.assert_array_equal(local_curve, mpi["curve"])
    for k, v in server.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), mpi[f"w:{k}"])
    assert int(mpi["bytes"][0]) == server.bytes_total   # both backends count the same bytes
    print(f"{protocol}: framing overhead {mpi['bytes'][0] / mpi['bytes'][1]:.5f}")
