"""`slsec audit`: the one-run audit of each DP defense of a configuration, beside its claim.

For every audited defense (dp, dpsgd, label-rr) of the configured stack, fitted to the public
setup and calibrated exactly as a run would be, the canaries of `slsec.privacy.canaries` go
through the defense's own mechanism code for the run's number of releases (DP at the cut: one
per epoch; DP-SGD: every step of a client at its sample rate; label DP: one use per epoch),
and `slsec.privacy.audit` turns the auditor's guesses into epsilon lower bounds with both
methods. The claim is printed beside: epsilon from the run's accountant and from RDP, and the
reconstruction bound the claim implies. "claim violated" means eps_lower > eps: the claim is
false with probability at least the confidence.

The audit runs the mechanism, not the training: the canaries' releases are what the mechanism
makes of them whatever the model does (the head is fixed at each release; the DP argument
covers any head), so the audit is seconds where the run is minutes.
"""
from __future__ import annotations

import math
import time
from typing import Any

from slsec.privacy import canaries
from slsec.privacy.audit import eps_lower
from slsec.errors import UserError
from slsec.threat import ClippedGradientNoise, CutNoise, LabelNoise

# the public mechanisms the audit has canaries for (dispatch on the mechanism, never the name)
AUDITED = (CutNoise, ClippedGradientNoise, LabelNoise)
AUDITED_TEXT = "dp, dpsgd or label-rr (DP noise at the cut, DP-SGD, randomized-response labels)"
KAPPA = 0.01              # the reconstruction bound's prior: one record among 100 candidates


def claim(d: Any, *, steps: int, sample_rate: float, delta: float,
          num_classes: int = 10) -> dict[str, Any]:
    """The defense's claimed epsilon (its accountant), RDP beside it, and the bounds it implies."""
    out: dict[str, Any] = {"accountant": getattr(d, "accountant", "pure")}
    out["epsilon"] = d.epsilon(steps=steps, sample_rate=sample_rate, delta=delta)
    out["epsilon_rdp"] = None
    if hasattr(d, "accountant"):          # an Opacus-accounted defense: RDP beside its own
        from slsec.privacy.accounting import used
        out["epsilon_rdp"] = d.epsilon(steps=steps, sample_rate=sample_rate, delta=delta,
                                       accountant="rdp")
        out["accountant"] = used(eps_rdp=out["epsilon_rdp"], accountant=d.accountant)
    bounds = d.guess_bounds(eps=out["epsilon"], steps=steps, sample_rate=sample_rate,
                            kappa=KAPPA, num_classes=num_classes) if hasattr(d, "guess_bounds") else {}
    out["reconstruction_bound"] = bounds.get("reid_bound", bounds.get("label_guess_bound"))
    out["reconstruction_prior"] = KAPPA if "reid_bound" in bounds else 1.0 / num_classes
    return out


def audit_defense(d: Any, *, steps: int, sample_rate: float, canaries_n: int, seed: int,
                  delta: float, confidence: float, row_shape: tuple[int, ...] | None = None,
                  num_classes: int = 10, claimed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one defense's canaries once and bound its epsilon from below (both methods);
    `claimed`: the defense's `claim(...)` when already computed (it does not depend on the seed)."""
    if isinstance(canaries_n, bool) or not isinstance(canaries_n, int) or canaries_n < 2:
        raise UserError(f"--canaries must be a whole number >= 2, got {canaries_n!r}")
    if not 0 < confidence < 1:
        raise UserError(f"--confidence must be in (0, 1), got {confidence}")
    mech = d.public_mechanism()
    if not isinstance(mech, AUDITED):
        raise UserError(f"slsec audit covers --defense {AUDITED_TEXT}, not {d.name!r}")
    if isinstance(mech, CutNoise) and (mech.mechanism != "gaussian" or not math.isfinite(mech.clip)):
        raise UserError("slsec audit needs --defense dp with --mechanism gaussian and a finite --clip")
    start = time.perf_counter()
    delta_used = delta
    if isinstance(mech, CutNoise):
        n = d.releases(steps, sample_rate)
        scores, secrets = canaries.cut_canaries(d, m=canaries_n, releases=n, seed=seed,
                                                row_shape=row_shape)
        curve, role = "gaussian", f"the server, watching {n} noisy smashed release(s) per canary"
    elif isinstance(mech, ClippedGradientNoise):
        scores, secrets = canaries.gradient_canaries(d, m=canaries_n, steps=steps,
                                                     sample_rate=sample_rate, seed=seed)
        curve, role = "eps-delta", (f"the aggregator, watching {steps} noisy DP-SGD steps at "
                                    f"sample rate {sample_rate:.4g}")
    else:
        uses = max(1, round(steps * sample_rate))
        scores, secrets = canaries.label_canaries(d, m=canaries_n, uses=uses, seed=seed,
                                                  num_classes=num_classes)
        curve, role = "eps-delta", f"an observer of the randomized labels ({uses} use(s) each)"
        delta_used = 0.0                  # randomized response is pure eps-DP
    bounds = eps_lower(scores, secrets, delta=delta_used, confidence=confidence, curve=curve)
    out = {"defense": d.name, "canaries": canaries_n, "seed": seed, "confidence": confidence,
           "auditor": role, "fdp_curve": curve, "delta": delta_used,
           "eps_lower_one_run": bounds["one-run"]["eps_lower"],
           "eps_lower_fdp": bounds["f-dp"]["eps_lower"], "guesses": bounds,
           **(claimed or claim(d, steps=steps, sample_rate=sample_rate, delta=delta,
                               num_classes=num_classes))}
    out["eps_lower"] = max(out["eps_lower_one_run"], out["eps_lower_fdp"])
    out["eps_lower_max"] = max(b["eps_lower_max"] for b in bounds.values())
    out["violated"] = bool(out["eps_lower"] > out["epsilon"])
    # a claim above what m canaries can ever prove cannot be refuted by this audit
    out["conclusive"] = bool(out["violated"] or out["eps_lower_max"] > out["epsilon"])
    out["seconds"] = time.perf_counter() - start
    return out


def audit_config(cfg: Any, *, canaries_n: int, confidence: float,
                 broken_kind: str | None = None) -> list[dict[str, Any]]:
    """Audit every DP defense of the configuration (fitted and calibrated as a run's)."""
    import torch
    from slsec.run.setup import accounting_steps, build_defense, prepare
    if canaries_n < 2:
        raise UserError(f"--canaries must be a whole number >= 2, got {canaries_n}")
    torch.manual_seed(cfg.seed)
    setup = prepare(cfg)
    stack = build_defense(cfg, setup)
    audited = [d for d in stack.defenses if isinstance(d.public_mechanism(), AUDITED)]
    if not audited:
        raise UserError(f"slsec audit needs a DP defense: --defense {AUDITED_TEXT}")
    row_shape = None
    if any(isinstance(d.public_mechanism(), CutNoise) for d in audited) and setup.cuts:
        head = setup.fresh_model().split([setup.cuts[0]])[0]
        feats, _ = setup.aux.batch(torch.arange(1))
        with torch.no_grad():
            row_shape = tuple(head(feats)["x"].shape[1:])
    results = []
    for d in audited:
        if broken_kind:
            from slsec.run.broken import broken
            d = broken(d, broken_kind)
        steps, rate = accounting_steps(cfg, setup, d)
        r = audit_defense(d, steps=steps, sample_rate=rate, canaries_n=canaries_n,
                          seed=cfg.seed, delta=cfg.delta, confidence=confidence,
                          row_shape=row_shape, num_classes=setup.data.num_classes)
        r["broken"] = broken_kind
        results.append(r)
    return results
