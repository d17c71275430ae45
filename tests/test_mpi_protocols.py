"""Same seed, same numbers on the local and MPI backends (runs mpiexec -n 3)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slsec.config import make_config
from slsec.run.runner import run_local
from slsec.run.setup import prepare

SCRIPT = Path(__file__).parent / "mpi_scripts" / "run_protocol.py"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
SMALL = {"clients": "2", "max_train": "192", "rounds": "2", "probe_size": "8", "batch_size": "32",
         "aux_size": "100"}


def run_mpi(tmp_path: Path, **kw: str) -> dict:
    out = tmp_path / "out.npz"
    args = [f"{k}={v}" for k, v in {**SMALL, **kw}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([MPIEXEC, "-n", "3", sys.executable, str(SCRIPT), str(out), *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(np.load(out))


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("protocol,extra", [
    ("vanilla", {}), ("ushaped", {}), ("splitfed", {"variant": "v2"}), ("fedavg", {}),
    ("splitfed-async", {"async_order": "fixed", "async_every": "2"}),
    # client sampling: the local backend's client pool against one MPI rank per client
    ("splitfed", {"fraction": "0.5"}), ("fedavg", {"fraction": "0.5"})])
def test_local_and_mpi_give_the_same_run(tmp_path, protocol, extra):
    mpi = run_mpi(tmp_path, protocol=protocol, **extra)
    cfg = make_config({**SMALL, "protocol": protocol, **extra})
    server = run_local(cfg, prepare(cfg))[0]
    local_curve = np.array([[r.accuracy, r.loss] for r in server.records])
    print(f"{protocol}: local curve {local_curve.tolist()} mpi curve {mpi['curve'].tolist()}")
    np.testing.assert_array_equal(local_curve, mpi["curve"])
    for k, v in server.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), mpi[f"w:{k}"])
    assert int(mpi["bytes"][0]) == server.bytes_total   # both backends count the same bytes
    print(f"{protocol}: framing overhead {mpi['bytes'][0] / mpi['bytes'][1]:.5f}")
