"""The `slsec` command line: list, train, evaluate, sweep, review, report, compare, benchmark.

Every run option is a RunConfig field, given as `--field-name value` (or in a TOML file with
`--config`; flags override the file). Options are parsed as text and validated once by
slsec.config, so every mistake is one line on stderr and exit code 2.

The package parses options and prints, nothing else: commands.py hands each command to the
application (slsec.study: evaluate with its twin, seeds, sweeps, reviews, benchmarks, grids
through an executor) and prints what the documents (slsec.report) say; launch.py runs a command
as MPI ranks. Nothing below imports it.

Over 300 lines: every command and its own options are declared here, in one place (the run
options themselves are generated from the Params).
"""
from __future__ import annotations

import functools
import inspect
import sys
import warnings
from dataclasses import fields
from typing import Any, Callable, Optional

import typer

from slsec.config import PARAMS, RunConfig, check_given, merged_config
from slsec.params import Param
from slsec import plugins
from slsec.errors import PeerError, UserError
from slsec.cli.launch import ARGV, interrupted, is_rank0, launch_under_mpiexec, on_sigterm
from slsec.cli.audit import AUDIT_OPTIONS
from slsec.run.convergence import CONVERGENCE_FLAGS, parse_rule

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Privacy attacks and defenses for split learning.")

def _metavar(p: Param) -> str:
    """The value's form in --help: a plug-in kind lists the declared names."""
    if p.name in ("protocol", "attack", "defense"):
        names = [d.name for d in plugins.declarations(p.name)]
        return "|".join(names) if p.name != "defense" else "{" + "|".join(names) + "},..."
    return p.metavar


def _option(p: Param) -> inspect.Parameter:
    return inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                             default=typer.Option(None, p.flag, help=p.help_line(),
                                                  metavar=_metavar(p), show_default=False))


RUN_OPTIONS = [_option(p) for p, _ in PARAMS.values()]
CONFIG_OPTION = inspect.Parameter(
    "config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
    default=typer.Option(None, "--config", metavar="FILE",
                         help="TOML experiment file; flags override it [default: not set]"))


PLOT_OPTION = inspect.Parameter(
    "plot_format", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
    default=typer.Option(None, "--plot-format", metavar="png,svg,pdf",
                         help="figure files to write: a comma list of png, svg, pdf "
                              "(png is always written: the HTML report embeds it) "
                              "[default: png]"))


def with_plot_format(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Apply and remove --plot-format before the command runs."""
    @functools.wraps(fn)
    def wrapped(**kw: Any) -> Any:
        from slsec.report.results import set_figure_formats
        set_figure_formats(kw.pop("plot_format", None))
        return fn(**kw)
    return wrapped


def with_run_options(*extra: inspect.Parameter) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command every RunConfig flag (as text), --plot-format and `extra` parameters."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = [*extra, CONFIG_OPTION, PLOT_OPTION, *RUN_OPTIONS]
        fn = with_plot_format(fn)
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        fn.__annotations__ = {p.name: p.annotation for p in params}
        return fn
    return deco


def _force() -> inspect.Parameter:
    return inspect.Parameter(
        "force", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--force", help="replace an existing --run-id folder of the "
                                                    "same kind (its files are moved aside) "
                                                    "[default: off]", show_default=False))


def _resume(what: str) -> inspect.Parameter:
    return inspect.Parameter(
        "resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--resume", help=f"skip {what} already in results.csv "
                                                     "[default: off]", show_default=False))


def _jobs() -> inspect.Parameter:
    return inspect.Parameter(
        "jobs", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
        default=typer.Option(None, "--jobs", metavar="N",
                             help="cells run at once, in worker processes (under `python -m "
                                  "mpi4py.futures`: its ranks instead) [default: the cores "
                                  "available to this process]"))


def _config(kw: dict[str, Any], *, one_run: bool = False) -> RunConfig:
    flags = {k: v for k, v in kw.items() if k in {f.name for f in fields(RunConfig)}}
    cfg = merged_config(kw.get("config"), flags)
    if one_run:   # train/evaluate: a plug-in's flag without its plug-in, even at its default
        check_given(cfg, [k for k, v in flags.items() if v is not None])
    return cfg


def _precheck(cfg: RunConfig, *, attack: bool = True) -> None:
    """A bad name fails here, in well under a second (before torch is imported)."""
    from slsec.catalog import precheck
    from slsec.report.results import check_writable
    check_writable(cfg.out)
    precheck(cfg, attack=attack)


JSON_OPTION = inspect.Parameter(
    "json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
    default=typer.Option(False, "--json", show_default=False,
                         help="print the result object (as result.json holds it) to stdout and "
                              "nothing else; the rest goes to stderr [default: off]"))


@app.command("list")
def list_cmd() -> None:
    """Show registered protocols, attacks (with roles), defenses, datasets, models and cuts."""
    from slsec.cli import commands
    commands.list_registry()


@app.command()
@with_run_options(_force(), JSON_OPTION)
def train(**kw: Any) -> None:
    """Train with a protocol (no attack) and print the accuracy curve."""
    from slsec.cli import commands
    as_json = kw.pop("json")
    cfg = _config(kw, one_run=True)
    _precheck(cfg, attack=False)
    launch_under_mpiexec(cfg)
    with commands.json_stdout(as_json):
        commands.train(cfg, force=kw["force"])


LOG_OPTION = inspect.Parameter(
    "log", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
    default=typer.Option(None, "--log", metavar="tensorboard",
                         help="experiment tracking: tensorboard (needs the tensorboard package) "
                              "[default: not set]"))


@app.command()
@with_run_options(_force(), JSON_OPTION, LOG_OPTION, _jobs())
def evaluate(**kw: Any) -> None:
    """Train, attack from the attacked role, defend; compare with the undefended run."""
    from pathlib import Path

    from slsec.cli import commands
    from slsec.report import tracking
    as_json, log, jobs = kw.pop("json"), tracking.check(kw.pop("log")), kw.pop("jobs")
    cfg = _config(kw, one_run=True)
    _precheck(cfg)
    launch_under_mpiexec(cfg)
    with commands.json_stdout(as_json):
        result = commands.evaluate(cfg, force=kw["force"], jobs=jobs)
    if log and result is not None:
        folder = Path(cfg.out) / "tensorboard" / commands.run_id(cfg)
        stored = {**result, "undefended": None}
        base = commands.baseline_path(cfg)
        if cfg.defense and base.exists():
            from slsec.report.results import read_json
            stored["undefended"] = read_json(base)
        tracking.write(log, folder, stored)


@app.command()
@with_run_options(_resume("cells"), _force(), _jobs())
def sweep(**kw: Any) -> None:
    """Privacy/utility frontier: every comma list in a flag becomes a grid axis."""
    from slsec.cli import commands
    commands.sweep(kw.pop("config"), {k: v for k, v in kw.items()
                                      if k not in ("resume", "force", "jobs")},
                   resume=kw["resume"], force=kw["force"], jobs=kw["jobs"])


@app.command()
@with_run_options(inspect.Parameter(
    "min_accuracy", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
    default=typer.Option(None, "--min-accuracy", metavar="FLOAT|PERCENT%",
                         help="utility budget for the recommendation: 0.9 absolute, 95% of the "
                              "best cut [default: not set]")),
    inspect.Parameter(
    "max_client_flops", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
    default=typer.Option(None, "--max-client-flops", metavar="FLOPS",
                         help="client compute budget per sample [default: not set]")),
    inspect.Parameter(
    "hijack_steps", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
    default=typer.Option(None, "--hijack-steps", metavar="INT",
                         help="malicious-server column: client steps of hijacking per cut; 0: "
                              "no column [default: 110]")),
    inspect.Parameter(
    "privacy_target", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
    default=typer.Option(None, "--privacy-target", metavar="gain=G,reid=R,label-auc=A",
                         help="also search cut x defense (none, DP at the cut, NoPeek) x seeds "
                              "and recommend the cheapest meeting every target given at the "
                              "upper 95% bound: SSIM gain over the prior <= G, top-1 "
                              "re-identification <= R, label-inference AUC <= A "
                              "[default: not set]")),
    _force(), _jobs())
def review(**kw: Any) -> None:
    """Security review of every cut of a model: leakage, cost, risk grade, recommendation,
    and what a malicious (hijacking) server reaches and whether the client detects it."""
    from slsec.cli import commands
    commands.review(_config({k: v for k, v in kw.items()
                             if k not in ("min_accuracy", "max_client_flops", "force",
                                          "hijack_steps", "jobs", "privacy_target")}),
                    min_accuracy=kw["min_accuracy"], max_client_flops=kw["max_client_flops"],
                    force=kw["force"], hijack_steps=kw["hijack_steps"], jobs=kw["jobs"],
                    privacy_target=kw["privacy_target"])


@app.command()
def report(path: str = typer.Argument(..., help="a run or sweep folder"),
           plot_format: Optional[str] = typer.Option(None, "--plot-format",
                                                     help=PLOT_OPTION.default.help)) -> None:
    """Re-render report.md / report.html from the stored rows of a run or sweep."""
    from slsec.cli import commands
    from slsec.report.results import set_figure_formats
    set_figure_formats(plot_format)
    commands.rerender(path)


@app.command()
def compare(paths: list[str] = typer.Argument(..., help="run and/or sweep folders"),
            out: str = typer.Option("reports", "--out", help="folder for the comparison"),
            run_id: Optional[str] = typer.Option(None, "--run-id", help="comparison folder name"),
            plot_format: Optional[str] = typer.Option(None, "--plot-format",
                                                      help=PLOT_OPTION.default.help)) -> None:
    """One table and overlay plots (accuracy vs leakage, training curves) across runs, sweeps
    and seeds."""
    from slsec.report.compare import run_compare
    from slsec.report.results import set_figure_formats
    set_figure_formats(plot_format)
    run_compare(paths, out=out, run_id=run_id)


def _text(name: str, help: str) -> inspect.Parameter:
    return inspect.Parameter(name.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY,
                             annotation=Optional[str], default=typer.Option(None, f"--{name}", help=help))


@app.command()
@with_run_options(_resume("cells"), _force(), _jobs(),
                  *(_text(n, h) for n, h in CONVERGENCE_FLAGS))
def benchmark(**kw: Any) -> None:
    """SLPerf-style table: architectures x partitions x datasets (accuracy, rounds, time, MB)."""
    from slsec.cli import commands
    resume, force, jobs = kw.pop("resume"), kw.pop("force"), kw.pop("jobs")
    from slsec.study.benchmark import rule_values
    in_file = rule_values(kw.get("config"))   # the rule's TOML keys; a flag overrides its key
    given = [kw.pop(n.replace("-", "_")) for n, _ in CONVERGENCE_FLAGS]
    rule = parse_rule(*(in_file.get(n.replace("-", "_")) if v is None else v
                        for (n, _), v in zip(CONVERGENCE_FLAGS, given)))
    commands.benchmark(kw.pop("config"), {k: v for k, v in kw.items()}, resume=resume,
                       force=force, rule=rule, jobs=jobs)


@app.command()
@with_run_options(*AUDIT_OPTIONS, _force())
def audit(**kw: Any) -> None:
    """One-run privacy audit of each DP defense: eps_lower beside eps and its bounds."""
    from slsec.cli.audit import run_audit
    extra = {k: kw.pop(k) for k in ("canaries", "confidence", "broken", "force")}
    _precheck(cfg := _config(kw), attack=False)
    run_audit(cfg, **extra)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes are one line on stderr and exit 2; peers failing exit 1."""
    try:  # typer >= 0.2x vendors click as typer._click
        from typer import _click as click
    except ImportError:  # pragma: no cover - older typer depends on click
        import click  # type: ignore[no-redef]

    # PyG's GIN layers call torch.jit.script at import: a library's deprecation, not the user's
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                            category=FutureWarning)
    # DP-SGD's per-sample hooks (defenses/dpsgd.py silences this note around its backward, but
    # catch_warnings is not thread-safe and the local backend runs ranks as threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    # Opacus' RDP note at the edge of its order grid (slsec/privacy/accounting.py silences it too, with
    # the same thread-safety caveat); the bound it gives is still a valid upper bound
    warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
    ARGV[:] = sys.argv[1:] if argv is None else list(argv)
    terminated = on_sigterm()
    try:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code
        if app(args=argv, standalone_mode=False, prog_name="slsec") == 130:
            return interrupted(terminated)
    except typer.Exit as e:
        return interrupted(terminated) if e.exit_code == 130 else e.exit_code
    except typer.Abort:
        return interrupted(terminated)
    except click.ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return 2
    except UserError as e:
        if is_rank0():
            print(f"error: {e}", file=sys.stderr)
        return 2
    except PeerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:   # disk full or permission lost outside the places that say what was kept
        print(f"error: {e.strerror or e}: {e.filename or ''} (files already written are "
              "unchanged: every write is a temp file renamed into place)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted(terminated)
    finally:
        from slsec.report.folders import release_unused
        release_unused()   # a folder held for a run that never wrote is removed again
    return 0


if __name__ == "__main__":
    sys.exit(main())
