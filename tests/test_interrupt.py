"""Ctrl-C during a local run: one line, exit 130, and the rank threads stop first (a thread
left inside torch when the interpreter exits aborts the process: "terminate called without an
active exception", exit -6, before this was fixed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from slsec.errors import PeerError
from slsec.wire.transport import LocalHub

SLSEC = Path(sys.executable).parent / "slsec"
TRAIN = ["train", "--clients", "2", "--rounds", "50", "--max-train", "2000", "--aux-size", "100"]


def interrupted(args: list[str], started: str, timeout: float) -> tuple[int, str]:
    """Run `slsec args`, send SIGINT once a stderr line contains `started`; (exit code,
    stderr)."""
    proc = subprocess.Popen([str(SLSEC), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stderr:
            if started in line:
                break
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=timeout)[1]
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["vanilla", "splitfed"])   # greenlets; threads
def test_ctrl_c_mid_training_is_one_line_and_exit_130(tmp_path, protocol):
    """...and what an earlier run wrote to --out is left as it was, with no temp files."""
    earlier = tmp_path / "run-old" / "result.json"
    earlier.parent.mkdir()
    earlier.write_text('{"metrics": {"accuracy": 0.93}}')
    # training has started once progress reports batches
    code, err = interrupted([*TRAIN, "--protocol", protocol, "--out", str(tmp_path)], "batches", 60)
    assert code == 130, (code, err)
    assert err.strip().splitlines()[-1] == "error: interrupted", err
    assert "Traceback" not in err and "terminate called" not in err, err
    assert earlier.read_text() == '{"metrics": {"accuracy": 0.93}}'
    assert not list(tmp_path.rglob("*.tmp"))


def test_abort_ends_every_wait_with_why():
    hub = LocalHub(3, timeout=3600)
    seen: list[str] = []

    def wait(rank: int) -> None:
        try:
            hub.link(rank).recv(0, 1)
        except PeerError as e:
            seen.append(str(e))

    threads = [threading.Thread(target=wait, args=(r,)) for r in (1, 2)]
    for t in threads:
        t.start()
    hub.abort("rank 0 failed: out of memory")
    for t in threads:
        t.join(10)
    assert seen == ["rank 0 failed: out of memory"] * 2
    with pytest.raises(PeerError, match="out of memory"):   # and every later wait
        hub.link(1).recv(0, 1)
    hub.link(0).send(1, {"x": torch.zeros(1)}, 1)   # what was sent before is still taken
    assert hub.link(1).recv(0, 1)["x"].shape == (1,)


@pytest.mark.slow
@pytest.mark.mpi
def test_ctrl_c_under_mpiexec_is_one_slsec_line_and_exit_130(tmp_path):
    """mpiexec hands Ctrl-C to every rank: rank 0 alone says so, the job ends with 130."""
    # a round has ended: every rank is inside the protocol
    code, err = interrupted([*TRAIN, "--backend", "mpi", "--protocol", "vanilla",
                             "--out", str(tmp_path)], "round 1/", 120)
    assert code == 130, (code, err)
    slsec_lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert slsec_lines == ["error: interrupted"], err
    assert "Traceback" not in err, err
