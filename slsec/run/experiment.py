"""One experiment, resolved once: what a config means, derived a single time and passed down.

`resolve(cfg, setup)` gives the `Experiment`: the protocol class, the public setup (data,
shards, model cuts), the attack plan (class, attacked role, its knowledge, the method and the
methods to run) and the calibrated defense stack. The harness, the runner, the views and the
scorer take it as their argument; none of them resolves the config, checks the attack or
calibrates a defense again. It is also kept on the setup (one per config), so the checks
before training (slsec.run.preflight) and the run that follows share one object; each rank
gets its own copy of the calibrated stack (`fresh_defense`: defenses keep per-rank state).
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

from slsec.attacks.base import ATTACKS, Attack
from slsec.catalog import attacker_knowledge
from slsec.config import RunConfig
from slsec.defenses.base import DefenseStack
from slsec.protocols.base import Protocol
from slsec.run.setup import Setup, fit_stack, make_stack, prepare

CLIENT = "client"   # the attacked role that runs on rank 1 (the others on rank 0)


@dataclass(frozen=True)
class AttackPlan:
    """The configured attack, resolved: its class, role, knowledge and methods."""

    cls: type[Attack]
    role: str
    knowledge: frozenset[str]
    method: str                   # --method, or the strongest the knowledge allows
    methods: tuple[str, ...]      # what runs: the method, or every contender that fits

    @property
    def rank(self) -> int:
        """The rank the attacked role runs on."""
        return 1 if self.role == CLIENT else 0


@functools.lru_cache(maxsize=256)
def plan_attack(cfg: RunConfig) -> AttackPlan | None:
    """Check and resolve the attack of `cfg` (None: no attack); a UserError says what is wrong."""
    if cfg.attack is None:
        return None
    import slsec.attacks  # noqa: F401  (registration)
    cls = ATTACKS.get(cfg.attack)
    role = cls.role_for(cfg.protocol)
    knowledge = attacker_knowledge(cfg, role)
    method = cls.pick_method(knowledge, cfg.method)
    cls.check_protocol(method, cfg.protocol)
    fits = [m for m in cls.contenders if cls.methods[m] <= knowledge
            and cfg.protocol in cls.method_protocols.get(m, (cfg.protocol,))]
    methods = tuple(fits) if cfg.method is None and len(fits) > 1 else (method,)
    return AttackPlan(cls, role, knowledge, method, methods)


@dataclass(frozen=True)
class Experiment:
    """Everything one evaluation needs, resolved from the config once."""

    cfg: RunConfig
    setup: Setup
    protocol: type[Protocol]
    attack: AttackPlan | None
    defense: DefenseStack         # calibrated; read-only (ranks take fresh_defense())

    @property
    def cuts(self) -> tuple[str, ...]:
        return self.setup.cuts

    def fresh_defense(self) -> DefenseStack:
        """A rank's own copy of the calibrated stack (defenses keep per-rank state)."""
        return copy.deepcopy(self.defense)

    def public(self) -> dict[str, Any]:
        """What every role knows about the run: shapes, defenses' public mechanisms, the plan."""
        return {"input_shape": self.setup.data.input_shape,
                "num_classes": self.setup.data.num_classes,
                "defenses": self.defense.mechanisms(), "lr": self.cfg.lr,
                "batch_size": self.cfg.batch_size, "protocol": self.cfg.protocol}


def resolve(cfg: RunConfig, setup: Setup | None = None) -> Experiment:
    """The experiment of `cfg` (on `setup`, else a fresh prepare): checked in the order the
    user's mistakes are reported (attack, defenses, data and cuts), then calibrated. Once per
    config and setup: a second call returns the same object."""
    attack = plan_attack(cfg)
    if setup is None:
        stack = make_stack(cfg)
        setup = prepare(cfg)
    else:
        cached = setup.memo.get(("experiment", cfg))
        if cached is not None:
            return cached
        stack = make_stack(cfg)
    exp = Experiment(cfg, setup, setup.protocol, attack,
                     fit_stack(stack, cfg, setup))
    setup.memo[("experiment", cfg)] = exp
    return exp
