"""Grids through the executor (slsec/study/executor.py): cells delivered to the one writer in
cell order whatever the workers' order, a killed worker loses only its own cell, a cell's error
stops the grid after the finished cells were kept, and real sweeps give the same rows with
--jobs 1, --jobs 2 and over mpi4py.futures ranks."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slsec.errors import UserError
from slsec.study import executor

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
# a small sweep: 3 cells sharing one undefended twin
SWEEP = ["sweep", "--protocol", "vanilla", "--attack", "inversion", "--method", "prior",
         "--defense", "dp", "--sigma", "0.1,0.5,1", "--rounds", "1", "--max-train", "128",
         "--aux-size", "64", "--probe-size", "16", "--attack-iters", "5"]


# ------------------------------------------------- cells run in worker processes (forkserver)

def slow_square(x: int) -> int:
    time.sleep(0.3 if x == 0 else 0.01)     # the first cell finishes last
    return x * x


def killed_at_two(arg: tuple[int, str]) -> int:
    """Cell 2's worker is killed every time it runs cell 2."""
    x, _ = arg
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return x


def killed_once(arg: tuple[int, str]) -> int:
    """Cell 1's worker is killed the first time only (e.g. a user's kill, not the cell's fault)."""
    x, flag = arg
    if x == 1 and not Path(flag).exists():
        Path(flag).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return x


def fails_at_three(x: int) -> int:
    if x == 3:
        raise UserError("cell 3 is wrong")
    time.sleep(0.05)
    return x


def test_two_workers_deliver_in_cell_order() -> None:
    got: list[tuple[int, int]] = []
    lost = executor.run_cells(slow_square, list(range(6)), jobs=2,
                              on_done=lambda i, r: got.append((i, r)))
    assert got == [(i, i * i) for i in range(6)] and lost == []


def test_a_killed_worker_loses_only_its_cell(tmp_path: Path) -> None:
    got: list[int] = []
    told: list[int] = []
    lost = executor.run_cells(killed_at_two, [(i, "") for i in range(5)], jobs=2,
                              on_done=lambda i, r: got.append(r),
                              on_lost=lambda i, why: told.append(i))
    assert lost == [2] and told == [2]
    assert got == [0, 1, 3, 4]          # the cell beside it in the other worker is rerun, not lost
    # a worker killed once: its cell is rerun alone and nothing is lost
    got.clear()
    flag = str(tmp_path / "killed")
    lost = executor.run_cells(killed_once, [(i, flag) for i in range(4)], jobs=2,
                              on_done=lambda i, r: got.append(r))
    assert lost == [] and got == [0, 1, 2, 3] and Path(flag).exists()


def test_a_failing_cell_keeps_the_finished_ones() -> None:
    got: list[int] = []
    with pytest.raises(UserError, match="cell 3 is wrong"):
        executor.run_cells(fails_at_three, list(range(12)), jobs=2,
                           on_done=lambda i, r: got.append(r))
    assert got[:3] == [0, 1, 2] and 3 not in got and len(got) < 11   # the rest cancelled


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_jobs_is_one_line(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slsec.cli import main
    assert main([*SWEEP, "--out", str(tmp_path), "--jobs", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --jobs must be a whole number >= 1, got {bad!r}"]
    assert not any(tmp_path.iterdir())


def test_mpi_cells_are_refused_in_an_mpi_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from slsec.config import make_config
    monkeypatch.setattr(executor, "mpi_pooled", lambda: True)
    with pytest.raises(UserError, match="--backend mpi: a cell that needs MPI ranks"):
        executor.grid_jobs([make_config({"backend": "mpi"})], 2)
    assert executor.grid_jobs([make_config({})], 2) == 2


# ----------------------------------------------------------------- real sweeps: the same rows

def rows(folder: Path) -> list[dict[str, str]]:
    """results.csv without what names the folder or times the run."""
    drop = ("out", "run_id", "row_check")
    with open(folder / "results.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop
                 and not any(s in k for s in ("seconds", "wall", "_s"))}
                for r in csv.DictReader(f)]


def test_jobs_two_gives_the_rows_of_jobs_one(tmp_path: Path) -> None:
    from slsec.cli import main
    for jobs in ("1", "2"):
        assert main([*SWEEP, "--out", str(tmp_path / jobs), "--run-id", "s", "--jobs", jobs]) == 0
    one, two = rows(tmp_path / "1" / "s"), rows(tmp_path / "2" / "s")
    assert len(one) == 3 and one == two
    assert [r["sigma"] for r in two] == ["0.1", "0.5", "1.0"]


@pytest.mark.slow
@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_a_worker_killed_mid_cell_in_a_real_sweep(tmp_path: Path, start: str) -> None:
    """SIGKILL one worker of `slsec sweep --jobs 2` while it runs a cell: the sweep finishes
    (the cells that were running are rerun, each alone) with the rows of --jobs 1. Workers
    come from the fork server; with a TMPDIR too deep for its socket, from spawn."""
    import tempfile
    from slsec.cli import main
    # cells of ~1-2 s (workers forked from a warm server start them at once): time to see one
    sweep = [*SWEEP, "--max-train", "1500"]
    assert main([*sweep, "--out", str(tmp_path / "seq"), "--run-id", "s", "--jobs", "1"]) == 0
    if start == "forkserver":
        scratch = Path(tempfile.mkdtemp(prefix="k", dir="/tmp"))
    else:
        scratch = tmp_path / ("deep" * 30)
        scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "slsec", *sweep, "--out", str(tmp_path / "par"),
                             "--run-id", "s", "--jobs", "2"], cwd=ROOT, text=True,
                            env=dict(os.environ, TMPDIR=str(scratch), OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = None
    deadline = time.monotonic() + 300
    server = False      # the fork server's socket was seen
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        server = server or any(scratch.glob("pymp-*/listener-*"))
        for mark in scratch.glob("slsec-cells-*/*"):
            pid = mark.read_text().strip()
            if pid.isdigit() and mark.name != "0":      # a cell (task 0 is the shared twin)
                os.kill(int(pid), signal.SIGKILL)
                killed = mark.name
                break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, "no worker was seen running a cell: " + err[-2000:]
    assert proc.returncode == 0, err[-2000:]
    assert rows(tmp_path / "par" / "s") == rows(tmp_path / "seq" / "s")
    assert server == (start == "forkserver")


@pytest.mark.mpi
def test_mpi4py_futures_launch_gives_the_same_rows(tmp_path: Path) -> None:
    """mpiexec -n 3 python -m mpi4py.futures -m slsec sweep ...: rank 0 writes, 2 ranks work."""
    if not MPIEXEC.exists():
        pytest.fail(f"{MPIEXEC} not found: install the 'mpich' package into this environment")
    from slsec.cli import main
    assert main([*SWEEP, "--out", str(tmp_path / "seq"), "--run-id", "s", "--jobs", "1"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(MPIEXEC), "-n", "3", sys.executable, "-m", "mpi4py.futures", "-m",
                           "slsec", *SWEEP, "--out", str(tmp_path / "mpi"), "--run-id", "s"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rows(tmp_path / "mpi" / "s") == rows(tmp_path / "seq" / "s")


@pytest.mark.slow
def test_workers_and_fork_server_end_with_a_killed_sweep(tmp_path: Path) -> None:
    """SIGKILL the parent of `slsec sweep --jobs 2` mid-grid: its fork server and workers end
    too (an orphan would hold the parent's stderr pipe open and burn a core for nothing)."""
    import tempfile
    scratch = Path(tempfile.mkdtemp(prefix="k", dir="/tmp"))      # short: the fork server
    proc = subprocess.Popen([sys.executable, "-m", "slsec", *SWEEP, "--max-train", "1500",
                             "--out", str(tmp_path / "par"), "--run-id", "s", "--jobs", "2"],
                            cwd=ROOT, env=dict(os.environ, TMPDIR=str(scratch),
                                                OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: set[int] = set()
    deadline = time.monotonic() + 300
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        workers = {int(m.read_text()) for m in scratch.glob("slsec-cells-*/*")
                   if m.read_text().strip().isdigit()}
        time.sleep(0.05)
    assert workers, "no worker was seen running a cell"
    def stat(pid: int) -> list[str] | None:
        """/proc/PID/stat's fields after the command name (state first), None once gone."""
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return None
    server = {int(f[1]) for w in workers if (f := stat(w))}     # the workers' parent
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    alive = workers | server
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if (f := stat(p)) and f[0] != "Z"}   # a zombie has ended
        time.sleep(0.2)
    assert not alive, f"still running after the sweep was killed: {sorted(alive)}"
