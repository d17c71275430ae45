"""Command lines the tool suggests, built from the run's own protocol, attack and defenses.

Every suggestion is a full `slsec ...` command that carries the run's settings (every option
that differs from its default) and varies what the defense plug-ins declare as their strength
parameter (`Defense.sweep_param` / `sweep_values`, plus the cut when `sweep_cuts`). A
suggestion is only returned once its config validates (attack and defenses apply to the
protocol), so a printed command runs.
"""
from __future__ import annotations

import shlex
from dataclasses import fields
from typing import Any

from slsec.config import RunConfig, make_config
from slsec.errors import UserError

PROMPT = "$ "     # a suggested command is printed on its own line after this prompt
SKIP = {"run_id", "source"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _text(v: Any) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def command(verb: str, cfg: RunConfig, axes: dict[str, str] | None = None,
            drop: tuple[str, ...] = ()) -> str:
    """`slsec <verb>` with every non-default option of cfg (minus `drop`), then the axes."""
    axes = axes or {}
    default = RunConfig()
    parts = ["slsec", verb]
    for f in fields(RunConfig):
        name = f.name
        if name in SKIP or name in drop or name in axes:
            continue
        v = getattr(cfg, name)
        if name == "protocol" or (v != getattr(default, name) and v is not None):
            if isinstance(v, tuple) and not v:
                continue
            parts += [_flag(name), shlex.quote(_text(v))]
    for name, values in axes.items():
        parts += [_flag(name), shlex.quote(values)]
    return " ".join(parts)


def _valid(cfg: RunConfig) -> bool:
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses
    try:
        check_attack(cfg)
        check_defenses(cfg)
    except UserError:
        return False
    return True


def cut_axis(cfg: RunConfig, result_cut: str | None = None) -> str | None:
    """The run's cut and the deepest cut the protocol can use with this model (U-shaped: the
    deepest before the second cut): where the same defense strength costs least accuracy."""
    from slsec.run.split_search import candidate_cuts
    try:
        cuts = candidate_cuts(cfg)
    except UserError:
        return None
    ours = cfg.cut or result_cut or cuts[0]
    pick = [c for c in cuts if c in (ours, cuts[-1])]
    return ",".join(pick) if len(pick) > 1 else None


def frontier_command(cfg: RunConfig) -> str | None:
    """A `slsec sweep` of the run's defenses over their declared parameter (and the cut)."""
    from slsec.defenses.base import DEFENSES
    import slsec.defenses  # noqa: F401  (registers defenses)

    names = [d for d in cfg.defense if d in DEFENSES.names()]
    if not names:
        return None
    axes: dict[str, str] = {}
    drop: list[str] = []
    classes = [DEFENSES.get(d) for d in names]
    swept = next((c for c in classes if c.sweep_param), None)
    if swept is not None:
        axes[swept.sweep_param] = swept.sweep_values   # type: ignore[index]
        drop.append("target_epsilon")                  # the axis replaces a solved strength
    else:
        axes["defense"] = "none|" + ",".join(names)
    if any(c.sweep_cuts for c in classes) and (cuts := cut_axis(cfg)):
        axes["cut"] = cuts
    try:
        probe = make_config({**cfg.to_dict(), **{k: v.split(",")[-1].split("|")[-1]
                                                  for k, v in axes.items()},
                             "target_epsilon": None})
    except UserError:
        return None
    return command("sweep", cfg, axes, tuple(drop)) if _valid(probe) else None


def keep_labels_command(cfg: RunConfig) -> str | None:
    """The same evaluation under U-shaped SL (labels stay with the client), when it applies."""
    try:
        alt = cfg.replace(protocol="ushaped", cut=None, cut2=None, method=None,
                          label_party="client", variant="v1")
        make_config(alt.to_dict())
    except UserError:
        return None
    return command("evaluate", alt) if _valid(alt) else None
