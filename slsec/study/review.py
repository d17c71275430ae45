"""`slsec review`: a security review of every split configuration of a model/dataset.

For each protocol (`--protocol vanilla,ushaped` lists several) and each candidate cut it
measures, with short training runs: inversion leakage (SSIM/PSNR, strongest method the
server's role allows; its gain over the server's prior and top-1 re-identification, which
grade the risk), label leakage (100% when the protocol sends labels to the server;
otherwise the label-inference attack's AUC/accuracy), ε when a DP defense is configured,
accuracy, and the cost of the cut (bytes per sample, client parameters and FLOPs). Each row
gets a risk grade (RISK_RULE) and the report recommends a configuration (split selection).
"""
from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from slsec import progress
from slsec.study import review_malicious as malicious
from slsec.config import RunConfig
from slsec.errors import UserError
from slsec.report.results import check_writable, config_key
from slsec.report.review_report import (GRADES, RISK_RULE, SEED_KEYS, _n,  # noqa: F401  (re-exported)
                                 input_grade, label_grade, leakage_plot, overall_grade,
                                 review_table, write_outputs)
from slsec.report.stats import CI_SUFFIX, mean_row, seed_list, seeds_text


def _protocols(cfg: RunConfig) -> list[str]:
    from slsec.protocols.base import PROTOCOLS
    names = [p.strip() for p in cfg.protocol.split(",")]
    if any(not p for p in names):
        raise UserError(f"--protocol: empty name in {cfg.protocol!r}")
    columns = [p for p in names if PROTOCOLS.get(p).splits_columns]   # vertical SL
    if columns and len(set(names)) > 1:
        raise UserError(f"--protocol {columns[0]} is reviewed on its own (its rows are defense "
                        "settings and parties, not cuts); drop the other protocols")
    for p in names:
        if PROTOCOLS.get(p).cuts_needed == 0 and p not in columns:
            raise UserError(f"--protocol {p} has no cut to review; use vanilla, ushaped, "
                            "splitfed or vertical")
    return list(dict.fromkeys(names))


def _attack_configs(cfg: RunConfig, protocol: str) -> tuple[RunConfig, RunConfig]:
    """(inversion config, label-inference config) for one protocol; --method/--knowledge go to
    the attack named by --attack."""
    import slsec.attacks  # noqa: F401  (registration)
    from slsec.attacks.base import ATTACKS
    image, label = (next(n for n, a in ATTACKS if a.reviewed == kind) for kind in ("image", "label"))
    if cfg.attack is not None and cfg.attack not in (image, label):
        raise UserError(f"slsec review runs {image} and {label} itself; --attack "
                        f"{cfg.attack} is not part of it (use --attack {image} or "
                        f"{label} only to pass --method/--knowledge to that attack)")
    base = cfg.replace(protocol=protocol, cut=None, backend="local")
    own = {"method": cfg.method, "knowledge": cfg.knowledge}
    plain = {"method": None, "knowledge": None}
    inv = base.replace(attack=image, **(own if cfg.attack == image else plain))
    lab = base.replace(attack=label, **(own if cfg.attack == label else plain))
    return inv, lab


def review_folder(cfg: RunConfig) -> Path:
    name = cfg.run_id or f"review-{cfg.model_name}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.out) / name


def run_review(cfg: RunConfig, *, min_accuracy: str | None,
               max_client_flops: str | None, force: bool = False,
               hijack_steps: int = malicious.DEFAULT_STEPS, jobs: Any = None,
               privacy_target: str | None = None) -> Path:
    """Measure every (protocol, cut), grade it, recommend one; print and write the report.
    `hijack_steps` > 0: the malicious-server column (slsec.study.review_malicious) with that bound.
    `jobs` > 1: the evaluations run first, that many at once (slsec.study.review_cells)."""
    from slsec.study import privacy_target as pt
    from slsec.study.executor import Workers, check_jobs, prestart
    jobs = check_jobs(jobs)
    target = pt.parse_target(privacy_target)
    from slsec.report.console import console
    from slsec.run.split_search import (choose, evaluate_cached, measure,
                                                parse_flops, parse_min_accuracy)
    from slsec.run.harness import check_attack
    from slsec.run.setup import check_defenses

    acc_budget, relative = parse_min_accuracy(min_accuracy)
    flops_budget = parse_flops(max_client_flops)
    protocols = _protocols(cfg)
    prestart([cfg], jobs)           # the workers' imports overlap the checks below
    plans = []
    from slsec.report.folders import claim, keeping, mark, unique_folder
    from slsec.run.preflight import check_grid
    folder = (review_folder(cfg) if cfg.run_id else unique_folder(cfg.out, review_folder(cfg).name))
    claim(folder, "review", force=force)
    from slsec.protocols.base import PROTOCOLS
    if PROTOCOLS.get(protocols[0]).splits_columns:   # vertical SL: no cut; defense settings x
        #                                              parties (review_vertical.py)
        from slsec.study.review_vertical import run_vertical_review
        for flag, v in (("--max-client-flops", max_client_flops),
                        ("--privacy-target", privacy_target)):
            if v is not None:
                raise UserError(f"{flag} does not apply to slsec review --protocol vertical "
                                "(no cut to choose; it reviews defense settings)")
        return run_vertical_review(cfg, folder, force=force, jobs=jobs,
                                   min_accuracy=min_accuracy)
    for p in protocols:                          # validate everything before any training
        inv, lab = _attack_configs(cfg, p)
        check_attack(inv)
        check_defenses(inv)
        plans.append((p, inv, lab))
    check_grid([inv for _, inv, _ in plans], lambda c: f"protocol {c.protocol}")
    searched = ([c for _, inv, _ in plans for c in pt.cells(inv, target, _label_roles())]
                if target is not None else [])
    for c in {config_key(c.replace(cut=None, seed=cfg.seed).to_dict()): c.replace(cut=None)
              for c in searched}.values():
        check_defenses(c)                        # the searched defenses, before any training
    check_writable(cfg.out)
    check_writable(folder)

    if jobs > 1 or searched:   # the cells first, in workers (slsec/study/review_cells.py)
        from slsec.study.review_cells import (inversion_cells, label_cells, malicious_cells,
                                              prefetch)
        with Workers(jobs) as workers:
            # the malicious-server cells first: the attack cells run their methods on every
            # core a worker has (side by side), so at the end of the stream they fill the
            # cores that workers with nothing left give up
            first = [c for p, inv, _ in plans for c in malicious_cells(p, inv, hijack_steps)]
            prefetch((first if jobs > 1 else []) + searched
                     + [c for _, inv, _ in plans for c in inversion_cells(inv)], jobs, workers)
            labels = [c for p, inv, lab in plans
                      for c in label_cells(p, inv, lab, _label_roles())] if jobs > 1 else []
            if target is not None:   # the label attack where a label-auc target needs it
                labels += [c for _, inv, lab in plans
                           for c in pt.label_cells(inv, lab, target, _label_roles())]
            if labels:
                prefetch(labels, jobs, workers)
    rows: list[dict[str, Any]] = []
    per_seed: list[dict[str, Any]] = []         # --seeds > 1: one raw row per seed and cut
    rankings = {}
    with progress.phase("review", unit="cuts"):   # stderr: status line, or plain lines when piped
        for p, inv, lab in plans:
            def step(cut: str, i: int, n: int, p: str = p) -> None:
                progress.tick("review", 0, done=i, total=n,
                              note=f"{p}: cut {cut} ({i + 1}/{n})" if cut else p)
            measured = measure_seeds(inv, step, per_seed)
            ranking = choose(measured, min_accuracy=acc_budget, max_client_flops=flops_budget,
                             relative=relative)
            rankings[p] = ranking
            for r in ranking.rows:
                m = r["metrics"]
                row = {"protocol": p, "cut": r["cut"], "cuts": r["cuts"],
                       "accuracy": r["accuracy"],
                       "attack_method": r.get("attack_method"),
                       "methods_compared": m.get("methods_compared"),
                       "attack_ssim_mean": r.get("attack_ssim_mean", math.nan),
                       "attack_psnr_mean": r.get("attack_psnr_mean", math.nan),
                       "baseline_ssim_mean": r.get("baseline_ssim_mean", math.nan),
                       "prior_ssim_mean": m.get("prior_ssim_mean", math.nan),
                       "ssim_gain_mean": m.get("ssim_gain_mean", math.nan),
                       "reid_top1": m.get("reid_top1", math.nan),
                       "prior_reid_top1": m.get("prior_reid_top1", math.nan),
                       "reid_chance_top1": m.get("reid_chance_top1", math.nan),
                       "labels_sent_to_server": bool(m.get("labels_sent_to_server")),
                       "label_leak": 1.0 if m.get("labels_sent_to_server") else math.nan,
                       "label_auc": math.nan, "label_accuracy": math.nan,
                       "epsilon": m.get("epsilon", math.nan),
                       "smashed_bytes_per_sample": r["smashed_bytes_per_sample"],
                       "client_params": r["client_params"], "client_flops": r["client_flops"],
                       "eligible": r["eligible"], "why": r["why"], "selected": r["chosen"]}
                if not row["labels_sent_to_server"] and p in _label_roles():
                    progress.tick("review", 0, note=f"{p}: label inference, cut {r['cut']}")
                    lm = label_metrics(lab.replace(cut=r["cut"]), per_seed, p)
                    for k in ("label_auc", "label_accuracy"):
                        row[k] = lm.get(k, math.nan)
                        if k + CI_SUFFIX in lm:
                            row[k + CI_SUFFIX] = lm[k + CI_SUFFIX]
                for k in SEED_KEYS:
                    if k + CI_SUFFIX in r:
                        row[k + CI_SUFFIX] = r[k + CI_SUFFIX]
                if inv.seeds > 1:
                    row["n_seeds"] = inv.seeds
                row["input_risk"] = input_grade(row["ssim_gain_mean"], row["reid_top1"],
                                                row["prior_reid_top1"])
                row["label_risk"] = label_grade(row["labels_sent_to_server"], row["label_auc"])
                row["risk"] = overall_grade(row["input_risk"], row["label_risk"])
                if hijack_steps > 0 and malicious.applies(p):
                    progress.tick("review", 0, note=f"{p}: malicious server, cut {r['cut']}")
                    found = malicious.measure(inv, r["cut"], hijack_steps)
                    row["malicious"] = malicious.cell(found)
                    row.update({k: v for k, v in found.items() if k != "detected_by"})
                rows.append(row)
    best, reason = recommend(rows, rankings)
    for r in rows:
        r["recommended"] = best is not None and r is best
    section, target_text = None, None
    if target is not None:
        found = [c for _, inv, lab in plans
                 for c in pt.search(inv, lab, target, acc_budget, relative, flops_budget,
                                    _label_roles())]
        _, target_text = pt.recommend(found, target)
        section = pt.blocks(target, found, target_text, cfg.seeds)
    with keeping(f"nothing of this review was kept in {folder}; free space and "
                 "run it again"):
        moved = mark(folder, "review", force=force)
        write_outputs(folder, cfg, rows, rankings, best, reason, acc_budget, relative,
                      flops_budget, per_seed, section)
    if moved:
        console.print(f"--force: the earlier files of {folder.name} are kept in {moved}")
    out = console if console.is_terminal else Console(width=220, highlight=False)  # logs: wide (no wrapped cells)
    out.print(review_table(cfg, rows))
    if (legend := malicious.note(rows)) is not None:
        out.print(legend, markup=False)
    out.print(("Recommended: " if best else "No recommendation: ") + reason, markup=False)
    if section is not None:
        out.print(f"Privacy target ({pt.describe(target)}): " + target_text,
                  markup=False)
    out.print(seeds_text(cfg.seeds, cfg.seed) + (" (grades and recommendation on the means)"
                                                 if cfg.seeds > 1 else ""), markup=False)
    out.print(f"report: {folder}/report.html", markup=False)
    return folder


def measure_seeds(cfg: RunConfig, progress: Any, per_seed: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """split_search.measure per seed (seed..seed+N-1); one row per cut holding each numeric
    value's mean and `<key>_ci95` (slsec.report.stats). The raw per-seed rows go to `per_seed`."""
    from slsec.run.split_search import measure
    if cfg.seeds == 1:
        return measure(cfg, progress)
    runs = [measure(cfg.replace(seed=s, seeds=1), progress) for s in seed_list(cfg.seed, cfg.seeds)]
    fixed = {"smashed_bytes_per_sample", "client_params", "client_flops", "metrics"}
    out = []
    for i, first in enumerate(runs[0]):
        mine = [run[i] for run in runs]
        for s, r in zip(seed_list(cfg.seed, cfg.seeds), mine):
            per_seed.append({"row_kind": "seed", "protocol": cfg.protocol, "seed": s,
                             **{k: v for k, v in r.items() if k != "metrics"}})
        out.append({**first, **mean_row(mine, skip=fixed),
                    "metrics": mean_row([r["metrics"] for r in mine])})
    return out


def label_metrics(cfg: RunConfig, per_seed: list[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """The label-inference metrics of one cut: one seed's, or the mean (+ `_ci95`) over seeds."""
    from slsec.run.split_search import evaluate_cached
    if cfg.seeds == 1:
        return evaluate_cached(cfg)
    ms = []
    for s in seed_list(cfg.seed, cfg.seeds):
        m = evaluate_cached(cfg.replace(seed=s, seeds=1))
        ms.append(m)
        per_seed.append({"row_kind": "seed", "protocol": protocol, "seed": s,
                         "cut": cfg.cut, "attack": "label-inference",
                         **{k: m.get(k) for k in ("label_auc", "label_accuracy") if k in m}})
    return mean_row(ms)


def _label_roles() -> set[str]:
    import slsec.attacks  # noqa: F401
    from slsec.attacks.base import ATTACKS
    return set(ATTACKS.get("label-inference").roles)


def recommend(rows: list[dict[str, Any]], rankings: dict[str, Any]
              ) -> tuple[dict[str, Any] | None, str]:
    """Among each protocol's selected cut: lowest overall risk, then least SSIM, then FLOPs."""
    picks = [r for r in rows if r["selected"]]
    if not picks:
        return None, "; ".join(f"{p}: {rk.reason}" for p, rk in rankings.items())
    best = min(picks, key=lambda r: (GRADES.index(r["risk"]) if r["risk"] in GRADES else 3,
                                     _n(r["attack_ssim_mean"]), r["client_flops"]))
    why = rankings[best["protocol"]].reason
    others = [p for p in rankings if p != best["protocol"]]
    return best, (f"protocol {best['protocol']}, cut {best['cut']} (risk {best['risk']}): {why}"
                  + (f". Preferred over the selected cut of {', '.join(others)} by overall risk, "
                     "then SSIM, then client FLOPs" if others else ""))


