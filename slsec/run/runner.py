"""Run one protocol over a backend: threads in one process (`local`) or MPI ranks (`mpi`).

Every rank builds the same public setup (data split, partition, model init) from the seed and
keeps only what its role may hold. Rank 0 is the server and the experimenter: it evaluates the
assembled model each round and, at the end, collects the ground truth of observed samples from
the clients over a separate instrumentation channel that no attack object ever gets.

Over 300 lines: the three ways ranks run (threads, a client pool for --fraction, MPI ranks)
share run_rank, the outcome types and the failure handling; splitting them apart would scatter
the one place that says how a failing rank ends the run.
"""
from __future__ import annotations

import copy
import os
import sys
import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch._dynamo  # noqa: F401  (an optimiser's first step imports it lazily; imported there,
#                       inside one rank's thread while the others train, the first local run of
#                       a process gave other numbers than every later run and than MPI)
from torch import Tensor

from slsec.progress import train_step, train_total
from slsec.config import RunConfig
from slsec.errors import PeerError, UserError
from slsec.protocols.base import Context, Plan, cut_message
from slsec.run.allocator import keep_freed_memory
from slsec.run.experiment import Experiment
from slsec.run.setup import Setup
from slsec.threat import Observer, ServerHook

TRUTH, GUESS = 91, 92
REPORT = "report."   # prefix of a client's defense report in its truth message


@dataclass
class RoundRecord:
    round: int
    accuracy: float
    loss: float
    wall_s: float
    bytes: int


@dataclass
class RankOutcome:
    """What one rank ends with: rank 0 gets the records, the truth and the attacked view."""

    rank: int
    observer: Observer
    model: torch.nn.Module
    records: list[RoundRecord] = field(default_factory=list)
    truth_inputs: Tensor | None = None
    truth_labels: Tensor | None = None
    bytes_total: int = 0
    payload_total: int = 0
    wall_s: float = 0.0
    instr: Any = None     # instrumentation link (scorer channel); never handed to an attack
    # client 1's defense report (a detector's verdict on the server), carried to rank 0 with
    # the scorer's truth after the protocol ends
    defense_report: dict[str, float] = field(default_factory=dict)
    # vertical SL, binary labels: the last joint inference's test ROC AUC (the utility the
    # review and the frontier use for imbalanced labels); NaN elsewhere
    test_auc: float = float("nan")


class DeviceLink:
    """A link whose received tensors land on `device`. Over MPI the wire carries CPU bytes, so
    every message goes to the host and back; a LocalLink (`carries_device_tensors`) hands the
    device tensors over as they are."""

    def __init__(self, link: Any, device: torch.device) -> None:
        self._link, self.device = link, device
        self._host = not getattr(link, "carries_device_tensors", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)

    def _out(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in tensors.items()} if self._host else tensors

    def send(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        self._link.send(dest, self._out(tensors), tag)

    def give(self, dest: int, tensors: dict[str, Tensor], tag: int) -> None:
        self._link.give(dest, self._out(tensors), tag)

    def recv(self, source: int, tag: int) -> dict[str, Tensor]:
        return {k: v.to(self.device) for k, v in self._link.recv(source, tag).items()}

    def recv_any(self, tag: int) -> tuple[int, dict[str, Tensor]]:
        src, msg = self._link.recv_any(tag)
        return src, {k: v.to(self.device) for k, v in msg.items()}


class DeviceSplit:
    """A data split whose batches land on `device`."""

    def __init__(self, split: Any, device: torch.device) -> None:
        self._split, self.device = split, device

    def __len__(self) -> int:
        return len(self._split)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._split, name)

    def batch(self, idx: Any) -> tuple[dict[str, Tensor], Tensor]:
        feats, y = self._split.batch(idx)
        return {k: v.to(self.device) for k, v in feats.items()}, y.to(self.device)


def on_device_link(link: Any, device: torch.device) -> Any:
    """`link` itself on the CPU, else a DeviceLink whose received tensors land on `device`."""
    return link if device.type == "cpu" else DeviceLink(link, device)


def on_device_split(split: Any, device: torch.device) -> Any:
    """`split` itself on the CPU, else a DeviceSplit whose batches land on `device`."""
    return split if device.type == "cpu" else DeviceSplit(split, device)


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU. On CUDA, cuDNN picks deterministic
    kernels (no autotuning): same seed, same numbers, run after run."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here (use --device cpu)")
    if name == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return torch.device(name)


class TruthBuffer:
    """Client side of the scorer channel: buffered, flushed to rank 0 after the protocol ends."""

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []
        self.labels: list[Tensor] = []

    def __call__(self, inputs: Tensor | None, labels: Tensor | None) -> None:
        if inputs is not None:
            self.inputs.append(inputs.detach().cpu().clone())
        if labels is not None:
            self.labels.append(labels.detach().cpu().clone())

    def message(self) -> dict[str, Tensor]:
        return {"inputs": torch.cat(self.inputs) if self.inputs else torch.empty(0),
                "labels": torch.cat(self.labels) if self.labels else torch.empty(0, dtype=torch.long)}


def make_plan(cfg: RunConfig, setup: Setup) -> Plan:
    straggler = {int(s.split(":")[0]): float(s.split(":")[1]) for s in cfg.straggler}
    return Plan(protocol=cfg.protocol, clients=cfg.clients, rounds=cfg.rounds,
                batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, cuts=setup.cuts,
                seed=cfg.seed, num_classes=setup.data.num_classes, variant=cfg.variant,
                label_party=setup.label_party, observe_samples=cfg.observe_samples,
                probe_size=cfg.probe_size, probe_batch=cfg.probe_batch, straggler=straggler,
                async_every=cfg.async_every, async_alpha=cfg.async_alpha,
                async_decay=cfg.async_decay, async_order=cfg.async_order, fraction=cfg.fraction)


def evaluate_model(model: torch.nn.Module, split: Any, batch_size: int = 500, *,
                   cut: str | None = None, defense: Any = None, seed: int = 0
                   ) -> tuple[float, float]:
    """Test accuracy and mean loss of the assembled model (the experimenter's measurement), or
    of the test logits a joint inference produced (vertical SL: `joint_logits`).

    With a defense that changes what crosses the cut (`defense.smashed`: DP at the cut, MID,
    compression) and the client's `cut`, the accuracy is the deployed model's: head, then the
    defense as at inference (the probes the attacks see pass through it the same way), then the
    rest, its noise drawn from a generator seeded by `seed`. Without it, the assembled model
    with nothing at the cut would report the utility of a model nobody can query."""
    joint = getattr(model, "joint_logits", None)   # vertical SL: its inference applied the defense
    if joint is not None:
        y = split.y.to(joint.device)
        loss = float(torch.nn.functional.cross_entropy(joint, y, reduction="sum"))
        return int((joint.argmax(1) == y).sum()) / max(len(y), 1), loss / max(len(y), 1)
    forward: Callable[[dict[str, Tensor]], dict[str, Tensor]] = model
    if cut is not None and defense is not None and defense.changes_smashed() \
            and hasattr(model, "split"):
        head, rest = model.split([cut])
        gen = torch.Generator().manual_seed(seed)

        def forward(feats: dict[str, Tensor]) -> dict[str, Tensor]:   # head, defense, rest
            h = head(feats)
            return rest(cut_message(h, defense.smashed(h["x"], train=False, gen=gen)))
    was = model.training
    device = next(model.parameters()).device
    model.eval()
    correct, loss, n = 0, 0.0, len(split)
    with torch.no_grad():
        for idx in torch.arange(n).split(batch_size):
            feats, y = split.batch(idx)
            feats, y = {k: v.to(device) for k, v in feats.items()}, y.to(device)
            out = forward(feats)["x"]
            loss += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    model.train(was)
    return correct / max(n, 1), loss / max(n, 1)


def rank_context(exp: Experiment, rank: int, link: Any, defense: Any) -> Context:
    """Rank `rank`'s Context on the run's device: its model, link, generator, observer and
    scorer buffer; the server's labels (two-party SL) or a client's shard (and client 1's
    probe). run_rank adds the experimenter's hooks; the bench times role programs on it."""
    cfg, setup = exp.cfg, exp.setup
    device = resolve_device(cfg.device)
    ctx = Context(rank=rank, plan=make_plan(cfg, setup), link=on_device_link(link, device),
                  model=setup.fresh_model().to(device), defense=defense,
                  observer=Observer("server" if rank == 0 else "client", cfg.protocol),
                  gen=torch.Generator().manual_seed(cfg.seed * 7919 + rank), truth=TruthBuffer())
    if rank == 0:
        ctx.labels = ({k: v.to(device) for k, v in setup.shard_labels().items()}
                      if setup.label_party == "server" else None)
    else:
        ctx.shard = on_device_split(setup.shard(rank), device)
        probe = exp.protocol.client_data(setup, rank, setup.probe)
        ctx.probe = on_device_split(probe, device) if rank == 1 else None
    return ctx


def run_rank(exp: Experiment, rank: int, link: Any, instr: Any,
             progress: Callable[[RoundRecord], None] | None = None,
             hook: ServerHook | None = None) -> RankOutcome:
    """Run this rank's role program, then (rank 0) collect the ground truth from the clients."""
    cfg, setup, proto = exp.cfg, exp.setup, exp.protocol
    ctx = rank_context(exp, rank, link, exp.fresh_defense())
    plan, model, link, observer, truth = ctx.plan, ctx.model, ctx.link, ctx.observer, ctx.truth
    outcome = RankOutcome(rank=rank, observer=observer, model=model, instr=instr)
    start = time.perf_counter()
    if rank == 0:
        def on_round(rnd: int, m: torch.nn.Module) -> None:
            acc, loss = evaluate_model(m, setup.data.test, cut=(setup.cuts or (None,))[0],
                                       defense=ctx.defense, seed=cfg.seed * 7919 + 104729)
            if not math.isfinite(loss):
                noise = [f"--{n.replace('_', '-')}" for n in ("sigma", "noise_multiplier")
                         if getattr(cfg, n, None)]
                raise UserError(f"training diverged at round {rnd + 1} (loss {loss}); lower --lr"
                                + (f" (or {' / '.join(noise)})" if noise else ""))
            rec = RoundRecord(rnd + 1, acc, loss, time.perf_counter() - start,
                              sum(link.bytes_sent.values()) + sum(link.bytes_recv.values()))
            outcome.records.append(rec)
            joint = getattr(m, "joint_logits", None)
            y_test = setup.data.test.y
            if joint is not None and joint.shape[1] == 2 and 0 < int(y_test.sum()) < len(y_test):
                from slsec.metrics import label_auc
                outcome.test_auc = label_auc(y_test, torch.softmax(joint.float().cpu(), 1)[:, 1])
            if progress:
                progress(rec)

        ctx.on_round = on_round
        ctx.hook = hook   # a malicious server's deviation (None: the server follows the protocol)
        proto.server(ctx)
        link.flush()
        outcome.wall_s = time.perf_counter() - start
        outcome.bytes_total = sum(link.bytes_sent.values()) + sum(link.bytes_recv.values())
        outcome.payload_total = sum(link.payload_sent.values()) + sum(link.payload_recv.values())
        msgs = [truth.message()] + [instr.recv(k, TRUTH) for k in range(1, cfg.clients + 1)]
        outcome.truth_inputs = torch.cat([m["inputs"] for m in msgs if m["inputs"].numel()] or
                                         [torch.empty(0)])
        outcome.truth_labels = torch.cat([m["labels"] for m in msgs if m["labels"].numel()] or
                                         [torch.empty(0, dtype=torch.long)])
        if len(msgs) > 1:
            outcome.defense_report = {k[len(REPORT):]: float(v) for k, v in msgs[1].items()
                                      if k.startswith(REPORT)}
    else:
        if rank == 1:   # client 1 paces the training progress (the others run beside it)
            per_round = -(-len(ctx.shard) // plan.batch_size) * getattr(plan, "local_epochs", 1)
            train_total(per_round * plan.rounds)
            ctx.on_step = train_step
        proto.client(ctx)
        link.flush()
        outcome.wall_s = time.perf_counter() - start
        report = {REPORT + k: torch.tensor(float(v)) for k, v in ctx.defense.report().items()}
        instr.send(0, {**truth.message(), **report}, TRUTH)
    model.cpu()   # attacks and reports work on the CPU
    return outcome


def take_turns(exp: Experiment) -> Any:
    """For protocols whose roles strictly alternate (one computes while the others wait), a
    Turns that runs the ranks as greenlets of this thread (slsec/wire/turns.py: no thread
    hand-offs; a deadlock is named at once); None where roles run side by side."""
    from slsec.wire.turns import Turns
    return Turns() if exp.protocol.alternating else None


def run_local(exp: Experiment,
              progress: Callable[[RoundRecord], None] | None = None,
              hook: ServerHook | None = None) -> list[RankOutcome]:
    """All ranks over LocalHub: as greenlets of this thread where the roles take turns
    (take_turns), else as threads; the first failure is raised."""
    from slsec.wire.transport import LocalHub

    cfg = exp.cfg
    keep_freed_memory()
    if cfg.fraction < 1 and hasattr(exp.protocol, "client_round"):
        return run_local_pooled(exp, progress)
    world = cfg.clients + 1
    turns = take_turns(exp)
    hub, instr = (LocalHub(world, timeout=cfg.timeout, turns=turns),
                  LocalHub(world, timeout=cfg.timeout, turns=turns))
    outcomes: list[RankOutcome | None] = [None] * world
    errors: list[BaseException] = []

    def role(rank: int) -> None:
        torch.set_num_threads(cfg.threads)
        outcomes[rank] = run_rank(exp, rank, hub.link(rank), instr.link(rank),
                                  progress if rank == 0 else None, hook)

    if turns is not None:
        turns.run([lambda r=r: role(r) for r in range(world)])
        return [o for o in outcomes if o is not None]

    def target(rank: int) -> None:
        try:
            role(rank)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)

    return _join({f"rank{r}": lambda r=r: target(r) for r in range(world)}, errors, outcomes,
                 (hub, instr))


def run_local_pooled(exp: Experiment,
                     progress: Callable[[RoundRecord], None] | None = None) -> list[RankOutcome]:
    """The local backend as a client simulator (with --fraction < 1): the server is one thread;
    a client exists only while it runs one round (or the final probe), as a task of a pool with
    threads for one wave of clients (slsec.protocols.base.waves). Its model and optimiser are
    built for the task from the weights the server sends (the protocol's `client_round`); only
    its observer, scorer buffer and generator live across rounds. Rank 0 and client 1 get a RankOutcome."""
    import queue

    from slsec.protocols.base import participants, waves
    from slsec.wire.transport import LocalHub

    cfg, setup, proto = exp.cfg, exp.setup, exp.protocol
    plan = make_plan(cfg, setup)
    device = resolve_device(cfg.device)
    world = cfg.clients + 1
    hub, instr = LocalHub(world, timeout=cfg.timeout), LocalHub(world, timeout=cfg.timeout)
    outcomes: list[RankOutcome | None] = [None] * world
    errors: list[BaseException] = []
    light: dict[int, tuple[Observer, TruthBuffer, torch.Generator]] = {}

    def server() -> None:
        try:
            torch.set_num_threads(cfg.threads)
            outcomes[0] = run_rank(exp, 0, hub.link(0), instr.link(0), progress)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)

    def client(k: int, rnd: int | None) -> None:
        """Round `rnd` of client k, or (None) its end: the final model, probe, scorer flush."""
        if errors:
            return
        try:
            torch.set_num_threads(cfg.threads)
            if k not in light:
                light[k] = (Observer("client", cfg.protocol), TruthBuffer(),
                            torch.Generator().manual_seed(cfg.seed * 7919 + k))
            observer, truth, gen = light[k]
            link = on_device_link(hub.link(k), device)
            model = setup.fresh_model().to(device)
            shard = on_device_split(setup.shard(k), device)
            ctx = Context(rank=k, plan=plan, link=link, model=model,
                          defense=exp.fresh_defense(), observer=observer, gen=gen,
                          truth=truth, shard=shard)
            if rnd is not None:
                proto.client_round(ctx, rnd)
                return
            ctx.probe = on_device_split(setup.probe, device) if k == 1 else None
            proto.client_finish(ctx)
            instr.link(k).send(0, truth.message(), TRUTH)
            light.pop(k)
            if k == 1:
                outcomes[1] = RankOutcome(rank=1, observer=observer, model=model.cpu(),
                                          instr=instr.link(1))
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)

    # tasks are queued in the order the server trains them (round by round, wave by wave) and
    # the pool can run a whole wave at once, so a wave never waits for a worker held by a later
    # one (FedAvg and SplitFed v1 train in waves of WAVE clients; SplitFed v2 a round at once)
    rounds = [participants(plan, rnd) for rnd in range(plan.rounds)]
    independent = proto.independent_clients(cfg)
    pool = max(len(w) for ks in rounds for w in waves(plan, ks, independent))
    tasks: queue.SimpleQueue[tuple[int, int | None]] = queue.SimpleQueue()
    for rnd, ks in enumerate(rounds):
        for k in ks:
            tasks.put((k, rnd))
    for k in range(1, world):
        tasks.put((k, None))

    def worker() -> None:
        while not errors:
            try:
                k, rnd = tasks.get_nowait()
            except queue.Empty:
                return
            client(k, rnd)

    return _join({"rank0": server, **{f"client-worker{i}": worker for i in range(pool)}},
                 errors, outcomes, (hub, instr))


def _join(targets: dict[str, Callable[[], None]], errors: list[BaseException],
          outcomes: list[RankOutcome | None], hubs: tuple[Any, ...]) -> list[RankOutcome]:
    """Run each target on a thread of that name and wait for all of them, or for the first
    failure: raise the first error that is not a peer's reaction to it (PeerError), else the
    first one.

    On a failure or Ctrl-C, every wait on `hubs` ends (LocalHub.abort) and the threads get
    STOP_WAIT_S to reach one before this returns: a rank thread still inside torch when the
    interpreter exits aborts the process ("terminate called without an active exception").
    Each thread's end is an Event: Python 3.11's Thread.join, once interrupted by Ctrl-C, may
    take a running thread for ended."""
    ended = {name: threading.Event() for name in targets}

    def run(name: str) -> None:
        try:
            targets[name]()
        finally:
            ended[name].set()

    for name in targets:
        threading.Thread(target=run, args=(name,), daemon=True, name=name).start()
    try:
        while not errors and not all(e.wait(0.05) for e in ended.values()):
            pass
    except BaseException:   # Ctrl-C while waiting
        _stop_all(ended, hubs, "interrupted")
        raise
    if errors:
        _stop_all(ended, hubs, "another rank failed")
        raise next((e for e in errors if not isinstance(e, PeerError)), errors[0])
    return [o for o in outcomes if o is not None]


STOP_WAIT_S = 10.0   # how long a stopped run's rank threads get to reach their next wait


def _stop_all(ended: dict[str, threading.Event], hubs: tuple[Any, ...], why: str) -> None:
    for hub in hubs:
        hub.abort(why)
    end = time.monotonic() + STOP_WAIT_S
    for e in ended.values():
        e.wait(max(0.0, end - time.monotonic()))


def load_mpi(initialize: bool = True) -> Any:
    """mpi4py's MPI module, or a UserError saying why there is no working MPI."""
    try:
        import mpi4py
        if not initialize:
            mpi4py.rc.initialize = False   # load libmpi only (a launcher about to exec mpiexec)
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:   # no mpi4py, or it cannot load an MPI library
        raise UserError(f"--backend mpi needs mpi4py and a working MPI library "
                        f"({' '.join(str(e).split())}); install one (pip install mpich) "
                        "or use --backend local") from None
    return MPI


def run_mpi(exp: Experiment,
            progress: Callable[[RoundRecord], None] | None = None,
            hook: ServerHook | None = None) -> RankOutcome:
    """This rank's part of an MPI run (under mpiexec); a failing rank aborts the whole job."""
    MPI = load_mpi()
    from slsec.wire.transport import MPILink, preflight

    cfg = exp.cfg
    comm = MPI.COMM_WORLD
    torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    try:
        procs = preflight(comm, expected_world=cfg.clients + 1, timeout=min(cfg.timeout, 30.0))
        # clients wait twice as long, so a silent client is named by rank 0, not blamed on it
        link = MPILink(comm, timeout=cfg.timeout * (1 if comm.Get_rank() == 0 else 2),
                       procs=procs)
        instr = MPILink(comm.Dup(), timeout=cfg.timeout, procs=procs)
        return run_rank(exp, comm.Get_rank(), link, instr, progress, hook)
    except UserError as e:
        if comm.Get_size() != cfg.clients + 1:
            raise   # every rank knows the world size is wrong: exit 2 cleanly, no Abort
        if comm.Get_rank() == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        abort_job(comm, 2)
    except KeyboardInterrupt:   # Ctrl-C: mpiexec hands it to every rank; one line says so
        if comm.Get_rank() == 0:
            print("error: interrupted", file=sys.stderr, flush=True)
        abort_job(comm, 130)
    except BaseException as e:  # noqa: BLE001
        print(f"error: rank {comm.Get_rank()}: {e}", file=sys.stderr, flush=True)
        if not isinstance(e, PeerError):
            traceback.print_exc(file=sys.stderr)
        abort_job(comm, 1)


ABORT_GRACE_S = 1.0   # time for hydra's proxy to forward our last stderr lines before Abort


def abort_job(comm: Any, code: int) -> None:
    """End the whole MPI job after this rank's error line has had time to reach mpiexec.

    Hydra's proxy tears everything down as soon as it reads the abort request and may never
    forward what this rank wrote to stderr just before (seen on a loaded CI machine: the job
    ended non-zero with no error line at all), so give it a moment first.
    """
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(code)
    os._exit(code)   # MPICH's Abort can return before mpiexec ends this rank: say nothing more


ATTACK_WAIT_S = 3600.0   # how long rank 0 waits for an attack running on another rank


def mpi_attack_exchange(outcome: RankOutcome, attacked: int | None,
                        attack: Callable[[RankOutcome], dict[str, Tensor]]) -> dict[str, Tensor] | None:
    """Run the attack on the attacked rank; its guesses (not its view) travel to rank 0."""
    if attacked is None:
        return None
    guess = attack(outcome) if outcome.rank == attacked else None
    if attacked != 0:
        if outcome.rank == attacked:
            outcome.instr.send(0, guess, GUESS)
        elif outcome.rank == 0:
            # an attack legitimately computes for minutes: wait longer than --timeout for its
            # guess (a rank that dies meanwhile still ends the job at once through mpiexec)
            outcome.instr.timeout = max(outcome.instr.timeout, ATTACK_WAIT_S)
            guess = outcome.instr.recv(attacked, GUESS)
    return guess if outcome.rank == 0 else None
