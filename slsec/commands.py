"""What each CLI command does (the CLI module only parses options)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slsec import report as rpt
from slsec.config import RunConfig
from slsec.errors import UserError
from slsec.results import check_writable, config_key, read_json, write_json

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)

DEFENSE_FIELDS = ("defense", "sigma", "clip", "mechanism", "target_epsilon", "nopeek_weight",
                  "label_epsilon", "max_grad_norm", "noise_multiplier", "accountant")

# (label, metric key, digits) rows of the evaluate summary
SUMMARY_ROWS = [
    ("test accuracy", "accuracy", 4),
    ("attack SSIM (mean)", "attack_ssim_mean", 3),
    ("attack PSNR dB (mean)", "attack_psnr_mean", 2),
    ("identifiable (SSIM>0.5)", "attack_identifiable", 3),
    ("label attack accuracy", "label_accuracy", 3),
    ("label attack AUC", "label_auc", 3),
    ("label leak (labels sent)", "label_leak", 2),
    ("epsilon", "epsilon", 3),
    ("rounds", "rounds", 0),
    ("rounds to convergence", "rounds_to_convergence", 0),
    ("train wall-clock s", "train_seconds", 1),
    ("MB on wire", "mb_on_wire", 2),
]


def _is_main_rank(cfg: RunConfig) -> bool:
    if cfg.backend != "mpi":
        return True
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank() == 0


def progress_bar(cfg: RunConfig, label: str) -> tuple[Progress, Any]:
    """A per-round progress bar on rank 0 (quiet when stderr is not a terminal)."""
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                   transient=True, disable=not err.is_terminal or not _is_main_rank(cfg))
    task = bar.add_task("", total=cfg.rounds)

    def on_round(rec: Any) -> None:
        bar.update(task, advance=1, description=f"acc {rec.accuracy:.3f}")
    return bar, on_round


def step_progress(cfg: RunConfig, bar: Progress) -> Any:
    """Malicious attacks act at every client step: a second task on `bar` over the steps, or
    (stderr not a terminal) a plain line every 10% of them; None for other attacks."""
    from slsec.harness import attack_class
    cls = attack_class(cfg)
    if cls is None or not cls.malicious or not _is_main_rank(cfg):
        return None
    task = bar.add_task(f"{cls.name}: client steps", total=None)

    def on_step(step: int, total: int) -> None:
        bar.update(task, completed=step, total=total)
        if not err.is_terminal and total and step % max(1, total // 10) == 0:
            err.print(f"{cls.name}: client step {step}/{total}")
    return on_step


def run_id(cfg: RunConfig) -> str:
    if cfg.run_id:
        return cfg.run_id
    parts = [cfg.protocol, cfg.attack or "train", "+".join(cfg.defense) or "none",
             time.strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def list_registry() -> None:
    """Print every registry: what the CLI accepts."""
    import slsec.attacks  # noqa: F401
    from slsec.attacks.base import ATTACKS
    from slsec.data import DATASETS
    from slsec.defenses.base import DEFENSES
    from slsec.models import MODELS, build_model
    from slsec.protocols.base import PROTOCOLS

    t = Table(title="protocols")
    t.add_column("name"), t.add_column("cuts"), t.add_column("labels reach the server")
    for name, p in PROTOCOLS:
        t.add_row(name, str(p.cuts_needed), "yes (100% leak)" if p.labels_to_server else "no")
    console.print(t)
    t = Table(title="attacks")
    t.add_column("name"), t.add_column("role per protocol"), t.add_column("methods (needs)")
    for name, a in ATTACKS:
        t.add_row(name, ", ".join(f"{p}: {r}" for p, r in sorted(a.roles.items())),
                  "; ".join(f"{m} ({', '.join(sorted(k))})" for m, k in a.methods.items()))
    console.print(t)
    t = Table(title="defenses")
    t.add_column("name"), t.add_column("point"), t.add_column("protocols")
    for name, d in DEFENSES:
        t.add_row(name, d.point, ", ".join(sorted(d.protocols)))
    console.print(t)
    console.print("datasets: " + ", ".join(DATASETS.names()) + ", tu:<NAME>")
    t = Table(title="models and cut points")
    t.add_column("model"), t.add_column("cut points (shallow → deep)")
    shapes = {"cnn": dict(input_shape=(1, 28, 28)), "resnet18": dict(input_shape=(3, 32, 32)),
              "gin": dict(num_features=7)}
    for name, _ in MODELS:
        t.add_row(name, ", ".join(build_model(name, num_classes=10, **shapes.get(name, {})).cut_points))
    console.print(t)


def train(cfg: RunConfig) -> dict[str, Any] | None:
    """Train only; print the curve and write result.json + report."""
    from slsec.harness import evaluate as run
    check_writable(cfg.out)
    bar, on_round = progress_bar(cfg, "train")
    with bar:
        result = run(cfg.replace(attack=None), progress=on_round)
    if result is None:
        return None
    t = Table(title=f"{cfg.protocol} on {cfg.dataset} ({cfg.model_name}), cuts {result['metrics']['cuts']}")
    for c in ("round", "test acc", "loss", "wall-clock s", "MB on wire"):
        t.add_column(c, justify="right")
    for r in result["curve"]:
        t.add_row(str(r["round"]), f"{r['accuracy']:.4f}", f"{r['loss']:.4f}",
                  f"{r['wall_s']:.1f}", f"{r['bytes'] / 1e6:.2f}")
    console.print(t)
    m = result["metrics"]
    console.print(f"rounds to convergence: {m['rounds_to_convergence']} "
                  f"(first round with accuracy >= {m['convergence_threshold']:.4f}: "
                  f"{'--target-accuracy' if cfg.target_accuracy else '98% of the best accuracy'})")
    folder = Path(cfg.out) / run_id(cfg)
    write_run(folder, result, None)
    console.print(f"report: {folder}/report.html")
    return result


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The same run without any defense (same seed, data, cut, attack)."""
    return cfg.replace(defense=(), sigma=None, clip=None, target_epsilon=None)


def baseline_path(cfg: RunConfig) -> Path:
    return Path(cfg.out) / ".cache" / f"undefended-{config_key(baseline_config(cfg).to_dict())}.json"


def cached_baseline(cfg: RunConfig, progress: Any = None) -> dict[str, Any]:
    """The undefended run of this config and seed, computed once and cached under <out>/.cache."""
    from slsec.harness import evaluate as run
    base = baseline_config(cfg)
    path = baseline_path(cfg)
    if path.exists():
        try:
            return read_json(path)
        except UserError:
            path.unlink(missing_ok=True)
    result = run(base, progress=progress)
    if result is not None:
        write_json(path, {k: v for k, v in result.items() if not k.startswith("_")})
    return result  # type: ignore[return-value]


def command_seconds(fallback_start: float) -> float:
    """Seconds since this process started (Linux /proc), else since `fallback_start`."""
    import os
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])   # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - fallback_start


def start_baseline(cfg: RunConfig) -> Any:
    """Start the uncached undefended run in a second process, beside the defended run (local
    backend: both are single-threaded, so two cores finish both in the time of one). The child
    only writes the cache file (atomically); same seed and threads, so its numbers equal an
    in-process run."""
    if not cfg.defense or cfg.backend != "local" or baseline_path(cfg).exists():
        return None
    import multiprocessing
    # spawn, not fork: a forked child inherits torch's runtime state and ran slower here
    # (card: 72 s with fork vs 66 s with spawn, measured side by side on 2 idle cores)
    proc = multiprocessing.get_context("spawn").Process(
        target=_baseline_worker, args=(cfg.to_dict(),), daemon=True, name="slsec-undefended")
    proc.start()
    return proc


def _baseline_worker(values: dict[str, Any]) -> None:
    import os
    import sys
    from slsec.config import make_config
    devnull = os.open(os.devnull, os.O_WRONLY)   # the parent reports; a failure here is retried there
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        cached_baseline(make_config(values))
    except BaseException:
        sys.exit(1)


def evaluate(cfg: RunConfig) -> dict[str, Any] | None:
    """The card's command: defended run beside the cached undefended run of the same seed."""
    from slsec.harness import check_attack, evaluate as run
    from slsec.setup import check_defenses

    check_writable(cfg.out)
    # start the undefended run first, so its start-up overlaps ours (a bad config fails below
    # with one line; the daemon child dies with us)
    side = start_baseline(cfg) if "split-select" not in cfg.defense else None
    check_attack(cfg)
    check_defenses(cfg)
    if "split-select" in cfg.defense:
        cfg = choose_cut(cfg)
        side = start_baseline(cfg)
    t0 = time.perf_counter()
    bar, on_round = progress_bar(cfg, "defended" if cfg.defense else "train")
    with bar:
        result = run(cfg, progress=on_round, on_step=step_progress(cfg, bar))
    base = None
    if side is not None:
        with console.status("waiting for the undefended run beside it"):
            side.join()
    if cfg.defense:
        bar, on_round = progress_bar(cfg, "undefended")
        with bar:  # reads the cache the side process wrote (computes it here if that failed)
            base = cached_baseline(cfg, on_round)
    if result is None:
        return None
    folder = Path(cfg.out) / run_id(cfg)
    write_run(folder, result, base)
    print_summary(cfg, result, base)
    console.print(f"wall-clock {command_seconds(t0):.1f} s (the whole command, start-up "
                  f"included) · report: {folder}/report.html")
    return result


def summary_rows(result: dict[str, Any], base: dict[str, Any] | None) -> list[list[Any]]:
    m, b = result["metrics"], (base or {}).get("metrics", {})
    rows = []
    for label, key, _ in SUMMARY_ROWS:
        if key in m or key in b:
            rows.append([label, b.get(key) if base else None, m.get(key)] if base else [label, m.get(key)])
    return rows


def print_summary(cfg: RunConfig, result: dict[str, Any], base: dict[str, Any] | None) -> None:
    m = result["metrics"]
    title = (f"{cfg.protocol} · {cfg.dataset}/{cfg.model_name} · cut {','.join(m['cuts'])} · "
             f"attack {cfg.attack or '-'}"
             + (f" ({m.get('attack_method')}, {m.get('attack_role')})" if cfg.attack else ""))
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
        console.print(line)


def verdict_lines(cfg: RunConfig, result: dict[str, Any], base: dict[str, Any] | None) -> list[str]:
    """Plain-language lines: what the defense cost and bought; where to look if it cost too much."""
    m = result["metrics"]
    lines = []
    if m.get("labels_sent_to_server"):
        lines.append("Labels are sent to the server in this protocol: label leakage is 100% "
                     "(use --protocol ushaped to keep labels on the client).")
    if m.get("malicious_server"):
        lines.append(f"The server was malicious ({cfg.attack}): for {m.get('hijack_steps')} client "
                     "steps it returned crafted gradients instead of the task's, so the client's "
                     "head was trained towards the server's feature space, not on the task. The "
                     "server's tail still trained on the hijacked features: test accuracy of the "
                     f"assembled model {m.get('accuracy', float('nan')):.3f} says how much task "
                     "information those features kept, not that the client learned the task.")
    if not base:
        return lines
    b = base["metrics"]
    acc, acc0 = m.get("accuracy", float("nan")), b.get("accuracy", float("nan"))
    if acc < 0.5 * acc0:
        lines.append(f"The defense costs more than half of the undefended accuracy "
                     f"({acc0:.3f} → {acc:.3f}). {frontier_hint(cfg, acc0)}")
    for key, name in (("attack_ssim_mean", "SSIM"), ("label_auc", "label AUC")):
        if key in m and key in b:
            lines.append(f"Attack {name}: {b[key]:.3f} undefended → {m[key]:.3f} defended; "
                         f"accuracy {acc0:.3f} → {acc:.3f}.")
    return lines


def frontier_hint(cfg: RunConfig, acc0: float) -> str:
    """Point to the measured sigma range and cut keeping >= 90% accuracy, or to `slsec sweep`."""
    from slsec.results import read_rows
    good: dict[str, list[float]] = {}
    for csv_path in Path(cfg.out).glob("*/results.csv"):
        for r in read_rows(csv_path):
            try:
                same = (r.get("protocol") == cfg.protocol and r.get("dataset") == cfg.dataset
                        and r.get("model_name") == cfg.model_name and r.get("sigma") not in (None, ""))
                if same and float(r["accuracy"]) >= 0.9 * acc0:
                    good.setdefault(r.get("cut", "?"), []).append(float(r["sigma"]))
            except (KeyError, ValueError):
                continue
    if good:
        parts = [f"cut {c}: sigma <= {max(s):g}" for c, s in sorted(good.items())]
        return "Measured frontier keeping >= 90% accuracy: " + "; ".join(parts) + "."
    return ("Useful sigma values are small (noise sigma*C per coordinate vs a clipped signal of "
            "about C/sqrt(d)); map the frontier with: slsec sweep --protocol "
            f"{cfg.protocol} --attack {cfg.attack or 'inversion'} --defense dp "
            "--sigma 0,0.005,0.01,0.02,0.05,0.1 --cut conv1,pool1,conv2,pool2,fc1")


def write_run(folder: Path, result: dict[str, Any], base: dict[str, Any] | None) -> None:
    """result.json + reconstructions.png + report.md + report.html for one evaluation."""
    from slsec.plots import reconstruction_grid
    guess, truth = result.get("_guess"), result.get("_truth")
    stored = {k: v for k, v in result.items() if not k.startswith("_")}
    if base:
        stored["undefended"] = {k: v for k, v in base.items() if not k.startswith("_")}
    write_json(folder / "result.json", stored)
    if guess is not None and guess["images"].numel():
        reconstruction_grid(truth[: len(guess["images"])], guess["images"],
                            folder / "reconstructions.png",
                            title=f"{result['metrics'].get('attack_method')} reconstructions "
                                  f"(top: private inputs, bottom: attack)")
    render_run(folder, stored)


def render_run(folder: Path, stored: dict[str, Any]) -> None:
    """Render report.md/html from a stored result.json (also used by `slsec report`)."""
    cfg, m = stored["config"], stored["metrics"]
    base = stored.get("undefended")
    blocks: list[tuple] = [("p", f"Protocol {cfg['protocol']} on {cfg['dataset']}, cuts "
                                 f"{', '.join(m['cuts']) or '-'}, {cfg['clients']} clients "
                                 f"({cfg['partition']}), {cfg['rounds']} round(s), seed {cfg['seed']}, "
                                 f"backend {cfg['backend']}.")]
    header = ["metric", "undefended", "+".join(cfg["defense"])] if base else ["metric", "value"]
    rows = [[label] + ([base["metrics"].get(key)] if base else []) + [m.get(key)]
            for label, key, _ in SUMMARY_ROWS if key in m or (base and key in base["metrics"])]
    blocks += [("h", "Summary"), ("table", header, rows)]
    if m.get("attack_kind"):
        blocks += [("h", "Threat model"), ("p", threat_text(cfg, m))]
    if "epsilon" in m:
        blocks += [("h", "Differential privacy"), ("p", dp_text(cfg, m))]
    if "baseline_ssim_mean" in m:
        blocks += [("p", f"Baseline (guess the training-set mean image): SSIM "
                         f"{m['baseline_ssim_mean']:.3f}, PSNR {m['baseline_psnr_mean']:.2f} dB.")]
    if "label_baseline_accuracy" in m:
        blocks += [("p", f"Baseline (guess the majority public label): accuracy "
                         f"{m['label_baseline_accuracy']:.3f}.")]
    blocks += [("h", "Training curve"), ("table", ["round", "test acc", "loss", "wall-clock s", "MB"],
                [[r["round"], r["accuracy"], r["loss"], r["wall_s"], r["bytes"] / 1e6]
                 for r in stored.get("curve", [])])]
    blocks.append(("p", f"Rounds to convergence: first round reaching "
                        f"{fmt_thr(m.get('convergence_threshold'))} accuracy "
                        f"({'the configured --target-accuracy' if cfg.get('target_accuracy') else '98% of the best accuracy of the run'})."))
    if (folder / "reconstructions.png").exists():
        blocks.append(("img", str(folder / "reconstructions.png"), "private inputs (top) vs reconstructions (bottom)"))
    blocks.append(("p", f"Versions: {stored.get('versions')}."))
    rpt.write_document(folder, f"slsec evaluation: {cfg['protocol']} / {cfg.get('attack') or 'no attack'}"
                               f" / {'+'.join(cfg['defense']) or 'no defense'}", blocks)


def fmt_thr(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else "–"


def threat_text(cfg: dict[str, Any], m: dict[str, Any]) -> str:
    compared = ""
    if m.get("methods_compared"):
        key = next(k for k in m if k.endswith("_by_method"))
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


def dp_text(cfg: dict[str, Any], m: dict[str, Any]) -> str:
    return (f"epsilon = {m['epsilon']:.3f} at delta = {m['delta']:g} per training sample "
            f"({cfg['accountant']} accountant). DP at the cut: replace-one adjacency; each sample's "
            f"smashed tensor is clipped to L2 norm C"
            + (f" = {m['clip_used']:.4g}" if "clip_used" in m else "")
            + (" (the median row norm of public aux data at the cut)" if cfg.get("clip") is None
               and "clip_used" in m else "")
            + f", so one sample changes a release by at most 2C; "
            f"Gaussian noise of std sigma*C is noise multiplier sigma/2 for that sensitivity; every "
            f"sample is released once per epoch (no subsampling amplification). The claim covers "
            f"the smashed data only: not the labels, the returned gradients or the model.")


# --------------------------------------------------------------------------- split selection

def choose_cut(cfg: RunConfig) -> RunConfig:
    """Run adversarial split-point selection first and continue with the cut it picks."""
    from slsec.defenses.split_selection import select_split
    ranking = select_split(cfg.replace(defense=tuple(d for d in cfg.defense if d != "split-select")))
    console.print(f"split-select chose cut {ranking.chosen}: {ranking.reason}")
    return cfg.replace(cut=ranking.chosen, defense=tuple(d for d in cfg.defense if d != "split-select"))


def sweep(config: str | None, flags: dict[str, Any], *, resume: bool) -> None:
    from slsec.sweep import run_sweep
    run_sweep(config, flags, resume=resume)


def review(cfg: RunConfig, *, min_accuracy: str | None, max_client_flops: str | None) -> None:
    from slsec.review import run_review
    run_review(cfg, min_accuracy=min_accuracy, max_client_flops=max_client_flops)


def rerender(path: str) -> None:
    folder = Path(path)
    if (folder / "result.json").exists():
        render_run(folder, read_json(folder / "result.json"))
    elif (folder / "leakage_by_cut.png").exists():
        raise UserError(f"{folder} is a security review: rerun slsec review to refresh it "
                        f"(its rows need the budgets it was run with)")
    elif (folder / "results.csv").exists() and folder.name.startswith("benchmark-"):
        from slsec.benchmark import render_benchmark
        render_benchmark(folder)
    elif (folder / "results.csv").exists():
        from slsec.sweep import render_sweep
        render_sweep(folder)
    else:
        raise UserError(f"{folder} holds neither result.json nor results.csv")
    console.print(f"report: {folder}/report.html")


def benchmark(config: str | None, flags: dict[str, Any]) -> None:
    from slsec.benchmark import run_benchmark
    run_benchmark(config, flags)
