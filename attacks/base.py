"""Attack interface: a declared role and knowledge set, and one method that reads a View."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from slsec.errors import UserError
from slsec.params import Param
from slsec.registry import Registry
from slsec.threat import ServerHook, View


@dataclass
class Guess:
    """An attack's output: reconstructed images in [0,1] and/or label scores per sample."""

    images: Tensor | None = None        # [N, C, H, W] in [0, 1], same order as the probe
    label_scores: Tensor | None = None  # [N, num_classes] (or [N] for binary), higher = more likely
    rows: Tensor | None = None          # tabular rows [N, D] (encoded columns), same order as the probe
    info: dict[str, Any] = field(default_factory=dict)


class Attack(ABC):
    """Base class. Subclasses set `name`, `kind`, `roles`, `methods`; `requires` per method."""

    name: ClassVar[str]
    kind: ClassVar[str]                   # "inversion" | "label" | "gradient"
    roles: ClassVar[dict[str, str]]       # protocol -> role the attack plays there
    methods: ClassVar[dict[str, frozenset[str]]]  # method -> knowledge it needs
    default_order: ClassVar[tuple[str, ...]]      # strongest first
    # methods none of which is strongest everywhere: with no --method the harness runs every
    # one the role's knowledge allows and reports the one that leaked most (the defender's worst case)
    contenders: ClassVar[tuple[str, ...]] = ()
    # methods that apply to some of the attack's protocols only (method -> those protocols):
    # elsewhere they neither contend nor run with --method
    method_protocols: ClassVar[dict[str, frozenset[str]]] = {}
    # methods whose results never depend on torch's global generator (they draw from
    # generators of their own) and that share no state while they run: the harness may run
    # them side by side, one per free core, with the same results as one after the other
    side_by_side: ClassVar[frozenset[str]] = frozenset()
    # a malicious attack deviates from the protocol during training: the harness calls
    # `hijack` with the role's holdings before training and installs the hook it returns
    malicious: ClassVar[bool] = False
    params: ClassVar[tuple[Param, ...]] = ()    # its parameters (see slsec.params)
    # protocol -> who must hold the labels for the attack to make sense (e.g. two-party SL)
    label_party: ClassVar[dict[str, str]] = {}
    # its guesses of a batch come in no particular order (scored batch by batch, matched)
    unordered_batches: ClassVar[bool] = False
    # `slsec review` measures every cut with one "image" and one "label" attack, and its
    # malicious-server column runs the "malicious" one
    reviewed: ClassVar[str | None] = None
    # run settings the attack needs when the user gives none (e.g. the client steps a
    # malicious server needs to act in); a literal, read by slsec.config.run_defaults
    run_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, method: str | None = None, **params: Any) -> None:
        # params: the declared Params the run sets (by keyword), the run's `seed` (seed the
        # attack's own generators with it) and `iterations` where --attack-iters is given
        self.method = method
        self.params = params

    @classmethod
    def role_for(cls, protocol: str) -> str:
        """The role this attack plays against `protocol`, or a UserError saying why it cannot."""
        if protocol not in cls.roles:
            raise UserError(f"attack '{cls.name}' does not apply to protocol '{protocol}': "
                            f"it targets {', '.join(sorted(cls.roles))}")
        return cls.roles[protocol]

    @classmethod
    def pick_method(cls, knowledge: frozenset[str], method: str | None = None) -> str:
        """The requested method if the role's knowledge allows it, else the strongest allowed."""
        if method is not None:
            if method not in cls.methods:
                raise UserError(f"unknown method '{method}' for attack '{cls.name}'; "
                                f"valid: {', '.join(cls.methods)}")
            missing = cls.methods[method] - knowledge
            if missing:
                raise UserError(f"method '{method}' of attack '{cls.name}' needs "
                                f"{', '.join(sorted(missing))}, which this role does not hold")
            return method
        for m in cls.default_order:
            if cls.methods[m] <= knowledge:
                return m
        raise UserError(f"attack '{cls.name}': no method fits this role's knowledge")

    @classmethod
    def check_protocol(cls, method: str, protocol: str) -> None:
        """A UserError where `method` does not apply to `protocol` (`method_protocols`)."""
        allowed = cls.method_protocols.get(method)
        if allowed is not None and protocol not in allowed:
            raise UserError(f"method '{method}' of attack '{cls.name}' applies to protocol "
                            f"{', '.join(sorted(allowed))} only, not '{protocol}'")

    def hijack(self, view: View) -> ServerHook:
        """Malicious attacks only: the hook to install in the role's program before training
        (`view` holds the role's knowledge, aux data and public mechanism, no observations)."""
        raise NotImplementedError(f"attack '{self.name}' is not malicious")

    @abstractmethod
    def run(self, view: View) -> Guess:
        """Attack using only `view`."""


ATTACKS: Registry[type[Attack]] = Registry("attack")
