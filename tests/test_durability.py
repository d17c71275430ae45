"""Nothing is lost: rows and reports are written atomically, killed writers resume cleanly.

- `results.append_row` in a subprocess SIGKILLed at random moments, 5 times, then resumed;
- a real `slsec sweep` SIGKILLed at random points (mid-cell, mid-append, mid-render) 5 times
  in a row, then resumed with --resume: every planned cell has exactly one row;
- static checks over the package: every file it writes goes through an atomic temp+rename,
  no torch.load without weights_only=True, no pickle-based (lowercase) mpi4py calls.
"""
from __future__ import annotations

import ast
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slsec.report.results import append_row, atomic_write, read_rows

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = [ROOT / d for d in ("slsec", "protocols", "attacks", "defenses")]
SLSEC = Path(sys.executable).parent / "slsec"
KILLS = 5

WRITER = """
import sys, time
from slsec.report.results import append_row, read_rows
path, total = sys.argv[1], int(sys.argv[2])
for i in range(len(read_rows(path)), total):      # resume after the last complete row
    append_row(path, {"i": i, "payload": "x" * 400, "nested": [i, {"k": i}], "comma": "a,b"})
    time.sleep(0.005)      # a row every few ms at least, so a fast disk cannot outrun 5 kills
"""


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def check_rows(path: Path, planned: int) -> list[int]:
    """The file parses, rows are 0..n-1 in order (none lost, none twice), cells intact."""
    rows = read_rows(path)
    ids = [int(r["i"]) for r in rows]
    assert ids == list(range(len(ids))), ids
    for r in rows:
        assert r["payload"] == "x" * 400 and r["comma"] == "a,b"
        assert json.loads(r["nested"]) == [int(r["i"]), {"k": int(r["i"])}]
    assert len(ids) <= planned
    return ids


def test_append_row_survives_sigkill_at_random_moments(tmp_path):
    path, total = tmp_path / "results.csv", 150
    rng = random.Random(7)
    kills = 0
    for attempt in range(KILLS):
        before = len(read_rows(path))
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(total)], env=env())
        while len(read_rows(path)) == before and proc.poll() is None:   # let it make progress
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))   # at most ~20 more rows: 5 kills fit in 150 rows
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        ids = check_rows(path, total)
        print(f"kill {attempt + 1}: {len(ids)} rows, temp files left: "
              f"{len(list(tmp_path.glob('.results.csv.*.tmp')))}")
    assert kills == KILLS, "the writer finished before it could be killed 5 times"
    subprocess.run([sys.executable, "-c", WRITER, str(path), str(total)], env=env(), check=True,
                   timeout=120)
    assert check_rows(path, total) == list(range(total))    # 0 lost, 0 duplicated


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    p = tmp_path / "report.md"
    atomic_write(p, "old\n")

    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write(p, "new and much longer\n" * 1000)
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["report.md"]   # temp file removed


def test_append_row_keeps_all_columns_and_quotes(tmp_path):
    p = tmp_path / "r.csv"
    append_row(p, {"a": 1, "b": "x,y"})
    append_row(p, {"a": 2, "c": 'say "hi"\nnext line'})
    assert read_rows(p) == [{"a": "1", "b": "x,y", "c": ""},
                            {"a": "2", "b": "", "c": 'say "hi"\nnext line'}]


def _sweep_child(argv: list[str]) -> None:
    """A forked child: the real command line, output discarded, exits with its code."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from slsec.cli import main
    os._exit(main(argv))


@pytest.mark.slow
def test_sweep_killed_five_times_then_resumed_loses_and_duplicates_no_rows(tmp_path, monkeypatch):
    """The real `slsec sweep` command (8 cells), SIGKILLed 5 times at random points after it
    made progress (mid-cell, mid-append or mid-render), then resumed: one row per planned cell.
    Each attempt is a fork of this process (torch already imported) running slsec.cli.main,
    or a spawned child on a machine with CUDA: once this process has asked CUDA anything (an
    earlier test's `torch.cuda.is_available()` does), a forked child cannot use torch at all,
    not even its CPU optimisers ("CUDA error: initialization error")."""
    import slsec.cli.commands, slsec.report.frontier, slsec.run.harness, slsec.study.sweeps  # noqa: F401,E401
    monkeypatch.chdir(tmp_path)              # (imported once here, not in every child)
    out, run_id = tmp_path / "reports", "killed"
    lrs = ["0.001", "0.002", "0.003", "0.004", "0.005", "0.006", "0.007", "0.008"]
    argv = ["sweep", "--lr", ",".join(lrs), "--max-train", "64", "--probe-size", "8",
            "--aux-size", "100", "--batch-size", "64", "--rounds", "1", "--threads", "1",
            "--device", "cpu",
            "--out", str(out), "--run-id", run_id]
    results = out / run_id / "results.csv"
    mp = multiprocessing.get_context("spawn" if torch.cuda.is_available() else "fork")
    rng = random.Random(11)
    log = []
    for attempt in range(KILLS):
        before = len(read_rows(results))
        proc = mp.Process(target=_sweep_child, args=(argv + (["--resume"] if attempt else []),))
        proc.start()
        t0 = time.monotonic()
        while len(read_rows(results)) == before and proc.is_alive():
            assert time.monotonic() - t0 < 180, "no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        killed = proc.is_alive()
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert killed or proc.exitcode == 0, proc.exitcode
        cells = [r["cell"] for r in read_rows(results)]
        assert len(cells) == len(set(cells)), f"duplicated rows after kill {attempt + 1}: {cells}"
        log.append((killed, len(cells), round(time.monotonic() - t0, 1)))
    print("attempts (killed, rows, seconds):", log)
    assert sum(k for k, *_ in log) >= 3, log         # most attempts were really cut short
    proc = mp.Process(target=_sweep_child, args=(argv + ["--resume"],))
    proc.start()
    proc.join(300)
    assert proc.exitcode == 0, proc.exitcode
    planned = json.loads((out / run_id / "sweep.json").read_text())["cells"]
    rows = read_rows(results)
    cells = [r["cell"] for r in rows]
    assert len(planned) == 8
    assert sorted(cells) == sorted(planned), "rows lost or duplicated"
    assert sorted(r["lr"] for r in rows) == lrs
    assert not list((out / run_id).glob("*.tmp")) and not list((out / run_id).glob(".*.tmp"))
    assert (out / run_id / "report.html").exists()


# ----------------------------------------------------------------------------- static checks

def package_sources() -> list[tuple[Path, ast.Module]]:
    files = sorted(p for d in PACKAGE_DIRS for p in d.rglob("*.py"))
    assert len(files) > 20
    return [(p, ast.parse(p.read_text(), str(p))) for p in files]


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_no_torch_load_without_weights_only():
    """No checkpoints exist; if one is ever loaded it must not unpickle arbitrary objects."""
    bad = []
    for path, tree in package_sources():
        text = path.read_text()
        for c in calls(tree):
            src = ast.unparse(c.func)
            direct = src in ("torch.load", "torch.serialization.load")
            imported = src == "load" and re.search(
                r"from torch(\.serialization)? import .*\bload\b", text)
            if not (direct or imported):
                continue
            if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                       and k.value.value is True for k in c.keywords):
                bad.append(f"{path.relative_to(ROOT)}:{c.lineno}: {ast.unparse(c)}")
    assert not bad, "torch.load without weights_only=True:\n" + "\n".join(bad)


PICKLING_MPI = {"send", "recv", "isend", "irecv", "ssend", "issend", "bsend", "ibsend", "sendrecv",
                "bcast", "ibcast", "scatter", "iscatter", "gather", "igather", "allgather",
                "iallgather", "alltoall", "ialltoall", "reduce", "allreduce", "scan", "exscan",
                "mprobe", "improbe", "probe"}
COMM_RECEIVER = ("comm", "COMM_WORLD", "COMM_SELF", "Dup(", "Split(", "MPI.")


def test_no_pickle_based_mpi4py_calls():
    """mpi4py's lowercase methods pickle their objects; only uppercase buffer calls are allowed
    on communicators (names holding 'comm', COMM_WORLD, Dup()/Split() results)."""
    bad = []
    for path, tree in package_sources():
        for c in calls(tree):
            f = c.func
            if isinstance(f, ast.Attribute) and f.attr in PICKLING_MPI:
                receiver = ast.unparse(f.value)
                if any(k in receiver for k in COMM_RECEIVER):
                    bad.append(f"{path.relative_to(ROOT)}:{c.lineno}: {ast.unparse(c)}")
    assert not bad, "pickle-based mpi4py calls:\n" + "\n".join(bad)


def test_the_checks_above_do_catch_offenders():
    tree = ast.parse("import torch\ncomm.bcast(x)\nself.comm.send(t, 1)\nMPI.COMM_WORLD.gather(x)\n"
                     "ctx.link.send(0, m, 1)\ncomm.Send([b, MPI.BYTE], 1)\n")
    hits = [ast.unparse(c) for c in calls(tree) if isinstance(c.func, ast.Attribute)
            and c.func.attr in PICKLING_MPI and any(k in ast.unparse(c.func.value)
                                                    for k in COMM_RECEIVER)]
    assert hits == ["comm.bcast(x)", "self.comm.send(t, 1)", "MPI.COMM_WORLD.gather(x)"]


WRITE_MODES = set("wax+")


def test_package_writes_files_only_through_a_temp_file_and_rename():
    """Reports, rows, plots: written to a temp file and renamed (slsec.report.results.atomic_write or
    savefig(tmp) + replace), so a kill never leaves a half-written file behind."""
    bad = []
    for path, tree in package_sources():
        rel = path.relative_to(ROOT)
        for c in calls(tree):
            f, src = c.func, ast.unparse(c)
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name == "open" and ast.unparse(f) in ("open", "io.open"):
                mode = c.args[1] if len(c.args) > 1 else next(
                    (k.value for k in c.keywords if k.arg == "mode"), None)
                if isinstance(mode, ast.Constant) and WRITE_MODES & set(str(mode.value)):
                    bad.append(f"{rel}:{c.lineno}: {src}")
            elif name in ("write_text", "write_bytes", "savez", "save", "to_pickle"):
                into = ast.unparse(c.args[1]) if len(c.args) > 1 else ""
                if ast.unparse(f) not in ("self.save",) and "buf" not in into:  # buf: in memory
                    bad.append(f"{rel}:{c.lineno}: {src}")
            elif isinstance(f, ast.Attribute) and name in ("savefig", "to_csv", "to_json",
                                                           "to_html"):
                target = ast.unparse(c.args[0]) if c.args else ""
                if c.args and not any(k in target.lower() for k in ("tmp", "buf", "io.")):
                    bad.append(f"{rel}:{c.lineno}: {src}")
    bad = [b for b in bad if not b.startswith("slsec/report/results.py")]
    assert not bad, "direct (non-atomic) file writes:\n" + "\n".join(bad)
