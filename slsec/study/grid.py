"""Sweep grids: the axes of `slsec sweep` from flags and TOML, and the cells they span.

- flags: a comma list in any scalar option is an axis (`--sigma 0,0.01,0.1`, `--cut conv1,pool2`);
  for list options (`--defense`, `--knowledge`, `--straggler`) alternatives are separated by `|`
  and each alternative is a comma list (`--defense "none|dp|dp,nopeek"`; "none" = no defense);
- TOML: base keys (top level or a [run] table) as for `--config`, plus a [grid] table of lists
  (a list given directly to a single-valued key is an axis too); flags given on the command
  line replace the file's value or axis of the same name.
"none" in a grid stands for "not set" (default) in optional options.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

from slsec.catalog import pre_training
from slsec.config import RunConfig, load_toml, make_config
from slsec.errors import UserError
from slsec.report.results import config_key


FIELDS = [f.name for f in fields(RunConfig) if f.name != "source"]


LIST_FIELDS = {f.name for f in fields(RunConfig) if "tuple" in str(f.type)}


OPTIONAL = {f.name for f in fields(RunConfig) if "None" in str(f.type)}


NOT_AXES = {"out", "run_id", "data_root", "seeds"}   # one value per sweep


@dataclass
class Grid:
    """Base values (raw, as TOML/CLI give them) and the axes: option -> alternatives, in order."""

    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    source: str | None = None

    def combos(self) -> Iterator[dict[str, Any]]:
        names = list(self.axes)
        for combo in itertools.product(*(self.axes[n] for n in names)):
            yield dict(zip(names, combo))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _alternative(name: str, raw: Any, where: str) -> Any:
    """One grid value as make_config takes it ('none' -> not set / no defense)."""
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "":
            raise UserError(f"{where}: empty value in the list for {_flag(name)}")
        if raw.lower() == "none":
            return "" if name in LIST_FIELDS else (None if name in OPTIONAL else raw)
    if isinstance(raw, list):
        if name not in LIST_FIELDS:
            raise UserError(f"{where}: [grid] {name} must be a list of single values, got {raw!r}")
        return [str(x) for x in raw]
    if isinstance(raw, dict):
        raise UserError(f"{where}: [grid] {name} holds a table; give a list of values")
    return raw


def _split_flag(name: str, value: str) -> list[str] | None:
    """The alternatives of a flag value, or None when it is a single value."""
    sep = "|" if name in LIST_FIELDS else ","
    if name in NOT_AXES or sep not in value:
        return None
    return value.split(sep)


def parse_grid(config_path: str | None, flags: dict[str, str | None]) -> Grid:
    """Base values and axes from the TOML file (if any) and the flags actually given."""
    grid = Grid(source=config_path)
    if config_path:
        raw = load_toml(config_path)
        where = f"config file {config_path}"
        axes = raw.pop("grid", {})
        run = raw.pop("run", {})
        if not isinstance(axes, dict) or not isinstance(run, dict):
            raise UserError(f"{where}: [grid] and [run] must be tables")
        listed: dict[str, list[Any]] = {}
        for k, v in {**raw, **run}.items():
            if isinstance(v, dict):
                raise UserError(f"{where}: unknown table [{k}] (expected [run] and [grid])")
            name = k.replace("-", "_")
            if isinstance(v, list) and name in FIELDS and name not in LIST_FIELDS:
                listed[k] = v           # a list in a single-valued option is an axis too
            else:
                grid.base[name] = v
        make_config(grid.base, source=config_path)   # bad base keys/values name the file
        axes = {**listed, **axes} if not (set(listed) & set(axes)) else _both(listed, axes, where)
        for k, values in axes.items():
            name = k.replace("-", "_")
            if name not in FIELDS:
                make_config({k: None}, source=config_path)   # raises: unknown key + suggestion
            if name in NOT_AXES:
                raise UserError(f"{where}: '{k}' cannot be a grid axis (one per sweep)")
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}: [grid] {k} must be a non-empty list, got {values!r}")
            if name in grid.base:
                raise UserError(f"{where}: '{k}' is both a base key and a [grid] axis")
            grid.axes[name] = [_alternative(name, v, where) for v in values]
    for name, value in flags.items():
        if value is None:
            continue
        if name not in FIELDS:
            raise UserError(f"unknown option {_flag(name)}")
        grid.base.pop(name, None)
        grid.axes.pop(name, None)
        alts = _split_flag(name, str(value))
        if alts is None:
            grid.base[name] = _alternative(name, value, _flag(name)) if name not in NOT_AXES \
                else value
        else:
            grid.axes[name] = [_alternative(name, a, _flag(name)) for a in alts]
    return grid


def _both(listed: dict[str, Any], axes: dict[str, Any], where: str) -> dict[str, Any]:
    k = sorted(set(listed) & set(axes))[0]
    raise UserError(f"{where}: '{k}' is both a base key and a [grid] axis")


def cell_label(values: dict[str, Any]) -> str:
    from slsec.report.frontier import show
    return " ".join(f"{k}={show(v if not isinstance(v, list) else ','.join(v))}"
                    for k, v in values.items())


def grid_cells(grid: Grid) -> list[RunConfig]:
    """Every cell's validated config (duplicates, e.g. '0.1' and '0.10', kept once)."""
    cells: dict[str, RunConfig] = {}
    for combo in grid.combos():
        try:
            cfg = make_config({**grid.base, **combo}, source=grid.source)
        except UserError as e:
            raise UserError(f"grid cell {cell_label(combo)}: {e}" if combo else str(e)) from None
        cells.setdefault(config_key(cfg.to_dict()), cfg)
    return list(cells.values())


def validate_cells(cells: list[RunConfig]) -> None:
    """Check attack, defenses, data, model and cuts of every cell before any training."""
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses

    from slsec.run.preflight import check_grid

    for cfg in cells:
        try:
            if cfg.backend != "local":
                raise UserError("sweep cells run in this process: use --backend local "
                                "(run single evaluations under mpiexec with `slsec evaluate`)")
            if pre_training(cfg):
                raise UserError(f"{pre_training(cfg)[0]} chooses the cut itself; sweep over "
                                "--cut instead (or see `slsec review`)")
            check_attack(cfg)
            check_defenses(cfg)
        except UserError as e:
            raise UserError(f"grid cell {cell_label(_varying(cfg, cells))}: {e}") from None
    # every cell's data, cuts, sizes and accountant, before the first cell trains
    check_grid(cells, lambda c: cell_label(_varying(c, cells)))


def _varying(cfg: RunConfig, cells: list[RunConfig]) -> dict[str, Any]:
    return {n: getattr(cfg, n) for n in FIELDS
            if len({str(getattr(c, n)) for c in cells}) > 1} if len(cells) > 1 else {}


def _grid_text(name: str, value: Any) -> str:
    """A Python keyword as flag text: a list is an axis (for list options, '|' between
    alternatives, each a comma list or a list of names)."""
    if not isinstance(value, (list, tuple)):
        return str(value)
    if name in LIST_FIELDS:
        return "|".join(",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                        for v in value)
    return ",".join(map(str, value))
