"""`slsec sweep`: grid parsing, up-front validation, durable resumable rows, the frontier report."""
from __future__ import annotations

import base64
import csv
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slsec.study import sweeps as sweep
from slsec.config import merged_config
from slsec.errors import UserError
from slsec.report.frontier import attack_performance, dcs, pareto_mask, row_dcs
from slsec.report.results import config_key, read_rows
from slsec.run.result import RunResult

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def flags(**kw: str) -> dict[str, str | None]:
    return {k: v for k, v in kw.items()}


# --------------------------------------------------------------------------- grid parsing

def test_comma_list_in_a_flag_is_an_axis_single_value_is_base() -> None:
    g = sweep.parse_grid(None, flags(sigma="0,0.01,0.5", cut="conv1", attack="inversion"))
    assert g.axes == {"sigma": ["0", "0.01", "0.5"]}
    assert g.base == {"cut": "conv1", "attack": "inversion"}
    cells = sweep.grid_cells(g)
    assert [c.sigma for c in cells] == [0.0, 0.01, 0.5]
    assert all(c.cut == "conv1" for c in cells)


def test_defense_alternatives_are_separated_by_a_bar_and_none_means_no_defense() -> None:
    g = sweep.parse_grid(None, flags(defense="none|dp|dp,nopeek"))
    assert [c.defense for c in sweep.grid_cells(g)] == [(), ("dp",), ("dp", "nopeek")]


def test_axes_multiply_and_duplicate_cells_run_once() -> None:
    g = sweep.parse_grid(None, flags(sigma="0.1,0.10", cut="conv1,pool2", defense="dp"))
    cells = sweep.grid_cells(g)
    assert len(cells) == 2 and {c.cut for c in cells} == {"conv1", "pool2"}


def test_toml_grid_table_and_flags_override(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text('attack = "inversion"\ndefense = ["dp"]\n[grid]\nsigma = [0, 0.1]\n'
                 'cut = ["conv1", "pool1", "fc1"]\n')
    assert len(sweep.grid_cells(sweep.parse_grid(str(f), {}))) == 6
    g = sweep.parse_grid(str(f), flags(cut="pool2"))      # a flag replaces the file's axis
    assert g.axes == {"sigma": [0, 0.1]} and g.base["cut"] == "pool2"


@pytest.mark.parametrize("body, match", [
    ('[grid]\nsigmaa = [0, 1]\n', "unknown key 'sigmaa'.*sigma"),
    ('[grid]\nsigma = []\n', "non-empty list"),
    ('[grid]\nsigma = 0.1\n', "non-empty list"),
    ('[grid]\nout = ["a", "b"]\n', "cannot be a grid axis"),
    ('sigma = 0.1\n[grid]\nsigma = [0, 1]\n', "both a base key and a \\[grid\\] axis"),
    ('[other]\nx = 1\n', "unknown table \\[other\\]"),
    ('[grid]\nsigma = [0, -1]\n', "grid cell sigma=-1: --sigma must be a finite number >= 0"),
])
def test_bad_toml_grid_is_one_line_user_error(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(UserError, match=match) as e:
        sweep.grid_cells(sweep.parse_grid(str(f), {}))
    assert "\n" not in str(e.value)


def test_empty_item_in_a_flag_list_is_a_user_error() -> None:
    with pytest.raises(UserError, match="empty value"):
        sweep.parse_grid(None, flags(sigma="0,,1"))


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything starts training."""
    import slsec.run.harness

    def boom(*a, **k):
        raise AssertionError("training started before validation failed")
    monkeypatch.setattr(slsec.run.harness, "evaluate", boom)
    monkeypatch.setattr(sweep, "run_cell", boom)


@pytest.mark.parametrize("kw, match", [
    (dict(sigma="0,abc", defense="dp"), "grid cell sigma=abc: .*'sigma' must be"),
    (dict(cut="conv1,nope"), "grid cell cut=nope: invalid cut 'nope'"),
    (dict(attack="inversion,nope"), "unknown attack 'nope'"),
    (dict(defense="dp|split-select"), "split-select chooses the cut"),
    (dict(backend="mpi"), "--backend local"),
])
def test_bad_cells_fail_before_any_training(tmp_path: Path, no_training: None, kw: dict,
                                            match: str) -> None:
    with pytest.raises(UserError, match=match) as e:
        sweep.run_sweep(None, flags(out=str(tmp_path), run_id="x", **kw), resume=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x" / "results.csv").exists()


def test_unwritable_out_dir_is_a_user_error(tmp_path: Path, no_training: None) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="not writable"):
        sweep.run_sweep(None, flags(out=str(blocker / "sub"), sigma="0,1", defense="dp"),
                        resume=False)


# --------------------------------------------------------------------------- resume (fast, fake cells)

@pytest.fixture
def fake_cells(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Cells that 'run' instantly: the row is the config plus made-up metrics."""
    ran: list[str] = []

    def fake(cfg):
        ran.append(config_key(cfg.to_dict()))
        s = cfg.sigma or 0.0
        metrics = {"accuracy": 0.9 - s, "attack_ssim_mean": 0.8 - s, "baseline_ssim_mean": 0.2,
                   "attack_mse_mean": 0.02 + s,
                   "cuts": [cfg.cut or "conv1"], "labels_sent_to_server": True, "label_leak": 1.0}
        result = RunResult(cfg.to_dict(), metrics, [], {}, cfg.seed)
        return sweep.result_row(cfg, result, {"metrics": {"accuracy": 0.9}})
    monkeypatch.setattr(sweep, "run_cell", fake)
    return ran


def test_resume_skips_done_cells_and_refuses_to_overwrite_without_it(
        tmp_path: Path, fake_cells: list[str]) -> None:
    f = flags(out=str(tmp_path), run_id="s", sigma="0,0.1,0.5", defense="dp",
              attack="inversion")
    folder = sweep.run_sweep(None, f, resume=False)
    rows = read_rows(folder / "results.csv")
    assert len(rows) == 3 and len(fake_cells) == 3
    with pytest.raises(UserError, match="pass --resume"):
        sweep.run_sweep(None, f, resume=False)
    sweep.run_sweep(None, f, resume=True)
    assert len(fake_cells) == 3 and len(read_rows(folder / "results.csv")) == 3
    sweep.run_sweep(None, {**f, "sigma": "0,0.1,0.5,0.2"}, resume=True)   # grid grown
    rows = read_rows(folder / "results.csv")
    assert len(fake_cells) == 4 and len({r["cell"] for r in rows}) == 4


def test_resume_without_run_id_continues_the_latest_sweep(tmp_path: Path,
                                                          fake_cells: list[str]) -> None:
    f = flags(out=str(tmp_path), sigma="0,0.1", defense="dp", attack="inversion")
    first = sweep.run_sweep(None, f, resume=False)
    assert first.name.startswith("sweep-")
    assert sweep.run_sweep(None, f, resume=True) == first
    assert len(fake_cells) == 2
    with pytest.raises(UserError, match="no earlier sweep"):
        sweep.run_sweep(None, {**f, "out": str(tmp_path / "empty")}, resume=True)


def test_rows_hold_config_fields_resolved_cut_metrics_and_cell_key(
        tmp_path: Path, fake_cells: list[str]) -> None:
    folder = sweep.run_sweep(None, flags(out=str(tmp_path), run_id="r", sigma="0.1",
                                         defense="dp", attack="inversion"), resume=False)
    row = read_rows(folder / "results.csv")[0]
    cfg = sweep.grid_cells(sweep.parse_grid(None, flags(out=str(tmp_path), run_id="r",
                                                        sigma="0.1", defense="dp",
                                                        attack="inversion")))[0]
    assert row["cell"] == config_key(cfg.to_dict())
    assert row["cut"] == "conv1" and row["model_name"] == "cnn" and row["defense"] == "dp"
    assert float(row["sigma"]) == 0.1 and float(row["accuracy"]) == pytest.approx(0.8)
    assert float(row["dcs"]) == pytest.approx(row_dcs({k: v for k, v in row.items()}))


# --------------------------------------------------------------------------- frontier + DCS

def naive_pareto(points: list[tuple[float, float]]) -> list[bool]:
    out = []
    for i, (a, l) in enumerate(points):
        beaten = False
        for j, (b, m) in enumerate(points):
            if j != i and b >= a and m <= l and (b, m) != (a, l):
                beaten = True
        out.append(not beaten)
    return out


def test_pareto_mask_matches_a_naive_reference() -> None:
    rng = random.Random(0)
    for _ in range(50):
        pts = [(round(rng.random(), 1), round(rng.random(), 1)) for _ in range(rng.randint(1, 9))]
        assert pareto_mask([p[0] for p in pts], [p[1] for p in pts]) == naive_pareto(pts)
    assert pareto_mask([0.9, math.nan], [0.1, 0.0]) == [True, False]


def test_dcs_follows_vflair() -> None:
    assert dcs(ap=0.0, mp=0.9, mp_ideal=0.9) == 1.0                       # ideal defense
    assert dcs(ap=1.0, mp=0.0, mp_ideal=1.0) == pytest.approx(0.5)         # worst possible
    assert dcs(ap=0.4, mp=0.7, mp_ideal=0.9) == pytest.approx(
        1 / (1 + math.sqrt(0.5 * 0.4 ** 2 + 0.5 * 0.2 ** 2)))
    assert dcs(ap=0.0, mp=0.95, mp_ideal=0.9) == 1.0                       # no credit above ideal


def test_type_and_comprehensive_dcs_follow_vflair() -> None:
    """T-DCS: the mean DCS over one type's attacks at a setting; C-DCS: the mean over types."""
    from slsec.report.frontier import comprehensive_dcs, type_dcs
    rows = [{"defense": "mid", "mid_weight": 0.1, "attack_kind": "inversion", "dcs": 0.8},
            {"defense": "mid", "mid_weight": 0.1, "attack_kind": "inversion", "dcs": 0.6},
            {"defense": "mid", "mid_weight": 0.1, "attack_kind": "label", "dcs": 0.9},
            {"defense": "mid", "mid_weight": 1.0, "attack_kind": "label", "dcs": 1.0},
            {"defense": "mid", "mid_weight": 1.0, "attack_kind": "label", "dcs": None}]
    t = type_dcs(rows, ["defense", "mid_weight"])
    assert t == {("mid", 0.1): {"inversion": pytest.approx(0.7), "label": 0.9},
                 ("mid", 1.0): {"label": 1.0}}
    assert comprehensive_dcs(t[("mid", 0.1)]) == pytest.approx(0.8)
    assert comprehensive_dcs(t[("mid", 0.1)], {"inversion": 3, "label": 1}) == \
        pytest.approx(0.75)
    assert math.isnan(comprehensive_dcs({}))


def test_attack_performance_is_vflairs() -> None:
    """VFLAIR's AP (src/metrics/data_process.py): 1 - MSE for a feature reconstruction, the
    label accuracy for label inference (norm scoring's binary accuracy as max(acc, 1 - acc))."""
    assert attack_performance({"attack_mse_mean": 0.04, "attack_ssim_mean": 0.9}) == \
        pytest.approx(0.96)
    assert attack_performance({"attack_mse_mean": 1.5}) == 0.0      # negative AP is set to 0
    assert attack_performance({"label_accuracy": 0.7, "chance_accuracy": 0.1}) == 0.7
    assert attack_performance({"label_accuracy": 0.2, "chance_accuracy": 0.1}) == 0.2
    assert attack_performance({"label_accuracy": 0.2, "chance_accuracy": 0.5}) == \
        pytest.approx(0.8)
    assert attack_performance({"labels_sent_to_server": "True"}) == 1.0
    assert math.isnan(attack_performance({"accuracy": 0.9}))


def test_multi_seed_dcs_is_computed_from_the_means() -> None:
    """VFLAIR averages MP and AP over the runs of a setting, then computes one DCS."""
    from slsec.study.sweeps import aggregate_row
    from slsec.config import make_config
    seeds = [{"accuracy": 0.9, "undefended_accuracy": 0.9, "attack_performance": 0.0},
             {"accuracy": 0.5, "undefended_accuracy": 0.9, "attack_performance": 0.8}]
    for r in seeds:
        r["dcs"] = row_dcs(r)
    agg = aggregate_row(make_config({"seeds": 2}), seeds)
    assert agg["dcs"] == pytest.approx(dcs(ap=0.4, mp=0.7, mp_ideal=0.9))
    assert agg["dcs"] != pytest.approx((seeds[0]["dcs"] + seeds[1]["dcs"]) / 2)


def test_render_draws_frontier_plots_marks_pareto_and_tabulates_cells(
        tmp_path: Path, fake_cells: list[str]) -> None:
    folder = sweep.run_sweep(None, flags(out=str(tmp_path), run_id="p", sigma="0,0.1,0.5",
                                         defense="dp", attack="inversion"), resume=False)
    assert (folder / "frontier_attack_ssim_mean.png").stat().st_size > 10_000
    md = (folder / "report.md").read_text()
    html = (folder / "report.html").read_text()
    assert "Pareto points" in md and "DCS = 1 / (1 + D)" in md and "| sigma |" in md
    assert html.count("data:image/png;base64,") == 1 and "<table>" in html
    png = base64.b64decode(html.split("data:image/png;base64,")[1].split("'")[0])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the configs

def test_every_documented_config_loads() -> None:
    card = merged_config(str(CONFIGS / "card.toml"), {})
    assert (card.protocol, card.attack, card.defense, card.sigma) == \
        ("vanilla", "inversion", ("dp",), 0.5)
    frontier = sweep.grid_cells(sweep.parse_grid(str(CONFIGS / "dp_frontier.toml"), {}))
    assert len(frontier) == 5 * 8
    assert {c.sigma for c in frontier} == {0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5}
    assert {c.cut for c in frontier} == {"conv1", "pool1", "conv2", "pool2", "fc1"}
    review = merged_config(str(CONFIGS / "review_cnn.toml"), {})
    assert review.model == "cnn" and review.protocol.split(",") == ["vanilla", "ushaped"]
    bench = sweep.grid_cells(sweep.parse_grid(str(CONFIGS / "benchmark.toml"), {}))
    assert len(bench) == 12 and {c.clients for c in bench} == {4}
    assert {(c.protocol, c.partition, c.dataset) for c in bench} == {
        (p, q, d) for p in ("vanilla", "ushaped", "splitfed") for q in ("iid", "dirichlet")
        for d in ("mnist", "mutag")}
    sweep.validate_cells(bench)                       # data, models and cuts all resolve
    gin = merged_config(str(CONFIGS / "mutag_gin.toml"), {})
    assert gin.model_name == "gin" and gin.dataset == "mutag"
    sweep.validate_cells([gin, card, *frontier[:1]])


def test_benchmark_config_loads_in_the_benchmark_command() -> None:
    benchmark = pytest.importorskip("slsec.study.benchmark")
    cells = benchmark.plan_grid(str(CONFIGS / "benchmark.toml"), {})
    assert len(cells) == 12 and {c.clients for c in cells} == {4}


# --------------------------------------------------------------------------- end to end (slow)

KILL_FLAGS = {"run_id": "k", "sigma": "0.1,0.5", "seed": "0,1,2", "defense": "dp",
              "max_train": "64", "probe_size": "4", "aux_size": "50"}
KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from slsec.study.sweeps import run_sweep
    run_sweep(None, {**eval(sys.argv[2]), "out": sys.argv[1]}, resume=True)
""")


def _wait_for_row(p: subprocess.Popen, results: Path, before: int, limit: float = 120) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end and p.poll() is None and len(read_rows(results)) <= before:
        time.sleep(0.05)


@pytest.mark.slow
def test_sweep_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    """SIGKILL the sweep 3 times in a row at random moments, one per phase: a fresh sweep's
    start-up or first cell, some time after a row lands (mid-cell or during a write), a
    resume's start-up or its first cell (rows already there); --resume then completes with
    every cell exactly once. (5 kills repeated the first two phases; the many-point run is
    bench/kill_sweep.py, shortened in tests/test_nothing_lost.py.)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(1234)
    cmd = [sys.executable, "-c", KILL_SCRIPT, str(tmp_path), repr(KILL_FLAGS)]
    results = tmp_path / "k" / "results.csv"
    seen = 0
    for i in range(3):
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i % 2:   # some time after the next row lands (mid-cell, or during a write)
            _wait_for_row(p, results, seen)
            time.sleep(rng.uniform(0.0, 2.5))
        else:       # anywhere in start-up or the first cell
            time.sleep(rng.uniform(0.5, 6.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        rows = read_rows(results)
        assert len({r["cell"] for r in rows}) == len(rows)        # never a duplicate
        assert len(rows) >= seen                                  # never a lost row
        seen = len(rows)
    assert seen > 0, "the kills should land mid-sweep, after some rows"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = sweep.grid_cells(sweep.parse_grid(None, {**KILL_FLAGS, "out": str(tmp_path)}))
    with results.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(cells) == 6
    assert {r["cell"] for r in rows} == {config_key(c.to_dict()) for c in cells}
    assert all(r["accuracy"] not in ("", None) for r in rows)
    assert not list((tmp_path / "k").glob(".results.csv.*.tmp"))


@pytest.mark.slow
def test_cli_sweep_writes_rows_plots_and_report(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from slsec.cli import main
    args = ["sweep", "--sigma", "0,0.5", "--attack", "inversion", "--defense", "dp",
            "--max-train", "200", "--probe-size", "8", "--attack-iters", "20",
            "--out", str(tmp_path), "--run-id", "demo"]
    assert main(args) == 0
    folder = tmp_path / "demo"
    rows = read_rows(folder / "results.csv")
    assert len(rows) == 2 and {r["sigma"] for r in rows} == {"0.0", "0.5"}
    assert all(r["undefended_accuracy"] and r["attack_ssim_mean"] for r in rows)
    for name in ("frontier_attack_ssim_mean.png", "frontier_attack_psnr_mean.png",
                 "report.md", "report.html"):
        assert (folder / name).exists(), name
    out = capsys.readouterr().out
    assert "report:" in out and "DCS" in out
    assert main(args) == 2                                   # exists: needs --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert len(read_rows(folder / "results.csv")) == 2
    (folder / "report.html").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.html").exists()
