"""slsec.run.allocator: freed memory stays in the process (glibc), and every run sets it."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from slsec.run import runner

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# 20 batches of split training (MNIST CNN cut at conv1, batch 64: a 6.4 MB smashed tensor and
# cut gradient), head and tail as two optimisers, after 30 batches for the heap to settle
TRAIN = """
import resource, torch
from slsec.config import make_config
from slsec.run.allocator import keep_freed_memory
from slsec.run.setup import prepare
torch.set_num_threads(1)
tuned = {tuned} and keep_freed_memory()
cfg = make_config({{"clients": 1, "max_train": 64 * 50, "batch_size": 64, "aux_size": 0, "probe_size": 8}})
setup = prepare(cfg)
head, tail = setup.fresh_model().split(list(setup.cuts))
oh, ot = torch.optim.Adam(head.parameters()), torch.optim.Adam(tail.parameters())
shard = setup.shard(1)
def step(i):
    feats, y = shard.batch(torch.arange(64 * i, 64 * (i + 1)))
    x = head(feats)["x"]
    r = x.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(tail({{"x": r}})["x"], y)
    ot.zero_grad(); loss.backward(); ot.step()
    oh.zero_grad(); x.backward(r.grad); oh.step()
for i in range(30):
    step(i)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(30, 50):
    step(i)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(tuned: bool) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", TRAIN.format(tuned=tuned)], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_pages_are_reused_not_faulted_again():
    """Once set, 20 batches of split training fault in fewer new pages than two 6.4 MB cut
    tensors have (2 x 1,563), where mapping the cut tensors afresh every batch would fault
    20 x 2 x 1,563: freed pages are reused (measured: 0-1,200). Under glibc's defaults the count
    depends on the heap's history: 11,000-37,000 here, 40,000-250,000 an epoch in
    bench/overhead.py --default-allocator."""
    tuned, n = faults(True)
    assert tuned
    print(f"page faults over 20 batches: {n} with the thresholds raised, "
          f"{faults(False)[1]} with glibc's defaults")
    assert n < 2 * 1563


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_setting_is_idempotent():
    from slsec.run.allocator import keep_freed_memory
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


def test_every_local_run_keeps_freed_memory(monkeypatch):
    """run_local sets it (and so `slsec train`, the card and every sweep cell that runs locally)."""
    from slsec.config import make_config
    from slsec.run.experiment import resolve

    calls = []
    monkeypatch.setattr(runner, "keep_freed_memory", lambda: calls.append(1) or True)
    cfg = make_config({"rounds": 1, "clients": 1, "max_train": 32, "batch_size": 32,
                       "probe_size": 8, "aux_size": 0})
    runner.run_local(resolve(cfg))
    assert calls
