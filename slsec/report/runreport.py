"""The files of one evaluation: result.json, the reconstruction grid, report.md and
report.html (with the threat model, the verdict and a section per defense)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slsec import report as rpt
from slsec.report.console import console
from slsec.report.results import write_json
from slsec.run.result import Reconstructions, RunResult
from slsec.report.summary import NEAR_CHANCE, SUMMARY_ROWS, beyond_prior_lines, shown


def write_run(folder: Path, result: RunResult, base: dict[str, Any] | None,
              base_images: dict[str, Any] | None = None, *, force: bool = False) -> None:
    """result.json + reconstructions.png + report.md + report.html for one evaluation.
    `base`: the undefended twin as stored; `base_images`: its cached reconstructions."""
    from slsec.report.folders import keeping, mark
    from slsec.report.results import finite
    stored = result.to_dict()
    if base:
        stored["undefended"] = base
    with keeping(f"nothing of this run was kept in {folder}; free space and run it again"):
        moved = mark(folder, "run", force=force)
        write_json(folder / "result.json", stored)
    if moved:
        console.print(f"--force: the earlier files of {folder.name} are kept in {moved}")
    with keeping(f"{folder / 'result.json'} is kept; free space and run: slsec report {folder}"):
        if result.reconstructions is not None:
            grid_rows(folder / "reconstructions.png", stored, result.reconstructions, base_images)
        render_run(folder, finite(stored))


def grid_rows(path: Path, stored: dict[str, Any], shown: Reconstructions,
              base_images: dict[str, Any] | None) -> None:
    """reconstructions.png: original / prior / undefended attack / defended attack, the same
    probes in every column, each row labelled with what produced it and its mean SSIM."""
    from slsec.report.plots import reconstruction_rows
    m, base = stored["metrics"], stored.get("undefended")
    defense = "+".join(stored["config"].get("defense") or []) or None
    images, prior = shown.images, shown.prior

    def label(what: str, method: Any, ssim: Any) -> str:
        return f"{what}: {method}\nSSIM {ssim:.2f}" if isinstance(ssim, float) else f"{what}: {method}"
    rows: list[tuple[str, Any]] = [("original", shown.inputs)]
    if prior is not None:
        rows.append((label("prior", m.get("prior_label_source", "") + " label"
                           if m.get("prior_label_source") != "none" else "no label",
                           m.get("prior_ssim_mean")), prior))
    bi = (base_images or {}).get("images")
    if base and bi is not None and len(bi) == len(images):
        bm = base["metrics"]
        rows.append((label("undefended", bm.get("attack_method"), bm.get("attack_ssim_mean")), bi))
    rows.append((label(defense or "attack", m.get("attack_method"), m.get("attack_ssim_mean")),
                 images))
    reconstruction_rows(rows, path, title=f"{len(rows) - 1} guesses of the same private "
                                          f"inputs (top row)")


def render_run(folder: Path, stored: dict[str, Any]) -> None:
    """Render report.md/html from a stored result.json (also used by `slsec report`)."""
    cfg, m = stored["config"], stored["metrics"]
    base = stored.get("undefended")
    cuts = f"cut{'s' if len(m['cuts']) > 1 else ''} {', '.join(m['cuts'])}, " if m.get("cuts") else ""
    blocks: list[tuple] = [("p", f"Protocol {cfg['protocol']} on {cfg['dataset']}, {cuts}"
                                 f"{cfg['clients']} clients "
                                 f"({cfg['partition']}), {cfg['rounds']} round(s), seed {cfg['seed']}, "
                                 f"backend {cfg['backend']}.")]
    header = ["metric", "undefended", "+".join(cfg["defense"])] if base else ["metric", "value"]
    rows = [[label] + ([shown(base["metrics"], key)] if base else []) + [shown(m, key)]
            for label, key, _ in SUMMARY_ROWS if key in m or (base and key in base["metrics"])]
    blocks.insert(0, ("p", verdict_paragraph(cfg, m, base["metrics"] if base else None)))
    blocks += [("h", "Summary"), ("table", header, rows)]
    if m.get("attack_kind"):
        blocks += [("h", "Threat model"), ("p", threat_text(cfg, m))]
    for heading, text in defense_sections(cfg, m):
        blocks += [("h", heading), ("p", text)]
    prior_lines = beyond_prior_lines(m, base["metrics"] if base else None)
    if prior_lines:
        blocks += [("h", "Leakage beyond the prior"), *[("p", line) for line in prior_lines],
                   ("p", "The prior is the attacker's best guess without inverting anything, from "
                         "what its role holds (see attacks/prior.py); gain = per-probe attack "
                         "minus prior SSIM, averaged. Re-identification ranks each probe's true "
                         "image among N candidates (the probes, every other test image, and "
                         "training images outside the aux set; the same for every method) by "
                         "Pearson correlation with the reconstruction.")]
    if "baseline_ssim_mean" in m:
        blocks += [("p", f"Baseline (guess the training-set mean image): SSIM "
                         f"{rpt.fmt(m['baseline_ssim_mean'], 3)}, PSNR {rpt.fmt(m['baseline_psnr_mean'], 2)} dB.")]
    if "label_baseline_accuracy" in m:
        blocks += [("p", f"Baseline (guess the majority public label): accuracy "
                         f"{rpt.fmt(m['label_baseline_accuracy'], 3)}.")]
    from slsec.report.plots import training_curves
    label = "+".join(cfg["defense"]) or "this run"
    curves = training_curves({**({"undefended": base.get("curve", [])} if base else {}),
                              label: stored.get("curve", [])},
                             folder / "training_curves.png",
                             title="training curves" + (" (both runs of the twin)" if base else ""))
    blocks += [("h", "Training curves")]
    if curves is not None:
        blocks.append(("img", str(curves), "test accuracy and loss against round and against "
                                           "training wall-clock" + (", defended run and its "
                                                                     "undefended twin" if base else "")))
    blocks.append(("table", ["round", "test acc", "loss", "wall-clock s", "MB"],
                   [[r["round"], r["accuracy"], r["loss"], r["wall_s"],
                      r["bytes"] / 1e6 if isinstance(r["bytes"], (int, float)) else None]
                    for r in stored.get("curve", [])]))
    blocks.append(("p", f"Rounds to convergence: first round reaching "
                        f"{fmt_thr(m.get('convergence_threshold'))} accuracy "
                        f"({'the configured --target-accuracy' if cfg.get('target_accuracy') else '98% of the best accuracy of the run'})"
                        + ("; \"not reached\" when the best accuracy stays within "
                           f"{NEAR_CHANCE:.0%} of chance ({fmt_thr(m.get('chance_accuracy'))}), "
                           "where that round says nothing" if "chance_accuracy" in m else "")
                        + "."))
    if (folder / "reconstructions.png").exists():
        blocks.append(("img", str(folder / "reconstructions.png"),
                       "private inputs (top) vs the prior and the reconstructions (rows below)"))
    versions = stored.get("versions") or {}
    blocks.append(("p", "Versions: " + (", ".join(f"{k} {v}" for k, v in versions.items())
                                        or "not recorded") + "."))
    rpt.write_document(folder, f"slsec evaluation: {cfg['protocol']} / {cfg.get('attack') or 'no attack'}"
                               f" / {'+'.join(cfg['defense']) or 'no defense'}", blocks)


def fmt_thr(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else "–"


def threat_text(cfg: dict[str, Any], m: dict[str, Any]) -> str:
    compared = ""
    if m.get("methods_compared"):
        key = next(k for k in ("attack_ssim_mean_by_method", "label_auc_by_method", *m)
                   if k in m and k.endswith("_by_method"))
        scores = ", ".join(f"{k} {v:.3f}" for k, v in m[key].items() if v is not None)
        names = m["methods_compared"].split(",")
        ran = " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
        compared = (f" No method is strongest everywhere, so {ran} each ran "
                    f"on the same observations and the one that leaked most is reported "
                    f"({key.removesuffix('_by_method').replace('_', ' ')}: {scores}).")
    return (f"Attack '{cfg['attack']}' with method '{m['attack_method']}' plays the "
            f"{m['attack_role']} (honest-but-curious) and uses only what that role observed during "
            f"the run plus its knowledge: {', '.join(m['attack_knowledge'])}. Ground truth never "
            f"reaches the attack; the scorer compares afterwards. The attack knows the public "
            f"mechanism of every defense (clip rule, noise scale) and adapts to it." + compared)


def verdict_paragraph(cfg: dict[str, Any], m: dict[str, Any], b: dict[str, Any] | None) -> str:
    """The report's opening paragraph: what leaked, what the defense bought and cost."""
    def f(v: Any, d: int = 3) -> str:
        return rpt.fmt(v, d) if isinstance(v, float) else rpt.fmt(v)
    defense = "+".join(cfg.get("defense") or []) or "no defense"
    parts = [f"Verdict: {cfg['protocol']} with {defense}"
             + (f", attacked by {cfg['attack']} ({m.get('attack_method')}, as the "
                f"{m.get('attack_role')})" if cfg.get("attack") else "") + "."]
    leak = next(((k, n) for k, n in (("attack_ssim_mean", "attack SSIM"),
                                     ("label_auc", "label-inference AUC")) if k in m), None)
    if leak and b and leak[0] in b:
        parts.append(f"The {leak[1]} went from {f(b[leak[0]])} undefended to {f(m[leak[0]])} "
                     f"defended, while test accuracy went from {f(b.get('accuracy'))} to "
                     f"{f(m.get('accuracy'))}.")
    elif leak:
        parts.append(f"The {leak[1]} is {f(m[leak[0]])} at test accuracy {f(m.get('accuracy'))}.")
    else:
        parts.append(f"Test accuracy {f(m.get('accuracy'))}.")
    if leak and leak[0] == "attack_ssim_mean" and isinstance(m.get(leak[0]), float):
        parts.append("Inputs remain identifiable (SSIM > 0.5)." if m[leak[0]] > 0.5 else
                     "Reconstructions are no longer identifiable (SSIM ≤ 0.5).")
    if isinstance(m.get("ssim_gain_mean"), float) and isinstance(m.get("prior_ssim_mean"), float):
        parts.append(f"Beyond what the {m.get('attack_role') or 'attacker'} already holds (its "
                     f"prior reaches SSIM {f(m['prior_ssim_mean'])} without inverting), the "
                     f"reconstruction gains {f(m['ssim_gain_mean'])} SSIM"
                     + (f"; top-1 re-identification {f(m['reid_top1'])} among "
                        f"{int(m['reid_candidates'])} candidates (chance "
                        f"{f(m['reid_chance_top1'], 4)})" if isinstance(m.get("reid_top1"), float)
                        and m.get("reid_candidates") else "") + ".")
    if isinstance(m.get("epsilon"), float):
        parts.append(f"Formal guarantee: ε = {f(m['epsilon'])} at δ = {m.get('delta', 0):g}.")
    if m.get("labels_sent_to_server"):
        parts.append("Labels reach the server in the clear (100% label leakage).")
    return " ".join(parts)


def defense_sections(cfg: dict[str, Any], m: dict[str, Any]) -> list[tuple[str, str]]:
    """(heading, text) from each defense that ran: its mechanism, sensitivity, what ε covers."""
    import slsec.defenses  # noqa: F401  (registers defenses)
    from slsec.defenses.base import DEFENSES
    return [DEFENSES.get(d).report_text(cfg, m) for d in cfg.get("defense") or []
            if d in DEFENSES.names()]


def dp_text(cfg: dict[str, Any], m: dict[str, Any]) -> str:
    return (f"epsilon = {rpt.fmt(m['epsilon'], 3)} at delta = {m['delta']:g} per training sample "
            f"({m.get('accountant_dp', cfg['accountant'])} accountant"
            + (f"; RDP gives {rpt.fmt(m['epsilon_rdp'], 3)}" if "epsilon_rdp" in m else "")
            + "). DP at the cut: replace-one adjacency; each sample's "
            f"smashed tensor is clipped to L2 norm C"
            + (f" = {rpt.fmt(m['clip_used'], 4)}" if "clip_used" in m else "")
            + (" (the median row norm of public aux data at the cut)" if cfg.get("clip") is None
               and "clip_used" in m else "")
            + f", so one sample changes a release by at most 2C; "
            f"Gaussian noise of std sigma*C is noise multiplier sigma/2 for that sensitivity; every "
            f"sample is released once per epoch (no subsampling amplification). The claim covers "
            f"the smashed data only: not the labels, the returned gradients or the model.")
