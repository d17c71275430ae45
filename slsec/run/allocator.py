"""Keep freed memory in the process during training (glibc's malloc; a no-op elsewhere).

By default glibc maps a block above its mmap threshold (128 KB at first, raised as such blocks
are freed) afresh from the kernel, and gives the free memory at its heap's top back to the
kernel once more than twice that threshold is free. A training step frees and re-allocates the
same few MB-sized activation and gradient tensors every batch (6.4 MB at the MNIST CNN's conv1
cut, batch 64), so the kernel maps and zeroes those pages again, batch after batch: per epoch
of 63 batches 1,300 to 250,000 page faults and up to 15% of its CPU time, depending on the
heap's history, and about 75,000 with the two role threads of split learning (each thread's
malloc arena is trimmed on its own). `keep_freed_memory()` fixes both thresholds high, so the
pages stay mapped and are reused: the effect PyTorch's CPU performance guide gets by swapping
in jemalloc or tcmalloc.
The maths is untouched; the process keeps up to TRIM_THRESHOLD of free memory per arena.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20    # glibc's largest: blocks up to 32 MB come from the heap
TRIM_THRESHOLD = 256 * 2**20   # free memory kept at an arena's top before it goes back

_lock = threading.Lock()
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds once per process; True when they are in force."""
    global _done
    with _lock:
        if _done is None:
            _done = _set()
        return _done


def _set() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False   # not glibc (macOS, musl): their allocators behave otherwise
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return (bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
            and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
