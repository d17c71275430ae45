"""Under `mpiexec -n 3`: rank 1 sends raw malformed messages to rank 0, which must raise
WireError (or PeerError for a missing payload) for each, then still receive good messages.

Rank 0 prints `CASE <tag> <ExceptionType>: <message>` per case and `GOOD <src>` per good message.
"""
from __future__ import annotations

import struct
import sys

import numpy as np
import torch

FIXED = struct.Struct("<4sHHQ")


def entry(name: bytes, code: int, shape: tuple[int, ...], nbytes: int) -> bytes:
    return (bytes((len(name),)) + name + bytes((code, len(shape)))
            + struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<Q", nbytes))


def hostile_messages() -> dict[int, tuple[bytes, bytes | None]]:
    """tag -> (raw header, raw payload or None)."""
    ok4 = entry(b"x", 1, (4,), 16)
    return {
        10: (FIXED.pack(b"EVIL", 1, 1, 16) + ok4, None),                          # bad magic
        11: (FIXED.pack(b"SLSC", 1, 1, 1 << 60) + entry(b"x", 1, (1 << 58,), 1 << 60), None),
        12: (b"SLSC" + bytes(100 * 1024), None),                                  # header > cap
        13: (FIXED.pack(b"SLSC", 1, 1, 16) + ok4, bytes(12)),                     # short payload
        14: (FIXED.pack(b"SLSC", 1, 1, 16) + ok4, None),                          # no payload
        15: (FIXED.pack(b"SLSC", 1, 1, 16) + entry(b"x", 99, (4,), 16), None),    # bad dtype
        16: (FIXED.pack(b"SLSC", 7, 1, 16) + ok4, None),                          # bad version
    }


def main() -> int:
    from mpi4py import MPI

    from slsec.errors import PeerError
    from slsec.wire.transport import MPILink

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    link = MPILink(comm, timeout=30, max_bytes=1 << 20)
    if link.rank == 1:
        for tag, (header, payload) in hostile_messages().items():
            comm.Send([np.frombuffer(header, np.uint8), MPI.BYTE], 0, tag)
            if payload is not None:
                comm.Send([np.frombuffer(payload, np.uint8), MPI.BYTE], 0, tag)
    if link.rank in (1, 2):
        link.send(0, {"ok": torch.arange(6).reshape(2, 3) * link.rank}, 20)
        return 0
    for tag in hostile_messages():
        link.timeout = 1.0 if tag == 14 else 30.0
        try:
            link.recv(1, tag)
            print(f"CASE {tag} accepted!", flush=True)
        except PeerError as e:
            print(f"CASE {tag} {type(e).__name__}: {e}", flush=True)
    link.timeout = 30.0
    for _ in range(2):
        src, got = link.recv_any(20)
        assert torch.equal(got["ok"], torch.arange(6).reshape(2, 3) * src)
        print(f"GOOD {src}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
