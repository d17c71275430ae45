"""Helpers shared by the bench scripts: one torch thread, interleaved timing, role contexts.

Benchmarks on shared machines measure ratios side by side in one process run: the variants
being compared alternate (ABAB..., the order flipped every repetition) and the ratio is the
median over repetitions of the per-repetition ratio, so slow spells hit both sides.
"""
from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


def timed_command(cmd: list[str], what: str) -> tuple[float, float]:
    """Wall and CPU seconds (the command and every process it reaped) of one command run from
    the repo root with OMP_NUM_THREADS=1; its output's tail and an exit on failure."""
    import resource
    import subprocess
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(f"{what} failed with exit code {proc.returncode}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def one_thread() -> None:
    """One intra-op thread per process/rank (the benchmarks compare like with like)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def cuda_sync() -> None:
    """Wait for queued GPU work (device work is asynchronous: a host clock read before it
    finishes undercounts); nothing without CUDA in use."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Clock:
    """Wall-clock and CPU time (this process, all threads) of one region (GPU work included:
    queued device work is waited for at both ends)."""

    def __enter__(self) -> "Clock":
        cuda_sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        cuda_sync()
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    @property
    def pair(self) -> tuple[float, float]:
        return self.wall, self.cpu


def interleaved(fns: dict[str, Callable[[], tuple[float, float]]], reps: int, warmup: int = 1,
                log: Callable[[str], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """Run each timing function `warmup` + `reps` times, alternating (order flipped per rep).

    Each function returns the (wall, cpu) seconds it measured itself (set-up stays outside).
    Result: {name: {"wall": [...], "cpu": [...]}}.
    """
    names = list(fns)
    out: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for i in range(warmup + reps):
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            wall, cpu = fns[n]()
            if i >= warmup:
                out[n]["wall"].append(wall)
                out[n]["cpu"].append(cpu)
        if log and i >= warmup:
            log(f"  rep {i - warmup + 1}/{reps}: " + ", ".join(
                f"{n} {out[n]['wall'][-1]:.2f}s (cpu {out[n]['cpu'][-1]:.2f}s)" for n in names))
    return out


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repetitions of num_i / den_i."""
    return statistics.median(a / b for a, b in zip(num, den))


def paired_ratio_ci(num: list[float], den: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of num_i / den_i: the order statistics
    r_(k) and r_(n+1-k), with k the largest rank whose coverage under Binomial(n, 1/2) is still
    >= `level` (the sign-test interval; with 5 pairs the best is min..max, 94%)."""
    from scipy.stats import binom
    r = sorted(a / b for a, b in zip(num, den))
    n = len(r)
    k = max([j for j in range(1, n // 2 + 1) if 1 - 2 * binom.cdf(j - 1, n, 0.5) >= level],
            default=1)
    return r[k - 1], r[n - k]


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB (ru_maxrss is KiB on Linux)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- training paths


def mono_epoch(setup: Any, cfg: Any, split: Any | None = None,
               evaluate: bool = False) -> tuple[float, float]:
    """(wall, cpu) s of one epoch of ordinary (unsplit) training of the same model, same batch
    size; with `evaluate`, plus one test-set evaluation (as run_local does after each round)."""
    from slsec.protocols.base import batches, make_optimizer
    from slsec.run.runner import make_plan, on_device_split, resolve_device

    device = resolve_device(cfg.device)
    model = setup.fresh_model().to(device)
    opt = make_optimizer(model.parameters(), make_plan(cfg, setup))
    split = on_device_split(split if split is not None else setup.shard(1), device)
    order = batches(len(split), cfg.batch_size, torch.Generator().manual_seed(0))
    model.train()
    with Clock() as c:
        for idx in order:
            feats, y = split.batch(idx)
            loss = torch.nn.functional.cross_entropy(model(feats)["x"], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if evaluate:
            from slsec.run.runner import evaluate_model
            evaluate_model(model, setup.data.test)
    return c.pair


def role_context(cfg: Any, setup: Any, rank: int, link: Any) -> Any:
    """The Context runner.run_rank builds (runner.rank_context, on `cfg.device`), without the
    experimenter's per-round evaluation."""
    from slsec.run.experiment import resolve
    from slsec.run.runner import rank_context
    exp = resolve(cfg, setup)
    return rank_context(exp, rank, link, exp.fresh_defense())


def sl_local_roles(cfg: Any, setup: Any, turns: bool = True,
                   via_host: bool = False) -> tuple[float, float]:
    """(wall, cpu) s of the protocol's role programs over LocalHub (no evaluation): as greenlets
    of this thread where run_local runs them so (runner.take_turns), else (or `turns=False`)
    as threads. `via_host`: on a GPU, every message goes to the host and back, as over MPI
    (LocalLink otherwise hands device tensors over as they are)."""
    from slsec.protocols.base import PROTOCOLS
    from slsec.run.experiment import resolve
    from slsec.run.runner import take_turns
    from slsec.wire.transport import LocalHub

    proto = PROTOCOLS.get(cfg.protocol)
    scheduler = take_turns(resolve(cfg, setup)) if turns else None
    hub = LocalHub(cfg.clients + 1, timeout=cfg.timeout, turns=scheduler)
    links = [hub.link(r) for r in range(cfg.clients + 1)]
    for link in links:
        link.carries_device_tensors = not via_host
    ctxs = [role_context(cfg, setup, r, link) for r, link in enumerate(links)]
    programs = [lambda c=c: (proto.server if c.rank == 0 else proto.client)(c) for c in ctxs]
    if scheduler is not None:
        with Clock() as c:
            scheduler.run(programs)
        return c.pair
    errors: list[BaseException] = []

    def go(program: Callable[[], None]) -> None:
        try:
            torch.set_num_threads(1)
            program()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go, args=(p,), daemon=True) for p in programs]
    with Clock() as c:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return c.pair


def sl_local_runner(cfg: Any, setup: Any) -> tuple[float, float]:
    """(wall, cpu) s of runner.run_local: what `slsec train` runs (per-round evaluation included)."""
    from slsec.run.experiment import resolve
    from slsec.run.runner import run_local
    with Clock() as c:
        run_local(resolve(cfg, setup))
    return c.pair


def random_image_setup(cfg: Any, n: int, shape: tuple[int, int, int] = (3, 32, 32),
                       num_classes: int = 10, n_test: int = 64) -> Any:
    """A Setup over random images (for models whose real data is not offline, e.g. ResNet-18)."""
    from slsec.data import Dataset, Split
    from slsec.run.setup import Setup, resolve_cuts

    g = torch.Generator().manual_seed(0)
    train = Split(torch.rand(n, *shape, generator=g), torch.randint(0, num_classes, (n,), generator=g))
    test = Split(torch.rand(n_test, *shape, generator=g),
                 torch.randint(0, num_classes, (n_test,), generator=g))
    data = Dataset("random", "image", train, test, num_classes, shape, None, cfg.model_name)
    import numpy as np
    shards = [a for a in np.array_split(np.arange(n), cfg.clients)]
    setup = Setup(cfg, data, (), train.subset([]), shards, test.subset(range(min(cfg.probe_size, n_test))),
                  cfg.label_party)
    setup.cuts = resolve_cuts(cfg, setup.build(), setup.protocol.cuts_needed)
    return setup


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    """Print a plain aligned table (copy-pastes into Markdown)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    sys.stdout.flush()
