"""What each CLI command does (the CLI module only parses options)."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
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
    ("prior SSIM (mean, no inversion)", "prior_ssim_mean", 3),
    ("SSIM gain over prior", "ssim_gain_mean", 3),
    ("attack PSNR dB (mean)", "attack_psnr_mean", 2),
    ("prior PSNR dB (mean)", "prior_psnr_mean", 2),
    ("PSNR gain over prior dB", "psnr_gain_mean", 2),
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


def progress_bar(cfg: RunConfig, label: str) -> tuple[Any, Any]:
    """Training progress on rank 0, per batch of client 1 and per round, on stderr (a status
    line on a terminal, else plain lines at most once a second; see slsec.progress)."""
    import contextlib

    from slsec import progress
    name = "train" if label == "train" else f"train {label}"
    bar = progress.training(name) if _is_main_rank(cfg) else contextlib.nullcontext()

    def on_round(rec: Any) -> None:
        progress.tick(name, 0, note=f"round {rec.round}/{cfg.rounds} acc {rec.accuracy:.3f}")
    return bar, on_round


_JSON = {"on": False}


@contextlib.contextmanager
def json_stdout(on: bool) -> Iterator[None]:
    """--json: everything this module prints goes to stderr while the block runs; the command
    then prints its result object, alone, on stdout (see print_json)."""
    if not on:
        yield
        return
    before = console.file
    console.file = sys.stderr
    _JSON["on"] = True
    try:
        yield
    finally:
        console.file = before
        _JSON["on"] = False


def print_json(stored: dict[str, Any]) -> None:
    """The result object on stdout as strict JSON (non-finite numbers, e.g. ε = ∞, as null)."""
    import json

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    sys.stdout.write(json.dumps(clean(stored), indent=1, allow_nan=False) + "\n")
    sys.stdout.flush()


def step_progress(cfg: RunConfig, bar: Any = None) -> Any:
    """Malicious attacks act at every client step: their progress over the steps goes to the
    open training phase's note (slsec.progress); None for other attacks."""
    from slsec import progress
    from slsec.harness import attack_class
    cls = attack_class(cfg)
    if cls is None or not getattr(cls, "malicious", False) or not _is_main_rank(cfg):
        return None

    def on_step(step: int, total: int) -> None:
        progress.train_note(f"{cls.name}: client step {step}/{total}")
    return on_step


def run_id(cfg: RunConfig) -> str:
    if cfg.run_id:
        return cfg.run_id
    parts = [cfg.protocol, cfg.attack or "train", "+".join(cfg.defense) or "none",
             time.strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def list_registry() -> None:
    """Print every registry: what the CLI accepts (from slsec.catalog: no torch import)."""
    from slsec import catalog

    t = Table(title="protocols")
    t.add_column("name"), t.add_column("cuts"), t.add_column("labels reach the server")
    for name, (cuts, labels) in sorted(catalog.PROTOCOLS.items()):
        t.add_row(name, str(cuts), "yes (100% leak)" if labels else "no")
    console.print(t)
    t = Table(title="attacks")
    t.add_column("name"), t.add_column("role per protocol"), t.add_column("methods (needs)")
    for name, a in sorted(catalog.ATTACKS.items()):
        t.add_row(name, ", ".join(f"{p}: {r}" for p, r in sorted(a["roles"].items())),
                  "; ".join(f"{m} ({', '.join(sorted(k))})" for m, k in a["methods"].items()))
    console.print(t)
    t = Table(title="defenses")
    t.add_column("name"), t.add_column("point"), t.add_column("protocols")
    for name, (point, protocols) in sorted(catalog.DEFENSES.items()):
        t.add_row(name, point, ", ".join(sorted(protocols)))
    console.print(t)
    console.print("datasets: " + ", ".join(sorted(catalog.DATASETS)) + ", tu:<NAME>, images:<DIR>, npz:<FILE>")
    t = Table(title="models and cut points")
    t.add_column("model"), t.add_column("cut points (shallow → deep)")
    for name, cuts in sorted(catalog.MODELS.items()):
        t.add_row(name, ", ".join(cuts))
    console.print(t)


def train(cfg: RunConfig, *, force: bool = False) -> dict[str, Any] | None:
    """Train only; print the curve and write result.json + report."""
    from slsec.preflight import check_options, check_run
    check_options(cfg, "train")              # before the heavy imports: refused in a second
    if cfg.seeds > 1:
        raise UserError("--seeds applies to evaluate, sweep, review and benchmark; "
                        "train runs one seed (--seed)")
    check_writable(cfg.out)
    folder = run_folder(cfg, force)
    from slsec.harness import evaluate as run
    setup = check_run(cfg, "train")
    bar, on_round = progress_bar(cfg, "train")
    with bar:
        result = run(cfg.replace(attack=None), progress=on_round,
                     setup=setup if cfg.attack is None else None)
    if result is None:
        return None
    cuts = result["metrics"]["cuts"]
    t = Table(title=f"{cfg.protocol} on {cfg.dataset} ({cfg.model_name})"
                    + (f", cut{'s' if len(cuts) > 1 else ''} {','.join(cuts)}" if cuts else ""))
    for c in ("round", "test acc", "loss", "wall-clock s", "MB on wire"):
        t.add_column(c, justify="right")
    for r in result["curve"]:
        t.add_row(str(r["round"]), f"{r['accuracy']:.4f}", f"{r['loss']:.4f}",
                  f"{r['wall_s']:.1f}", f"{r['bytes'] / 1e6:.2f}")
    console.print(t)
    m = result["metrics"]
    console.print(f"rounds to convergence: {shown(m, 'rounds_to_convergence')} "
                  f"(first round with accuracy >= {m['convergence_threshold']:.4f}: "
                  f"{'--target-accuracy' if cfg.target_accuracy else '98% of the best accuracy'})")
    write_run(folder, result, None, force=force)
    console.print(f"report: {folder}/report.html")
    if _JSON["on"]:
        print_json(read_json(folder / "result.json"))
    return result


def run_folder(cfg: RunConfig, force: bool) -> Path:
    """This run's folder: an existing --run-id is refused unless --force (checked before any
    training; nothing is written until the result is ready)."""
    from slsec.folders import claim, unique_folder
    if not cfg.run_id:
        return unique_folder(cfg.out, run_id(cfg))
    folder = Path(cfg.out) / cfg.run_id
    claim(folder, "run", force=force)
    return folder


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The same run without any defense (same seed, data, cut, attack)."""
    return cfg.replace(defense=(), sigma=None, clip=None, target_epsilon=None)


def baseline_path(cfg: RunConfig) -> Path:
    from slsec.userdata import user_fingerprint  # a user's model file or data files changed
    key = config_key({**baseline_config(cfg).to_dict(), **user_fingerprint(cfg.model, cfg.dataset)})
    return Path(cfg.out) / ".cache" / f"undefended-{key}.json"


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
        guess = result.get("_guess") or {}
        if guess.get("images") is not None and guess["images"].numel():
            save_images(path.with_suffix(".pt"), {k: guess[k] for k in
                                                  ("images", "prior.images") if k in guess})
        write_json(path, {k: v for k, v in result.items() if not k.startswith("_")})
    return result  # type: ignore[return-value]


def save_images(path: Path, tensors: dict[str, Any]) -> None:
    """The undefended run's reconstructions beside its cached result (for the grid)."""
    import io

    import torch

    from slsec.results import atomic_write
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
    atomic_write(path, buf.getvalue())


def load_images(path: Path) -> dict[str, Any]:
    import torch
    try:
        return torch.load(path, weights_only=True) if path.exists() else {}
    except Exception:   # a damaged cache file only costs the grid its undefended row
        return {}


def command_seconds(fallback_start: float | None = None) -> float:
    """Seconds since this interpreter started slsec (`slsec.STARTED`, set by the package's
    first import, before any other slsec or torch import). Not the process start time: when a
    shell execs slsec as its last command (`bash -c '... && slsec ...'`), the process began
    with the shell and its earlier work would be counted too."""
    import slsec
    return time.perf_counter() - getattr(slsec, "STARTED", fallback_start or time.perf_counter())


def start_baseline(cfg: RunConfig) -> Any:
    """Start the uncached undefended run in a second process, beside the defended run (local
    backend: both are single-threaded, so two cores finish both in the time of one). The child
    only writes the cache file (atomically); same seed and threads, so its numbers equal an
    in-process run."""
    if not cfg.defense or cfg.backend != "local" or baseline_path(cfg).exists():
        return None
    import multiprocessing
    import os
    import tempfile

    from slsec import progress
    # spawn, not fork: a forked child inherits torch's runtime state and ran slower here
    # (card: 72 s with fork vs 66 s with spawn, measured side by side on 2 idle cores)
    fd, status = tempfile.mkstemp(prefix="slsec-undefended-", suffix=".progress")
    os.close(fd)
    proc = multiprocessing.get_context("spawn").Process(
        target=_baseline_worker, args=(cfg.to_dict(), status), daemon=True,
        name="slsec-undefended")
    proc.start()
    # the twin's progress, read from the file its reporter writes, shown beside ours
    proc.status_path = status   # type: ignore[attr-defined]
    proc.phase = progress.phase("undefended", external=progress.read_status(status))  # type: ignore[attr-defined]
    proc.phase.__enter__()   # type: ignore[attr-defined]
    return proc


def join_baseline(side: Any, failed: bool = False) -> None:
    """Wait for the twin, showing its progress; then close its phase and remove its file
    (`failed`: stop it and close its phase without a line: the error speaks for the run)."""
    import os

    from slsec import progress
    if failed:
        side.terminate()
    try:
        side.join()
    finally:
        if failed:
            progress.REPORTER.close("undefended", quiet=True)
        else:
            side.phase.__exit__(None, None, None)
        try:
            os.unlink(side.status_path)
        except OSError:
            pass


def _baseline_worker(values: dict[str, Any], status: str | None = None) -> None:
    import os
    import sys

    from slsec import progress
    from slsec.config import make_config
    devnull = os.open(os.devnull, os.O_WRONLY)   # the parent reports; a failure here is retried there
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    progress.REPORTER.file = status               # our progress goes to the parent through it
    try:
        with progress.training("train"):
            cached_baseline(make_config(values))
    except BaseException:
        sys.exit(1)


def evaluate(cfg: RunConfig, *, force: bool = False) -> dict[str, Any] | None:
    """The card's command: defended run beside the cached undefended run of the same seed."""
    from slsec.preflight import check_options, check_run
    check_options(cfg, "evaluate")           # before the heavy imports: refused in a second
    check_writable(cfg.out)
    folder = run_folder(cfg, force)          # named before split-select replaces the cut
    from slsec.harness import check_attack, evaluate as run
    from slsec.setup import check_defenses

    if cfg.seeds > 1:                # mean and 95% CI over seeds (slsec/seeds.py)
        from slsec.seeds import evaluate_seeds
        return evaluate_seeds(cfg, folder, force=force)
    # start the undefended run first, so its start-up overlaps ours (a bad config fails below
    # with one line; the daemon child dies with us)
    side = start_baseline(cfg) if "split-select" not in cfg.defense else None
    try:
        setup = check_run(cfg, "evaluate")
        check_attack(cfg)
        check_defenses(cfg)
    except BaseException:
        if side is not None:
            join_baseline(side, failed=True)
        raise
    if "split-select" in cfg.defense:
        cfg = choose_cut(cfg)
        side = start_baseline(cfg)
    bar, on_round = progress_bar(cfg, "defended" if cfg.defense else "train")
    try:
        with bar:
            result = run(cfg, progress=on_round,
                         setup=setup if cfg.cut == setup.cfg.cut else None,
                         on_step=step_progress(cfg, bar))
    except BaseException:
        if side is not None:
            join_baseline(side, failed=True)
        raise
    base = None
    if side is not None:
        join_baseline(side)
    if cfg.defense:
        bar, on_round = progress_bar(cfg, "undefended")
        with bar:  # reads the cache the side process wrote (computes it here if that failed)
            base = cached_baseline(cfg, on_round)
    if result is None:
        return None
    write_run(folder, result, base,
              load_images(baseline_path(cfg).with_suffix(".pt")) if base else None,
              force=force)
    print_summary(cfg, result, base)
    console.print(f"single seed (seed {cfg.seed}): no confidence interval; --seeds 3 gives "
                  "mean ± 95% CI")
    console.print(f"wall-clock {command_seconds():.1f} s (the whole command from the "
                  f"interpreter's start, imports included) · report: {folder}/report.html")
    if _JSON["on"]:
        print_json(read_json(folder / "result.json"))
    return result


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
    from slsec.hints import PROMPT, frontier_command, keep_labels_command
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
    from slsec import reid_bound
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
    from slsec.results import read_rows
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


def write_run(folder: Path, result: dict[str, Any], base: dict[str, Any] | None,
              base_images: dict[str, Any] | None = None, *, force: bool = False) -> None:
    """result.json + reconstructions.png + report.md + report.html for one evaluation."""
    from slsec.folders import keeping, mark
    from slsec.results import finite
    guess, truth = result.get("_guess"), result.get("_truth")
    stored = {k: v for k, v in result.items() if not k.startswith("_")}
    if base:
        stored["undefended"] = {k: v for k, v in base.items() if not k.startswith("_")}
    with keeping(f"nothing of this run was kept in {folder}; free space and run it again"):
        moved = mark(folder, "run", force=force)
        write_json(folder / "result.json", stored)
    if moved:
        console.print(f"--force: the earlier files of {folder.name} are kept in {moved}")
    with keeping(f"{folder / 'result.json'} is kept; free space and run: slsec report {folder}"):
        if guess is not None and guess["images"].numel():
            grid_rows(folder / "reconstructions.png", result, base, truth, guess, base_images)
        render_run(folder, finite(stored))


def grid_rows(path: Path, result: dict[str, Any], base: dict[str, Any] | None, truth: Any,
              guess: dict[str, Any], base_images: dict[str, Any] | None) -> None:
    """reconstructions.png: original / prior / undefended attack / defended attack, the same
    probes in every column, each row labelled with what produced it and its mean SSIM."""
    from slsec.plots import reconstruction_rows
    m = result["metrics"]
    cfg = result["config"]
    defense = "+".join(cfg.get("defense") or []) or None
    images = guess["images"]

    def label(what: str, method: Any, ssim: Any) -> str:
        return f"{what}: {method}\nSSIM {ssim:.2f}" if isinstance(ssim, float) else f"{what}: {method}"
    rows: list[tuple[str, Any]] = [("original", truth[: len(images)])]
    prior = guess.get("prior.images")
    if prior is not None and prior.numel():
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
    from slsec.plots import training_curves
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


def defense_sections(cfg: dict[str, Any], m: dict[str, Any]) -> list[tuple[str, str]]:
    """(heading, text) from each defense that ran: its mechanism, sensitivity, what ε covers."""
    import slsec.defenses  # noqa: F401  (registers defenses)
    from slsec.defenses.base import DEFENSES
    return [DEFENSES.get(d).report_text(cfg, m) for d in cfg.get("defense") or []
            if d in DEFENSES.names()]


def dp_text(cfg: dict[str, Any], m: dict[str, Any]) -> str:
    return (f"epsilon = {rpt.fmt(m['epsilon'], 3)} at delta = {m['delta']:g} per training sample "
            f"({cfg['accountant']} accountant). DP at the cut: replace-one adjacency; each sample's "
            f"smashed tensor is clipped to L2 norm C"
            + (f" = {rpt.fmt(m['clip_used'], 4)}" if "clip_used" in m else "")
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


def sweep(config: str | None, flags: dict[str, Any], *, resume: bool, force: bool = False) -> None:
    from slsec.sweeps import run_sweep
    run_sweep(config, flags, resume=resume, force=force)


def review(cfg: RunConfig, *, min_accuracy: str | None, max_client_flops: str | None,
           force: bool = False) -> None:
    from slsec.review import run_review
    run_review(cfg, min_accuracy=min_accuracy, max_client_flops=max_client_flops, force=force)


def rerender(path: str) -> None:
    """Re-render a folder's report by the kind recorded in it (never another kind's report)."""
    from slsec.folders import folder_kind, keeping
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; slsec report takes a run, sweep or benchmark folder")
    kind = folder_kind(folder) if folder.is_dir() else None
    kept = f"the rows and results in {folder} are kept; free space and run slsec report again"
    if kind == "run":
        stored = read_json(folder / "result.json")
        if not (isinstance(stored, dict) and "per_seed" in stored):
            check_result_shape(stored, folder / "result.json")
        with keeping(kept):
            try:
                if "per_seed" in stored:
                    from slsec.seeds import render_seeds
                    render_seeds(folder, stored)
                else:
                    render_run(folder, stored)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise UserError(f"{folder / 'result.json'} is not an slsec result "
                                f"({type(e).__name__}: {e})") from None
    elif kind == "review":
        raise UserError(f"{folder} is a security review: rerun slsec review to refresh it "
                        f"(its rows need the budgets it was run with)")
    elif kind == "benchmark":
        from slsec.benchmark import render_benchmark
        with keeping(kept):
            render_benchmark(folder)
    elif kind == "sweep":
        from slsec.sweeps import render_sweep
        with keeping(kept):
            render_sweep(folder)
    else:
        raise UserError(f"{folder} holds neither result.json nor results.csv")
    console.print(f"report: {folder}/report.html")


def check_result_shape(stored: Any, path: Path) -> None:
    """A result.json must be what write_run stores: one line naming what is missing."""
    need = {"config": ("protocol", "dataset", "clients", "partition", "rounds", "seed",
                       "backend", "defense", "accountant"), "metrics": ("cuts",)}
    if not isinstance(stored, dict):
        raise UserError(f"{path} is not an slsec result (a JSON {type(stored).__name__}, "
                        "expected an object with config and metrics)")
    for part, keys in need.items():
        if not isinstance(stored.get(part), dict):
            raise UserError(f"{path} is not an slsec result: no '{part}' object")
        missing = [k for k in keys if k not in stored[part]]
        if missing:
            raise UserError(f"{path} is not an slsec result: '{part}' lacks {', '.join(missing)}")
    if not isinstance(stored["metrics"]["cuts"], list) or not isinstance(
            stored["config"]["defense"], list):
        raise UserError(f"{path} is not an slsec result: cuts and defense must be lists")
    for part in ("curve",):
        if part in stored and not (isinstance(stored[part], list) and all(
                isinstance(r, dict) and {"round", "accuracy", "loss", "wall_s", "bytes"} <= set(r)
                for r in stored[part])):
            raise UserError(f"{path} is not an slsec result: '{part}' is not a list of rounds")


def benchmark(config: str | None, flags: dict[str, Any], *, resume: bool = False,
              force: bool = False) -> None:
    from slsec.benchmark import run_benchmark
    run_benchmark(config, flags, resume=resume, force=force)
