"""The evaluate command's console summary: the table beside the undefended run, the verdict
lines and the hint for a frontier sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from slsec import report as rpt
from slsec.config import RunConfig
from slsec.report.console import console


# (label, metric key, digits) rows of the evaluate summary
SUMMARY_ROWS = [
    ("test accuracy", "accuracy", 4),
    ("attack SSIM (mean)", "attack_ssim_mean", 3),
    ("prior SSIM (mean, no inversion)", "prior_ssim_mean", 3),
    ("SSIM gain over prior", "ssim_gain_mean", 3),
    ("attack PSNR dB (mean)", "attack_psnr_mean", 2),
    ("prior PSNR dB (mean)", "prior_psnr_mean", 2),
    ("PSNR gain over prior dB", "psnr_gain_mean", 2),
    ("numeric columns R² (attack)", "attack_numeric_r2", 3),
    ("numeric columns R² (prior)", "prior_numeric_r2", 3),
    ("R² gain over prior", "numeric_r2_gain", 3),
    ("numeric RMSE, std units (attack)", "attack_numeric_rmse", 3),
    ("numeric RMSE, std units (prior)", "prior_numeric_rmse", 3),
    ("categorical accuracy (attack)", "attack_categorical_accuracy", 3),
    ("categorical accuracy (prior)", "prior_categorical_accuracy", 3),
    ("prior's labels", "prior_label_source", 0),
    ("prior label-prediction accuracy", "prior_label_accuracy", 3),
    ("re-id top-1", "reid_top1", 3),
    ("re-id top-1 chance (1/N)", "reid_chance_top1", 4),
    ("re-id top-5", "reid_top5", 3),
    ("re-id top-5 chance (5/N)", "reid_chance_top5", 4),
    ("re-id candidates N", "reid_candidates", 0),
    ("DP bound on re-id top-1", "reid_bound", 4),
    ("DP bound e^eps/N+delta", "reid_bound_eps_delta", 4),
    ("label-DP bound on label guessing", "label_guess_bound", 3),
    ("identifiable (SSIM>0.5)", "attack_identifiable", 3),
    ("label attack accuracy", "label_accuracy", 3),
    ("label attack AUC", "label_auc", 3),
    ("label prior (majority) accuracy", "label_baseline_accuracy", 3),
    ("label leak (labels sent)", "label_leak", 2),
    ("epsilon", "epsilon", 3),
    ("epsilon (RDP accountant, beside)", "epsilon_rdp", 3),
    ("rounds", "rounds", 0),
    ("rounds to convergence", "rounds_to_convergence", 0),
    ("train wall-clock s", "train_seconds", 1),
    ("MB on wire", "mb_on_wire", 2),
]


NEAR_CHANCE = 0.05   # best accuracy within this of chance: the run did not learn


def shown(m: dict[str, Any], key: str) -> Any:
    """A metric as the tables show it: rounds to convergence reads "not reached" when the
    run's best accuracy stayed within NEAR_CHANCE of chance (the first round "reaching" 98%
    of a chance-level best says nothing)."""
    v = m.get(key)
    if key == "rounds_to_convergence":
        best, chance = m.get("best_accuracy"), m.get("chance_accuracy")
        if v is None or (isinstance(best, float) and isinstance(chance, float)
                         and best <= chance + NEAR_CHANCE):
            return "not reached"
    return v


def summary_rows(result: dict[str, Any], base: dict[str, Any] | None) -> list[list[Any]]:
    m, b = result["metrics"], (base or {}).get("metrics", {})
    rows = []
    for label, key, _ in SUMMARY_ROWS:
        if key in m or key in b:
            rows.append([label, shown(b, key) if base else None, shown(m, key)] if base
                        else [label, shown(m, key)])
    return rows


def print_summary(cfg: RunConfig, result: dict[str, Any], base: dict[str, Any] | None) -> None:
    m = result["metrics"]
    title = " · ".join(run_title_parts(cfg.to_dict(), m))
    t = Table(title=title)
    t.add_column("metric")
    if base:
        t.add_column("undefended", justify="right")
        t.add_column("+".join(cfg.defense), justify="right")
    else:
        t.add_column("value", justify="right")
    digits = {label: d for label, _, d in SUMMARY_ROWS}
    for row in summary_rows(result, base):
        t.add_row(row[0], *[rpt.fmt(v, digits[row[0]]) if isinstance(v, float) else rpt.fmt(v)
                            for v in row[1:]])
    console.print(t)
    for line in verdict_lines(cfg, result, base):
        if line.startswith("$ "):   # a command: one line, never wrapped, so it can be copied
            console.print("  " + line, soft_wrap=True, markup=False, highlight=False)
        else:
            console.print(line, markup=False)


def verdict_lines(cfg: RunConfig, result: dict[str, Any], base: dict[str, Any] | None) -> list[str]:
    """Plain-language lines: what the defense cost and bought; where to look next. A line
    starting with hints.PROMPT is a command built from this run's own settings."""
    from slsec.report.hints import PROMPT, frontier_command, keep_labels_command
    m = result["metrics"]
    lines = []
    if m.get("labels_sent_to_server"):
        ushaped = keep_labels_command(cfg)
        lines.append("Labels are sent to the server in this protocol: label leakage is 100%."
                     + (" U-shaped SL keeps the labels on the client:" if ushaped else ""))
        if ushaped:
            lines.append(PROMPT + ushaped)
    lines += beyond_prior_lines(m, base["metrics"] if base else None)
    if m.get("malicious_server"):
        stop = m.get("hijack_converged_at")
        lines.append(f"The server was malicious ({cfg.attack}): for {m.get('hijack_steps')} client "
                     "steps it returned crafted gradients instead of the task's"
                     + (f" (its own signal said the hijack converged at step {stop}; it sent zero "
                        "gradients after that)" if stop and stop < m.get("hijack_steps", 0) else "")
                     + ", so the client's head was trained towards the server's feature space, "
                     "not on the task: a hijacked run does not learn the task. The "
                     "server's tail still trained on the hijacked features: test accuracy of the "
                     f"assembled model {m.get('accuracy', float('nan')):.3f} says how much task "
                     "information those features kept, not that the client learned the task.")
    if not base:
        return lines
    b = base["metrics"]
    acc, acc0 = _num(m.get("accuracy")), _num(b.get("accuracy"))
    if acc < 0.5 * acc0:
        lines.append(f"The defense costs more than half of the undefended accuracy "
                     f"({acc0:.3f} → {acc:.3f}). {frontier_hint(cfg, acc0)}")
    for key, name in (("attack_ssim_mean", "SSIM"), ("label_auc", "label AUC")):
        if m.get(key) is not None and b.get(key) is not None:
            lines.append(f"Attack {name}: {b[key]:.3f} undefended → {m[key]:.3f} defended; "
                         f"accuracy {acc0:.3f} → {acc:.3f}.")
    sweep_cmd = frontier_command(cfg)
    if sweep_cmd:
        lines += ["Map this defense's privacy/utility frontier:", PROMPT + sweep_cmd]
    return lines


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")


def beyond_prior_lines(m: dict[str, Any], b: dict[str, Any] | None) -> list[str]:
    """Leakage beyond what the attacked role already holds, re-identification, DP bound."""
    from slsec.privacy import reid_bound
    if "ssim_gain_mean" not in m:
        return []
    role = m.get("attack_role", "attacker")
    src = {"held": "the labels it received", "predicted": "labels it predicts",
           "none": "no labels"}.get(m.get("prior_label_source", "none"), "no labels")
    acc = (f" (label-prediction accuracy {m['prior_label_accuracy']:.3f})"
           if "prior_label_accuracy" in m else "")
    was = (f"{b['ssim_gain_mean']:.3f} undefended → " if b and "ssim_gain_mean" in b else "")
    head = (f"Leakage beyond what the {role} already holds: its prior (public aux data and "
            f"{src}{acc}) reaches SSIM {m['prior_ssim_mean']:.3f} without inverting; ")
    if m.get("attack_method") == "prior" or m["ssim_gain_mean"] <= 1e-9:
        undefended = (f"; undefended: {b['ssim_gain_mean']:.3f}"
                      if b and "ssim_gain_mean" in b else "")
        lines = [head + f"here no inversion beats it (SSIM gain {m['ssim_gain_mean']:.3f}"
                        f"{undefended}): nothing measurable leaks beyond what the {role} "
                        f"already holds."]
    else:
        lines = [head + f"the {m.get('attack_method')} reconstruction gains "
                        f"{was}{m['ssim_gain_mean']:.3f} SSIM over it."]
    if "reid_top1" in m:
        n = int(m["reid_candidates"])
        was = (f"{b['reid_top1']:.3f} undefended → " if b and "reid_top1" in b else "")
        lines.append(f"Re-identification: top-1 {was}{m['reid_top1']:.3f} among {n} candidates "
                     f"(chance {m['reid_chance_top1']:.4f}, {m['reid_top1'] / m['reid_chance_top1']:.1f}× "
                     f"chance), top-5 {m['reid_top5']:.3f} (chance {m['reid_chance_top5']:.4f}).")
        if "label_guess_bound" in m and "reid_bound" not in m:
            lines.append(f"Label DP bounds guessing a label (at most "
                         f"{m['label_guess_bound']:.3f} with prior 1/classes); it puts no bound "
                         f"on re-identifying the inputs.")
        if m.get("reid_top1_by_method"):
            lines.append("Top-1 re-identification by method: " + ", ".join(
                f"{k} {v:.3f}" for k, v in m["reid_top1_by_method"].items()) + ".")
        if "reid_bound" in m:
            lines.append(reid_bound.describe(m["reid_bound"], m["reid_top1"], n)
                         + (f" From (ε, δ) alone (e^ε/N + δ): {m['reid_bound_eps_delta']:.4g}"
                            + (" (vacuous)." if m["reid_bound_eps_delta"] >= 1 else ".")
                            if "reid_bound_eps_delta" in m else "")
                         + (f" The probe's own release (one DP-SGD step on a batch it is in, "
                            f"not subsampled) allows at most {m['reid_bound_probe_release']:.4f}."
                            if "reid_bound_probe_release" in m else ""))
    return lines


def frontier_hint(cfg: RunConfig, acc0: float) -> str:
    """Point to the measured strength range and cut keeping >= 90% accuracy (from earlier
    sweeps of the same protocol, data and defense), or say where the useful values lie."""
    from slsec.defenses.base import DEFENSES
    from slsec.report.results import read_rows
    param = next((DEFENSES.get(d).sweep_param for d in cfg.defense
                  if d in DEFENSES.names() and DEFENSES.get(d).sweep_param), None)
    if param is None:
        return "No strength parameter to tune: compare with the undefended run below."
    good: dict[str, list[float]] = {}
    for csv_path in Path(cfg.out).glob("*/results.csv"):
        for r in read_rows(csv_path):
            try:
                same = (r.get("protocol") == cfg.protocol and r.get("dataset") == cfg.dataset
                        and r.get("model_name") == cfg.model_name
                        and r.get("defense") == ",".join(cfg.defense)
                        and r.get(param) not in (None, ""))
                if same and float(r["accuracy"]) >= 0.9 * acc0:
                    good.setdefault(r.get("cut") or "-", []).append(float(r[param]))
            except (KeyError, ValueError):
                continue
    flag = "--" + param.replace("_", "-")
    if good:
        parts = [(f"cut {c}: " if c != "-" else "") + f"{flag} <= {max(s):g}"
                 for c, s in sorted(good.items())]
        return "Measured frontier keeping >= 90% accuracy: " + "; ".join(parts) + "."
    if param == "sigma":
        return ("Useful sigma values are small (noise sigma*C per coordinate vs a clipped "
                "signal of about C/sqrt(d)).")
    return f"A weaker {flag} keeps more accuracy."


def run_title_parts(cfg: dict[str, Any], m: dict[str, Any]) -> list[str]:
    """protocol · data/model · cut(s) · attack (method, role): only the fields this run has."""
    from slsec.config import DATASET_MODELS
    model = cfg.get("model") or DATASET_MODELS.get(cfg["dataset"], "cnn")
    parts = [cfg["protocol"], f"{cfg['dataset']}/{model}"]
    if m.get("cuts"):
        parts.append(f"cut{'s' if len(m['cuts']) > 1 else ''} {','.join(m['cuts'])}")
    if cfg.get("attack"):
        who = ", ".join(str(v) for v in (m.get("attack_method"), m.get("attack_role")) if v)
        parts.append(f"attack {cfg['attack']}" + (f" ({who})" if who else ""))
    return parts
