"""Overhead of split learning: vanilla SL throughput ÷ ordinary training of the same model.

Usage (from the repo root):

    .venv/bin/python bench/overhead.py                       # local backend (threads)
    OMP_NUM_THREADS=1 .venv/bin/mpiexec -n 2 .venv/bin/python bench/overhead.py --mpi
    .venv/bin/python bench/overhead.py --profile [--cut conv1] # what SL adds, per batch
    .venv/bin/python bench/overhead.py --device cuda         # both sides on the GPU (wall ratio)

Same process run, same model init, same batch size, same optimizer (Adam), one torch thread:
- local: vanilla SL with one client over LocalHub vs the unsplit model on the same samples,
  embedded MNIST CNN at its default cut (conv1, the largest smashed tensor) and at fc1; then
  ResNet-18 on random 3x32x32 tensors cut after `stem` and after `layer2`.      target >= 0.95x
- mpi (mpiexec -n 2: server rank 0 + one client rank, one thread each) vs one-thread
  monolithic training on rank 0 while rank 1 sleeps.                             target >= 0.90x
"SL roles" times the protocol's role programs alone; "SL runner" is what `slsec train` runs
(run_local/run_mpi: + the experimenter's test evaluation after each round, model set-up, the
scorer channel); "mono+eval" adds the same one test evaluation per epoch to the baseline.
"SL roles as threads" (local) runs the roles as threads (run_local runs the roles of strictly
alternating protocols as greenlets of one thread: slsec.run.runner.take_turns). On a GPU,
"SL roles, via host" sends every message to the host and back, as over MPI (LocalLink
otherwise hands the device tensors over as they are).
Variants are interleaved. Printed: the median of per-repetition wall ratios, the wall ratio of
the best repetition of each, the median CPU-time ratio (all threads/ranks), and a sign-test
interval (~95%) for the median of the judged ratio (CPU; wall on a GPU): on a shared VM one
epoch's CPU time moves by +-20% between repetitions, so judge a target by the interval as well
as the median, and use --reps 20 for a verdict. On a shared machine the CPU ratio is the stable
one (waiting for a core does not count). glibc's malloc thresholds are raised for the whole
process first, as slsec's runner does (slsec/run/allocator.py); --default-allocator leaves them.
"""
from __future__ import annotations

import argparse
import time

from _common import (Clock, interleaved, med, mono_epoch, one_thread, paired_ratio, paired_ratio_ci,
                     random_image_setup, role_context, sl_local_roles, sl_local_runner, table)


def mnist_setup(cut: str, samples: int, batch: int, device: str = "cpu"):
    from slsec.config import make_config
    from slsec.run.setup import prepare
    cfg = make_config({"dataset": "mnist", "protocol": "vanilla", "clients": 1, "rounds": 1,
                       "aux_size": 0, "max_train": samples, "batch_size": batch, "cut": cut,
                       "device": device})
    return cfg, prepare(cfg)


def resnet_setup(cut: str, samples: int, batch: int, device: str = "cpu"):
    from slsec.config import make_config
    cfg = make_config({"dataset": "cifar10", "model": "resnet18", "protocol": "vanilla",
                       "clients": 1, "rounds": 1, "aux_size": 0, "batch_size": batch, "cut": cut,
                       "probe_size": 8, "device": device})
    return cfg, random_image_setup(cfg, samples, n_test=32)


def _ratios(name: str, cut: str, n: int, t: dict, pairs: list[tuple[str, str]], target: float,
            rows: list, gpu: bool = False) -> None:
    """On a GPU the wall ratio is the one judged (the host's CPU time there is launch and
    wait overhead, not the work)."""
    for sl, base in pairs:
        rw = paired_ratio(t[base]["wall"], t[sl]["wall"])
        rb = min(t[base]["wall"]) / min(t[sl]["wall"])
        rc = paired_ratio(t[base]["cpu"], t[sl]["cpu"])
        lo, hi = paired_ratio_ci(t[base]["wall" if gpu else "cpu"], t[sl]["wall" if gpu else "cpu"])
        judged = rw if gpu else rc
        rows.append([name, cut, f"{sl} vs {base}", f"{n / min(t[base]['wall']):.0f}",
                     f"{n / min(t[sl]['wall']):.0f}", f"{rw:.3f}", f"{rb:.3f}", f"{rc:.3f}",
                     f"{lo:.3f}-{hi:.3f}", f">= {target:.2f}", "yes" if judged >= target else "NO"])


HEADER = ["model", "cut", "compared", "base samples/s (best)", "SL samples/s (best)",
          "wall ratio (median of pairs)", "wall ratio (best of each)", "CPU ratio (median)",
          "judged ratio, ~95% interval of the median", "target", "met (CPU; GPU: wall)"]


def local(args: argparse.Namespace) -> None:
    rows: list = []
    cases = [("MNIST CNN", c, *mnist_setup(c, args.samples, args.batch, args.device), True)
             for c in args.cuts.split(",")]
    if not args.no_resnet:
        cases += [("ResNet-18 random 3x32x32", c,
                   *resnet_setup(c, args.resnet_samples, args.resnet_batch, args.device), False)
                  for c in ("stem", "layer2")]
    for name, cut, cfg, setup, mnist in cases:
        n = len(setup.shard(1))
        print(f"{name}, cut {cut}: {n} samples, batch {cfg.batch_size}", flush=True)
        fns = {"mono": lambda: mono_epoch(setup, cfg), "SL roles": lambda: sl_local_roles(cfg, setup)}
        pairs = [("SL roles", "mono")]
        if mnist:
            fns["mono+eval"] = lambda: mono_epoch(setup, cfg, evaluate=True)
            fns["SL runner"] = lambda: sl_local_runner(cfg, setup)
            pairs += [("SL runner", "mono+eval"), ("SL runner", "mono")]
            # the roles as threads (not greenlets: runner.take_turns), for comparison
            fns["SL roles as threads"] = lambda: sl_local_roles(cfg, setup, turns=False)
            pairs.insert(1, ("SL roles as threads", "mono"))
        if args.device != "cpu":
            # every message to the host and back, as before LocalLink kept device tensors
            fns["SL roles, via host"] = lambda: sl_local_roles(cfg, setup, via_host=True)
            pairs.insert(1, ("SL roles, via host", "mono"))
        t = interleaved(fns, args.reps if mnist else args.resnet_reps, log=print)
        _ratios(name, cut, n, t, pairs, 0.95, rows, gpu=args.device == "cuda")
    table(f"local backend, 1 thread, {args.device}, {time.strftime('%Y-%m-%d')} "
          "(ratio = SL throughput / base)", HEADER, rows)


def mpi(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from slsec.protocols.base import PROTOCOLS
    from slsec.run.experiment import resolve
    from slsec.run.runner import run_mpi
    from slsec.wire import transport
    from slsec.wire.transport import MPILink

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if comm.Get_size() != 2:
        raise SystemExit("run with two ranks: mpiexec -n 2 python bench/overhead.py --mpi")

    def sync() -> None:
        """A barrier whose waiting rank sleeps (a plain Barrier spins a core away)."""
        req = comm.Ibarrier()
        while not req.Test():
            time.sleep(0.001)

    def both(fn) -> tuple[float, float]:
        """Rank 0's wall-clock of `fn` and the CPU seconds of both ranks together."""
        sync()
        with Clock() as c:
            fn()
        sync()
        return c.wall if rank == 0 else 0.0, comm.allreduce(c.cpu)

    rows: list = []
    for cut in args.cuts.split(","):
        cfg, setup = mnist_setup(cut, args.samples, args.batch, args.device)
        cfg = cfg.replace(backend="mpi")
        n = len(setup.shard(1))
        proto = PROTOCOLS.get("vanilla")

        def roles(learn: bool = True, given: int = transport._MAX_GIVEN) -> tuple[float, float]:
            """The role programs; learn=False: every wait polls at once (no per-channel sleep);
            given=0: `give` waits until the receiver has taken the message, as `send` does."""
            quiet, transport._QUIET = transport._QUIET, (transport._QUIET if learn else 0.0)
            max_given, transport._MAX_GIVEN = transport._MAX_GIVEN, given
            try:
                ctx = role_context(cfg, setup, rank, MPILink(comm, timeout=cfg.timeout))
                role = proto.server if rank == 0 else proto.client
                return both(lambda: (role(ctx), ctx.link.flush()))
            finally:
                transport._QUIET, transport._MAX_GIVEN = quiet, max_given

        fns = {"mono": lambda: both(lambda: mono_epoch(setup, cfg) if rank == 0 else None),
               "mono+eval": lambda: both(lambda: mono_epoch(setup, cfg, evaluate=True)
                                         if rank == 0 else None),
               "SL roles": roles,
               "SL roles, poll first": lambda: roles(learn=False),
               "SL roles, give waits": lambda: roles(given=0),
               "SL runner": lambda: both(lambda: run_mpi(resolve(cfg, setup)))}
        if rank == 0:
            print(f"MNIST CNN, cut {cut}: {n} samples, batch {cfg.batch_size}", flush=True)
        t = interleaved(fns, args.reps, log=print if rank == 0 else None)
        if rank == 0:
            _ratios("MNIST CNN", cut, n, t, [("SL roles", "mono"), ("SL roles, poll first", "mono"),
                                             ("SL roles, give waits", "mono"),
                                             ("SL runner", "mono+eval"), ("SL runner", "mono")],
                    0.90, rows, gpu=args.device == "cuda")
    if rank == 0:
        table(f"mpi backend (mpiexec -n 2, 1 thread per rank) vs 1-thread monolithic, "
              f"{args.device}, {time.strftime('%Y-%m-%d')} (CPU = both ranks)", HEADER, rows)


def split_inline(setup, cfg, copies: bool, surrogate: bool,
                 steps: str = "split") -> tuple[float, float]:
    """SL's arithmetic in one thread, no link: head | detach | tail, cut gradient back to the
    head; `copies` adds the two buffer copies a LocalLink send makes, `surrogate` backpropagates
    the head through (x * g).sum() as protocols/vanilla.py once did (else x.backward(g)).
    `steps`: "split" = two optimisers, the tail's step before the head's backward (as SL
    runs); "two" = two optimisers, both steps after both backward passes; "one" = one optimiser
    over the whole model after both backward passes (only the graph is cut)."""
    import torch

    from slsec.protocols.base import batches, make_optimizer
    from slsec.run.runner import make_plan

    model = setup.fresh_model()
    head, tail = model.split(list(setup.cuts))
    plan = make_plan(cfg, setup)
    if steps == "one":
        opts = [make_optimizer(model.parameters(), plan)]
    else:
        opts = [make_optimizer(head.parameters(), plan), make_optimizer(tail.parameters(), plan)]
    split = setup.shard(1)
    order = batches(len(split), cfg.batch_size, torch.Generator().manual_seed(0))
    with Clock() as c:
        for idx in order:
            feats, y = split.batch(idx)
            x = head(feats)["x"]
            sent = x.detach()
            if copies:
                sent = torch.from_numpy(sent.contiguous().reshape(-1).view(torch.uint8).numpy().copy()
                                        ).view(torch.float32).reshape(x.shape)
            r = sent.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(tail({"x": r})["x"], y)
            for o in opts:
                o.zero_grad()
            loss.backward()
            g = r.grad
            if copies:
                g = torch.from_numpy(g.reshape(-1).view(torch.uint8).numpy().copy()
                                     ).view(torch.float32).reshape(g.shape)
            if steps == "split":
                opts[1].step()
            if surrogate:
                (x * g).sum().backward()
            else:
                x.backward(g)
            for o in (opts[:1] if steps == "split" else opts):
                o.step()
    return c.pair


def breakdown(args: argparse.Namespace) -> None:
    """Per-batch costs that SL adds at the cut, timed in isolation, vs the measured gap."""
    import torch

    from slsec.run.runner import evaluate_model
    from slsec.wire.transport import LocalHub

    cfg, setup = mnist_setup(args.cut, args.samples, args.batch)
    n_batches = -(-len(setup.shard(1)) // cfg.batch_size)
    model = setup.fresh_model()
    head = model.split(list(setup.cuts))[0]
    feats, y = setup.shard(1).batch(torch.arange(cfg.batch_size))
    h = head(feats)["x"]
    g = torch.randn_like(h)
    hub = LocalHub(2)
    a, b = hub.link(0), hub.link(1)

    def per(fn, k: int = 20) -> float:
        fn()
        with Clock() as c:
            for _ in range(k):
                fn()
        return c.cpu / k

    def extra_grad() -> None:
        x = head(feats)["x"]
        (x * g).sum().backward()

    def plain_grad() -> None:
        head(feats)["x"].backward(g)

    costs = {
        "LocalLink send+recv of the smashed batch (1 copy)":
            per(lambda: b.recv(0, 2) if a.send(1, {"x": h.detach(), "y": y}, 2) is None else None),
        "LocalLink send+recv of the cut gradient (1 copy)":
            per(lambda: a.recv(1, 3) if b.send(0, {"g": g}, 3) is None else None),
        "client backward via (x*g).sum() instead of x.backward(g)":
            per(extra_grad) - per(plain_grad),
    }
    ev = per(lambda: evaluate_model(model, setup.data.test), 3)
    steps = interleaved({
        "mono": lambda: mono_epoch(setup, cfg),
        "graph cut only (1 optimiser)": lambda: split_inline(setup, cfg, False, False, "one"),
        "graph cut, 2 optimisers stepped last": lambda: split_inline(setup, cfg, False, False, "two"),
        "split, 1 thread, x.backward(g)": lambda: split_inline(setup, cfg, False, False),
        "split, 1 thread, (x*g).sum()": lambda: split_inline(setup, cfg, False, True),
        "split, 1 thread, (x*g).sum() + 2 copies": lambda: split_inline(setup, cfg, True, True),
        "SL roles": lambda: sl_local_roles(cfg, setup),
        "SL roles as threads": lambda: sl_local_roles(cfg, setup, turns=False)}, args.reps)
    mono, roles = steps["mono"], steps["SL roles"]
    gap = med(roles["cpu"]) - med(mono["cpu"])
    table(f"one epoch, cut {args.cut}, CPU s (median of {args.reps}, interleaved): SL's pieces "
          "added one at a time", ["variant", "CPU s", "vs mono"],
          [[k, f"{med(v['cpu']):.3f}", f"{paired_ratio(mono['cpu'], v['cpu']):.3f}"]
           for k, v in steps.items()])
    print(f"cut {args.cut}, smashed {tuple(h.shape)} = {h.numel() * 4 / 1e6:.1f} MB, "
          f"{n_batches} batches/epoch; CPU per epoch: mono {med(mono['cpu']):.3f}s, "
          f"SL roles {med(roles['cpu']):.3f}s, gap {gap:.3f}s")
    rows = [[k, f"{1e3 * v:.2f}", f"{v * n_batches:.3f}"] for k, v in costs.items()]
    rows.append(["sum of the above", f"{1e3 * sum(costs.values()):.2f}",
                 f"{sum(costs.values()) * n_batches:.3f}"])
    rows.append(["run_local: test evaluation after each round (1000 images)", "-", f"{ev:.3f}"])
    table("what SL adds (CPU seconds)", ["cost", "ms per batch", "s per epoch"], rows)
    if args.top:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        sl_local_roles(cfg, setup)
        prof.disable()
        print("cProfile of one SL epoch (main thread = the server role):")
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpi", action="store_true", help="under mpiexec -n 2")
    ap.add_argument("--profile", action="store_true", help="per-batch breakdown of what SL adds")
    ap.add_argument("--cut", default="conv1", help="cut for --profile")
    ap.add_argument("--cuts", default="conv1,fc1", help="MNIST cuts to compare (comma list)")
    ap.add_argument("--no-resnet", action="store_true", help="local: skip the ResNet-18 rows")
    ap.add_argument("--top", type=int, default=0, help="with --profile: cProfile's top N too")
    ap.add_argument("--samples", type=int, default=4000, help="MNIST samples per epoch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--resnet-samples", type=int, default=128)
    ap.add_argument("--resnet-batch", type=int, default=32)
    ap.add_argument("--resnet-reps", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="where both sides train (cuda: the wall ratio is judged)")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's malloc thresholds as they are, for every row (slsec's "
                         "runner raises them: slsec/run/allocator.py)")
    args = ap.parse_args()
    one_thread()
    import slsec.run.runner as runner
    if args.default_allocator:
        runner.keep_freed_memory = lambda: False   # the SL runner rows too
    else:
        runner.keep_freed_memory()   # for the whole process: every row alike, mono too
    if args.profile:
        breakdown(args)
    elif args.mpi:
        mpi(args)
    else:
        local(args)


if __name__ == "__main__":
    main()
