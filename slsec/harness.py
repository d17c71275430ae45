"""One evaluation: train with the protocol, attack from the attacked role, score, summarise.

The attack runs on the attacked rank and sees only that role's View; the scorer on rank 0
holds the ground truth that arrived over the separate instrumentation channel.
"""
from __future__ import annotations

import math
import platform
import time
from typing import Any, Callable

import torch
from torch import Tensor

import slsec
from slsec.attacks.base import ATTACKS, Attack, Guess
from slsec.catalog import DEFAULT_KNOWLEDGE, attacker_knowledge  # noqa: F401  (re-exported)
from slsec.config import RunConfig
from slsec.progress import attack as attack_phase, end_training
from slsec.protocols.base import PROTOCOLS
from slsec.runner import RankOutcome, RoundRecord, run_local, run_mpi
from slsec.setup import Setup, accounting_steps, build_defense, prepare
from slsec.threat import ServerHook, View


def attack_class(cfg: RunConfig) -> type[Attack] | None:
    if cfg.attack is None:
        return None
    import slsec.attacks  # noqa: F401  (registration)
    return ATTACKS.get(cfg.attack)


def check_attack(cfg: RunConfig) -> tuple[type[Attack], str, str] | None:
    """Validate attack, role and method up front (before any training)."""
    cls = attack_class(cfg)
    if cls is None:
        return None
    role = cls.role_for(cfg.protocol)
    method = cls.pick_method(attacker_knowledge(cfg, role), cfg.method)
    return cls, role, method


def make_view(cfg: RunConfig, setup: Setup, outcome: RankOutcome, role: str,
              knowledge: frozenset[str]) -> View:
    """Freeze what the attacked role observed and legitimately holds into a View."""
    model = outcome.model
    if role == "client":
        parts = {"head": model.split(list(setup.cuts))[0]}
    else:
        parts = dict(PROTOCOLS.get(cfg.protocol).server_parts(model, setup.cuts))
        if "head_weights" not in knowledge:
            parts.pop("head", None)
    query = None
    if "query_head" in knowledge and setup.cuts:
        head = model.split(list(setup.cuts))[0]

        def query(feats: dict[str, Tensor]) -> dict[str, Tensor]:
            with torch.no_grad():
                return {k: v.detach() for k, v in head(feats).items()}

    public = public_mechanism(cfg, setup)
    return outcome.observer.view(parts=parts, knowledge=knowledge, build_model=setup.build,
                                 cuts=setup.cuts, query_head=query, public=public,
                                 aux=setup.aux if "aux_data" in knowledge else None)


def public_mechanism(cfg: RunConfig, setup: Setup) -> dict[str, Any]:
    """What every role knows about the run: shapes, defenses' public mechanism, the plan."""
    defense = build_defense(cfg, setup)
    return {"input_shape": setup.data.input_shape, "num_classes": setup.data.num_classes,
            "defenses": [d.public() for d in defense.defenses], "lr": cfg.lr,
            "batch_size": cfg.batch_size, "protocol": cfg.protocol}


def train_steps(cfg: RunConfig, setup: Setup) -> int:
    """Client batches the server serves over the whole run (all clients, all rounds)."""
    return cfg.rounds * sum(-(-len(s) // cfg.batch_size) for s in setup.shards)


def malicious_attack(cfg: RunConfig, setup: Setup,
                     on_step: Callable[[int, int], None] | None = None
                     ) -> tuple[Attack | None, ServerHook | None]:
    """A malicious attack acts during training: build it and its hook before the run from
    what its role holds (knowledge, aux data, public mechanism; nothing observed yet)."""
    cls = attack_class(cfg)
    if cls is None or not cls.malicious:
        return None, None
    _, role, method = check_attack(cfg)  # type: ignore[misc]
    knowledge = attacker_knowledge(cfg, role)
    view = View(role=role, protocol=cfg.protocol, knowledge=knowledge, build_model=setup.build,
                cuts=setup.cuts, aux=setup.aux if "aux_data" in knowledge else None,
                public={**public_mechanism(cfg, setup), "train_steps": train_steps(cfg, setup)})
    attack = cls(method=method, seed=cfg.seed)
    hook = attack.hijack(view)
    if on_step is not None:
        hook.on_step = on_step   # type: ignore[attr-defined]
    return attack, hook


def attack_methods(cfg: RunConfig) -> list[str]:
    """The methods to run: --method if given; else every contender the role's knowledge allows
    (the best is reported), else the single strongest allowed method."""
    cls, role, method = check_attack(cfg)  # type: ignore[misc]
    if cfg.method is not None:
        return [method]
    known = attacker_knowledge(cfg, role)
    fits = [m for m in cls.contenders if cls.methods[m] <= known]
    return fits if len(fits) > 1 else [method]


def run_attack(cfg: RunConfig, setup: Setup, outcome: RankOutcome,
               instance: Attack | None = None) -> dict[str, Tensor]:
    """Run the configured attack (each method of `attack_methods`) from `outcome`'s role;
    guesses as named tensors '<method>.images', '<method>.label_scores', '<method>.seconds'."""
    cls, role, _ = check_attack(cfg)  # type: ignore[misc]
    view = make_view(cfg, setup, outcome, role, attacker_knowledge(cfg, role))
    params = {"iterations": cfg.attack_iters} if cfg.attack_iters else {}
    torch.set_num_threads(cfg.threads)   # the attack runs after training: the rank's cores are free
    out: dict[str, Tensor] = {}
    methods = attack_methods(cfg)
    reference = PRIOR not in methods and PRIOR in cls.methods \
        and cls.methods[PRIOR] <= view.knowledge
    for method in methods + ([PRIOR] if reference else []):
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]), attack_phase(method):
            torch.manual_seed(cfg.seed)
            # the attack object built before training runs its own method; the reference
            # prior is a fresh one
            attack = instance if instance is not None and method != PRIOR else \
                cls(method=method, **params)
            guess: Guess = attack.run(view)
        out[f"{method}.images"] = guess.images if guess.images is not None else torch.empty(0)
        out[f"{method}.label_scores"] = (guess.label_scores if guess.label_scores is not None
                                         else torch.empty(0))
        out[f"{method}.seconds"] = torch.tensor(time.perf_counter() - start)
        if method == PRIOR:
            # the prior's labels (held or predicted) and their source, for the scorer
            labels = guess.info.get("labels")
            out["prior.labels"] = labels if labels is not None else torch.empty(0)
            out["prior.label_source"] = torch.tensor(int(guess.info.get("label_source", 0)))
            out["prior.reference"] = torch.tensor(int(reference))  # run only to measure gain
        # client steps a malicious server served, and the one where it stopped (converged)
        for key in ("hijack_steps", "hijack_converged_at"):
            if key in guess.info:
                out[f"{method}.{key}"] = torch.tensor(int(guess.info[key]))
    return out


def attacked_rank(cfg: RunConfig) -> int | None:
    checked = check_attack(cfg)
    if checked is None:
        return None
    return 1 if checked[1] == "client" else 0


def score(cfg: RunConfig, setup: Setup, guess: dict[str, Tensor], truth_inputs: Tensor,
          truth_labels: Tensor) -> dict[str, Any]:
    """Compare each method's guesses with the ground truth the scorer holds and report the
    method that leaked most (highest SSIM, or label AUC); baselines make scores meaningful.
    Sets guess['images'] to the reported method's images (for the reconstruction grid)."""
    methods = list(dict.fromkeys(k.split(".")[0] for k in guess if "." in k))
    reference = [PRIOR] if int(guess.get("prior.reference", torch.tensor(0))) else []
    scored = {m: _score_one(cfg, setup, guess, m, truth_inputs, truth_labels) for m in methods}
    methods = [m for m in methods if m not in reference]

    def leak(r: dict[str, Any]) -> float:
        v = r.get("attack_ssim_mean", r.get("label_auc", float("nan")))
        return -math.inf if v is None or math.isnan(v) else v
    # on a tie the prior is reported: the attack learned nothing beyond it
    best = max(methods, key=lambda m: (leak(scored[m]), m == PRIOR))
    out = dict(scored[best], attack_method=best,
               attack_seconds=sum(float(guess[f"{m}.seconds"]) for m in methods))
    if len(methods) > 1:
        out["methods_compared"] = ",".join(methods)
        key = "attack_ssim_mean" if "attack_ssim_mean" in out else "label_auc"
        out[f"{key}_by_method"] = {m: scored[m].get(key) for m in methods}
    guess["images"], guess["label_scores"] = guess[f"{best}.images"], guess[f"{best}.label_scores"]
    if guess["images"].numel():
        out.update(beyond_prior(cfg, setup, guess, truth_inputs[: len(guess["images"])]))
        if len(methods) > 1:   # top-1 re-identification of every compared method
            from slsec import metrics
            cands = reid_candidates(setup, truth_inputs[: len(guess["images"])])
            if cands is not None:
                idx = torch.arange(len(guess["images"]))
                out["reid_top1_by_method"] = {
                    m: metrics.reidentification(cands, guess[f"{m}.images"], idx)["reid_top1"]
                    for m in methods if guess[f"{m}.images"].numel()}
    return out


PRIOR = "prior"   # the inversion method that only guesses from what the role holds
REID_OTHERS = 1000   # re-identification: the probes plus at least this many other records


def reid_candidates(setup: Setup, truth: Tensor) -> Tensor | None:
    """The candidate records for re-identification: the probes (in probe order, so probe i is
    candidate i), then every other test image, then training images outside the aux set until
    there are REID_OTHERS others. The same for every method and for runs with the same seed."""
    import numpy as np

    from slsec.setup import probe_indices
    test, train = setup.data.test, setup.data.train
    if not isinstance(test.inputs, Tensor) or not isinstance(train.inputs, Tensor):
        return None
    others = np.setdiff1d(np.arange(len(test)), probe_indices(setup.cfg, len(test)))
    parts = [truth.float(), test.inputs[torch.as_tensor(others)].float()]
    need = max(0, REID_OTHERS - len(others))
    if need:
        private = np.random.default_rng(setup.cfg.seed).permutation(len(train))[setup.cfg.aux_size:]
        parts.append(train.inputs[torch.as_tensor(private[-need:])].float())
    return torch.cat(parts)


def beyond_prior(cfg: RunConfig, setup: Setup, guess: dict[str, Tensor],
                 truth: Tensor) -> dict[str, Any]:
    """Leakage beyond what the role already holds: per-sample gain of the reported attack over
    the prior (the `prior` method's guess; for attacks without one, the public aux mean image),
    re-identification among the candidates, and how well the prior knew the labels."""
    from slsec import metrics
    images = guess["images"]
    prior = guess.get(f"{PRIOR}.images")
    if prior is None or not prior.numel():
        prior = setup.aux.inputs.float().mean(0).expand_as(images)
    out: dict[str, Any] = dict(metrics.gain_over_prior(truth, images, prior))
    source = int(guess.get("prior.label_source", torch.tensor(0)))
    out["prior_label_source"] = {0: "none", 1: "held", 2: "predicted"}[source]
    labels = guess.get("prior.labels")
    if source == 2 and labels is not None and labels.numel():
        out["prior_label_accuracy"] = float(
            (labels.long() == setup.probe.y[: len(labels)].long()).float().mean())
    cands = reid_candidates(setup, truth)
    if cands is not None and tuple(cands.shape[1:]) == tuple(images.shape[1:]):
        idx = torch.arange(len(images))
        out.update(metrics.reidentification(cands, images, idx))
        out.update({f"prior_{k}": v for k, v in
                    metrics.reidentification(cands, prior, idx).items()
                    if k.startswith("reid_top")})
    return out


def reid_bounds(cfg: RunConfig, setup: Setup, m: dict[str, Any]) -> dict[str, Any]:
    """The upper bound each DP defense's guarantee puts on top-1 re-identification among the
    run's candidates (prior 1/N), see slsec/reid_bound.py; label DP bounds label guessing."""
    from slsec import reid_bound as rb
    n = int(m.get("reid_candidates") or 0)
    out: dict[str, Any] = {}
    if "epsilon" not in m:
        return out
    kappa = 1.0 / n if n else None
    bounds = []
    for d in build_defense(cfg, setup).defenses:
        steps, rate = accounting_steps(cfg, setup, d)
        eps = d.epsilon(steps=steps, sample_rate=rate, delta=cfg.delta)
        if eps is None:
            continue
        if d.name == "label-rr":   # protects labels only: a bound on guessing the label
            k = setup.data.num_classes
            out["label_guess_bound"] = rb.eps_delta_bound(eps, 0.0, 1.0 / k)
            continue
        if kappa is None:
            continue
        out["reid_bound_eps_delta"] = rb.eps_delta_bound(m["epsilon"], m["delta"], kappa)
        if d.name == "dp" and getattr(d, "mechanism", "gaussian") == "gaussian" and d.sigma:
            n_rel = d.releases(steps, rate)
            bounds.append(rb.gaussian_bound(math.sqrt(n_rel) / (d.sigma / 2.0), kappa))
        elif d.name == "dpsgd":
            nm = d._nm()
            bounds.append(rb.subsampled_gaussian_bound(
                noise_multiplier=nm, sample_rate=rate, steps=steps, kappa=kappa,
                accountant=d.accountant))
            # the probe's own release: one DP-SGD step on a batch it is surely in
            out["reid_bound_probe_release"] = rb.gaussian_bound(1.0 / nm, kappa)
        else:
            bounds.append(out["reid_bound_eps_delta"])
    if bounds:
        # several mechanisms: the (eps, delta) bound of their composition is what holds
        out["reid_bound"] = bounds[0] if len(bounds) == 1 else out["reid_bound_eps_delta"]
        out["reid_bound_vacuous"] = rb.vacuous(out["reid_bound"])
    return out


def _score_one(cfg: RunConfig, setup: Setup, guess: dict[str, Tensor], method: str,
               truth_inputs: Tensor, truth_labels: Tensor) -> dict[str, Any]:
    from slsec import metrics

    out: dict[str, Any] = {}
    images, scores = guess[f"{method}.images"], guess[f"{method}.label_scores"]
    if images.numel():
        truth = truth_inputs[: len(images)]
        if cfg.attack == "gradient-inversion" and cfg.probe_batch > 1:
            # a batch's update is a mean over its samples: the attack recovers each batch's
            # images in no particular order, so pair them with the truth batch by batch
            images = torch.cat([g[torch.as_tensor(metrics.match_order(t, g))] for t, g in zip(
                truth.split(cfg.probe_batch), images.split(cfg.probe_batch))])
            guess[f"{method}.images"] = images
        out.update({f"attack_{k}": v for k, v in metrics.image_summary(truth, images).items()})
        out.update({f"baseline_{k}": v for k, v in
                    metrics.mean_image_baseline(truth, setup.train_mean).items()})
    if scores.numel():
        y = truth_labels[: len(scores)]
        out["label_accuracy"] = metrics.label_accuracy(y, scores)
        out["label_auc"] = metrics.label_auc(y, scores)
        out["label_baseline_accuracy"] = metrics.majority_baseline(y, setup.aux.y)
    return out


def rounds_to_convergence(records: list[RoundRecord], target: float | None) -> tuple[int | None, float]:
    """First round reaching the target accuracy (default: 98% of the run's best)."""
    if not records:
        return None, float("nan")
    thr = target if target is not None else 0.98 * max(r.accuracy for r in records)
    return next((r.round for r in records if r.accuracy >= thr), None), thr


def privacy_budget(cfg: RunConfig, setup: Setup) -> dict[str, Any]:
    """Epsilon per training sample for every DP defense, with its delta."""
    out: dict[str, Any] = {}
    for d in build_defense(cfg, setup).defenses:
        steps, rate = accounting_steps(cfg, setup, d)
        eps = d.epsilon(steps=steps, sample_rate=rate, delta=cfg.delta)
        if eps is not None:
            out[f"epsilon_{d.name}"] = eps
            out["epsilon"] = out.get("epsilon", 0.0) + eps
            out["delta"] = cfg.delta
            if getattr(d, "sigma", None) is not None:
                out["sigma_used"] = d.sigma
            if d.name == "dp":
                out["clip_used"] = d.clip
    return out


def evaluate(cfg: RunConfig, *, progress: Callable[[RoundRecord], None] | None = None,
             setup: Setup | None = None,
             on_step: Callable[[int, int], None] | None = None) -> dict[str, Any] | None:
    """Train + attack + score. Returns the result row on rank 0 (None on other MPI ranks)."""
    check_attack(cfg)
    build_defense(cfg)
    setup = setup or prepare(cfg)
    start = time.perf_counter()
    arank = attacked_rank(cfg)
    attack, hook = malicious_attack(cfg, setup, on_step)
    if cfg.backend == "local":
        outcomes = run_local(cfg, setup, progress, hook)
        end_training()
        server = outcomes[0]
        guess = run_attack(cfg, setup, outcomes[arank], attack) if arank is not None else None
    else:
        from slsec.runner import mpi_attack_exchange
        server = run_mpi(cfg, setup, progress, hook)
        end_training()
        guess = mpi_attack_exchange(cfg, server, arank,
                                    lambda o: run_attack(cfg, setup, o, attack))
        if server.rank != 0:
            return None
    return summarize(cfg, setup, server, guess, time.perf_counter() - start)


def summarize(cfg: RunConfig, setup: Setup, server: RankOutcome, guess: dict[str, Tensor] | None,
              total_s: float) -> dict[str, Any]:
    records = server.records
    conv, thr = rounds_to_convergence(records, cfg.target_accuracy)
    proto = PROTOCOLS.get(cfg.protocol)
    m: dict[str, Any] = {
        "accuracy": records[-1].accuracy if records else float("nan"),
        "best_accuracy": max((r.accuracy for r in records), default=float("nan")),
        "rounds": len(records), "rounds_to_convergence": conv, "convergence_threshold": thr,
        "train_seconds": server.wall_s, "total_seconds": total_s,
        "bytes_on_wire": server.bytes_total, "mb_on_wire": server.bytes_total / 1e6,
        "framing_overhead": (server.bytes_total / server.payload_total
                             if server.payload_total else float("nan")),
        "cuts": list(setup.cuts), "label_party": setup.label_party,
        "probe_size_used": len(setup.probe),   # --probe-size, or the whole test set if smaller
        "chance_accuracy": 1.0 / max(1, setup.data.num_classes),
        "labels_sent_to_server": bool(proto.labels_to_server and setup.label_party == "client"),
    }
    if m["labels_sent_to_server"]:
        m["label_leak"] = 1.0   # the server receives every label in the clear
    m.update(privacy_budget(cfg, setup))
    if guess is not None:
        cls, role, _ = check_attack(cfg)  # type: ignore[misc]
        m.update({"attack_role": role, "attack_kind": cls.kind,
                  "attack_knowledge": sorted(attacker_knowledge(cfg, role))})
        m.update(score(cfg, setup, guess, server.truth_inputs, server.truth_labels))
        m.update(reid_bounds(cfg, setup, m))
        if cls.malicious:   # the server deviated: the client's head never trained on the task
            m["malicious_server"] = True
            m["hijack_steps"] = int(guess[f"{m['attack_method']}.hijack_steps"])
            stop = guess.get(f"{m['attack_method']}.hijack_converged_at")
            if stop is not None:
                m["hijack_converged_at"] = int(stop)
    return {"config": cfg.to_dict(), "metrics": m,
            "curve": [r.__dict__ for r in records],
            "versions": {"slsec": slsec.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "seed": cfg.seed, "_guess": guess, "_truth": server.truth_inputs}
