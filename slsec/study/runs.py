"""What the commands that run evaluations share: the progress bar, the cut chosen before
training, the run's folder and the undefended twin (its config, its cache file under
<out>/.cache and the spawned process that computes it beside the defended run)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from slsec.catalog import pre_training
from slsec.config import RunConfig
from slsec.report.console import console
from slsec.errors import UserError
from slsec.report.folders import read_result
from slsec.report.results import config_key, write_json


def _is_main_rank(cfg: RunConfig) -> bool:
    if cfg.backend != "mpi":
        return True
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank() == 0


def progress_bar(cfg: RunConfig, label: str) -> tuple[Any, Any]:
    """Training progress on rank 0, per batch of client 1 and per round, on stderr (a status
    line on a terminal, else plain lines at most once a second; see slsec.progress)."""
    import contextlib

    from slsec import progress
    name = "train" if label == "train" else f"train {label}"
    bar = progress.training(name) if _is_main_rank(cfg) else contextlib.nullcontext()

    def on_round(rec: Any) -> None:
        progress.tick(name, 0, note=f"round {rec.round}/{cfg.rounds} acc {rec.accuracy:.3f}")
    return bar, on_round


def run_id(cfg: RunConfig) -> str:
    if cfg.run_id:
        return cfg.run_id
    parts = [cfg.protocol, cfg.attack or "train", "+".join(cfg.defense) or "none",
             time.strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def run_folder(cfg: RunConfig, force: bool) -> Path:
    """This run's folder: an existing --run-id is refused unless --force (checked before any
    training; nothing is written until the result is ready)."""
    from slsec.report.folders import claim, unique_folder
    if not cfg.run_id:
        return unique_folder(cfg.out, run_id(cfg))
    folder = Path(cfg.out) / cfg.run_id
    claim(folder, "run", force=force)
    return folder


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The same run without any defense (same seed, data, cut, attack)."""
    return cfg.replace(defense=(), sigma=None, clip=None, target_epsilon=None)


def baseline_path(cfg: RunConfig) -> Path:
    from slsec.data.userdata import user_fingerprint  # a user's model file or data files changed
    key = config_key({**baseline_config(cfg).to_dict(), **user_fingerprint(cfg.model, cfg.dataset)})
    return Path(cfg.out) / ".cache" / f"undefended-{key}.json"


def cached_baseline(cfg: RunConfig, progress: Any = None) -> dict[str, Any]:
    """The undefended run of this config and seed as result.json stores it, computed once and
    cached under <out>/.cache (its reconstructions beside it, for the report's grid)."""
    import contextlib
    import fcntl
    import os

    base = baseline_config(cfg)
    path = baseline_path(cfg)
    if path.exists():
        try:
            return read_result(path)   # a cache entry of the wrong shape ({}) is recomputed
        except UserError:
            path.unlink(missing_ok=True)
    with contextlib.ExitStack() as held:
        if cfg.backend == "local":      # grid workers sharing a twin compute it once
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
            held.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)      # released with the fd (or by the OS on a kill)
            if path.exists():
                try:
                    return read_result(path)
                except UserError:
                    path.unlink(missing_ok=True)
        return _compute_baseline(base, path, progress)


def _compute_baseline(base: RunConfig, path: Path, progress: Any) -> dict[str, Any]:
    from slsec.run.harness import evaluate as run
    result = run(base, progress=progress)
    if result is None:    # not rank 0 under MPI
        return None       # type: ignore[return-value]
    if result.reconstructions is not None:
        save_images(path.with_suffix(".pt"), result.reconstructions.to_tensors())
    write_json(path, result.to_dict())
    return result.to_dict()


def save_images(path: Path, tensors: dict[str, Any]) -> None:
    """The undefended run's reconstructions beside its cached result (for the grid)."""
    import io

    import torch

    from slsec.report.results import atomic_write
    buf = io.BytesIO()
    torch.save(tensors, buf)
    atomic_write(path, buf.getvalue())


def load_images(path: Path) -> dict[str, Any]:
    """What save_images kept ('images', 'prior'), or {} when missing or damaged."""
    import torch
    try:
        return torch.load(path, weights_only=True) if path.exists() else {}
    except Exception:   # a damaged cache file only costs the grid its undefended row
        return {}


def command_seconds(fallback_start: float | None = None) -> float:
    """Seconds since this interpreter started slsec (`slsec.STARTED`, set by the package's
    first import, before any other slsec or torch import). Not the process start time: when a
    shell execs slsec as its last command (`bash -c '... && slsec ...'`), the process began
    with the shell and its earlier work would be counted too."""
    import slsec
    return time.perf_counter() - getattr(slsec, "STARTED", fallback_start or time.perf_counter())


def start_baseline(cfg: RunConfig) -> Any:
    """Start the uncached undefended run in a second process, beside the defended run (local
    backend: both are single-threaded, so two cores finish both in the time of one). The child
    only writes the cache file (atomically); same seed and threads, so its numbers equal an
    in-process run."""
    if not cfg.defense or cfg.backend != "local" or baseline_path(cfg).exists():
        return None
    import multiprocessing
    import os
    import tempfile

    from slsec import progress
    # spawn, not fork: a forked child inherits torch's runtime state and ran slower here
    # (card: 72 s with fork vs 66 s with spawn, measured side by side on 2 idle cores)
    fd, status = tempfile.mkstemp(prefix="slsec-undefended-", suffix=".progress")
    os.close(fd)
    proc = multiprocessing.get_context("spawn").Process(
        target=_baseline_worker, args=(cfg.to_dict(), status), daemon=True,
        name="slsec-undefended")
    proc.start()
    # the twin's progress, read from the file its reporter writes, shown beside ours
    proc.status_path = status   # type: ignore[attr-defined]
    proc.phase = progress.phase("undefended", external=progress.read_status(status))  # type: ignore[attr-defined]
    proc.phase.__enter__()   # type: ignore[attr-defined]
    return proc


def join_baseline(side: Any, failed: bool = False) -> None:
    """Wait for the twin, showing its progress; then close its phase and remove its file
    (`failed`: stop it and close its phase without a line: the error speaks for the run)."""
    import os

    from slsec import progress
    if failed:
        side.terminate()
    try:
        side.join()
    finally:
        if failed:
            progress.REPORTER.close("undefended", quiet=True)
        else:
            side.phase.__exit__(None, None, None)
        try:
            os.unlink(side.status_path)
        except OSError:
            pass


def _baseline_worker(values: dict[str, Any], status: str | None = None) -> None:
    import os
    import sys

    from slsec import progress
    from slsec.config import make_config
    devnull = os.open(os.devnull, os.O_WRONLY)   # the parent reports; a failure here is retried there
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    progress.REPORTER.file = status               # our progress goes to the parent through it
    try:
        with progress.training("train"):
            cached_baseline(make_config(values))
    except BaseException:
        sys.exit(1)


def choose_cut(cfg: RunConfig) -> RunConfig:
    """Run adversarial split-point selection first and continue with the cut it picks."""
    from slsec.run.split_search import select_split
    from slsec.catalog import without_pre_training
    ranking = select_split(without_pre_training(cfg))
    console.print(f"{'+'.join(pre_training(cfg))} chose cut {ranking.chosen}: {ranking.reason}")
    return without_pre_training(cfg).replace(cut=ranking.chosen)
