"""`slsec review --privacy-target`: the cheapest defended configuration that meets the targets.

Targets (one or several, comma-separated: `gain=0.05,reid=0.01`), each met when the upper end
of the 95% Student-t interval over seeds is at most its bound (one seed: the value itself, and
the page says there is no interval):

- `gain=G`       the image attack's SSIM gain over the attacker's prior;
- `reid=R`       its top-1 re-identification of the probes among the candidate records;
- `label-auc=A`  the label-inference attack's AUC, as max(AUC, 1 - AUC) (an attacker who ranks
                 the wrong way round flips his scores); 1.0 where the protocol sends the labels
                 to the server in the clear.

The search runs the review's attacks (adaptive: they know each defense's public mechanism) on
every candidate cut × a defense at a few strengths × the review's seeds, through the grid
executor. The strengths (`strengths`): none; DP at the cut, σ in DP_SIGMAS; NoPeek, weight in
NOPEEK_WEIGHTS; MID, λ in MID_WEIGHTS; and, where a label-auc target meets a protocol whose
labels stay on the client, label DP by randomized response, ε in LABEL_EPSILONS. Each only on
the protocols it declares. Among the
configurations that meet every target within the accuracy budget (--min-accuracy) and the
client-compute budget (--max-client-flops), the cheapest is recommended: least accuracy lost
against the undefended run at the same cut, then fewest client FLOPs. When none does, the page
says so and names the closest: the least worst excess of an upper bound over its target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from slsec.config import RunConfig
from slsec.errors import UserError
from slsec.report.stats import aggregate, seed_list

DP_SIGMAS = (0.5, 1.0, 2.0)
NOPEEK_WEIGHTS = (0.5, 2.0)
MID_WEIGHTS = (0.001, 0.01)   # at pool2 of the MNIST CNN: gain 0.23 at 93% accuracy; 0 at chance
LABEL_EPSILONS = (1.0, 4.0)     # randomized response over K classes keeps a label w.p.
#                                 1 / (1 + (K - 1) e^-ε): 0.23 and 0.86 at K = 10
# target name -> (the metric it bounds, what the page calls it, the least bound that means
# anything: an AUC bound below 0.5 is below chance, which max(AUC, 1 - AUC) never is)
TARGETS: dict[str, tuple[str, str, float]] = {
    "gain": ("ssim_gain_mean", "SSIM gain over the prior", 0.0),
    "reid": ("reid_top1", "top-1 re-identification", 0.0),
    "label-auc": ("label_auc", "label-inference AUC", 0.5),
}
LABEL_SEP = "label_separation"   # max(AUC, 1 - AUC) of one run


def parse_target(text: str | None) -> dict[str, float] | None:
    """'gain=0.05,reid=0.01' -> {'gain': 0.05, 'reid': 0.01} ('0.05' alone: gain); None when
    not given; else one line naming the rule."""
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.strip().rpartition("=")
        key = key.strip() or "gain"
        try:
            bound = float(value)
        except ValueError:
            bound = math.nan
        low = TARGETS[key][2] if key in TARGETS else 0.0
        if key not in TARGETS or key in out or not math.isfinite(bound) or not low <= bound <= 1:
            raise UserError(
                "--privacy-target must be gain=G, reid=R and/or label-auc=A, comma-separated, "
                "each once (G, R in [0, 1]: the image attack's SSIM gain over the prior and its "
                "top-1 re-identification; A in [0.5, 1]: the label-inference AUC; each at the "
                f"upper 95% bound over seeds), got {text!r}")
        out[key] = bound
    return out


def describe(target: dict[str, float]) -> str:
    """'SSIM gain over the prior <= 0.05, top-1 re-identification <= 0.01'."""
    return ", ".join(f"{TARGETS[k][1]} <= {v:g}" for k, v in target.items())


def strengths(protocol: str, labels: bool = False
              ) -> list[tuple[tuple[str, ...], dict[str, Any], str]]:
    """(defense, its parameters, label) of every strength searched on `protocol`; `labels`: a
    label-auc target is searched there (the label defenses join)."""
    from slsec.defenses.base import DEFENSES
    out: list[tuple[tuple[str, ...], dict[str, Any], str]] = [((), {}, "none")]
    for name, key, values, short, label_only in (
            ("dp", "sigma", DP_SIGMAS, "σ", False),
            ("nopeek", "nopeek_weight", NOPEEK_WEIGHTS, "w", False),
            ("mid", "mid_weight", MID_WEIGHTS, "λ", False),
            ("label-rr", "label_epsilon", LABEL_EPSILONS, "ε", True)):
        if protocol in DEFENSES.get(name).protocols and (labels or not label_only):
            out += [((name,), {key: v}, f"{name} {short}={v:g}") for v in values]
    return out


def _labels(cfg: RunConfig, target: dict[str, float], label_roles: set[str]) -> bool:
    """Whether a label-auc target is searched on cfg's protocol (its labels stay on the client
    and a label attack plays there)."""
    return "label-auc" in target and cfg.protocol in label_roles


@dataclass
class Candidate:
    """One (protocol, cut, defense) over the seeds."""

    protocol: str
    cut: str
    defense: str
    gain: float                 # mean SSIM gain over the prior
    gain_high: float            # its upper 95% bound (the mean with one seed)
    accuracy: float
    cost: float                 # accuracy lost against the undefended run at this cut
    client_flops: float
    meets: bool = False
    within: bool = True
    why: str = ""
    # target name -> (mean, upper 95% bound) of every target's metric ("gain" among them)
    values: dict[str, tuple[float, float]] = field(default_factory=dict)
    met: dict[str, bool] = field(default_factory=dict)    # target name -> met

    def value(self, name: str) -> tuple[float, float]:
        return self.values.get(name, (self.gain, self.gain_high) if name == "gain"
                               else (math.nan, math.nan))

    def excess(self, target: dict[str, float]) -> float:
        """How far the worst upper bound is above its target (<= 0: every target met)."""
        over = [self.value(k)[1] - v for k, v in target.items()]
        return math.inf if any(math.isnan(x) for x in over) else max(over)


def _grid(cfg: RunConfig, labels: bool) -> list[RunConfig]:
    """`cfg` at every candidate cut × strength × seed (in that order)."""
    from slsec.run.split_search import candidate_cuts
    return [cfg.replace(cut=c, defense=d, seed=s, seeds=1, **kw)
            for c in candidate_cuts(cfg) for d, kw, _ in strengths(cfg.protocol, labels)
            for s in seed_list(cfg.seed, cfg.seeds)]


def cells(inv: RunConfig, target: dict[str, float], label_roles: set[str]) -> list[RunConfig]:
    """Every image-attack evaluation of the search for one protocol (the review's config)."""
    from slsec.run.split_search import attack_config
    return _grid(attack_config(inv).replace(backend="local"), _labels(inv, target, label_roles))


def label_cells(inv: RunConfig, lab: RunConfig, target: dict[str, float],
                label_roles: set[str]) -> list[RunConfig]:
    """The label-inference evaluations a label-auc target needs: where the protocol has a label
    attack and (known from the image-attack cells, run first) the labels stay on the client."""
    from slsec.run.split_search import evaluate_cached
    if not _labels(inv, target, label_roles):
        return []
    return [lc for ic, lc in zip(cells(inv, target, label_roles),
                                 _grid(lab.replace(backend="local"), True))
            if not evaluate_cached(ic).get("labels_sent_to_server")]


def _label_metrics(inv_metrics: dict[str, Any], lab: RunConfig | None) -> dict[str, Any]:
    """The label separation of one run: 1.0 where the labels reach the server in the clear,
    max(AUC, 1 - AUC) of the label attack where it ran, else nothing."""
    from slsec.run.split_search import evaluate_cached
    if inv_metrics.get("labels_sent_to_server"):
        return {LABEL_SEP: 1.0}
    if lab is None:
        return {}
    auc = evaluate_cached(lab).get("label_auc")
    return {} if auc is None or math.isnan(auc) else {LABEL_SEP: max(auc, 1.0 - auc)}


def search(inv: RunConfig, lab: RunConfig, target: dict[str, float],
           acc_budget: float | None, relative: bool, flops_budget: float | None,
           label_roles: set[str]) -> list[Candidate]:
    """Each candidate of one protocol, measured (from evaluate_cached: run the cells first
    through the executor, see review.py)."""
    from slsec.run.split_search import attack_config, candidate_cuts, evaluate_cached, profile
    acfg = attack_config(inv).replace(backend="local")
    labs = _labels(inv, target, label_roles)
    prof = profile(acfg)
    seeds = seed_list(inv.seed, inv.seeds)
    out: list[Candidate] = []
    base_acc: dict[str, float] = {}
    for c in candidate_cuts(acfg):
        for d, kw, label in strengths(inv.protocol, labs):
            runs = []
            for s in seeds:
                m = evaluate_cached(acfg.replace(cut=c, defense=d, seed=s, seeds=1, **kw))
                lcfg = lab.replace(backend="local", cut=c, defense=d, seed=s, seeds=1, **kw)
                runs.append({**m, **(_label_metrics(m, lcfg if labs else None)
                                     if "label-auc" in target else {})})
            agg = aggregate(runs)
            acc = agg["accuracy"]
            if not d:
                base_acc[c] = acc["mean"]
            values = {}
            for name in target.keys() | {"gain"}:
                key = LABEL_SEP if name == "label-auc" else TARGETS[name][0]
                st = agg.get(key)
                values[name] = ((math.nan, math.nan) if st is None else
                                (st["mean"], st["mean"] if st["n"] < 2 else st["high"]))
            out.append(Candidate(inv.protocol, c, label, *values["gain"], acc["mean"],
                                 base_acc[c] - acc["mean"], prof[c]["client_flops"],
                                 values=values))
    best = max(base_acc.values())
    floor = None if acc_budget is None else (acc_budget * best if relative else acc_budget)
    for r in out:
        r.met = met(r, target)
        r.meets = all(r.met.values())
        if floor is not None and r.accuracy < floor:
            r.within, r.why = False, f"accuracy {r.accuracy:.3f} < {floor:.3f}"
        elif flops_budget is not None and r.client_flops > flops_budget:
            r.within, r.why = False, f"client FLOPs {r.client_flops:.3g} > {flops_budget:.3g}"
    return out


def met(r: Candidate, target: dict[str, float]) -> dict[str, bool]:
    """Target name -> whether its upper bound is at most the target (nan: not met)."""
    return {k: math.isfinite(r.value(k)[1]) and r.value(k)[1] <= v for k, v in target.items()}


def measured(r: Candidate, target: dict[str, float]) -> str:
    """Each target's measured value and upper bound, and whether it is met."""
    parts = []
    for k, v in target.items():
        mean, high = r.value(k)
        parts.append(f"{TARGETS[k][1]} {mean:.3f} (upper 95% bound {high:.3f} "
                     + ("<=" if r.met.get(k) else ">") + f" {v:g}: "
                     + ("met" if r.met.get(k) else "not met") + ")")
    return "; ".join(parts)


def recommend(found: list[Candidate], target: dict[str, float] | float
              ) -> tuple[Candidate | None, str]:
    """The cheapest candidate that meets every target within the budgets, or None and why
    (naming the closest: the least worst excess of an upper bound over its target)."""
    if not isinstance(target, dict):
        target = {"gain": float(target)}
    for r in found:
        r.met = met(r, target)
    ok = [r for r in found if r.meets and r.within]
    if ok:
        best = min(ok, key=lambda r: (round(r.cost, 3), r.client_flops))
        return best, (f"{best.protocol}, cut {best.cut}, {best.defense}: every target met: "
                      f"{measured(best, target)}; accuracy {best.accuracy:.3f} (cost "
                      f"{best.cost:+.3f} against no defense at that cut), client FLOPs "
                      f"{best.client_flops:.3g}")
    pool = [r for r in found if r.within and math.isfinite(r.excess(target))] or \
        [r for r in found if math.isfinite(r.excess(target))]
    if not pool:
        return None, ("no configuration was measured on " + " and ".join(
            TARGETS[k][1] for k in target))
    near = min(pool, key=lambda r: (r.excess(target), round(r.cost, 3)))
    return None, (f"no configuration searched meets {describe(target)} at the upper 95% bound"
                  + (" within the budgets" if any(r.meets for r in found) else "")
                  + f"; closest: {near.protocol}, cut {near.cut}, {near.defense}: "
                  f"{measured(near, target)}; accuracy {near.accuracy:.3f} (cost "
                  f"{near.cost:+.3f})")


def table_rows(found: list[Candidate], target: dict[str, float] | None = None
               ) -> list[list[str]]:
    """The page's rows: protocol, cut, defense, each target's value (upper bound), accuracy
    (cost), FLOPs, meets."""
    target = target or {"gain": math.nan}
    return [[r.protocol, r.cut, r.defense,
             *(f"{r.value(k)[0]:.3f} (≤ {r.value(k)[1]:.3f})" for k in target),
             f"{r.accuracy:.3f} ({r.cost:+.3f})", f"{r.client_flops:.3g}",
             ("yes" if r.meets else "no") + ("" if r.within else f"; {r.why}")] for r in found]


def blocks(target: dict[str, float], found: list[Candidate], text: str,
           seeds: int) -> list[tuple]:
    """The review page's section (and what the terminal prints after the review's table)."""
    return [("h", f"Privacy target: {describe(target)}"),
            ("p", ("Recommended: " if found and any(r.meets and r.within for r in found)
                   else "None meets it: ") + text + ". Searched: every candidate cut × "
                  + ", ".join(dict.fromkeys(r.defense for r in found)) + " × "
                  + (f"{seeds} seeds (upper end of the 95% Student-t interval)" if seeds > 1
                     else "1 seed (no interval: the value itself; --seeds 3 gives one)")
                  + "; the attacks are the review's, which know each defense's public "
                    "mechanism" + (" (label AUC as max(AUC, 1 − AUC); 1.0 where the labels "
                                   "reach the server in the clear)" if "label-auc" in target
                                   else "")
                  + ". Cost: accuracy lost against no defense at the same cut."),
            ("table", ["protocol", "cut", "defense",
                       *(f"{TARGETS[k][1]} (upper 95%)" for k in target),
                       "accuracy (cost)", "client FLOPs", "meets"], table_rows(found, target))]
