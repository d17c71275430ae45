"""Cells of a grid (sweep, review, benchmark, `--seeds`) through an executor.

Cells are independent: each is a function of its config alone. `run_cells` hands them to

- this process, one after another (`--jobs 1`);
- `concurrent.futures.ProcessPoolExecutor` with the forkserver context (`--jobs N`, default:
  the cores this process may use, `len(os.sched_getaffinity(0))`; each worker gets cores ÷ N
  torch threads, and every run still sets its own `--threads`). The fork server is a fresh
  Python (nothing of this process is inherited) that imports torch and slsec once, `prestart`ed
  while this process still validates the grid; each worker is forked from it, ready in
  milliseconds instead of the seconds a spawned interpreter spends importing torch;
- `mpi4py.futures.MPIPoolExecutor` when the command was launched as
  `mpiexec -n K python -m mpi4py.futures -m slsec sweep ...` (K-1 worker ranks, on any hosts
  the MPI launcher reaches; any `--jobs` above 1 then means the pool's ranks).

The parent is the one writer: results come back to it and `on_done(index, result)` is called
in cell order (a finished cell waits in memory for the cells before it), so the rows a study
appends are the rows, in the order, of a sequential run. A worker killed mid-cell breaks a
process pool: every cell that had started and not finished is run again, each alone in a
fresh one-worker pool (the other workers' cells were innocent); the cell whose worker dies a
second time is reported lost (`on_lost(index, why)`) and `--resume` reruns it. Cells not yet
started continue in a fresh pool. Task arguments and results are plain dicts (configs and
rows) that travel between this study's own processes.

Over 300 lines: the worker pool's whole life (fork server, start-up, the watch on the study's
process, recovery from a killed worker) reads in one place.
"""
from __future__ import annotations

import contextlib
import os
import select
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Sequence

from slsec.errors import UserError

Fn = Callable[[Any], Any]


def default_jobs() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return os.cpu_count() or 1


def check_jobs(jobs: Any) -> int:
    """--jobs as a positive int (None: the default), else one line."""
    if jobs is None:
        return default_jobs()
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        raise UserError(f"--jobs must be a whole number >= 1, got {jobs!r}") from None
    if n < 1 or str(n) != str(jobs).strip():
        raise UserError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    return n


def mpi_pooled() -> bool:
    """True when this process is rank 0 of `python -m mpi4py.futures` (its shared pool is set)."""
    core = sys.modules.get("mpi4py.futures._core")
    return core is not None and getattr(core, "SharedPool", None) is not None


def in_memory(cfg: Any) -> bool:
    """A model or data set the Python API registered in this process (not in a worker's)."""
    return str(cfg.model).startswith("object:") or str(cfg.dataset).startswith("arrays:")


def grid_jobs(cells: Sequence[Any], jobs: int) -> int:
    """How many cells may run at once. A cell whose own protocol runs over MPI ranks
    (`--backend mpi`) is refused in a grid launched with mpi4py.futures, and runs its cells one
    after another otherwise (every rank runs the grid); in-memory models and data sets stay in
    this process."""
    mpi_cells = any(getattr(c, "backend", "local") == "mpi" for c in cells)
    if mpi_pooled() and mpi_cells:
        raise UserError("--backend mpi: a cell that needs MPI ranks of its own cannot run in a "
                        "grid launched with `python -m mpi4py.futures`; use --backend local there")
    if mpi_cells or any(in_memory(c) for c in cells):
        return 1
    return jobs


# imported once by the fork server, before any worker is forked from it: what every cell
# imports (torch._dynamo: an optimiser's first step imports it, ~1.5 s). Not opacus (~1.5 s):
# only DP cells need it, and each worker importing it on its first such cell costs the same
# wall time as the server importing it, where the server's import delays every cell.
# Importing these starts no thread, so forking from the server stays safe.
PRELOAD = ["torch", "torch._dynamo", "scipy.stats",
           "skimage.metrics", "slsec.cli", "slsec.metrics", "slsec.run.harness",
           "slsec.wire.turns", "slsec.report.frontier", "slsec.study.runs", "slsec.study.twin",
           "slsec.study.sweeps", "slsec.study.seeds", "slsec.study.benchmark",
           "slsec.study.review_cells"]


def _context() -> Any:
    """The forkserver context; spawn where the server's socket path would not fit in AF_UNIX's
    108 bytes (a deep TMPDIR)."""
    import atexit
    import multiprocessing
    if len(os.path.join(tempfile.gettempdir(), "pymp-12345678", "listener-12345678")) > 100:
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    atexit.unregister(_stop_fork_server)
    atexit.register(_stop_fork_server)
    return ctx


def _stop_fork_server() -> None:
    """At exit, end the fork server and reap it, so that it and the workers it reaped count in
    this command's CPU time (`time slsec sweep ...`). Without this it still ends by itself,
    seeing this process gone."""
    from multiprocessing import forkserver
    stop = getattr(forkserver._forkserver, "_stop", None)     # the standard library's own
    if stop is not None:
        with contextlib.suppress(Exception):
            stop()


def prestart(cells: Sequence[Any], jobs: int) -> None:
    """When these cells will run in worker processes (grid_jobs > 1, outside an MPI pool), start
    the fork server now, so that its imports overlap this process's validation of the grid."""
    if grid_jobs(cells, jobs) > 1 and not mpi_pooled() \
            and _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver
        forkserver.ensure_running()     # returns at once; the server imports in the background


def _exit_with_parent(study: int) -> None:
    """End this worker once the study's process is gone (SIGKILLed, say): an orphan would wait
    for cells forever, holding the study's stderr open. Its cell is lost, as the study's is. A
    worker's parent is the fork server, which lives while any of its workers does, so the
    worker watches the study's process itself (a pidfd: readable once it has ended)."""
    try:
        fd = os.pidfd_open(study)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):     # no pidfd (old kernel): poll
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            try:
                os.kill(study, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
    os._exit(1)


def _init_worker(threads: int, study: int) -> None:
    """A worker: its torch threads, quiet progress (the parent counts cells), stdout away from
    the parent's document (results travel back as values); it ends with the study's process."""
    threading.Thread(target=_exit_with_parent, args=(study,), daemon=True).start()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    torch.set_num_threads(threads)
    from slsec import progress
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    progress.REPORTER.enabled = False
    progress.REPORTER.stream = sys.stdout           # fd 1: the null device now


def _call(fn: Fn, index: int, arg: Any, marks: str | None) -> Any:
    if marks:   # started (by this pid): a break while it runs makes it a suspect
        from slsec.report.results import atomic_write
        atomic_write(Path(marks, str(index)), str(os.getpid()))
    return fn(arg)


class Workers:
    """Worker processes kept for several batches of cells (a review's two phases);
    `with Workers(jobs) as w: run_cells(..., workers=w)`."""

    def __init__(self, jobs: int) -> None:
        self.jobs, self.main, self.pools = jobs, None, []

    def pool(self, workers: int | None = None, fresh: bool = False) -> ProcessPoolExecutor:
        """The shared pool (`fresh`: a new one, after a break), or a new pool of `workers`."""
        if workers is None and self.main is not None and not fresh:
            return self.main
        n = workers or self.jobs
        pool = ProcessPoolExecutor(n, mp_context=_context(),
                                   initializer=_init_worker,
                                   initargs=(max(1, default_jobs() // n), os.getpid()))
        self.pools.append(pool)
        if workers is None:
            self.main = pool
        return pool

    def close(self, stop: bool = False) -> None:
        """Wait for the workers to end (`stop`: end their cells now, e.g. on Ctrl-C or
        SIGTERM, so that no worker goes on computing a cell nobody will write)."""
        for p in self.pools:
            if stop:   # the executor has no public way to stop a running call
                for proc in list(getattr(p, "_processes", {}).values()):
                    proc.terminate()
            p.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close(stop=kind is not None and not issubclass(kind, Exception))


def run_cells(fn: Fn, args: Sequence[Any], *, jobs: int,
              on_done: Callable[[int, Any], None],
              on_lost: Callable[[int, str], None] | None = None,
              workers: Workers | None = None) -> list[int]:
    """fn(args[i]) for every i; on_done(i, result) in the parent, in index order. Returns the
    indices lost to a worker that died twice. The first cell error is raised after every
    finished cell was delivered (cells not yet started are cancelled). `workers`: processes to
    reuse (else this call starts and stops its own)."""
    if not args:
        return []
    if jobs <= 1 or (len(args) == 1 and workers is None):
        for i, a in enumerate(args):
            on_done(i, fn(a))
        return []
    if mpi_pooled():
        from mpi4py.futures import MPIPoolExecutor
        with MPIPoolExecutor() as pool:
            return _drive(lambda **_: pool, fn, list(args), on_done, on_lost, None)
    with contextlib.ExitStack() as stack:
        if workers is None:
            workers = stack.enter_context(Workers(min(jobs, len(args))))
        marks = stack.enter_context(tempfile.TemporaryDirectory(prefix="slsec-cells-"))
        return _drive(workers.pool, fn, list(args), on_done, on_lost, marks)


def _drive(new_pool: Callable[..., Any], fn: Fn, args: list[Any],
           on_done: Callable[[int, Any], None], on_lost: Callable[[int, str], None] | None,
           marks: str | None) -> list[int]:
    """Submit, collect, deliver in order; after a broken pool, rerun suspects alone."""
    ready: dict[int, Any] = {}
    lost: set[int] = set()
    nxt = 0

    def deliver() -> None:
        nonlocal nxt
        while nxt in ready or nxt in lost:
            if nxt in ready:
                on_done(nxt, ready.pop(nxt))
            nxt += 1

    todo = list(range(len(args)))
    error: BaseException | None = None
    rounds = 0
    while todo and error is None:
        pool = new_pool(fresh=rounds > 0)
        rounds += 1
        futures: dict[Future, int] = {pool.submit(_call, fn, i, args[i], marks): i for i in todo}
        broken: list[int] = []
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=futures.__getitem__):
                i = futures[f]
                if f.cancelled():               # not started: an earlier cell failed
                    continue
                exc = f.exception()
                if exc is None:
                    ready[i] = f.result()
                elif isinstance(exc, BrokenProcessPool):
                    broken.append(i)
                elif error is None:
                    error = exc
                    for p in pending:
                        p.cancel()
            deliver()
        todo = []
        if broken and error is None and marks is None:    # an MPI pool: no process to respawn
            lost.update(broken)
            for i in broken:
                if on_lost is not None:
                    on_lost(i, "its worker rank failed")
        elif broken and error is None:
            started = {i for i in broken if marks and Path(marks, str(i)).exists()}
            for i in sorted(started):           # each suspect alone: only the culprit dies again
                alone = new_pool(workers=1)
                try:
                    ready[i] = alone.submit(_call, fn, i, args[i], None).result()
                except BrokenProcessPool:
                    lost.add(i)
                    if on_lost is not None:
                        on_lost(i, "its worker process died twice (killed, or out of memory)")
                finally:
                    alone.shutdown(wait=True)
                deliver()
            todo = [i for i in broken if i not in started]
    deliver()
    if error is not None:
        for i in sorted(ready):                 # finished cells after the failed one: kept too
            on_done(i, ready.pop(i))
        raise error
    return sorted(lost)
