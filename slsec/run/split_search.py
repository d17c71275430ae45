"""Adversarial split-point search: measure every candidate cut against the attack, keep the
cut that leaks least within the utility and client-compute budgets (the engine behind the
`split-select` defense and `slsec review`).

For each candidate cut (U-shaped SL: the first cut varies, the second stays at the last cut
point) a short training run plus the configured attack (default: the image attack `slsec
review` uses, with the strongest method the attacked role allows) is evaluated with
`slsec.run.harness.evaluate`. Leakage is the attack SSIM for image attacks and |label AUC - 0.5|
for label attacks (lower = better).

Budgets:
- `min_accuracy`: absolute test accuracy (e.g. 0.9); with `relative=True` a fraction of the
  best candidate's accuracy (e.g. 0.95 = within 5% of the best cut). On the command line
  "0.9" is absolute and "95%" is relative.
- `max_client_flops`: forward FLOPs per sample of everything the client computes before the
  (first) cut, from `slsec.data.models.profile_cuts`.
Rule: among the cuts within both budgets, take the least leakage; cuts within `TIE` (0.01) of
the least leakage count as tied and the one with the fewest client FLOPs wins.
If no cut meets the budgets, `rank_cuts` returns `chosen=None` with the reason and
`select_split` raises a one-line UserError saying so (never silently falls back to a cut).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from slsec.config import RunConfig
from slsec.errors import UserError

TIE = 0.01
_MEASURED: dict[str, dict[str, Any]] = {}   # config key -> metrics (one process, reused)


@dataclass
class Ranking:
    """The candidate cuts measured, and the one chosen (None when no cut meets the budgets)."""

    chosen: str | None
    reason: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    leak_metric: str = "attack_ssim_mean"


def attack_config(cfg: RunConfig) -> RunConfig:
    """The config the cuts are measured with: the configured attack, or the image attack."""
    if cfg.attack:
        return cfg
    import slsec.attacks  # noqa: F401  (registration)
    from slsec.attacks.base import ATTACKS
    image = next(n for n, a in ATTACKS if a.reviewed == "image")
    return cfg.replace(attack=image, method=None)


def candidate_cuts(cfg: RunConfig) -> list[str]:
    """Every cut point of the model (U-shaped: every first cut before the fixed second cut)."""
    from slsec.data import load_dataset
    from slsec.data.models import build_model
    from slsec.protocols.base import PROTOCOLS

    proto = PROTOCOLS.get(cfg.protocol)
    need = proto.cuts_needed
    if need == 0 or proto.splits_columns:   # FedAvg; vertical SL (each party's whole bottom)
        raise UserError(f"protocol '{cfg.protocol}' has no cut to select")
    d = load_dataset(cfg.dataset, data_root=cfg.data_root, download=cfg.download)
    points = build_model(cfg.model_name, num_classes=d.num_classes, input_shape=d.input_shape,
                         num_features=d.num_features).cut_points
    if need == 1:
        return list(points)
    second = cfg.cut2 or points[-1]
    if second not in points:
        raise UserError(f"invalid --cut2 '{second}'; valid cuts: {', '.join(points)}")
    return points[: points.index(second)]


def profile(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Per cut point: smashed bytes per sample, client parameters and FLOPs (profile_cuts)."""
    from slsec.data.models import profile_cuts
    from slsec.run.setup import prepare

    setup = prepare(cfg.replace(cut=None, cut2=None))
    feats, _ = setup.aux.batch(list(range(min(8, len(setup.aux)))))
    return {r["cut"]: r for r in profile_cuts(setup.build(), feats)}


def leak_key(metrics: dict[str, Any]) -> str:
    return "attack_ssim_mean" if "attack_ssim_mean" in metrics else "label_auc"


def leak_value(key: str, v: float) -> float:
    return abs(v - 0.5) if key == "label_auc" else v


def evaluate_cached(cfg: RunConfig) -> dict[str, Any]:
    """`harness.evaluate(cfg)["metrics"]`, computed once per config in this process."""
    from slsec.run.harness import evaluate
    from slsec.report.results import config_key

    key = config_key(cfg.to_dict())
    if key not in _MEASURED:
        result = evaluate(cfg)
        if result is None:
            raise UserError("split selection runs in one process: use --backend local")
        _MEASURED[key] = dict(result.metrics)
    return _MEASURED[key]


def remember(cfg: RunConfig, metrics: dict[str, Any]) -> None:
    """Metrics of `cfg` computed elsewhere (a grid worker): evaluate_cached returns them."""
    from slsec.report.results import config_key
    _MEASURED[config_key(cfg.to_dict())] = dict(metrics)


def is_measured(cfg: RunConfig) -> bool:
    from slsec.report.results import config_key
    return config_key(cfg.to_dict()) in _MEASURED


def measure(cfg: RunConfig, progress: Callable[[str, int, int], None] | None = None
            ) -> list[dict[str, Any]]:
    """Evaluate every candidate cut once (cached per config in this process); one row per cut."""
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses

    acfg = attack_config(cfg).replace(backend="local")   # measured in this process
    check_attack(acfg)
    check_defenses(acfg)
    cuts = candidate_cuts(acfg)
    prof = profile(acfg)
    rows = []
    for i, cut in enumerate(cuts):
        if progress:
            progress(cut, i, len(cuts))
        m = evaluate_cached(acfg.replace(cut=cut))
        p = prof[cut]
        row = {"cut": cut, "cuts": ",".join(m.get("cuts", [cut])), "accuracy": m["accuracy"]}
        for k in ("attack_ssim_mean", "attack_psnr_mean", "baseline_ssim_mean", "label_auc",
                  "label_accuracy", "label_leak", "epsilon"):
            if k in m:
                row[k] = m[k]
        row.update({"smashed_bytes_per_sample": p["smashed_bytes_per_sample"],
                    "client_params": p["client_params"], "client_flops": p["client_flops"],
                    "attack_method": m.get("attack_method"), "metrics": m})
        rows.append(row)
    if progress:
        progress("", len(cuts), len(cuts))
    return rows


def choose(rows: list[dict[str, Any]], *, min_accuracy: float | None = None,
           max_client_flops: float | None = None, relative: bool = False) -> Ranking:
    """Apply the budgets and the selection rule to measured rows (pure; see the module doc)."""
    if not rows:
        return Ranking(None, "no candidate cuts", rows)
    key = leak_key(rows[0])
    best_acc = max(r["accuracy"] for r in rows)
    floor = None if min_accuracy is None else (min_accuracy * best_acc if relative
                                                else min_accuracy)
    for r in rows:
        r["chosen"] = False
        why = []
        if floor is not None and not r["accuracy"] >= floor:
            why.append(f"accuracy {r['accuracy']:.3f} < {floor:.3f}")
        if max_client_flops is not None and r["client_flops"] > max_client_flops:
            why.append(f"client FLOPs {r['client_flops']:.3g} > {max_client_flops:.3g}")
        leak = leak_value(key, r.get(key, float("nan")))
        if math.isnan(leak):
            why.append(f"no {key} measured")
        r["leakage"] = leak
        r["eligible"] = not why
        r["why"] = "; ".join(why) or "within budgets"
    ok = [r for r in rows if r["eligible"]]
    name = "SSIM" if key == "attack_ssim_mean" else "|AUC - 0.5|"
    budget = budget_text(min_accuracy, max_client_flops, relative, floor)
    if not ok:
        return Ranking(None, f"no cut meets {budget or 'no budget'}: best accuracy {best_acc:.3f} at "
                             f"{max(rows, key=lambda r: r['accuracy'])['cut']}, fewest client "
                             f"FLOPs {min(r['client_flops'] for r in rows):.3g} at "
                             f"{min(rows, key=lambda r: r['client_flops'])['cut']}", rows, key)
    least = min(r["leakage"] for r in ok)
    tied = [r for r in ok if r["leakage"] <= least + TIE]
    pick = min(tied, key=lambda r: (r["client_flops"], r["leakage"]))
    pick["chosen"] = True
    scope = (f"among {len(ok)} of {len(rows)} cuts within {budget}" if budget
             else f"among all {len(rows)} cuts (no budget)")
    reason = (f"least attack {name} ({pick['leakage']:.3f}) {scope}" + (f"; {len(tied)} cuts within {TIE} of it, fewest client FLOPs "
                                    "wins" if len(tied) > 1 else "")
              + f"; accuracy {pick['accuracy']:.3f}, client FLOPs {pick['client_flops']:.3g}")
    return Ranking(pick["cut"], reason, rows, key)


def budget_text(min_accuracy: float | None, max_client_flops: float | None, relative: bool,
                floor: float | None = None) -> str:
    """The budgets in words ("" when there is none): the one wording of the search's reasons
    and the review's report. `floor`: the accuracy a relative budget works out to, if known."""
    parts = []
    if min_accuracy is not None and relative:
        parts.append(f"accuracy >= {min_accuracy:.0%} of the best cut's"
                     + (f" ({floor:.3f})" if floor is not None else ""))
    elif min_accuracy is not None:
        parts.append(f"accuracy >= {min_accuracy:g}")
    if max_client_flops is not None:
        parts.append(f"client FLOPs per sample <= {max_client_flops:.3g}")
    return " and ".join(parts)


def rank_cuts(cfg: RunConfig, *, min_accuracy: float | None = None,
              max_client_flops: float | None = None, relative: bool = False,
              progress: Callable[[str, int, int], None] | None = None) -> Ranking:
    """Measure every candidate cut and apply the budgets; `chosen` is None if none fits."""
    _check_budgets(min_accuracy, max_client_flops, relative)
    return choose(measure(cfg, progress), min_accuracy=min_accuracy,
                  max_client_flops=max_client_flops, relative=relative)


def select_split(cfg: RunConfig, *, min_accuracy: float | None = None,
                 max_client_flops: float | None = None, progress: Any = None,
                 relative: bool = False) -> Ranking:
    """The cut that maximises information loss within the budgets (UserError if none fits)."""
    ranking = rank_cuts(cfg, min_accuracy=min_accuracy, max_client_flops=max_client_flops,
                        relative=relative, progress=progress)
    if ranking.chosen is None:
        raise UserError(f"split-select: {ranking.reason}")
    return ranking


def _check_budgets(min_accuracy: float | None, max_flops: float | None, relative: bool) -> None:
    if min_accuracy is not None and not (0 <= min_accuracy <= 1):
        raise UserError(f"--min-accuracy must be in [0, 1]{' (as a fraction)' if relative else ''}"
                        f", got {min_accuracy}")
    if max_flops is not None and not max_flops > 0:
        raise UserError(f"--max-client-flops must be > 0, got {max_flops}")


def parse_min_accuracy(text: str | None) -> tuple[float | None, bool]:
    """'0.9' -> (0.9, absolute); '95%' -> (0.95, relative to the best cut); one-line errors."""
    if text is None or not text.strip():
        return None, False
    t = text.strip()
    relative = t.endswith("%")
    try:
        v = float(t[:-1] if relative else t)
    except ValueError:
        raise UserError(f"--min-accuracy must be an accuracy like 0.9 or a share of the best "
                        f"cut's accuracy like 95%, got {text!r}") from None
    v = v / 100 if relative else v
    if math.isnan(v) or not 0 <= v <= 1:
        raise UserError(f"--min-accuracy must be in [0, 1] (or 0%..100%), got {text!r}")
    return v, relative


def parse_flops(text: str | None) -> float | None:
    """'2e6', '2M', '1.5G' -> FLOPs per sample; one-line errors."""
    if text is None or not text.strip():
        return None
    t = text.strip().upper().removesuffix("FLOPS").strip()
    scale = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(t[-1:], 1.0) if t else 1.0
    try:
        v = float(t[:-1] if scale != 1.0 else t) * scale
    except ValueError:
        raise UserError(f"--max-client-flops must be a number like 2e6 or 2M, got {text!r}") \
            from None
    if math.isnan(v) or not v > 0:
        raise UserError(f"--max-client-flops must be > 0, got {text!r}")
    return v


def ranking_table(ranking: Ranking, title: str = "split-point selection") -> Any:
    """The ranking as a rich table (one row per candidate cut; the chosen one marked)."""
    from rich.table import Table

    from slsec.report import fmt

    t = Table(title=title)
    for c in ("cut", "accuracy", "attack SSIM" if ranking.leak_metric == "attack_ssim_mean"
              else "label AUC", "bytes/sample", "client params", "client FLOPs", "budget",
              "chosen"):
        t.add_column(c, justify="left" if c in ("cut", "budget") else "right")
    for r in ranking.rows:
        t.add_row(r["cut"], fmt(r["accuracy"]), fmt(r.get(ranking.leak_metric)),
                  f"{r['smashed_bytes_per_sample']:,.0f}", f"{r['client_params']:,}",
                  f"{r['client_flops']:.3g}", r.get("why", ""), "◀" if r.get("chosen") else "")
    return t
