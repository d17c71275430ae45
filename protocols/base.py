"""What every protocol shares: the role contexts, message tags, and the client/server steps.

A protocol is a pair of role programs, `server(ctx)` and `client(ctx)`, that talk only
through `ctx.link` (rank 0 is the server, ranks 1..K the clients; star topology, so the
server's byte counters see all protocol traffic). The same programs run over `LocalHub`
threads or MPI ranks.

Who holds what (documented threat model):
- The server holds its model part(s), the labels when the protocol sends them (vanilla,
  SplitFed), and the client-side weights that are relayed through it (vanilla and U-shaped
  hand the client part from client k to client k+1 *via the server*, in the clear; SplitFed
  averages heads on the server). So by default an honest-but-curious server knows the head.
- Each client holds its private shard, its own model part(s) and what it received.

Over 300 lines: the Protocol base with its few per-protocol hooks (vertical SL's included) sits
beside the steps every protocol shares, so that a protocol file reads against one module.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.params import Param
from slsec.registry import Registry
from slsec.threat import Observer, ServerHook, Update

# message tags (one per kind of message; MPI keeps order per (source, tag))
CTRL, SMASHED, GRAD, WEIGHTS, BODY_OUT, BODY_GRAD, PROBE = 1, 2, 3, 4, 5, 6, 7


@dataclass
class Plan:
    """Public training plan shared by every role (all roles agree on it before the run)."""

    protocol: str
    clients: int
    rounds: int
    batch_size: int
    lr: float
    optimizer: str
    cuts: tuple[str, ...]
    seed: int
    num_classes: int
    variant: str = "v1"
    label_party: str = "client"      # "server": two-party SL, the server owns the labels
    local_epochs: int = 1
    observe_round: int = -1          # round whose first batches are observed (-1: last)
    observe_samples: int = 256       # training samples observed for gradient/label attacks
    probe_size: int = 64             # inference queries observed for inversion attacks
    probe_batch: int = 1             # FedAvg: batch size of each observed update
    straggler: dict[int, float] = field(default_factory=dict)  # client -> extra seconds per step
    async_every: int = 10            # splitfed-async: local steps between head pushes
    async_alpha: float = 0.6         # splitfed-async: FedAsync mixing weight
    async_decay: float = 0.5         # splitfed-async: staleness exponent a
    async_order: str = "arrival"     # splitfed-async: "arrival" | "fixed" (deterministic)
    fraction: float = 1.0            # splitfed/fedavg: share of clients sampled per round


@dataclass
class Context:
    """What one role holds while the protocol runs."""

    rank: int
    plan: Plan
    link: Any                                  # slsec.wire.transport.Link
    model: nn.Module                           # full SplitModel (only this role's parts are used)
    defense: Any                               # DefenseStack (hooks are identities when empty)
    observer: Observer
    shard: Any = None                          # client: private training Split
    probe: Any = None                          # client 1: private probe Split (inference queries)
    labels: dict[int, Tensor] | None = None   # server, two-party SL: labels of each client's shard
    truth: Callable[[Tensor | None, Tensor | None], None] | None = None  # client -> scorer channel
    on_round: Callable[[int, nn.Module], None] | None = None  # server: evaluation hook per round
    on_step: Callable[[], None] | None = None  # client: called after every training step (progress)
    hook: ServerHook | None = None             # server: a malicious server's deviation (attack)
    gen: torch.Generator = field(default_factory=torch.Generator)

    @property
    def clients(self) -> range:
        return range(1, self.plan.clients + 1)


def make_optimizer(params: Iterator[nn.Parameter], plan: Plan) -> torch.optim.Optimizer:
    """The per-part optimizer; both are per-parameter, so splitting them changes nothing. A part
    without parameters (a U-shaped body that only pools) gets one over an empty tensor: its
    steps change nothing, as there is nothing to learn."""
    params = list(params) or [nn.Parameter(torch.zeros(0))]
    if plan.optimizer == "sgd":
        return torch.optim.SGD(params, lr=plan.lr, momentum=0.9)
    return torch.optim.Adam(params, lr=plan.lr)


def state(module: nn.Module) -> dict[str, Tensor]:
    """A module's weights as plain detached tensors, ready for the wire."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def load(module: nn.Module, tensors: dict[str, Tensor]) -> None:
    module.load_state_dict(tensors)


def weighted_average(states: list[dict[str, Tensor]], weights: list[float]) -> dict[str, Tensor]:
    """FedAvg: the sample-weighted mean of floating tensors; integer buffers from the first."""
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(s[key] * (w / total) for s, w in zip(states, weights))
        else:
            out[key] = first.clone()
    return out


def batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    """A seeded shuffle of range(n) cut into batches (the last one may be smaller)."""
    perm = torch.randperm(n, generator=gen)
    return list(perm.split(batch_size))


def client_seed(plan: Plan, rank: int, rnd: int) -> int:
    return plan.seed * 1_000_003 + rank * 10_007 + rnd


def participants(plan: Plan, rnd: int) -> list[int]:
    """The clients that take part in round `rnd` (ascending): all of them, or with
    `plan.fraction` < 1 a seeded sample of max(1, round(fraction * K)), the same on every rank.
    The observed client (1, the one attacks watch) is always in the observed round's sample."""
    everyone = list(range(1, plan.clients + 1))
    if plan.fraction >= 1:
        return everyone
    m = max(1, round(plan.fraction * plan.clients))
    gen = torch.Generator().manual_seed(plan.seed * 1_000_003 + 7_919 * rnd + 104_729)
    chosen = sorted(int(k) + 1 for k in torch.randperm(plan.clients, generator=gen)[:m])
    last = plan.rounds - 1 if plan.observe_round < 0 else plan.observe_round
    if rnd == last and 1 not in chosen:
        chosen = sorted([1] + chosen[1:])
    return chosen


# client sampling (see `participants`): a parameter of each protocol that samples clients
FRACTION = Param("fraction", "float", 1.0, "share of the K clients sampled each round (seeded; 1 = "
                 "all)", check=("unit_interval",), outside="(clients sampled per round) is for "
                 "{owners}; protocol '{protocol}' runs every client")
WAVE = 8   # with client sampling: clients a server trains at once (see `waves`)


def waves(plan: Plan, ks: list[int], independent: bool) -> list[list[int]]:
    """The sampled clients `ks` of a round in groups the server trains one after another.

    With client sampling and `independent` clients (FedAvg; SplitFed v1, where each client has
    its own tail copy), a round runs in waves of WAVE clients: the result does not depend on the
    grouping, and only one wave's client models and tail copies exist at a time. Otherwise
    every participant runs at once, as before.
    """
    if not (independent and fresh_state_each_round(plan)):
        return [ks]
    return [ks[i:i + WAVE] for i in range(0, len(ks), WAVE)]


def fresh_state_each_round(plan: Plan) -> bool:
    """With client sampling, clients are stateless between rounds (as FL simulators' virtual
    clients): optimiser state is rebuilt from the shared weights each round a client runs."""
    return plan.fraction < 1


def cut_message(feats: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    """The message that crosses a cut: the (defended) activations plus graph structure."""
    return {**{k: v for k, v in feats.items() if k != "x"}, "x": x.detach()}


def backward_cut(x: Tensor, g: Tensor, reg: Tensor | None = None) -> None:
    """Backpropagate the cut gradient `g` received for the sent `x` (plus a regularizer term).

    The same gradients as `((x * g).sum() + reg).backward()`, whose backward only multiplies g
    by 1.0, without building that product and sum over the whole smashed tensor.
    """
    if reg is None:
        x.backward(g)
    else:
        torch.autograd.backward([x, reg], [g, torch.ones_like(reg)])


def receive_cut(msg: dict[str, Tensor]) -> dict[str, Tensor]:
    """Turn a received cut message into feats whose activations collect a gradient."""
    feats = {k: v for k, v in msg.items() if k != "y"}
    feats["x"] = feats["x"].requires_grad_(True)
    return feats


def straggle(ctx: Context) -> None:
    """After every client training step: the straggler delay (if any), then the step hook."""
    if ctx.on_step is not None:
        ctx.on_step()
    delay = ctx.plan.straggler.get(ctx.rank, 0.0)
    if delay:
        time.sleep(delay)


def observing(ctx: Context, rnd: int, i: int, n: int) -> bool:
    """Whether batch i of n falls in the observation window: the last `observe_samples`
    samples of client 1's last round (the model is trained by then, as attacks assume)."""
    last = ctx.plan.rounds - 1 if ctx.plan.observe_round < 0 else ctx.plan.observe_round
    window = -(-ctx.plan.observe_samples // ctx.plan.batch_size)
    return rnd == last and i >= n - window


class Protocol:
    """A protocol: the server and client role programs plus what the server learns."""

    name: ClassVar[str]
    cuts_needed: ClassVar[int] = 1
    labels_to_server: ClassVar[bool] = True   # vanilla/SplitFed send labels: a 100% label leak
    # roles strictly take turns (one computes while the others wait): the local backend may run
    # them on one core, where the working set stays in that core's cache
    alternating: ClassVar[bool] = False
    server_holds: ClassVar[frozenset[str]] = frozenset({"head_weights"})
    params: ClassVar[tuple[Param, ...]] = ()    # its parameters (see slsec.params)
    # vertical SL: every client (passive party) holds the same records, its own columns of them;
    # the hooks below say what it holds (its data, model parts, the architecture it can build)
    splits_columns: ClassVar[bool] = False
    model_options = staticmethod(lambda cfg, data: {})   # extra model-builder keywords
    client_data = staticmethod(lambda setup, rank, split: split)
    client_parts = staticmethod(lambda model, cuts, rank: {"head": model.split(list(cuts))[0]})
    client_build = staticmethod(lambda build, rank: build)

    @classmethod
    def independent_clients(cls, cfg: Any) -> bool:
        """Each client trains against its own copy of the server's part (a wave of clients can
        run at once); False where all clients share one server part in turn."""
        return True

    @staticmethod
    def server(ctx: Context) -> None:
        raise NotImplementedError

    @staticmethod
    def client(ctx: Context) -> None:
        raise NotImplementedError

    @staticmethod
    def server_parts(model: nn.Module, cuts: tuple[str, ...]) -> dict[str, nn.Module]:
        """The parts the server holds (for attacks): its own, and relayed ones."""
        parts = model.split(list(cuts))
        return {"head": parts[0], "tail": parts[-1]} if len(parts) == 2 else \
            {"head": parts[0], "body": parts[1], "tail": parts[2]}


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol")


def probe_inference(ctx: Context, head: nn.Module,
                    adopt: Callable[[dict[str, Tensor]], None] | None = None,
                    send_labels: bool = False) -> None:
    """After training every client adopts the final model the server hands out (`adopt`
    loads that message; default: into `head`), as it would for deployment; then client 1
    sends its private probe inputs through the final head (inference); truth to scorer.
    `send_labels`: protocols where the server holds every record's label (vanilla SL and
    SplitFed send it with the smashed data; two-party SL owns it) send the probe's labels with
    it, so the server's prior for the probe knows them as it would for any record."""
    final = ctx.link.recv(0, WEIGHTS)
    (adopt or (lambda msg: load(head, msg)))(final)
    if ctx.rank != 1 or ctx.probe is None:
        ctx.link.send(0, {"n": torch.tensor(0)}, PROBE)
        return
    idx = torch.arange(len(ctx.probe))
    chunks = list(idx.split(ctx.plan.batch_size))
    ctx.link.send(0, {"n": torch.tensor(len(chunks))}, PROBE)
    head.eval()
    with torch.no_grad():
        for chunk in chunks:
            feats, y = ctx.probe.batch(chunk)
            h = head(feats)
            x = ctx.defense.smashed(h["x"], train=False, gen=ctx.gen)
            msg = cut_message(h, x)
            if send_labels:
                msg["y"] = y
            ctx.link.send(0, msg, PROBE)
            if ctx.truth is not None:
                ctx.truth(feats["x"], y)
    head.train()


def serve_probe(ctx: Context, sources: range, final: dict[str, Tensor]) -> None:
    """Server side of the probe: hand every client the final client-side weights (in vanilla
    SL the last client holds the newest head, in SplitFed the server's average), then record
    every smashed inference query it receives."""
    for k in sources:
        ctx.link.send(k, final, WEIGHTS)
    ctx.observer.recording = True
    for k in sources:
        n = int(ctx.link.recv(k, PROBE)["n"])
        for _ in range(n):
            ctx.observer.smashed(ctx.link.recv(k, PROBE))
    ctx.observer.recording = False


def cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out, y)


def copy_module(m: nn.Module) -> nn.Module:
    return copy.deepcopy(m)


__all__ = ["Plan", "Context", "Protocol", "PROTOCOLS", "Update", "CTRL", "SMASHED", "GRAD",
           "WEIGHTS", "BODY_OUT", "BODY_GRAD", "PROBE"]
