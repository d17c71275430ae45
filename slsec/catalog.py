"""What `slsec list` shows and the CLI checks up front, without importing torch.

Importing torch, PyG and opacus takes seconds; `slsec list`, `--help` and a mistyped name must
answer at once. So the names the registries hold (protocols, attacks and their roles and
methods, defenses, datasets, models and their cut points) are also declared here, as plain data.
`precheck` raises the same UserError, in the same order, that the training path would raise
later for a bad name. The plug-in tables (protocols, attacks, defenses) are read from the
plug-ins' own declarations (slsec.plugins), so a new plug-in, built-in or in SLSEC_PLUGINS,
needs no edit here; tests/test_catalog.py checks this file against the live registries.
"""
from __future__ import annotations

from typing import Any

from slsec import plugins
from slsec.config import PARAMS
from slsec.errors import UserError
from slsec.params import exclusion

# name -> (cuts needed, labels reach the server), as each protocol declares them in its own
# file (slsec.protocols.base.Protocol's defaults: one cut, labels sent)
PROTOCOLS: dict[str, tuple[int, bool]] = {
    d.name: (d.attrs.get("cuts_needed", 1), d.attrs.get("labels_to_server", True))
    for d in plugins.declarations("protocol")}

ARCH, HEAD, QUERY, AUX = "architecture", "head_weights", "query_head", "aux_data"
# name -> roles (protocol -> role), methods (method -> knowledge needed), default order,
# contenders, as each attack declares them in its own file
ATTACKS: dict[str, dict[str, Any]] = {
    d.name: dict(roles=d.attrs["roles"], methods=d.attrs["methods"],
                 default_order=tuple(d.attrs["default_order"]),
                 contenders=tuple(d.attrs.get("contenders", ())),
                 method_protocols=dict(d.attrs.get("method_protocols", {})))
    for d in plugins.declarations("attack")}

# what the attacked role holds by default (the harness uses these)
DEFAULT_KNOWLEDGE = {
    "server": frozenset({ARCH, HEAD, QUERY, AUX}),
    "aggregator": frozenset({ARCH, HEAD, AUX}),
    "client": frozenset({ARCH, AUX}),
}

# name -> (point, protocols), as each defense declares them in its own file
DEFENSES: dict[str, tuple[str, frozenset[str]]] = {
    d.name: (d.attrs["point"], frozenset(d.attrs["protocols"]))
    for d in plugins.declarations("defense")}
PRE_TRAINING = "pre"   # a defense at this point chooses the cut before training (its own path)


def pre_training(cfg: Any) -> list[str]:
    """The run's defenses that choose the cut before training (e.g. split-select)."""
    return [n for n in cfg.defense if DEFENSES.get(n, ("",))[0] == PRE_TRAINING]


def without_pre_training(cfg: Any) -> Any:
    """The config with those defenses dropped (what runs once the cut is chosen)."""
    return cfg.replace(defense=tuple(n for n in cfg.defense if n not in pre_training(cfg)))

DATASETS = ("cifar10", "fashion-mnist", "mnist", "mnist-full", "mutag", "proteins", "spam")
EMBEDDED_TRAIN = {"mnist": 4000, "mutag": 150, "spam": 1600}   # training samples of the embedded sets
GRAPH_DATASETS = ("mutag", "proteins")   # and tu:<NAME>
GRAPH_MODELS = ("gin",)

# model -> cut points, shallow to deep
MODELS: dict[str, tuple[str, ...]] = {
    "cnn": ("conv1", "pool1", "conv2", "pool2", "fc1"),
    "gin": ("gin1", "gin2", "gin3", "readout", "fc1"),
    "mlp": ("fc1", "fc2"),   # tabular; vertical SL builds it as bottoms | top (cut: bottoms)
    "resnet18": ("stem", "layer1", "layer2", "layer3", "layer4"),
}


def _unknown(kind: str, name: str, names: Any) -> UserError:
    return UserError(f"unknown {kind} '{name}'; valid: {', '.join(sorted(names))}")


def attacker_knowledge(cfg: Any, role: str) -> frozenset[str]:
    """What the attacked role holds by default, narrowed by --knowledge if given."""
    known = DEFAULT_KNOWLEDGE[role]
    if cfg.knowledge is not None:
        bad = set(cfg.knowledge) - set(DEFAULT_KNOWLEDGE["server"])
        if bad:
            raise UserError(f"--knowledge: unknown item(s) {', '.join(sorted(bad))}; valid: "
                            f"{', '.join(sorted(DEFAULT_KNOWLEDGE['server']))}")
        extra = set(cfg.knowledge) - known
        if extra:
            raise UserError(f"--knowledge: the {role} in '{cfg.protocol}' does not hold "
                            f"{', '.join(sorted(extra))}")
        known = frozenset(cfg.knowledge)
    return known


def _check_attack(cfg: Any) -> None:
    """As slsec.run.harness.check_attack: attack name, its role in the protocol, knowledge, method."""
    if cfg.attack is None:
        return
    if cfg.attack not in ATTACKS:
        raise _unknown("attack", cfg.attack, ATTACKS)
    a = ATTACKS[cfg.attack]
    if cfg.protocol not in a["roles"]:
        raise UserError(f"attack '{cfg.attack}' does not apply to protocol '{cfg.protocol}': "
                        f"it targets {', '.join(sorted(a['roles']))}")
    role = a["roles"][cfg.protocol]
    known = attacker_knowledge(cfg, role)
    methods = a["methods"]
    if cfg.method is not None:
        if cfg.method not in methods:
            raise UserError(f"unknown method '{cfg.method}' for attack '{cfg.attack}'; "
                            f"valid: {', '.join(methods)}")
        missing = methods[cfg.method] - known
        if missing:
            raise UserError(f"method '{cfg.method}' of attack '{cfg.attack}' needs "
                            f"{', '.join(sorted(missing))}, which this role does not hold")
        allowed = a["method_protocols"].get(cfg.method)
        if allowed is not None and cfg.protocol not in allowed:
            raise UserError(f"method '{cfg.method}' of attack '{cfg.attack}' applies to "
                            f"protocol {', '.join(sorted(allowed))} only, not '{cfg.protocol}'")
    elif not any(methods[m] <= known for m in a["default_order"]):
        raise UserError(f"attack '{cfg.attack}': no method fits this role's knowledge")


def _check_params(name: str, cfg: Any) -> bool:
    """The defense's declared parameter checks that need the run (one excludes another); False
    where a given parameter is checked further by its constructor (its message must come first:
    the precheck stops there)."""
    params = next(d.params for d in plugins.declarations("defense") if d.name == name)
    given = [p for p in params if getattr(cfg, p.name) not in (None, PARAMS[p.name][0].default)]
    for p in given:
        if p.excludes and getattr(cfg, p.excludes[0]) is not None:
            raise UserError(exclusion(p, PARAMS[p.excludes[0]][0]))
    return not any(p.deferred for p in given)


def _check_defenses(cfg: Any) -> bool:
    """The name and protocol checks of slsec.run.setup.build_defense, in its order; False where a
    defense's parameters are left to its constructor (nothing after it can be checked first)."""
    for name in cfg.defense:
        if DEFENSES.get(name, ("",))[0] == PRE_TRAINING:
            continue
        if name not in DEFENSES:
            raise _unknown("defense", name, DEFENSES)
        if not _check_params(name, cfg):
            return False
        protocols = DEFENSES[name][1]
        if cfg.protocol not in protocols:
            raise UserError(f"defense '{name}' does not apply to protocol '{cfg.protocol}'; "
                            f"it applies to {', '.join(sorted(protocols))}")
    return True


def _check_setup(cfg: Any) -> None:
    """As slsec.run.setup.prepare, up to the cuts: dataset, protocol, model, cut names."""
    if ":" in cfg.dataset:
        return   # tu:NAME or a user's data scheme: only loading it can tell
    if cfg.dataset not in DATASETS:
        raise _unknown("dataset", cfg.dataset, DATASETS)
    n = EMBEDDED_TRAIN.get(cfg.dataset)
    if n is None:
        return   # loading it can fail first (files, download): checked when it is loaded
    if cfg.aux_size >= n:
        raise UserError(f"--aux-size {cfg.aux_size} leaves no training data ({n} samples)")
    private = n - cfg.aux_size if cfg.max_train is None else min(n - cfg.aux_size, cfg.max_train)
    least = 1 if cfg.partition == "iid" else 10   # slsec.data.iid / dirichlet's min_size
    if cfg.clients * least > private:
        raise UserError(f"cannot give {cfg.clients} clients at least {least} samples each "
                        f"from {private} samples")
    if cfg.partition != "iid":
        return   # a Dirichlet draw can still fail: its own message comes first
    if cfg.protocol not in PROTOCOLS:
        raise _unknown("protocol", cfg.protocol, PROTOCOLS)
    need = PROTOCOLS[cfg.protocol][0]
    if need == 0:
        return
    if ":" in cfg.model_name or cfg.model_name.endswith(".py"):
        return   # the user's own model (file.py:factory): only building it can tell
    if cfg.model_name not in MODELS:
        raise _unknown("model", cfg.model_name, MODELS)
    graphs = cfg.dataset.startswith("tu:") or cfg.dataset in GRAPH_DATASETS
    if graphs != (cfg.model_name in GRAPH_MODELS):
        return   # a model that does not fit the data: the model's own message, when it is built
    points = MODELS[cfg.model_name]
    cuts = [cfg.cut or points[0]] if need == 1 else [cfg.cut or points[0], cfg.cut2 or points[-1]]
    if need == 1 and cfg.cut2:
        raise UserError(f"--cut2 is only for U-shaped SL; protocol '{cfg.protocol}' has one cut")
    for c in cuts:
        if c not in points:
            raise UserError(f"invalid cut '{c}' for model '{cfg.model_name}'; "
                            f"valid cuts: {', '.join(points)}")
    idx = [points.index(c) for c in cuts]
    if any(b <= a for a, b in zip(idx, idx[1:])):
        raise UserError(f"cuts must be distinct and in model order "
                        f"({', '.join(points)}), got {', '.join(cuts)}")


def precheck(cfg: Any, *, attack: bool = True) -> None:
    """Fail fast, before torch is imported, on a bad name: the same message the full path gives.

    Checks only what the declared names decide; everything else (data, parameters) is still
    checked on the way, as before. The order follows the full path's (attack, defenses, setup).
    """
    if attack:
        _check_attack(cfg)
    if _check_defenses(cfg) and not pre_training(cfg):
        _check_setup(cfg)
