"""Threat model as data: what an attacked role observed, kept apart from the ground truth.

The protocol feeds an `Observer` owned by the attacked role with exactly the tensors that
role received or computed. Ground truth (private inputs, labels) goes to a `Scorer`, which
the attack never gets a handle to. `Observer.view()` freezes what was observed into a `View`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

ROLES = ("server", "client", "aggregator")
KNOWLEDGE = ("architecture", "head_weights", "aux_data", "query_head")


# --- public mechanisms (Kerckhoffs): what a defense tells every role, typed, so an adaptive
# attack asks for the kind of mechanism it can model, never for a defense's name

M = TypeVar("M", bound="Mechanism")


@dataclass(frozen=True)
class Mechanism:
    """A defense's public mechanism; `name` is the defense's, for reports only."""

    name: str


@dataclass(frozen=True)
class CutNoise(Mechanism):
    """Smashed rows clipped to L2 norm `clip` (inf: not clipped), then noise of std
    sigma * clip (sigma * 1 without clipping) per coordinate."""

    clip: float
    sigma: float | None
    mechanism: str = "gaussian"     # gaussian | laplace
    delta: float = 1e-5


@dataclass(frozen=True)
class ClippedGradientNoise(Mechanism):
    """DP-SGD: per-sample gradients clipped to `max_grad_norm`, the sum noised."""

    max_grad_norm: float
    noise_multiplier: float | None


@dataclass(frozen=True)
class GradientScaling(Mechanism):
    """Returned cut gradients scaled per row by a random (possibly negative) factor."""


@dataclass(frozen=True)
class ClassGradientNoise(Mechanism):
    """Marvell: each returned gradient row gets Gaussian noise along the batch's class-mean
    difference, with a variance per label, optimised under the power budget
    `power` * ||mean_1 - mean_0||^2 (binary labels)."""

    power: float


@dataclass(frozen=True)
class Bottleneck(CutNoise):
    """A variational information bottleneck at the cut (MID): what is sent is sampled,
    mean + sigma * N(0, I), the sender's loss has `weight` times the KL to N(0, I); an attacker
    models it as the noise it is (a `CutNoise` without clipping)."""

    weight: float = 0.0


@dataclass(frozen=True)
class CutCompression(Mechanism):
    """Each smashed row compressed before it leaves: its `keep` fraction of coordinates of
    largest magnitude kept, the rest zero (1.0: all kept), then, with `bits`, quantised to
    2**bits evenly spaced levels between the row's min and max (sent alongside)."""

    keep: float = 1.0
    bits: int | None = None


@dataclass(frozen=True)
class GradientSparsification(Mechanism):
    """Each returned cut-gradient row keeps its `keep` fraction of coordinates of largest
    magnitude; the rest are zero."""

    keep: float


@dataclass(frozen=True)
class LabelNoise(Mechanism):
    """Randomized response on the labels with parameter `epsilon` per use."""

    epsilon: float


@dataclass(frozen=True)
class Regularizer(Mechanism):
    """An extra term of `weight` in the client's loss (no change to what is sent)."""

    weight: float


@dataclass(frozen=True)
class Detection(Mechanism):
    """A client-side detector of a malicious server: it flags when the mean of its last
    `window` scores (from client step `start` on) falls below `threshold`; `p_fake` is the
    share of batches it sends as decoys with wrong labels (0: none)."""

    threshold: float
    window: int
    start: int
    p_fake: float = 0.0


@dataclass(frozen=True)
class PreTraining(Mechanism):
    """A choice made before training (e.g. the cut), by the stated rule."""

    rule: str


@dataclass
class Update:
    """One client's model update as the FedAvg aggregator received it."""

    client: int
    before: dict[str, Tensor]   # global weights the aggregator sent
    after: dict[str, Tensor]    # weights the client sent back
    lr: float                   # public training hyper-parameters
    local_steps: int
    batch_size: int


@dataclass
class View:
    """Everything one role legitimately holds after a run; attacks consume nothing else."""

    role: str
    protocol: str
    # smashed tensors received at the cut, in probe order: one dict of named tensors per message
    smashed: list[dict[str, Tensor]] = field(default_factory=list)
    # gradients this role received (U-shaped server: d loss / d body output; vanilla client: cut grads)
    grads: list[Tensor] = field(default_factory=list)
    # what this role itself sent on during training, one per gradient above (the U-shaped
    # server's body outputs, as the cut message the client's tail consumed)
    outputs: list[dict[str, Tensor] | Tensor] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)          # FedAvg aggregator only
    # smashed messages this role received while training, in the observation window (the last
    # `observe_samples` samples of client 1's last round), as they arrived, with the labels the
    # role holds for them ("y": vanilla SL and SplitFed receive them; two-party SL owns them);
    # only a role that receives the client's smashed data during training (the server of
    # vanilla, U-shaped and synchronous SplitFed) holds any
    seen: list[dict[str, Tensor]] = field(default_factory=list)
    parts: dict[str, torch.nn.Module] = field(default_factory=dict)  # model parts the role holds
    knowledge: frozenset[str] = frozenset()
    build_model: Callable[[], Any] | None = None  # public architecture: builds a fresh SplitModel
    cuts: tuple[str, ...] = ()                    # where the model is cut (public)
    aux: Any = None                               # public auxiliary Split, when knowledge has aux_data
    # black-box access to the client head (knowledge "query_head"): feats -> smashed feats, no grads
    query_head: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    public: dict[str, Any] = field(default_factory=dict)  # public mechanism: defenses, lr, num_classes ...

    def mechanisms(self, kind: type[M]) -> list[M]:
        """The run's public defense mechanisms of type `kind`, in the order applied."""
        return [m for m in self.public.get("defenses", ()) or () if isinstance(m, kind)]


class ServerHook:
    """A malicious server's deviation from the protocol, installed before training.

    The protocol calls `cut_grad` for every training batch the server serves, after it has
    computed the honest cut gradient, and sends back what it returns instead (to that client
    alone, one gradient per sample). An honest-but-curious server has no hook."""

    def cut_grad(self, client: int, msg: dict[str, Tensor], honest: Tensor) -> Tensor:
        return honest


class Observer:
    """Collects what one role sees while the protocol runs."""

    def __init__(self, role: str, protocol: str) -> None:
        self.role, self.protocol = role, protocol
        self._smashed: list[dict[str, Tensor]] = []
        self._grads: list[Tensor] = []
        self._outputs: list[dict[str, Tensor] | Tensor] = []
        self._updates: list[Update] = []
        self._seen: list[dict[str, Tensor]] = []
        self.recording = False

    def smashed(self, tensors: dict[str, Tensor]) -> None:
        if self.recording:
            self._smashed.append({k: v.detach().cpu().clone() for k, v in tensors.items()})

    def seen(self, tensors: dict[str, Tensor]) -> None:
        """A training message received in the observation window (the protocol decides which)."""
        self._seen.append({k: v.detach().cpu().clone() for k, v in tensors.items()})

    def grad(self, g: Tensor) -> None:
        if self.recording:
            self._grads.append(g.detach().cpu().clone())

    def output(self, out: dict[str, Tensor] | Tensor) -> None:
        if self.recording:
            self._outputs.append({k: v.detach().cpu().clone() for k, v in out.items()}
                                 if isinstance(out, dict) else out.detach().cpu().clone())

    def update(self, u: Update) -> None:
        if self.recording:
            self._updates.append(u)

    def view(self, **extra: Any) -> View:
        return View(role=self.role, protocol=self.protocol, smashed=list(self._smashed),
                    grads=list(self._grads), outputs=list(self._outputs),
                    updates=list(self._updates), seen=list(self._seen), **extra)


class Scorer:
    """Holds the ground truth of probed samples; only the harness reads it."""

    def __init__(self) -> None:
        self._inputs: list[Tensor] = []
        self._labels: list[Tensor] = []

    def truth(self, inputs: Tensor | None, labels: Tensor | None) -> None:
        if inputs is not None:
            self._inputs.append(inputs.detach().clone())
        if labels is not None:
            self._labels.append(labels.detach().clone())

    @property
    def inputs(self) -> Tensor:
        return torch.cat(self._inputs) if self._inputs else torch.empty(0)

    @property
    def labels(self) -> Tensor:
        return torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)
