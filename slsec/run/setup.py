"""The public setup every rank derives from the config and seed: data, shards, cuts, model.

- A public auxiliary split (`--aux-size` samples of the training set) is carved out first;
  it is disjoint from every client's shard and is what attacks with `aux_data` may use.
- The rest of the training set is partitioned over the clients (IID or Dirichlet).
- The probe: `--probe-size` held-out test images that client 1 sends through its head after
  training as private inference queries (what inversion attacks reconstruct).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

import slsec.defenses  # noqa: F401  (registers defenses)
import slsec.protocols  # noqa: F401  (registers protocols)
import slsec.data.userdata  # noqa: F401  (registers images:DIR and npz:FILE datasets)
import slsec.data.usermodel  # noqa: F401  (registers FILE.py:FACTORY and MODULE:FACTORY models)
import slsec.data.tabular  # noqa: F401  (registers csv:FILE and the embedded spam set)
import slsec.data.tabular_models  # noqa: F401  (registers the mlp model)
from slsec import plugins
from slsec.catalog import PRE_TRAINING
from slsec.config import RunConfig
from slsec.data import Dataset, Split, load_dataset, partition
from slsec.defenses.base import DEFENSES, Defense, DefenseStack
from slsec.errors import UserError
from slsec.data.models import SplitModel, build_model
from slsec.protocols.base import PROTOCOLS, Protocol

plugins.load_extra()   # the user's plug-in files (SLSEC_PLUGINS) register beside the built-ins

_INIT_LOCK = threading.Lock()

@dataclass
class Setup:
    cfg: RunConfig
    data: Dataset
    cuts: tuple[str, ...]
    aux: Split
    shards: list[np.ndarray]          # indices into data.train, one per client
    probe: Split
    label_party: str
    memo: dict[Any, Any] = field(default_factory=dict)   # what is derived from it once

    @cached_property
    def protocol(self) -> type[Protocol]:
        """The protocol's class (looked up once per setup)."""
        return PROTOCOLS.get(self.cfg.protocol)

    def shard(self, rank: int) -> Split:
        split = self.data.train.subset(self.shards[rank - 1])
        return self.protocol.client_data(self, rank, split)

    def model_groups(self) -> list[list[int]]:
        """Vertical SL: the encoded columns each party holds (from the public model)."""
        if "groups" not in self.memo:
            self.memo["groups"] = self.build().groups
        return self.memo["groups"]

    def shard_labels(self) -> dict[int, torch.Tensor]:
        """Two-party SL: the server owns the labels of every client's samples (by position)."""
        return {k + 1: self.data.train.y[torch.as_tensor(s)] for k, s in enumerate(self.shards)}

    def fresh_model(self) -> SplitModel:
        """The initial model, identical on every rank (seeded, thread-safe)."""
        with _INIT_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            return self.build()

    def build(self) -> SplitModel:
        """A fresh model of the public architecture (random init): what attackers can build."""
        d = self.data
        options = dict(self.protocol.model_options(self.cfg, d))
        return build_model(options.pop("model", self.cfg.model_name), num_classes=d.num_classes,
                           input_shape=d.input_shape, num_features=d.num_features, **options)

    @cached_property
    def train_mean(self) -> torch.Tensor:
        x = self.data.train.inputs
        return x.mean(0) if isinstance(x, torch.Tensor) else torch.empty(0)


def resolve_cuts(cfg: RunConfig, model: SplitModel, need: int) -> tuple[str, ...]:
    """The `need` cuts the protocol takes: defaults are the shallowest cut (and the last for
    U-shaped)."""
    points = model.cut_points
    if need == 0:
        return ()
    first = cfg.cut or points[0]
    cuts = (first,) if need == 1 else (first, cfg.cut2 or points[-1])
    if need == 1 and cfg.cut2:
        raise UserError(f"--cut2 is only for U-shaped SL; protocol '{cfg.protocol}' has one cut")
    model.check_cuts(list(cuts))
    return cuts


def prepare(cfg: RunConfig) -> Setup:
    """Derive the public setup from the config (same result on every rank)."""
    data = load_dataset(cfg.dataset, data_root=cfg.data_root, download=cfg.download,
                        need_train=None if cfg.max_train is None else cfg.aux_size + cfg.max_train,
                        label_column=cfg.label_column)
    n = len(data.train)
    if cfg.aux_size >= n:
        raise UserError(f"--aux-size {cfg.aux_size} leaves no training data ({n} samples)")
    perm = np.random.default_rng(cfg.seed).permutation(n)
    aux_idx, private = perm[:cfg.aux_size], perm[cfg.aux_size:]
    if cfg.max_train is not None:
        private = private[:cfg.max_train]
    labels = data.train.y.numpy()[private]
    proto = PROTOCOLS.get(cfg.protocol)
    columns = proto.splits_columns
    if columns:   # vertical: every party, the same records
        if data.kind != "tabular":
            raise UserError(f"--dataset {cfg.dataset}: protocol '{cfg.protocol}' splits the "
                            "columns of tabular data (spam, csv:FILE, a 2-D npz:FILE); this set "
                            f"is {data.kind}")
        if cfg.partition != "iid":
            raise UserError(f"--partition {cfg.partition}: in protocol '{cfg.protocol}' every "
                            "party holds the same records (their columns are split)")
        shards = [private] * cfg.clients
    else:
        shards = [private[s] for s in partition(cfg.partition, labels, cfg.clients, cfg.seed,
                                                alpha=cfg.alpha)]
    probe_idx = probe_indices(cfg, len(data.test))
    label_party = cfg.label_party
    if cfg.attack is not None:   # e.g. label inference: two-party SL, or the labels are sent
        import slsec.attacks  # noqa: F401  (registration)
        from slsec.attacks.base import ATTACKS
        label_party = ATTACKS.get(cfg.attack).label_party.get(cfg.protocol, label_party)
    if columns and label_party != "server":
        raise UserError(f"--label-party {label_party}: in protocol '{cfg.protocol}' the active "
                        "party (the server) holds the labels")
    setup = Setup(cfg, data, (), data.train.subset(aux_idx), shards,
                  data.test.subset(probe_idx), label_party)
    try:
        model = setup.build()
    except (ValueError, TypeError, RuntimeError):   # an image model on table rows, say
        if not columns:
            raise
        model = None
    if columns and not hasattr(model, "party_head"):
        raise UserError(f"--model {cfg.model_name}: protocol '{cfg.protocol}' needs one bottom "
                        "per party (the built-in model 'mlp')")
    setup.cuts = resolve_cuts(cfg, model, proto.cuts_needed)
    if setup.cuts and not columns and (":" in cfg.model_name or cfg.model_name.endswith(".py")):
        from slsec.data.usermodel import check_parts   # the user's own model
        check_parts(model, list(setup.cuts), cfg.model_name,
                    data.input_shape if data.kind != "graph" else None)
    _check_batch_norm(cfg, model, shards, data.kind)
    return setup


def _check_batch_norm(cfg: RunConfig, model: SplitModel, shards: list[np.ndarray],
                      data_kind: str) -> None:
    """A BatchNorm1d layer cannot train on a batch of one sample (one value per channel):
    refuse a shard whose last batch would be one, before training (not a traceback at its last
    step). BatchNorm2d has H*W values per channel even then, and a graph model's BatchNorm1d
    normalises over the nodes of the batch's graphs, many even for one graph."""
    if data_kind == "graph" or not any(isinstance(m, torch.nn.BatchNorm1d)
                                       for m in model.modules()):
        return
    for k, shard in enumerate(shards, 1):
        if len(shard) % cfg.batch_size == 1:
            raise UserError(f"--batch-size {cfg.batch_size} leaves client {k} ({len(shard)} "
                            "samples) a last batch of one sample, which the model's BatchNorm "
                            "cannot train on; choose another --batch-size or --max-train")


def probe_indices(cfg: RunConfig, n_test: int) -> np.ndarray:
    """Which test samples are the probe (seeded; the scorer uses it to pick other records)."""
    return np.random.default_rng(cfg.seed + 1).permutation(n_test)[:cfg.probe_size]


def make_defense(name: str, cfg: RunConfig) -> Defense:
    """Build one registered defense from the config fields it declares (`Defense.params`)."""
    cls = DEFENSES.get(name)
    given = {p.keyword: getattr(cfg, p.name) for p in cls.params if getattr(cfg, p.name) is not None}
    if cls.reports_epsilon:
        given.update(delta=cfg.delta, accountant=cfg.accountant)
    defense = cls(**given)
    defense.check_protocol(cfg.protocol)
    return defense


def make_stack(cfg: RunConfig) -> DefenseStack:
    """The configured defenses, in order, as one stack (not yet fitted to the setup)."""
    return DefenseStack([make_defense(n, cfg) for n in cfg.defense
                         if DEFENSES.get(n).point != PRE_TRAINING])


def fit_stack(stack: DefenseStack, cfg: RunConfig, setup: Setup) -> DefenseStack:
    """Fit each defense to public data and calibrate its --target-epsilon, in place."""
    for d in stack.defenses:
        d.fit_public(setup)
        calibrate = getattr(d, "calibrate", None)
        if calibrate is not None and getattr(d, "target_epsilon", None) is not None:
            steps, rate = accounting_steps(cfg, setup, d)
            calibrate(steps=steps, sample_rate=rate)
    return stack


def build_defense(cfg: RunConfig, setup: Any = None) -> DefenseStack:
    """A new stack of the configured defenses (empty stack = no defense), fitted and
    calibrated when the public setup is given. An evaluation builds it once, in
    slsec.run.experiment.resolve; this is for code outside one (checks, benchmarks)."""
    stack = make_stack(cfg)
    return fit_stack(stack, cfg, setup) if setup else stack


def accounting_steps(cfg: RunConfig, setup: Setup, defense: Defense) -> tuple[int, float]:
    """(steps, sample rate) a DP defense composes over: DP-SGD counts batches of the smallest
    shard (sample rate B/n); DP at the cut releases each sample once per epoch (rate 1)."""
    if defense.point == "train":
        n = min(len(s) for s in setup.shards)
        per_epoch = -(-n // cfg.batch_size)
        return cfg.rounds * per_epoch, min(1.0, cfg.batch_size / n)
    return cfg.rounds, 1.0


def check_defenses(cfg: RunConfig) -> None:
    """Validate defense names and parameters once, at the edge."""
    build_defense(cfg)
