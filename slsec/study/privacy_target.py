"""`slsec review --privacy-target gain=G`: the cheapest defended configuration that meets it.

The search runs the review's image attack (adaptive: it knows each defense's public mechanism)
on every candidate cut × a defense at a few strengths (none; DP at the cut, σ in DP_SIGMAS;
NoPeek, weight in NOPEEK_WEIGHTS) × the review's seeds, through the grid executor. A
configuration meets the target when the upper end of the 95% interval over seeds of the
attack's SSIM gain over the attacker's prior is at most G (one seed: the value itself, and the
page says there is no interval). Among those within the accuracy budget (--min-accuracy) and
the client-compute budget (--max-client-flops), the cheapest is recommended: least accuracy
lost against the undefended run at the same cut, then fewest client FLOPs. When none does, the
page says so and names the closest (lowest upper bound).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from slsec.config import RunConfig
from slsec.errors import UserError
from slsec.report.stats import aggregate, seed_list

DP_SIGMAS = (0.5, 1.0, 2.0)
NOPEEK_WEIGHTS = (0.5, 2.0)


def parse_target(text: str | None) -> float | None:
    """'gain=0.05' (or '0.05') -> 0.05; None when not given; else one line."""
    if text is None:
        return None
    key, _, value = text.strip().rpartition("=")
    try:
        g = float(value)
    except ValueError:
        g = math.nan
    if key.strip() not in ("", "gain") or not math.isfinite(g) or not 0 <= g <= 1:
        raise UserError(f"--privacy-target must be gain=G with 0 <= G <= 1 (the attack's SSIM "
                        f"gain over the prior, at the upper 95% bound over seeds), got {text!r}")
    return g


def strengths() -> list[tuple[tuple[str, ...], dict[str, Any], str]]:
    """(defense, its parameters, label) of every strength searched."""
    return ([((), {}, "none")]
            + [(("dp",), {"sigma": s}, f"dp σ={s:g}") for s in DP_SIGMAS]
            + [(("nopeek",), {"nopeek_weight": w}, f"nopeek w={w:g}") for w in NOPEEK_WEIGHTS])


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


def cells(inv: RunConfig) -> list[RunConfig]:
    """Every evaluation of the search for one protocol (the review's attack config)."""
    from slsec.run.split_search import attack_config, candidate_cuts
    acfg = attack_config(inv).replace(backend="local")
    return [acfg.replace(cut=c, defense=d, seed=s, seeds=1, **kw)
            for c in candidate_cuts(acfg) for d, kw, _ in strengths()
            for s in seed_list(inv.seed, inv.seeds)]


def search(inv: RunConfig, target: float, acc_budget: float | None, relative: bool,
           flops_budget: float | None) -> list[Candidate]:
    """Each candidate of one protocol, measured (from evaluate_cached: run the cells first
    through the executor, see review.py)."""
    from slsec.run.split_search import attack_config, candidate_cuts, evaluate_cached, profile
    acfg = attack_config(inv).replace(backend="local")
    prof = profile(acfg)
    seeds = seed_list(inv.seed, inv.seeds)
    out: list[Candidate] = []
    base_acc: dict[str, float] = {}
    for c in candidate_cuts(acfg):
        for d, kw, label in strengths():
            agg = aggregate([evaluate_cached(acfg.replace(cut=c, defense=d, seed=s, seeds=1, **kw))
                             for s in seeds])
            gain, acc = agg.get("ssim_gain_mean"), agg["accuracy"]
            if not d:
                base_acc[c] = acc["mean"]
            high = gain["mean"] if gain and gain["n"] < 2 else (gain or {}).get("high", math.nan)
            out.append(Candidate(inv.protocol, c, label, (gain or {}).get("mean", math.nan),
                                 high, acc["mean"], base_acc[c] - acc["mean"],
                                 prof[c]["client_flops"]))
    best = max(base_acc.values())
    floor = None if acc_budget is None else (acc_budget * best if relative else acc_budget)
    for r in out:
        r.meets = math.isfinite(r.gain_high) and r.gain_high <= target
        if floor is not None and r.accuracy < floor:
            r.within, r.why = False, f"accuracy {r.accuracy:.3f} < {floor:.3f}"
        elif flops_budget is not None and r.client_flops > flops_budget:
            r.within, r.why = False, f"client FLOPs {r.client_flops:.3g} > {flops_budget:.3g}"
    return out


def recommend(found: list[Candidate], target: float) -> tuple[Candidate | None, str]:
    """The cheapest candidate that meets the target within the budgets, or None and why."""
    ok = [r for r in found if r.meets and r.within]
    if ok:
        best = min(ok, key=lambda r: (round(r.cost, 3), r.client_flops))
        return best, (f"{best.protocol}, cut {best.cut}, {best.defense}: SSIM gain over the "
                      f"prior {best.gain:.3f} (upper 95% bound {best.gain_high:.3f} <= "
                      f"{target:g}), accuracy {best.accuracy:.3f} (cost {best.cost:+.3f} against "
                      f"no defense at that cut), client FLOPs {best.client_flops:.3g}")
    pool = [r for r in found if r.within and math.isfinite(r.gain_high)] or \
        [r for r in found if math.isfinite(r.gain_high)]
    if not pool:
        return None, "no configuration was measured (no SSIM gain over the prior)"
    near = min(pool, key=lambda r: r.gain_high)
    return None, (f"no configuration searched meets gain <= {target:g} at the upper 95% bound"
                  + (" within the budgets" if any(r.meets for r in found) else "")
                  + f"; closest: {near.protocol}, cut {near.cut}, {near.defense} (gain "
                  f"{near.gain:.3f}, upper bound {near.gain_high:.3f}, accuracy "
                  f"{near.accuracy:.3f})")


def table_rows(found: list[Candidate]) -> list[list[str]]:
    """The page's rows: protocol, cut, defense, gain (upper bound), accuracy (cost), FLOPs,
    meets."""
    return [[r.protocol, r.cut, r.defense, f"{r.gain:.3f} (≤ {r.gain_high:.3f})",
             f"{r.accuracy:.3f} ({r.cost:+.3f})", f"{r.client_flops:.3g}",
             ("yes" if r.meets else "no") + ("" if r.within else f"; {r.why}")] for r in found]


def blocks(target: float, found: list[Candidate], text: str, seeds: int) -> list[tuple]:
    """The review page's section (and what the terminal prints after the review's table)."""
    return [("h", f"Privacy target: SSIM gain over the prior <= {target:g}"),
            ("p", ("Recommended: " if found and any(r.meets and r.within for r in found)
                   else "None meets it: ") + text + ". Searched: every candidate cut × "
                  + ", ".join(label for _, _, label in strengths()) + " × "
                  + (f"{seeds} seeds (upper end of the 95% Student-t interval)" if seeds > 1
                     else "1 seed (no interval: the value itself; --seeds 3 gives one)")
                  + "; the attack is the review's inversion, which knows each defense's "
                    "public mechanism. Cost: accuracy lost against no defense at the same cut."),
            ("table", ["protocol", "cut", "defense", "gain (upper 95%)", "accuracy (cost)",
                       "client FLOPs", "meets"], table_rows(found))]
