"""Multi-host MPI, exercised on one machine: `mpiexec -f HOSTFILE` as on a cluster.

The hostfile names two hosts (`localhost`, `127.0.0.1`), so hydra starts one proxy per host and
maps rank 0 to the first and ranks 1-2 to the second, as it would across machines; `-launcher
fork` starts those proxies locally instead of over ssh. The command is the README's cluster
command: the installed `slsec` under the user's own mpiexec, through the same code path
(preflight, MPILink, rank 0 writing the report). Same seed, same numbers as the local backend.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slsec.config import make_config
from slsec.run.experiment import resolve
from slsec.run.runner import run_local

BIN = Path(sys.executable).parent
SMALL = ["--protocol", "splitfed", "--clients", "2", "--max-train", "192", "--rounds", "2",
         "--probe-size", "8", "--batch-size", "32", "--aux-size", "100"]


@pytest.mark.mpi
@pytest.mark.slow
def test_hostfile_job_maps_ranks_to_hosts_and_matches_the_local_run(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:1\n127.0.0.1:2\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mpiexec = [str(BIN / "mpiexec"), "-f", str(hosts), "-launcher", "fork", "-n", "3"]
    where = subprocess.run(mpiexec + ["-l", "printenv", "PMI_HOSTNAME"], capture_output=True,
                           text=True, timeout=120, env=env)
    assert where.returncode == 0, where.stderr
    mapping = sorted(re.findall(r"^\[(\d+)\]\s*(\S+)", where.stdout, flags=re.M))
    assert mapping == [("0", "localhost"), ("1", "127.0.0.1"), ("2", "127.0.0.1")], where.stdout

    out = tmp_path / "reports"
    proc = subprocess.run(mpiexec[:1] + ["-disable-auto-cleanup"] + mpiexec[1:]
                          + [str(BIN / "slsec"), "train", "--backend", "mpi", *SMALL,
                             "--out", str(out), "--run-id", "hostfile"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((out / "hostfile" / "result.json").read_text())
    flags = dict(zip((a[2:].replace("-", "_") for a in SMALL[::2]), SMALL[1::2]))
    server = run_local(resolve(make_config(flags)))[0]
    assert [(c["accuracy"], c["loss"]) for c in result["curve"]] == \
        [(r.accuracy, r.loss) for r in server.records]
