"""The public setup every rank derives from the config and seed: data, shards, cuts, model.

- A public auxiliary split (`--aux-size` samples of the training set) is carved out first;
  it is disjoint from every client's shard and is what attacks with `aux_data` may use.
- The rest of the training set is partitioned over the clients (IID or Dirichlet).
- The probe: `--probe-size` held-out test images that client 1 sends through its head after
  training as private inference queries (what inversion attacks reconstruct).
"""
from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

import slsec.defenses  # noqa: F401  (registers defenses)
import slsec.protocols  # noqa: F401  (registers protocols)
import slsec.userdata  # noqa: F401  (registers images:DIR and npz:FILE datasets)
import slsec.usermodel  # noqa: F401  (registers FILE.py:FACTORY and MODULE:FACTORY models)
from slsec.config import RunConfig
from slsec.data import Dataset, Split, load_dataset, partition
from slsec.defenses.base import DEFENSES, Defense, DefenseStack
from slsec.errors import UserError
from slsec.models import SplitModel, build_model
from slsec.protocols.base import PROTOCOLS

_INIT_LOCK = threading.Lock()

# config fields -> constructor keywords of each defense (one table, not an if-chain)
DEFENSE_PARAMS: dict[str, dict[str, str]] = {
    "dp": {"sigma": "sigma", "clip": "clip", "mechanism": "mechanism", "delta": "delta",
           "accountant": "accountant", "target_epsilon": "target_epsilon"},
    "dpsgd": {"noise_multiplier": "noise_multiplier", "max_grad_norm": "max_grad_norm",
              "delta": "delta", "accountant": "accountant", "target_epsilon": "target_epsilon"},
    "nopeek": {"nopeek_weight": "nopeek_weight"},
    "label-rr": {"label_epsilon": "epsilon"},
    "max-norm": {},
    "splitguard": {"splitguard_p_fake": "p_fake", "splitguard_threshold": "threshold",
                   "label_party": "label_party"},
    "gradient-check": {"check_threshold": "threshold", "lr": "lr", "seed": "seed",
                       "label_party": "label_party"},
}


@dataclass
class Setup:
    cfg: RunConfig
    data: Dataset
    cuts: tuple[str, ...]
    aux: Split
    shards: list[np.ndarray]          # indices into data.train, one per client
    probe: Split
    label_party: str

    def shard(self, rank: int) -> Split:
        return self.data.train.subset(self.shards[rank - 1])

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
        return build_model(self.cfg.model_name, num_classes=d.num_classes,
                           input_shape=d.input_shape, num_features=d.num_features)

    @cached_property
    def public_clip(self) -> float:
        """Default DP clip C: the median per-sample L2 norm of the smashed data of public aux
        samples through the initial (seeded, public) head, so clipping keeps the activations'
        natural scale at the chosen cut (a fixed C = 1 would shrink a conv1 row ~20x and stall
        training). Public data and public weights only: choosing C leaks nothing private."""
        from slsec.defenses.dp_cut import DPCut
        if not self.cuts or len(self.aux) == 0:
            return 1.0
        head = self.fresh_model().split([self.cuts[0]])[0]
        feats, _ = self.aux.batch(torch.arange(min(256, len(self.aux))))
        with torch.no_grad():
            return DPCut.suggest_clip(head(feats)["x"])

    @cached_property
    def train_mean(self) -> torch.Tensor:
        x = self.data.train.inputs
        return x.mean(0) if isinstance(x, torch.Tensor) else torch.empty(0)


def resolve_cuts(cfg: RunConfig, model: SplitModel) -> tuple[str, ...]:
    """The cuts the protocol needs: defaults are the shallowest cut (and the last for U-shaped)."""
    need = PROTOCOLS.get(cfg.protocol).cuts_needed
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
    data = load_dataset(cfg.dataset, data_root=cfg.data_root, download=cfg.download)
    n = len(data.train)
    if cfg.aux_size >= n:
        raise UserError(f"--aux-size {cfg.aux_size} leaves no training data ({n} samples)")
    perm = np.random.default_rng(cfg.seed).permutation(n)
    aux_idx, private = perm[:cfg.aux_size], perm[cfg.aux_size:]
    if cfg.max_train is not None:
        private = private[:cfg.max_train]
    labels = data.train.y.numpy()[private]
    shards = [private[s] for s in partition(cfg.partition, labels, cfg.clients, cfg.seed,
                                            alpha=cfg.alpha)]
    probe_idx = probe_indices(cfg, len(data.test))
    label_party = cfg.label_party
    if cfg.attack == "label-inference" and cfg.protocol in ("vanilla", "splitfed"):
        label_party = "server"   # two-party SL: otherwise the labels are simply sent (100% leak)
    setup = Setup(cfg, data, (), data.train.subset(aux_idx), shards,
                  data.test.subset(probe_idx), label_party)
    setup.cuts = resolve_cuts(cfg, setup.build())
    return setup


def probe_indices(cfg: RunConfig, n_test: int) -> np.ndarray:
    """Which test samples are the probe (seeded; the scorer uses it to pick other records)."""
    return np.random.default_rng(cfg.seed + 1).permutation(n_test)[:cfg.probe_size]


def make_defense(name: str, cfg: RunConfig) -> Defense:
    """Build one registered defense from the config fields it takes."""
    cls = DEFENSES.get(name)
    table = DEFENSE_PARAMS.get(name, {})
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {kw: getattr(cfg, field) for field, kw in table.items()
              if kw in accepted and getattr(cfg, field) is not None}
    defense = cls(**kwargs)
    defense.check_protocol(cfg.protocol)
    return defense


def build_defense(cfg: RunConfig, setup: Any = None) -> DefenseStack:
    """The configured defenses, in order, as one stack (empty stack = no defense)."""
    stack = DefenseStack([make_defense(n, cfg) for n in cfg.defense if n != "split-select"])
    for d in stack.defenses:
        if d.name == "dp" and cfg.clip is None and setup:
            d.clip = setup.public_clip   # default C, from public data (see Setup.public_clip)
        calibrate = getattr(d, "calibrate", None)
        if calibrate is not None and getattr(d, "target_epsilon", None) is not None and setup:
            steps, rate = accounting_steps(cfg, setup, d)
            calibrate(steps=steps, sample_rate=rate)
    return stack


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
