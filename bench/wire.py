"""Wire benchmark: framing overhead and MPILink ping-pong latency against raw MPI, one run.

Usage (from the repo root, two ranks):

    OMP_NUM_THREADS=1 mpiexec -n 2 python bench/wire.py [--iters 50] [--rounds 11]

Prints, for the CNN's smashed tensor at batch 64 (64x32x14x14 float32, 1.6 MB):
  (a) bytes on the wire / payload bytes of one MPILink message        target <= 1.01
  (b) median round-trip time of MPILink send/recv and of raw comm.Send/Recv of the same
      numpy buffer, measured in alternating blocks, and raw_time / our_time  target >= 0.9
  (c) the CPU cost of framing one message (encode + decode_header), load-independent context

On an oversubscribed machine (more busy processes than cores) (b) mostly measures the
scheduler: raw MPI spins without yielding while MPILink yields, then sleeps; compare (b) on
an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

SHAPE = (64, 32, 14, 14)
TAG = 9


def main() -> int:
    from mpi4py import MPI

    from slsec.wire.transport import MPILink, decode_header, encode

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=50, help="round trips per timed block")
    ap.add_argument("--rounds", type=int, default=11, help="alternating raw/ours block pairs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        print("run with exactly two ranks: mpiexec -n 2 python bench/wire.py", file=sys.stderr)
        return 2
    rank, peer = comm.Get_rank(), 1 - comm.Get_rank()
    link = MPILink(comm, timeout=60)
    x = torch.randn(SHAPE)
    raw_buf = torch.empty(SHAPE).numpy()

    def raw_block() -> float:
        src = x.numpy()
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            if rank == 0:
                comm.Send([src, MPI.FLOAT], 1, TAG)
                comm.Recv([raw_buf, MPI.FLOAT], 1, TAG)
            else:
                comm.Recv([raw_buf, MPI.FLOAT], 0, TAG)
                comm.Send([raw_buf, MPI.FLOAT], 0, TAG)
        return (time.perf_counter() - t0) / args.iters

    def our_block() -> float:
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            if rank == 0:
                link.send(1, {"smashed": x}, TAG)
                got = link.recv(1, TAG)
            else:
                link.send(0, link.recv(0, TAG), TAG)
        if rank == 0:
            assert torch.equal(got["smashed"], x)
        return (time.perf_counter() - t0) / args.iters

    raw_block(), our_block()                     # warm up both paths
    raw_t, our_t, ratios = [], [], []
    for r in range(args.rounds):
        if r % 2:
            o, w = our_block(), raw_block()
        else:
            w, o = raw_block(), our_block()
        raw_t.append(w)
        our_t.append(o)
        ratios.append(w / o)
    if rank == 0:
        header, bufs = encode({"smashed": x})
        payload = sum(b.nbytes for b in bufs)
        counted = link.bytes_sent[peer] / link.payload_sent[peer]
        print(f"(a) smashed {'x'.join(map(str, SHAPE))} float32: payload {payload} B, header "
              f"{len(header)} B, wire/payload = {(len(header) + payload) / payload:.6f} "
              f"(counters: {counted:.6f}; target <= 1.01)")
        print(f"(b) round trip, median of {args.rounds} blocks x {args.iters}: "
              f"raw Send/Recv {statistics.median(raw_t) * 1e6:.0f} us, "
              f"MPILink {statistics.median(our_t) * 1e6:.0f} us; raw/ours = "
              f"{statistics.median(ratios):.3f} (per-block range {min(ratios):.3f}.."
              f"{max(ratios):.3f}; target >= 0.9)")
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            decode_header(encode({"smashed": x})[0], max_bytes=1 << 30)
        print(f"(c) framing CPU per message (encode + decode_header): "
              f"{(time.perf_counter() - t0) / n * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
