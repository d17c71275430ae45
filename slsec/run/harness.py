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
from slsec.attacks.base import Attack, Guess
from slsec.catalog import DEFAULT_KNOWLEDGE, attacker_knowledge  # noqa: F401  (re-exported)
from slsec.config import RunConfig
from slsec.run.experiment import Experiment, plan_attack, resolve  # noqa: F401  (re-exported)
from slsec.progress import attack as attack_phase, end_training, train_note
from slsec.run.result import LABEL_SOURCES, Guesses, MethodGuess, RunResult, present
from slsec.run.runner import RankOutcome, RoundRecord, run_local, run_mpi
from slsec.run.scoring import (PRIOR, beyond_prior, reid_bounds,  # noqa: F401  (re-exported)
                           reid_candidates, score)
from slsec.run.setup import Setup, accounting_steps, prepare  # noqa: F401  (prepare re-exported)
from slsec.run.side_by_side import run_methods
from slsec.threat import ServerHook, View


def check_attack(cfg: RunConfig) -> tuple[type[Attack], str, str] | None:
    """Validate attack, role and method up front (before any training); resolved once per
    config (slsec.run.experiment.plan_attack)."""
    plan = plan_attack(cfg)
    return None if plan is None else (plan.cls, plan.role, plan.method)


def make_view(exp: Experiment, outcome: RankOutcome, role: str,
              knowledge: frozenset[str]) -> View:
    """Freeze what the attacked role observed and legitimately holds into a View."""
    setup, proto = exp.setup, exp.protocol
    model = outcome.model
    build = setup.build
    if role == "client":
        parts = proto.client_parts(model, setup.cuts, outcome.rank)
        build = proto.client_build(setup.build, outcome.rank)
    else:
        parts = dict(proto.server_parts(model, setup.cuts))
        if "head_weights" not in knowledge:
            parts.pop("head", None)
    query = None
    if "query_head" in knowledge and setup.cuts:
        head = model.split(list(setup.cuts))[0]

        def query(feats: dict[str, Tensor]) -> dict[str, Tensor]:
            with torch.no_grad():
                return {k: v.detach() for k, v in head(feats).items()}

    return outcome.observer.view(parts=parts, knowledge=knowledge, build_model=build,
                                 cuts=setup.cuts, query_head=query, public=exp.public(),
                                 aux=setup.aux if "aux_data" in knowledge else None)


def train_steps(cfg: RunConfig, setup: Setup) -> int:
    """Client batches the server serves over the whole run (all clients, all rounds)."""
    return cfg.rounds * sum(-(-len(s) // cfg.batch_size) for s in setup.shards)


def malicious_attack(exp: Experiment,
                     on_step: Callable[[int, int], None] | None = None
                     ) -> tuple[Attack | None, ServerHook | None]:
    """A malicious attack acts during training: build it and its hook before the run from
    what its role holds (knowledge, aux data, public mechanism; nothing observed yet)."""
    cfg, setup, plan = exp.cfg, exp.setup, exp.attack
    if plan is None or not plan.cls.malicious:
        return None, None
    knowledge = plan.knowledge
    view = View(role=plan.role, protocol=cfg.protocol, knowledge=knowledge,
                build_model=setup.build, cuts=setup.cuts,
                aux=setup.aux if "aux_data" in knowledge else None,
                public={**exp.public(), "train_steps": train_steps(cfg, setup)})
    attack = plan.cls(method=plan.method, seed=cfg.seed, **declared_params(cfg, plan.cls))
    hook = attack.hijack(view)
    # its progress over the client steps: a note on the open training phase, if any
    hook.on_step = on_step or (   # type: ignore[attr-defined]
        lambda step, total: train_note(f"{plan.cls.name}: client step {step}/{total}"))
    return attack, hook


def declared_params(cfg: RunConfig, cls: type[Attack]) -> dict[str, Any]:
    """The attack's declared parameters (`Attack.params`) the config sets, by keyword."""
    return {p.keyword: getattr(cfg, p.name) for p in cls.params
            if getattr(cfg, p.name) is not None}


def run_attack(exp: Experiment, outcome: RankOutcome, instance: Attack | None = None) -> Guesses:
    """Run the configured attack (each method of the plan: --method if given, else every
    contender the role's knowledge allows, else the strongest allowed; then the prior as the
    reference when the role can build one) from `outcome`'s role."""
    cfg, plan = exp.cfg, exp.attack
    assert plan is not None
    cls = plan.cls
    view = make_view(exp, outcome, plan.role, plan.knowledge)
    # the run's seed seeds the attack's own generators too, so that a study over seeds varies
    # the attack's randomness (its initialisation, its batches) along with the model's and data's
    params: dict[str, Any] = {"seed": cfg.seed}
    if cfg.attack_iters is not None:
        params["iterations"] = cfg.attack_iters
    params.update(declared_params(cfg, cls))
    torch.set_num_threads(cfg.threads)   # the attack runs after training: the rank's cores are free
    methods = list(plan.methods)
    reference = PRIOR not in methods and PRIOR in cls.methods \
        and cls.methods[PRIOR] <= view.knowledge

    def one(method: str) -> tuple[Guess, float]:
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]), attack_phase(method):
            torch.manual_seed(cfg.seed)
            # the attack object built before training runs its own method; the reference
            # prior is a fresh one
            attack = instance if instance is not None and method != PRIOR else \
                cls(method=method, **params)
            return attack.run(view), time.perf_counter() - start
    # independent methods side by side, one per free core (same results as one by one)
    guesses = run_methods(methods + ([PRIOR] if reference else []), one, cls.side_by_side,
                          cfg.threads, outcome.model)
    out = Guesses(prior_reference=reference)   # the reference prior: run only to measure gain
    for method, (guess, seconds) in guesses.items():
        info = guess.info
        out.methods[method] = MethodGuess(
            present(guess.images), present(guess.label_scores), seconds,
            info.get("hijack_steps"), info.get("hijack_converged_at"), present(guess.rows))
        if method == PRIOR:   # the prior's labels (held or predicted) and their source
            out.prior_labels = present(info.get("labels"))
            out.prior_label_source = LABEL_SOURCES[int(info.get("label_source", 0))]
    return out


def rounds_to_convergence(records: list[RoundRecord], target: float | None) -> tuple[int | None, float]:
    """First round reaching the target accuracy (default: 98% of the run's best)."""
    if not records:
        return None, float("nan")
    thr = target if target is not None else 0.98 * max(r.accuracy for r in records)
    return next((r.round for r in records if r.accuracy >= thr), None), thr


def privacy_budget(exp: Experiment) -> dict[str, Any]:
    """Epsilon per training sample for every DP defense, with its delta."""
    cfg, setup = exp.cfg, exp.setup
    out: dict[str, Any] = {}
    for d in exp.defense.defenses:
        steps, rate = accounting_steps(cfg, setup, d)
        eps = d.epsilon(steps=steps, sample_rate=rate, delta=cfg.delta)
        if eps is not None:
            out[f"epsilon_{d.name}"] = eps
            out["epsilon"] = out.get("epsilon", 0.0) + eps
            out["delta"] = cfg.delta
            if getattr(d, "accountant", "rdp") != "rdp":     # RDP beside the tight accountant
                from slsec.privacy.accounting import used
                rdp = d.epsilon(steps=steps, sample_rate=rate, delta=cfg.delta, accountant="rdp")
                out[f"epsilon_{d.name}_rdp"] = rdp
                out["epsilon_rdp"] = out.get("epsilon_rdp", 0.0) + rdp
                out[f"accountant_{d.name}"] = used(eps_rdp=rdp, accountant=d.accountant)
            if getattr(d, "sigma", None) is not None:
                out["sigma_used"] = d.sigma
            out.update(d.used())
    return out


def evaluate(cfg: RunConfig, *, progress: Callable[[RoundRecord], None] | None = None,
             setup: Setup | None = None,
             on_step: Callable[[int, int], None] | None = None) -> RunResult | None:
    """Train + attack + score. Returns the result on rank 0 (None on other MPI ranks)."""
    exp = resolve(cfg, setup)    # checked, resolved and calibrated once for the whole run
    start = time.perf_counter()
    arank = exp.attack.rank if exp.attack else None
    attack, hook = malicious_attack(exp, on_step)
    if cfg.backend == "local":
        outcomes = run_local(exp, progress, hook)
        end_training()
        server = outcomes[0]
        guess = run_attack(exp, outcomes[arank], attack) if arank is not None else None
    else:
        from slsec.run.runner import mpi_attack_exchange
        server = run_mpi(exp, progress, hook)
        end_training()
        wire = mpi_attack_exchange(server, arank,
                                   lambda o: run_attack(exp, o, attack).to_tensors())
        guess = None if wire is None else Guesses.from_tensors(wire)
        if server.rank != 0:
            return None
    return summarize(exp, server, guess, time.perf_counter() - start)


def summarize(exp: Experiment, server: RankOutcome, guess: Guesses | None,
              total_s: float) -> RunResult:
    cfg, setup, proto = exp.cfg, exp.setup, exp.protocol
    records = server.records
    conv, thr = rounds_to_convergence(records, cfg.target_accuracy)
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
    if not math.isnan(server.test_auc):
        m["test_auc"] = server.test_auc   # vertical SL, binary labels: the joint model's ROC AUC
    if m["labels_sent_to_server"]:
        m["label_leak"] = 1.0   # the server receives every label in the clear
    m.update(privacy_budget(exp))
    m.update(server.defense_report)   # e.g. whether a detector flagged the server, and when
    shown = None
    if guess is not None:
        plan = exp.attack
        assert plan is not None
        m.update({"attack_role": plan.role, "attack_kind": plan.cls.kind,
                  "attack_knowledge": sorted(plan.knowledge)})
        scores, shown = score(exp, guess, server.truth_inputs, server.truth_labels)
        m.update(scores)
        m.update(reid_bounds(exp, m))
        reported = guess.methods[m["attack_method"]]
        if plan.cls.malicious:   # the server deviated: the client's head never trained on the task
            m["malicious_server"] = True
            m["hijack_steps"] = reported.hijack_steps
            if reported.hijack_converged_at is not None:
                m["hijack_converged_at"] = reported.hijack_converged_at
    return RunResult(cfg.to_dict(), m, [r.__dict__ for r in records],
                     {"slsec": slsec.__version__, "torch": torch.__version__,
                      "python": platform.python_version()}, cfg.seed, shown,
                     tabular_encoding(setup))


def tabular_encoding(setup: Setup) -> dict[str, Any] | None:
    """A tabular set's column encoding and class names (None for images and graphs)."""
    enc = getattr(setup.data, "encoding", None)
    if enc is None:
        return None
    return {"columns": enc, "classes": list(getattr(setup.data, "classes", []))}
