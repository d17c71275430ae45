"""Run configuration: one frozen dataclass, parsed from TOML and/or CLI flags, validated once.

Precedence: defaults < TOML file (`--config`) < flags given on the command line. Every bad
value is a UserError naming the flag (or the TOML key and file); inner code trusts the config.
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from slsec.errors import UserError

DATASET_MODELS = {"mnist": "cnn", "mnist-full": "cnn", "fashion-mnist": "cnn",
                  "cifar10": "resnet18", "mutag": "gin", "proteins": "gin"}


@dataclass(frozen=True)
class RunConfig:
    """Everything one evaluation needs; field names are the CLI flags with '-' for '_'."""

    # what to train
    protocol: str = "vanilla"
    variant: str = "v1"                  # SplitFed: v1 (tail copy per client) | v2 (one tail)
    dataset: str = "mnist"
    model: str | None = None             # default: the dataset's (cnn, resnet18, gin)
    cut: str | None = None               # default: the shallowest cut point
    cut2: str | None = None              # U-shaped second cut; default: the last cut point
    clients: int = 2
    fraction: float = 1.0                # splitfed/fedavg: share of clients sampled per round
    partition: str = "iid"
    alpha: float = 0.5
    rounds: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    seeds: int = 1                       # repeat with seeds seed..seed+N-1; mean and 95% CI
    label_party: str = "client"          # vanilla/SplitFed: "server" = two-party SL
    target_accuracy: float | None = None  # rounds to convergence; None: 98% of the run's best
    straggler: tuple[str, ...] = ()      # "k:seconds_per_step"
    async_every: int = 10                # splitfed-async: local steps between head pushes
    async_alpha: float = 0.6             # splitfed-async: FedAsync mixing weight alpha
    async_decay: float = 0.5             # splitfed-async: staleness decay exponent a
    async_order: str = "arrival"         # splitfed-async: arrival | fixed (deterministic)
    # where it runs
    backend: str = "local"
    device: str = "auto"                 # auto (CUDA when available) | cpu | cuda
    threads: int = 1
    timeout: float = 120.0
    data_root: str | None = None
    download: bool = False
    aux_size: int = 500                  # public auxiliary split carved from the training set
    max_train: int | None = None         # use at most this many private training samples
    # the attack
    attack: str | None = None
    method: str | None = None
    knowledge: tuple[str, ...] | None = None   # restrict the attacker's knowledge
    attack_iters: int | None = None
    probe_size: int = 64
    probe_batch: int = 1
    observe_samples: int = 256
    # defenses (several compose in the order given)
    defense: tuple[str, ...] = ()
    sigma: float | None = None
    clip: float | None = None
    mechanism: str = "gaussian"
    delta: float = 1e-5
    accountant: str = "rdp"
    target_epsilon: float | None = None
    nopeek_weight: float = 0.5
    label_epsilon: float = 1.0
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None   # DP-SGD (default 1.0 unless --target-epsilon)
    # output
    out: str = "reports"
    run_id: str | None = None
    source: str | None = field(default=None, compare=False)  # TOML file it came from

    @property
    def model_name(self) -> str:
        return self.model or DATASET_MODELS.get(self.dataset, "cnn")

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        # seeds = 1 is left out so a single-seed run keeps its config key (cache, sweep cells)
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if f.name != "source" and not (f.name == "seeds" and self.seeds == 1)}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


_HINTS = get_type_hints(RunConfig)
CHOICES = {"variant": ("v1", "v2"), "partition": ("iid", "dirichlet"), "optimizer": ("adam", "sgd"),
           "backend": ("local", "mpi"), "mechanism": ("gaussian", "laplace"),
           "accountant": ("rdp", "prv"), "label_party": ("client", "server"),
           "async_order": ("arrival", "fixed"), "device": ("auto", "cpu", "cuda")}
SAMPLING_PROTOCOLS = ("fedavg", "splitfed")
POSITIVE = {"async_alpha", "alpha", "lr", "timeout", "delta", "max_grad_norm"}
AT_LEAST_ONE = {"seeds", "async_every", "max_train", "clients", "rounds", "batch_size", "threads", "probe_size", "probe_batch",
                "observe_samples"}
NON_NEGATIVE = {"aux_size", "seed"}
# numbers where infinity makes no sense (inf is refused with the real rule in the message)
FINITE_NON_NEGATIVE = {"async_decay", "nopeek_weight", "sigma", "noise_multiplier"}
FINITE_POSITIVE = {"target_epsilon", "label_epsilon"}
MAX_SEED = 2**32 - 1       # every RNG (numpy, torch, per-rank offsets) takes it without overflow
MAX_CONFIG_BYTES = 1 << 20  # a TOML experiment file is a few lines; /dev/zero is not one


def _coerce(name: str, value: Any, where: str) -> Any:
    """Coerce a raw value (TOML or CLI string) to the field's type, or a UserError."""
    hint = str(_HINTS[name])
    try:
        if value is None:
            if "None" not in hint:
                raise ValueError
            return None
        if "tuple" in hint:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if "bool" in hint:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if "int" in hint and "float" not in hint:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if "float" in hint:
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
        kind = hint.replace("typing.", "").replace("<class '", "").replace("'>", "")
        raise UserError(f"{where}: '{name}' must be {kind}, got {value!r}") from None


def _validate(cfg: RunConfig) -> RunConfig:
    for name, options in CHOICES.items():
        if getattr(cfg, name) not in options:
            raise UserError(f"--{name.replace('_', '-')} must be one of {', '.join(options)}, "
                            f"got {getattr(cfg, name)!r}")
    for name in POSITIVE:
        if not (getattr(cfg, name) > 0 and math.isfinite(getattr(cfg, name))):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number > 0, "
                            f"got {getattr(cfg, name)}")
    for name in AT_LEAST_ONE:
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    for name in FINITE_NON_NEGATIVE:
        v = getattr(cfg, name)
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    for name in FINITE_POSITIVE:
        v = getattr(cfg, name)
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v}")
    if cfg.seed > MAX_SEED:
        raise UserError(f"--seed must be a whole number from 0 to {MAX_SEED} (32 bits), "
                        f"got {cfg.seed}")
    if cfg.clip is not None and not cfg.clip > 0:
        raise UserError(f"--clip must be > 0 (or inf to turn clipping off), got {cfg.clip}")
    if not 0 < cfg.fraction <= 1:
        raise UserError(f"--fraction must be in (0, 1], got {cfg.fraction}")
    if cfg.fraction < 1 and cfg.protocol not in SAMPLING_PROTOCOLS:
        raise UserError(f"--fraction (clients sampled per round) is for "
                        f"{', '.join(SAMPLING_PROTOCOLS)}; protocol '{cfg.protocol}' runs every client")
    if cfg.async_alpha > 1:
        raise UserError(f"--async-alpha must be in (0, 1], got {cfg.async_alpha}")
    if cfg.delta >= 1:
        raise UserError(f"--delta must be in (0, 1), got {cfg.delta}")
    if cfg.target_accuracy is not None and not 0 < cfg.target_accuracy <= 1:
        raise UserError(f"--target-accuracy must be in (0, 1], got {cfg.target_accuracy}")
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
    if cfg.data_root is not None and not Path(cfg.data_root).is_dir():
        raise UserError(f"--data-root {cfg.data_root} is not a folder")
    return cfg


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
        raw = tomllib.loads(data.decode())
    except FileNotFoundError:
        raise UserError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config file {p} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML: {e}") from None
    return raw


def make_config(values: dict[str, Any] | None = None, *, source: str | None = None) -> RunConfig:
    """Build and validate a RunConfig from raw values (TOML types or CLI strings)."""
    where = f"config file {source}" if source else "option"
    known = {f.name for f in fields(RunConfig)} - {"source"}
    clean: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"{where}: unknown key '{key}'" + _suggest(name, known))
        clean[name] = _coerce(name, value, where)
    from slsec.catalog import RUN_DEFAULTS   # the attack's own defaults, below what was given
    for key, value in RUN_DEFAULTS.get(clean.get("attack") or "", {}).items():
        clean.setdefault(key, value)
    return _validate(RunConfig(**clean, source=source))


def _suggest(name: str, known: set[str]) -> str:
    import difflib
    near = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{near[0].replace('_', '-')}'?)" if near else ""


def merged_config(toml_path: str | None, flags: dict[str, Any]) -> RunConfig:
    """Defaults < TOML file < flags that were actually given (not None)."""
    values: dict[str, Any] = {}
    if toml_path:
        raw = load_toml(toml_path)
        run = raw.pop("run", {})
        if not isinstance(run, dict):
            raise UserError(f"config file {toml_path}: [run] must be a table")
        for k, v in {**raw, **run}.items():
            if isinstance(v, dict):
                raise UserError(f"config file {toml_path}: unknown table [{k}]")
            values[k] = v
        make_config(values, source=toml_path)  # names the file for bad keys/values
    values.update({k: v for k, v in flags.items() if v is not None})
    return make_config(values, source=toml_path)
