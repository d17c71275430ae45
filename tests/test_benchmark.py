"""`slsec benchmark`: the grid it plans, the table it writes, the honest SplitFed-vs-vanilla line."""
from __future__ import annotations

import pytest

from slsec.study.benchmark import DATASET_DEFAULTS, plan_grid, verdicts
from slsec.cli import main
from slsec.errors import UserError
from slsec.report.results import read_rows

TABLE_HEADER = ("| architecture | partition | dataset | test accuracy | rounds to convergence "
                "| wall-clock s | MB on the wire |")


def test_default_grid_is_three_architectures_two_partitions_two_datasets():
    cells = plan_grid(None, {})
    assert {(c.protocol, c.partition, c.dataset) for c in cells} == {
        (p, part, d) for p in ("vanilla", "ushaped", "splitfed")
        for part in ("iid", "dirichlet") for d in ("mnist", "mutag")}
    assert all(c.clients == 4 and c.alpha == 0.5 and c.attack is None for c in cells)


def test_per_dataset_rounds_apply_unless_a_flag_or_the_toml_sets_them(tmp_path):
    by_ds = {c.dataset: c for c in plan_grid(None, {"dataset": "mnist,mutag", "protocol": "vanilla",
                                                    "partition": "iid"})}
    assert by_ds["mnist"].rounds == DATASET_DEFAULTS["mnist"]["rounds"]
    assert by_ds["mutag"].rounds == DATASET_DEFAULTS["mutag"]["rounds"]
    assert by_ds["mutag"].rounds > by_ds["mnist"].rounds        # small data needs more rounds
    toml = tmp_path / "b.toml"
    toml.write_text('dataset = ["mutag"]\nprotocol = "splitfed"\n[run]\nrounds = 5\nclients = 3\n')
    [c1, c2] = plan_grid(str(toml), {"clients": "2"})
    assert (c1.rounds, c1.clients, c1.batch_size) == (5, 2, DATASET_DEFAULTS["mutag"]["batch_size"])
    assert (c1.partition, c2.partition) == ("iid", "dirichlet")


@pytest.mark.parametrize("flags, message", [
    ({"partition": "iid,zipf"}, "--partition must be one of"),
    ({"protocol": "vanila"}, "unknown protocol 'vanila'"),
    ({"dataset": "mnist,imagenet"}, "unknown dataset 'imagenet'"),
    ({"attack": "inversion"}, "trains only"),
    ({"clients": "0"}, "--clients must be >= 1"),
])
def test_bad_grids_are_one_line_user_errors_before_training(flags, message):
    with pytest.raises(UserError, match=message):
        plan_grid(None, flags)


def _row(protocol, acc, std=0.0):
    return {"dataset": "mnist", "protocol": protocol, "partition": "dirichlet", "alpha": "0.5",
            "test_accuracy": str(acc), "last5_std_accuracy": str(std), "n_test": "1000",
            "rounds": "8"}


def test_the_splitfed_vs_vanilla_line_follows_the_measured_numbers():
    [line] = verdicts([_row("splitfed", 0.90), _row("vanilla", 0.95)])
    assert "vanilla is better here" in line and "NOT reproduce" in line
    [line] = verdicts([_row("splitfed", 0.95), _row("vanilla", 0.90)])
    assert "SplitFed is better here" in line
    [line] = verdicts([_row("splitfed", 0.9505, 0.01), _row("vanilla", 0.95, 0.01)])
    assert "no winner" in line


def test_tiny_benchmark_through_the_cli_writes_csv_and_report(tmp_path):
    # 12 cells of one round: ~12 s on an idle 2-core machine (not marked slow: < 20 s)
    argv = ["benchmark", "--rounds", "1", "--max-train", "60", "--clients", "2",
            "--probe-size", "4", "--dataset", "mnist,mutag", "--out", str(tmp_path),
            "--run-id", "t"]
    assert main(argv) == 0
    folder = tmp_path / "benchmark-t"
    rows = read_rows(folder / "results.csv")
    assert len(rows) == 12
    for col in ("architecture", "partition", "dataset", "test_accuracy", "rounds_to_convergence",
                "wall_clock_s", "mb_on_wire"):
        assert all(r[col] not in ("", None) for r in rows), col
    assert {r["architecture"] for r in rows} == {"vanilla", "U-shaped", "SplitFed (v1)"}
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 and float(r["mb_on_wire"]) > 0 for r in rows)
    md = (folder / "report.md").read_text()
    assert TABLE_HEADER in md
    assert "seed, published (CIFAR-10/ResNet-18)" in md and "91.2" in md and "88.3" in md
    assert "SplitFed vs vanilla under Dirichlet" in md
    assert (folder / "report.html").read_text().startswith("<!doctype html>")
    # same --run-id again: refused (the folder is written once) unless --resume, with which
    # every cell is already in results.csv and nothing is retrained
    before = (folder / "results.csv").read_bytes()
    assert main(argv) == 2
    assert (folder / "results.csv").read_bytes() == before
    assert main(argv + ["--resume"]) == 0
    assert len(read_rows(folder / "results.csv")) == 12


def test_the_line_of_a_converged_table_names_the_stopping_round_and_capped_runs():
    rows = [{**_row("splitfed", 0.95), "rounds": "30", "converged": "1.0"},
            {**_row("vanilla", 0.90), "rounds": "30", "converged": "0.6667"}]
    [line] = verdicts(rows)
    assert "stopping round (at most 30)" in line and "after 30 rounds" not in line
    assert "did not fire for every seed of vanilla" in line
    [line] = verdicts([{**r, "converged": "1.0"} for r in rows])
    assert "did not fire" not in line
