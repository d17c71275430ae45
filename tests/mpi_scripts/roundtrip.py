"""Under `mpiexec -n 3`: preflight, then a fixed exchange over MPILink; each rank writes its counts.

Usage: mpiexec -n 3 python tests/mpi_scripts/roundtrip.py OUT_DIR  (writes counts<rank>.json)

`exchange(link)` is also imported by tests/test_mpi_transport.py and run over LocalHub, so both
backends carry exactly the same messages and their byte counts can be compared.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16,
          torch.int64, torch.int32, torch.uint8, torch.bool]
SHAPES = [(), (0,), (3,), (2, 0, 4), (5, 7), (2, 3, 4, 1)]


def message(src: int, i: int) -> dict[str, torch.Tensor]:
    """A deterministic message from rank `src`: every dtype, shape varying with `i`."""
    g = torch.Generator().manual_seed(1000 * src + i)
    out = {}
    for j, dt in enumerate(DTYPES):
        shape = SHAPES[(i + j) % len(SHAPES)]
        x = torch.randn(shape, generator=g) * 50
        out[f"t{j}_{str(dt).removeprefix('torch.')}"] = (x > 0) if dt == torch.bool else x.to(dt)
    out["smashed"] = torch.randn(8, 32, 14, 14, generator=g)
    return out


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                        and torch.equal(a[k], b[k]) for k in a)


def exchange(link) -> None:
    """Ranks 1 and 2 each send 3 messages to rank 0 (tag 1), which echoes each back (tag 2);
    rank 1 also sends one to rank 2 (tag 3). Raises AssertionError on any mismatch."""
    if link.rank == 0:
        for _ in range(3 * (link.world_size - 1)):
            src, got = link.recv_any(1)
            link.send(src, got, 2)
    else:
        for i in range(3):
            sent = message(link.rank, i)
            link.send(0, sent, 1)
            back = link.recv(0, 2)
            assert same(sent, back), f"rank {link.rank}: echo {i} differs"
        if link.rank == 1:
            link.send(2, message(1, 99), 3)
        if link.rank == 2:
            assert same(link.recv(1, 3), message(1, 99)), "rank 2: direct message differs"


def counts(link) -> dict[str, dict[str, int]]:
    return {k: {str(p): n for p, n in sorted(getattr(link, k).items())}
            for k in ("bytes_sent", "bytes_recv", "payload_sent", "payload_recv")}


def main() -> int:
    from mpi4py import MPI

    from slsec.wire.transport import MPILink, preflight

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    try:
        preflight(comm, expected_world=3, timeout=60)
        link = MPILink(comm, timeout=60)
        exchange(link)
    except Exception as e:  # one line, then take the whole job down
        print(f"rank {comm.Get_rank()}: {type(e).__name__}: {e}", flush=True)
        from slsec.run.runner import abort_job  # the line reaches mpiexec before the job ends
        abort_job(comm, 3)
    # one file per rank: ranks' stdout lines may interleave under mpiexec
    (Path(sys.argv[1]) / f"counts{link.rank}.json").write_text(json.dumps(counts(link)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
