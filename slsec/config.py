"""Run configuration: one frozen dataclass, parsed from TOML and/or CLI flags, validated once.

Precedence: defaults < TOML file (`--config`) < flags given on the command line. Every bad
value is a UserError naming the flag (or the TOML key and file); inner code trusts the config.

Over 300 lines: the core's parameter declarations (one Param per option, with its help line)
are a third of it; the rest is their coercion and the checks across fields.
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import field, fields
from pathlib import Path
from typing import Any

from slsec import plugins
from slsec.errors import UserError
from slsec.params import Param, merge

DATASET_MODELS = {"mnist": "cnn", "mnist-full": "cnn", "fashion-mnist": "cnn",
                  "cifar10": "resnet18", "mutag": "gin", "proteins": "gin", "spam": "mlp",
                  "csv:": "mlp"}   # "scheme:" keys: every set of that scheme


# The core's own parameters; each plug-in declares its own (slsec.plugins), and RunConfig,
# the CLI flags, TOML keys, --help lines and the checks are built from both lists.
CORE: tuple[Param, ...] = (
    # what to train
    Param("protocol", "str", "vanilla", "split-learning protocol (or the FedAvg baseline); see "
          "`slsec list`"),
    Param("dataset", "str", "mnist", "mnist (embedded) | mutag (embedded) | mnist-full | "
          "fashion-mnist | cifar10 | proteins | tu:NAME | images:DIR (ImageFolder) | npz:FILE "
          "(x, y[, x_test, y_test]; a 2-D x is tabular) | spam (embedded, tabular) | csv:FILE"),
    Param("label_column", "str", None, "csv: the label column (not set: the last column)"),
    Param("model", "str", None, "cnn | resnet18 | gin | FILE.py:FACTORY | MODULE:FACTORY (a "
          "factory returning named blocks; not set: the dataset's)"),
    Param("cut", "str", None, "block after which the model is cut (not set: the shallowest); "
          "see `slsec list`"),
    Param("cut2", "str", None, "second cut for U-shaped SL (not set: the last cut point)"),
    Param("clients", "int", 2, "number of clients K (MPI: mpiexec -n K+1)",
          check=("at_least_one",)),
    Param("partition", "str", "iid", "how the training set is split over the clients",
          choices=("iid", "dirichlet")),
    Param("alpha", "float", 0.5, "Dirichlet concentration", check=("positive",)),
    Param("rounds", "int", 1, "training rounds (one epoch over every client's shard each)",
          check=("at_least_one",)),
    Param("batch_size", "int", 64, "training batch size", check=("at_least_one",)),
    Param("lr", "float", 1e-3, "learning rate", check=("positive",)),
    Param("optimizer", "str", "adam", "optimizer of every party", choices=("adam", "sgd")),
    Param("seed", "int", 0, "seed of data split, model init, noise and attack",
          check=("zero_or_more",)),
    Param("seeds", "int", 1, "run seeds seed..seed+N-1 and report mean ± 95% t-interval "
          "(evaluate, sweep, review, benchmark)", check=("at_least_one",)),
    Param("label_party", "str", "client", "who holds the labels in vanilla/SplitFed (server = "
          "two-party SL)", choices=("client", "server")),
    Param("target_accuracy", "float", None, "accuracy that counts as converged (rounds to "
          "convergence; not set: 98% of the run's best)"),
    Param("straggler", "list", (), "k:seconds, slow client k by that much per step (comma list)"),
    # where it runs
    Param("backend", "str", "local", "local (threads, one process) | mpi (K+1 ranks; launches "
          "mpiexec if not under one)", choices=("local", "mpi")),
    Param("device", "str", "auto", "auto (CUDA when available) | cpu | cuda",
          choices=("auto", "cpu", "cuda")),
    Param("threads", "int", 1, "torch threads per rank", check=("at_least_one", "at_most_1024")),
    Param("timeout", "float", 120.0, "seconds a rank waits for a peer before it gives up",
          check=("positive",)),
    Param("data_root", "str", None, "folder of the torchvision/PyG data sets (not set: the "
          "embedded sets and ../shared/data)"),
    Param("download", "bool", False, "let torchvision/PyG download a missing data set"),
    Param("aux_size", "int", 500, "public auxiliary samples carved from the training set "
          "(what attacks with aux_data use)", check=("zero_or_more",)),
    Param("max_train", "int", None, "use at most this many private training samples",
          check=("at_least_one",)),
    # the attack
    Param("attack", "str", None, "attack run from the attacked role; see `slsec list`"),
    Param("method", "str", None, "attack method (not set: the strongest the attacked role's "
          "knowledge allows)"),
    Param("knowledge", "list", None, "restrict the attacker's knowledge: "
          "architecture,head_weights,query_head,aux_data"),
    Param("attack_iters", "int", None, "optimisation steps of the attack (not set: the "
          "method's own)", check=("at_least_one",)),
    Param("probe_size", "int", 64, "held-out test samples client 1 sends as private queries "
          "(what inversion reconstructs)", check=("at_least_one",)),
    Param("probe_batch", "int", 1, "probe samples per query", check=("at_least_one",)),
    Param("observe_samples", "int", 256, "training samples the attacked role records",
          check=("at_least_one",)),
    # defenses (several compose in the order given)
    Param("defense", "list", (), "comma list, applied in order; see `slsec list`"),
    # how every DP defense's epsilon is accounted (the defenses with reports_epsilon get these)
    Param("delta", "float", 1e-5, "DP delta of the reported epsilon",
          check=("positive", "below_one")),
    Param("accountant", "str", "prv", "privacy accountant (Opacus): prv, the tight PRV accountant "
          "(Gopi et al. 2021); rdp, Renyi DP, is printed beside it", choices=("prv", "rdp")),
)
TAIL: tuple[Param, ...] = (
    Param("out", "str", "reports", "folder for reports (a run writes <out>/<run-id>/)"),
    Param("run_id", "str", None, "name of the run's folder under --out (not set: derived "
          "from the config)"),
)


plugins.RESERVED.update({p.name for p in (*CORE, *TAIL)} | {"config", "source"})


def _declared() -> dict[str, tuple[Param, tuple[str, ...]]]:
    """name -> (Param, owners) for the core and every declared plug-in, in field order."""
    pairs = [("core", p) for p in CORE]
    pairs += [(f"{d.kind} {d.name}", p) for d in plugins.declarations() for p in d.params]
    pairs += [("core", p) for p in TAIL]
    return merge(pairs)


PARAMS = _declared()


class _Config:
    """Methods of RunConfig (its fields are generated from PARAMS below)."""

    __slots__ = ()

    @property
    def model_name(self) -> str:
        d = self.dataset  # type: ignore[attr-defined]
        return self.model or DATASET_MODELS.get(d, DATASET_MODELS.get(d.partition(":")[0] + ":",
                                                                      "cnn"))  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        # seeds = 1 is left out so a single-seed run keeps its config key (cache, sweep cells)
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                if f.name != "source" and not (f.name == "seeds" and self.seeds == 1)}  # type: ignore[attr-defined]


RunConfig: Any = dataclasses.make_dataclass(
    "RunConfig",
    [(p.name, p.annotation, field(default=p.default)) for p, _ in PARAMS.values()]
    + [("source", str | None, field(default=None, compare=False))],   # TOML file it came from
    bases=(_Config,), frozen=True)
RunConfig.__module__ = __name__
RunConfig.__doc__ = ("Everything one evaluation needs; field names are the CLI flags with '-' "
                     "for '_' (built from the core's and the plug-ins' declared parameters).")


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


MAX_INT = 2**63 - 1        # an int field torch or numpy can hold
MAX_SEED = 2**32 - 1       # every RNG (numpy, torch, per-rank offsets) takes it without overflow
MAX_CONFIG_BYTES = 1 << 20  # a TOML experiment file is a few lines; /dev/zero is not one


def _coerce(name: str, value: Any, where: str) -> Any:
    """Coerce a raw value (TOML or CLI string) to the field's type, or a UserError."""
    p = PARAMS[name][0]
    try:
        if value is None:
            if p.default is not None:
                raise ValueError
            return None
        if p.type == "list":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if p.type == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if p.type == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if p.type == "float":
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if math.isnan(v):
                raise ValueError
            return v
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        kind = str(p.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
        raise UserError(f"{where}: '{name}' must be {kind}, got {value!r}") from None


def _validate(cfg: Any) -> Any:
    for p, owners in PARAMS.values():
        value = getattr(cfg, p.name)
        p.validate(value)
        if p.outside and value != p.default and f"protocol {cfg.protocol}" not in owners:
            names = sorted(o.split(" ", 1)[1] for o in owners)
            raise UserError(f"{p.flag} " + p.outside.format(owners=", ".join(names),
                                                           protocol=cfg.protocol))
    if cfg.seed > MAX_SEED:
        raise UserError(f"--seed must be a whole number from 0 to {MAX_SEED} (32 bits), "
                        f"got {cfg.seed}")
    for p, _ in PARAMS.values():
        value = getattr(cfg, p.name)
        if p.type == "int" and value is not None and abs(value) > MAX_INT:
            raise UserError(f"{p.flag} must be a whole number of at most 64 bits (below "
                            f"2**63), got {value}")
    if cfg.target_accuracy is not None and not 0 < cfg.target_accuracy <= 1:
        raise UserError(f"--target-accuracy must be in (0, 1], got {cfg.target_accuracy}")
    for name in ("defense", "straggler", "knowledge"):
        _no_repeats(name, [v.partition(":")[0] for v in getattr(cfg, name) or ()])
    for s in cfg.straggler:
        k, _, d = s.partition(":")
        if not (k.isdigit() and 1 <= int(k) <= cfg.clients and _is_float(d) and float(d) >= 0
                and math.isfinite(float(d))):
            raise UserError(f"--straggler must be k:seconds with 1 <= k <= {cfg.clients} and "
                            f"seconds a finite number >= 0, got {s!r}")
    if cfg.run_id is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.run_id)
                                   or len(cfg.run_id) > 120):
        raise UserError(f"--run-id names a folder under --out: letters, digits, '.', '_' and "
                        f"'-' only (no '/'), starting with a letter or digit, at most 120 "
                        f"characters; got {cfg.run_id!r}")
    _check_launch(cfg)
    if cfg.data_root is not None and not Path(cfg.data_root).is_dir():
        raise UserError(f"--data-root {cfg.data_root} is not a folder")
    return cfg


# what mpiexec (MPICH's hydra, Open MPI, PMIx launchers) sets in every rank it starts
MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")


def _check_launch(cfg: Any) -> None:
    """Started as several MPI ranks without --backend mpi: each rank would run the whole
    command (K+1 trainings writing one folder). Refused in one line (printed by rank 0)."""
    import os
    import sys
    pool = sys.modules.get("mpi4py.futures._core")   # `python -m mpi4py.futures`: rank 0 runs
    if getattr(pool, "SharedPool", None) is not None:  # the command, the others are its workers
        return
    sizes = [os.environ[v] for v in MPI_SIZE_VARS if v in os.environ]
    ranks = int(sizes[0]) if sizes and sizes[0].isdigit() else 1
    if ranks > 1 and cfg.backend != "mpi":
        raise UserError(f"started as {ranks} MPI ranks (mpiexec) but --backend is "
                        f"{cfg.backend}: every rank would run the whole command; add "
                        f"--backend mpi (K+1 ranks for K clients), or run without mpiexec")


def _no_repeats(name: str, items: list[str]) -> None:
    """A comma list names each item once (a repeat is a typo or an ambiguity, never meant)."""
    seen = {i for i in items if items.count(i) > 1}
    if seen:
        what = "client" if name == "straggler" else "item"
        raise UserError(f"--{name} names the same {what} twice ({', '.join(sorted(seen))}); "
                        "give each once")


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML experiment file: flat keys or a [run] table; errors name the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UserError(f"config file {p} is larger than {MAX_CONFIG_BYTES >> 20} MiB; "
                            "an experiment file is a few lines of TOML")
        text = data.decode()
        raw = tomllib.loads(text.removeprefix("\ufeff"))   # a BOM some editors write
    except RecursionError:
        raise UserError(f"config file {p} nests tables or arrays too deeply; an experiment "
                        "file is flat keys or one [run] table") from None
    except FileNotFoundError:
        raise UserError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config file {p} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML: {e}") from None
    return raw


def run_defaults(attack: str | None, protocol: str | None = None) -> dict[str, Any]:
    """Run settings an attack (or the protocol) declares it needs when the user gives none
    (`run_defaults`, a literal: e.g. a malicious server needs client steps to act in; vertical
    SL needs tabular data). The attack's win where both declare one."""
    out = next((dict(d.attrs.get("run_defaults", {})) for d in plugins.declarations("protocol")
                if d.name == protocol), {})
    out.update(next((dict(d.attrs.get("run_defaults", {})) for d in
                     plugins.declarations("attack") if d.name == attack), {}))
    return out


def make_config(values: dict[str, Any] | None = None, *, source: str | None = None) -> Any:
    """Build and validate a RunConfig from raw values (TOML types or CLI strings)."""
    plugins.check()   # a broken SLSEC_PLUGINS file is named before anything runs
    where = f"config file {source}" if source else "option"
    known = {f.name for f in fields(RunConfig)} - {"source"}
    clean: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"{where}: unknown key '{key}'" + _suggest(name, known))
        clean[name] = _coerce(name, value, where)
    if clean.get("parties") is not None:   # vertical SL names its clients passive parties
        if clean.get("clients") not in (None, clean["parties"]):
            raise UserError(f"{where}: --parties {clean['parties']} and --clients "
                            f"{clean['clients']} disagree (give one)")
        clean["clients"] = clean["parties"]
    for key, value in run_defaults(clean.get("attack"), clean.get("protocol")).items():
        clean.setdefault(key, value)   # the attack's own defaults, below what was given
    return _validate(RunConfig(**clean, source=source))


def _suggest(name: str, known: set[str]) -> str:
    import difflib
    near = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{near[0].replace('_', '-')}'?)" if near else ""


def check_given(cfg: Any, names: Any) -> None:
    """A plug-in's option given explicitly (even at its default value) to a run without that
    plug-in is refused, as one at another value is (slsec.run.preflight)."""
    selected = {f"protocol {cfg.protocol}", *(f"defense {d}" for d in cfg.defense),
                *([f"attack {cfg.attack}"] if cfg.attack else [])}
    for name in names:
        p, owners = PARAMS.get(name, (None, ()))
        if p is not None and p.unused and not selected & set(owners):
            raise UserError(f"{p.flag} {p.unused}; it does not apply to this run (protocol "
                            f"{cfg.protocol}, defense {'+'.join(cfg.defense) or 'none'}, attack "
                            f"{cfg.attack or 'none'}): drop it")


def merged_config(toml_path: str | None, flags: dict[str, Any]) -> Any:
    """Defaults < TOML file < flags that were actually given (not None)."""
    values: dict[str, Any] = {}
    if toml_path:
        raw = load_toml(toml_path)
        run = raw.pop("run", {})
        if not isinstance(run, dict):
            raise UserError(f"config file {toml_path}: [run] must be a table")
        both = sorted(set(raw) & set(run))
        if both:
            raise UserError(f"config file {toml_path}: '{both[0]}' is given both at the top "
                            "level and in [run]; give it once")
        for k, v in {**raw, **run}.items():
            if isinstance(v, dict):
                raise UserError(f"config file {toml_path}: unknown table [{k}]")
            values[k] = v
        make_config(values, source=toml_path)  # names the file for bad keys/values
    values.update({k: v for k, v in flags.items() if v is not None})
    return make_config(values, source=toml_path)
