"""Results are never lost or half-trusted: `slsec compare` writes a new folder only, a stored
result of the wrong shape is one line, a row copied by hand into results.csv is not a second
result, and an undefended-twin cache entry of the wrong shape is recomputed."""
from __future__ import annotations

import json
import shutil

import pytest

from slsec.cli import main
from slsec.report.results import read_rows, scan_rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--max-train", "64", "--aux-size", "64", "--probe-size", "4",
                 "--out", str(out), "--run-id", "r"]) == 0
    return out


def _one_line(capsys, code, pattern):
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and pattern in lines[0], cap.err
    assert "Traceback" not in cap.err


def test_compare_never_writes_into_an_existing_folder(run_dir, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in (run_dir / "r").iterdir() if p.is_file()}
    code = main(["compare", str(run_dir / "r"), "--out", str(run_dir), "--run-id", "r"])
    _one_line(capsys, code, "--run-id r already exists")
    assert {p.name: p.read_bytes() for p in (run_dir / "r").iterdir() if p.is_file()} == before
    assert main(["compare", str(run_dir / "r"), "--out", str(tmp_path), "--run-id", "c"]) == 0
    capsys.readouterr()
    first = (tmp_path / "c" / "report.md").read_bytes()
    code = main(["compare", str(run_dir / "r"), "--out", str(tmp_path), "--run-id", "c"])
    _one_line(capsys, code, "--run-id c already exists")
    assert (tmp_path / "c" / "report.md").read_bytes() == first


@pytest.mark.parametrize("body,pattern", [
    ("[1, 2]", "is not an slsec result (a JSON list"),
    ("null", "is not an slsec result (a JSON NoneType"),
    (None, "no 'config' object"),
    ('{"config": {}, "metrics": {}}', "its metrics lack the accuracy"),
])
def test_compare_a_result_of_the_wrong_shape_is_one_line(body, pattern, run_dir, tmp_path,
                                                         capsys):
    bad = tmp_path / "bad"
    shutil.copytree(run_dir / "r", bad)
    if body is None:
        stored = json.loads((bad / "result.json").read_text())
        stored["config"] = None
        body = json.dumps(stored)
    (bad / "result.json").write_text(body)
    code = main(["compare", str(bad), "--out", str(tmp_path / "o")])
    _one_line(capsys, code, pattern)


def test_a_row_copied_into_results_csv_is_damaged_not_a_second_result(tmp_path):
    from slsec.report.results import quarantine, rows_csv
    path = tmp_path / "results.csv"
    text = rows_csv([{"cell": "a", "accuracy": 0.5}, {"cell": "b", "accuracy": 0.6}])
    header, first, second = text.splitlines(keepends=True)
    path.write_text(header + first + second + first)
    good, bad = scan_rows(path)
    assert [r["cell"] for r in good] == ["a", "b"]
    assert len(bad) == 1 and bad[0]["reason"] == "a copy of line 2 (each row is written once)"
    assert quarantine(path) == 1 and [r["cell"] for r in read_rows(path)] == ["a", "b"]


def test_a_twin_cache_entry_of_the_wrong_shape_is_recomputed(tmp_path):
    from slsec.study.runs import baseline_path, cached_baseline
    from slsec.config import make_config
    cfg = make_config({"max_train": 64, "aux_size": 64, "probe_size": 4, "defense": "dp",
                       "out": str(tmp_path)})
    path = baseline_path(cfg)
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    twin = cached_baseline(cfg)
    assert "accuracy" in twin["metrics"] and twin["config"]["defense"] == []
    assert json.loads(path.read_text())["metrics"]["accuracy"] == twin["metrics"]["accuracy"]
