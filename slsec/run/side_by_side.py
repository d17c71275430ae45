"""Run an attack's methods side by side: the ones it declares independent (`Attack.side_by_side`:
they draw only from generators of their own and share no state) in threads, one per free core,
the others one after the other afterwards.

Each method's work is mostly torch kernels, which release the GIL, so two methods on two cores
take about the time of the longer one. Their results are the same as one after the other: the
harness seeds each method alike (`torch.manual_seed(cfg.seed)` on entry) and these methods'
results never depend on torch's global generator (they draw from generators of their own), so
the interleaving of the threads changes nothing. Training-mode
normalisation layers update their running statistics on every forward pass: a model with them
runs its methods one after the other (the order of the queries would matter). When a method
fails (or Ctrl-C), the others stop at their next progress tick and the failure is raised.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn

from slsec import progress

T = TypeVar("T")


def free_cores(threads: int) -> int:
    """How many methods of `threads` torch threads each fit on this process's cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, threads))


def updates_statistics(model: nn.Module | None) -> bool:
    """Whether a forward pass through `model` changes it (training-mode batch/instance norm)."""
    return model is not None and any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats
        for m in model.modules())


def run_methods(methods: Iterable[str], one: Callable[[str], T], independent: frozenset[str],
                threads: int, model: nn.Module | None = None) -> dict[str, T]:
    """{method: one(method)} in the order of `methods`; the `independent` ones side by side on
    up to free_cores(threads) threads (each with `threads` torch threads), then the rest."""
    methods = list(methods)
    together = [m for m in methods if m in independent]
    workers = min(len(together), free_cores(threads))
    if workers < 2 or updates_statistics(model):
        return {m: one(m) for m in methods}
    stop = threading.Event()   # set on a failure or Ctrl-C: the others end at their next tick

    def run(method: str) -> T:
        torch.set_num_threads(max(1, threads))
        progress.stop_attack_when(stop)
        return one(method)
    # the methods' own fork_rng blocks enter and leave interleaved: restore the caller's state
    with torch.random.fork_rng(devices=[]), ThreadPoolExecutor(
            workers, thread_name_prefix="slsec-attack") as pool:
        futures = {pool.submit(run, m): m for m in together}
        try:
            for f in wait(futures, return_when=FIRST_EXCEPTION).done:
                f.result()   # the first failure raises here, before the others finish
            done = {futures[f]: f.result() for f in futures}
        except BaseException:
            stop.set()
            raise
    done.update({m: one(m) for m in methods if m not in done})
    return {m: done[m] for m in methods}
