"""Everything that can be checked before training is checked before training.

For one run (`slsec train` / `evaluate`) and for every cell of a grid (`sweep`, `benchmark`,
`review`): option combinations (a flag that no cell uses is refused, like --cut2 on vanilla),
attack and defense names and parameters, data, model and cuts (the public setup is derived
once per distinct setup), the probe and auxiliary sizes the attack needs, and the privacy
accountant (noise calibration and epsilon) — so a bad cell fails in seconds, not after the
cells before it trained.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Callable

from slsec.catalog import PROTOCOLS as _PROTOCOLS, pre_training
from slsec.config import PARAMS, RunConfig
from slsec.errors import UserError

_DEFAULTS = RunConfig()
CUTS = {name: cuts for name, (cuts, _) in _PROTOCOLS.items()}   # cuts each protocol takes
# fields prepare() derives the public setup from (one setup per distinct tuple)
SETUP_KEY = ("protocol", "dataset", "data_root", "download", "model", "cut", "cut2", "clients",
             "partition", "alpha", "seed", "aux_size", "max_train", "probe_size", "label_party",
             "attack")


def _given(cfg: RunConfig, name: str) -> bool:
    return getattr(cfg, name) != getattr(_DEFAULTS, name)


def inapplicable(cfg: RunConfig) -> dict[str, str]:
    """Options set to a non-default value that nothing in this config uses: {field: message}.
    A plug-in's parameter is used when the plug-in is in the run (its `unused` says why not);
    the attack's options when there is an attack."""
    selected = {f"protocol {cfg.protocol}", *(f"defense {d}" for d in cfg.defense)}
    if cfg.attack is not None:
        selected.add(f"attack {cfg.attack}")
    rules = [(p.name, bool(selected & set(owners)), p.unused)
             for p, owners in PARAMS.values() if p.unused]
    rules += [(a, cfg.attack is not None, "configures the attack (--attack)")
              for a in ("method", "knowledge", "attack_iters")]
    rules.append(("alpha", cfg.partition == "dirichlet",
                  "is the concentration of --partition dirichlet"))
    cuts = CUTS.get(cfg.protocol, 1)
    rules.append(("cut", cuts > 0, "places the cut of a split-learning protocol"))
    rules.append(("cut2", cuts > 1, "places the second cut of U-shaped SL"))
    out = {}
    for name, used, what in rules:
        if not used and _given(cfg, name):
            out[name] = (f"--{name.replace('_', '-')} {what}; it does not apply to this run "
                         f"(protocol {cfg.protocol}, defense {'+'.join(cfg.defense) or 'none'}, "
                         f"attack {cfg.attack or 'none'}): drop it")
    return out


def check_options(cfg: RunConfig, command: str) -> None:
    """Option combinations of one `slsec train` / `evaluate` run."""
    if command == "train" and cfg.attack is not None:
        raise UserError(f"--attack {cfg.attack}: slsec train runs no attack; use slsec "
                        "evaluate to attack the run")
    for name in pre_training(cfg):
        if command == "train":
            raise UserError(f"--defense {name} chooses the cut by attacking every cut; "
                            "slsec train runs no attack: use slsec evaluate (or slsec review)")
        if cfg.cut is not None:
            raise UserError(f"--defense {name} chooses the cut itself; drop --cut "
                            f"{cfg.cut} (or drop {name} to run at cut {cfg.cut})")
    bad = inapplicable(cfg)
    if bad:
        raise UserError(next(iter(bad.values())))


def check_cell(cfg: RunConfig, setup: Any) -> None:
    """The checks that need the public setup: probe and aux sizes, defense numbers, accountant."""
    from slsec.run.experiment import plan_attack, resolve
    from slsec.run.harness import privacy_budget

    n_test = len(setup.data.test)
    if cfg.probe_size > n_test and cfg.probe_size != _DEFAULTS.probe_size:
        # the default (64) is clamped to small test sets (MUTAG: 38) and the result records
        # probe_size_used; a size the user chose is never silently cut
        raise UserError(f"--probe-size {cfg.probe_size} is more than the {n_test} test samples "
                        f"of {cfg.dataset} the probe is drawn from; use at most {n_test}")
    plan = plan_attack(cfg)   # the attack, checked (the plan the experiment holds)
    if plan is not None:
        cls = plan.cls
        needs = [m for m in plan.methods if "aux_data" in cls.methods[m]]
        if len(setup.aux) == 0 and (needs or cls.kind == "label"):
            what = (f"method {needs[0]} of attack '{cfg.attack}' trains on it" if needs else
                    f"attack '{cfg.attack}' is scored against its majority label")
            raise UserError(f"--aux-size 0 leaves no public auxiliary data, and {what}; use "
                            f"--aux-size 100 or more" + (" (or --knowledge without aux_data)"
                                                         if needs else ""))
    exp = resolve(cfg, setup)   # calibrates --target-epsilon (bounded solver)
    for d in exp.defense.defenses:
        d.check_numbers()
    budget = privacy_budget(exp)       # the accountant runs here, before training
    if budget.get("epsilon") is not None and math.isnan(budget["epsilon"]):
        raise UserError("the privacy accountant returned no epsilon for these settings")


def check_run(cfg: RunConfig, command: str) -> Any:
    """All checks of one run; returns its public setup (reuse it to train)."""
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses, prepare

    check_options(cfg, command)
    check_attack(cfg)
    check_defenses(cfg)
    setup = prepare(cfg)
    check_cell(cfg, setup)
    return setup


def check_grid(cells: list[RunConfig], label: Callable[[RunConfig], str]) -> None:
    """Every cell of a grid, before the first one trains. An option is refused only when no
    cell uses it (a `--sigma` beside a `--defense "none|dp"` axis is used by the dp cells)."""
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses, prepare

    unused: set[str] | None = None
    messages: dict[str, str] = {}
    for cfg in cells:
        bad = inapplicable(cfg)
        messages = {**bad, **messages}
        unused = set(bad) if unused is None else unused & set(bad)
    if unused:
        name = next(n for n in (f.name for f in fields(RunConfig)) if n in unused)
        raise UserError(messages[name] + " (no cell of the grid uses it)")
    last: tuple[tuple | None, Any] = (None, None)
    for cfg in sorted(cells, key=_setup_key):
        try:
            check_attack(cfg)
            check_defenses(cfg)
            key = _setup_key(cfg)
            if key != last[0]:
                last = (key, prepare(cfg))      # one setup in memory at a time
            check_cell(cfg, last[1])
        except UserError as e:
            raise UserError(f"grid cell {label(cfg)}: {e}") from None


def _setup_key(cfg: RunConfig) -> tuple:
    return tuple(str(getattr(cfg, f)) for f in SETUP_KEY)
