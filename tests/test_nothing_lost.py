"""Nothing lost, nothing half-trusted: one test (or a few) per class of the issue.

1. run folders are written once and keep their kind;  2. damaged rows are never trusted;
3. validation of every cell before training;  4. bounded solvers;  5. ignored/overridden
input refused;  6. messages state the real rule (tests/test_bad_input.py);  7. hostile names
and files;  8. disk full / permission lost say what was kept;  9. NaN loss stops the run;
strict JSON.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import time
from pathlib import Path

import pytest

from slsec.cli import main
from slsec.config import make_config
from slsec.errors import UserError
from slsec.report.folders import LOCK_FILE, claim, folder_kind, mark, release_unused
from slsec.report.results import (REJECTED, append_row, quarantine, read_rows, row_hash, rows_csv,
                           scan_rows, write_json)

TINY = ["--max-train", "64", "--probe-size", "4", "--aux-size", "100", "--batch-size", "64",
        "--rounds", "1"]


PROGRESS = re.compile(r"^[a-z][\w-]*: \S")   # a plain progress line (slsec/progress.py)


def one_line(capsys, code: int, pattern: str) -> str:
    cap = capsys.readouterr()
    assert code == 2, cap.err
    assert "Traceback" not in cap.out + cap.err
    # a run that is slow (a loaded machine) prints plain progress lines ("sweep: 1/2 cells ·
    # 3s") around the failure; the error itself is one line, and every other line is one of
    # those progress lines
    lines = cap.err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, cap.err
    assert all(PROGRESS.match(ln) for ln in lines if ln not in errors), cap.err
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ 1. write once, one kind

def test_claim_refuses_existing_results_and_other_kinds(tmp_path):
    f = tmp_path / "r"
    claim(f, "run")                      # new folder: fine, only held (its lock file)
    assert [p.name for p in f.iterdir()] == [LOCK_FILE]
    release_unused()                     # a command that ends without writing: removed
    assert not f.exists()
    mark(f, "run")
    claim(f, "run")                      # only the kind file: still empty
    (f / "result.json").write_text("{}")
    with pytest.raises(UserError, match=r"--run-id r already exists .*--force"):
        claim(f, "run")
    with pytest.raises(UserError, match=r"holds a run .*slsec sweep will not write into it"):
        claim(f, "sweep", resume=True, can_resume=True)
    with pytest.raises(UserError, match=r"--resume does not apply to slsec train/evaluate"):
        claim(f, "run", resume=True)
    claim(tmp_path / "nothere", "sweep", resume=True, can_resume=True)   # starts it
    claim(f, "run", force=True)
    moved = mark(f, "run", force=True)
    assert moved and (Path(moved) / "result.json").read_text() == "{}"   # kept, not deleted
    assert folder_kind(f) == "run"


def test_report_follows_the_recorded_kind_and_refuses_ambiguous_folders(tmp_path, capsys):
    f = tmp_path / "x"
    f.mkdir()
    (f / "result.json").write_text("{}")
    (f / "results.csv").write_text("a\n1\n")
    one_line(capsys, main(["report", str(f)]), r"holds both .*ambiguous")
    (f / ".slsec-kind").write_text("bogus\n")
    one_line(capsys, main(["report", str(f)]), r"unknown folder kind 'bogus'")


def test_train_then_evaluate_same_run_id_keeps_the_first_result(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", *TINY, "--out", str(out), "--run-id", "keep"]) == 0
    before = files(out / "keep")
    capsys.readouterr()
    code = main(["evaluate", "--attack", "inversion", *TINY, "--out", str(out), "--run-id", "keep"])
    one_line(capsys, code, r"--run-id keep already exists .*--force")
    code = main(["sweep", "--lr", "0.001,0.002", *TINY, "--out", str(out), "--run-id", "keep"])
    one_line(capsys, code, r"holds a run .*slsec sweep will not write")
    assert files(out / "keep") == before
    assert main(["report", str(out / "keep")]) == 0     # re-renders the run's own report
    assert json.loads((out / "keep" / "result.json").read_text()) == json.loads(
        before["result.json"])


# ------------------------------------------------------------------ 2. damaged rows

def _rows(tmp_path: Path) -> Path:
    p = tmp_path / "results.csv"
    for i in range(3):
        append_row(p, {"cell": f"c{i}", "lr": 0.001 * (i + 1), "accuracy": 0.5, "note": "a,b"})
    return p


@pytest.mark.parametrize("damage, reason", [
    (lambda t: t[: len(t) - 12], "fields|integrity"),                       # last row cut
    (lambda t: t + "this is not a row\n", "fields"),                        # garbage line
    (lambda t: t.replace("c1,", 'c1,"', 1), "fields|integrity"),            # unclosed quote
    (lambda t: t.replace("0.002", "0.009", 1), "integrity"),                # edited value
    (lambda t: t + "\x00,\x00\n", "unreadable|fields|integrity"),           # NUL bytes
])
def test_damaged_rows_are_detected_moved_aside_and_not_trusted(tmp_path, damage, reason):
    import re
    p = _rows(tmp_path)
    p.write_text(damage(p.read_text()))
    good, bad = scan_rows(p)
    assert bad and all(re.search(reason, b["reason"]) for b in bad), bad
    assert all(r["cell"] in ("c0", "c1", "c2") and r["note"] == "a,b" for r in good)
    assert read_rows(p) == good
    n = quarantine(p)
    assert n == len(bad)
    assert scan_rows(p) == (good, [])                  # only intact rows remain
    rejected, _ = scan_rows(tmp_path / REJECTED)
    assert [r["raw"] for r in rejected] == [b["raw"] for b in bad]   # exact text kept
    append_row(p, {"cell": "c9", "lr": 1})
    assert [r["cell"] for r in read_rows(p)][-1] == "c9"


def test_legacy_rows_without_checks_are_trusted_on_field_count_only(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("cell,lr\nc0,0.1\nc1,0.2,extra\nc2\n")
    good, bad = scan_rows(p)
    assert [r["cell"] for r in good] == ["c0"] and len(bad) == 2
    append_row(p, {"cell": "c3", "lr": 0.3})        # legacy rows get checks; bad ones moved
    assert [r["cell"] for r in read_rows(p)] == ["c0", "c3"]
    assert "row_check" in p.read_text().splitlines()[0]


def test_row_check_ignores_columns_added_later():
    row = {"a": "1", "b": "x"}
    assert row_hash(row) == row_hash({**row, "c": ""})
    assert row_hash(row) != row_hash({"a": "1", "b": "y"})
    assert "row_check" in rows_csv([row]).splitlines()[0]


def test_report_warns_and_skips_damaged_rows_then_resume_reruns_their_cells(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["sweep", "--lr", "0.001,0.002", *TINY, "--out", str(out), "--run-id", "s"]
    assert main(argv) == 0
    csv = out / "s" / "results.csv"
    text = csv.read_text()
    csv.write_text(text[: len(text) - 40])               # the last row cut short
    capsys.readouterr()
    assert main(["report", str(out / "s")]) == 0
    err = capsys.readouterr().err
    assert "warning: skipping 1 damaged row" in err and "Traceback" not in err
    assert "0.002" not in (out / "s" / "report.md").read_text().split("All cells")[1]
    assert main(argv + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "1 damaged row(s)" in err and "rejected-rows.csv" in err
    rows = read_rows(csv)
    assert sorted(r["lr"] for r in rows) == ["0.001", "0.002"]
    assert len(read_rows(out / "s" / REJECTED)) == 1
    # --resume with another base option is refused, listing the differing keys
    other = [a if a != "64" or i != argv.index("--max-train") + 1 else "65"
             for i, a in enumerate(argv)]
    assert main(other + ["--resume"]) == 2
    line = capsys.readouterr().err
    assert "base options differ" in line and "--max-train 64 → 65" in line


# ------------------------------------------------------------------ 3. validation up front

def test_benchmark_bad_cut_for_one_dataset_fails_before_any_training(tmp_path, capsys):
    t0 = time.perf_counter()
    code = main(["benchmark", *TINY, "--cut", "conv1", "--dataset", "mnist,mutag",
                 "--out", str(tmp_path)])
    one_line(capsys, code, r"grid cell .*mutag: invalid cut 'conv1' for model 'gin'")
    assert not list(tmp_path.rglob("results.csv"))
    print(f"refused in {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("argv, pattern", [
    (["sweep", "--lr", "0.001,0.002", "--cut", "conv1,fc9"], r"grid cell .*invalid cut 'fc9'"),
    (["sweep", "--defense", "dp", "--sigma", "0.1,1e308"], r"sigma=1e\+308.*overflows"),
    (["evaluate", "--attack", "inversion", "--probe-size", "100000"],
     r"--probe-size 100000 is more than the \d+ test samples"),
    (["evaluate", "--attack", "inversion", "--aux-size", "0"], r"--aux-size 0 leaves no public"),
    (["evaluate", "--attack", "label-inference", "--protocol", "ushaped", "--aux-size", "0"],
     r"--aux-size 0 leaves no public"),
    (["train", "--defense", "split-select", "--cut", "pool2"], r"split-select .*slsec evaluate"),
    (["evaluate", "--attack", "inversion", "--defense", "split-select", "--cut", "pool2"],
     r"split-select chooses the cut itself; drop --cut pool2"),
    (["train", "--sigma", "0.1"], r"--sigma is the noise of --defense dp.*drop it"),
    (["train", "--variant", "v2"], r"--variant chooses the SplitFed variant"),
    (["sweep", "--lr", "0.001,0.002", "--sigma", "0.1"], r"no cell of the grid uses it"),
])
def test_bad_cells_and_ignored_options_fail_before_training(tmp_path, capsys, argv, pattern):
    given = set(argv)
    args = argv + [x for i in range(0, len(TINY), 2) if TINY[i] not in given
                   for x in TINY[i:i + 2]] + ["--out", str(tmp_path)]
    one_line(capsys, main(args), pattern)
    assert not list(tmp_path.rglob("results.csv")) and not list(tmp_path.rglob("result.json"))


def test_a_sweep_with_dp_in_some_cells_accepts_sigma():
    from slsec.run.preflight import inapplicable
    assert "sigma" in inapplicable(make_config({"sigma": 0.1}))
    assert not inapplicable(make_config({"sigma": 0.1, "defense": "dp"}))


# ------------------------------------------------------------------ 4. bounded solvers

def test_noise_solver_is_bounded_and_keeps_the_guarantee():
    from slsec.privacy import accounting
    t0 = time.perf_counter()
    nm = accounting.noise_for_epsilon(target_epsilon=1e300, delta=1e-5, sample_rate=1.0, steps=1)
    assert time.perf_counter() - t0 < 120
    assert nm > 0 and accounting.epsilon(noise_multiplier=nm, sample_rate=1.0, steps=1,
                                         delta=1e-5) <= 1e300
    eps = accounting.epsilon(noise_multiplier=1e308, sample_rate=1.0, steps=3, delta=1e-5)
    assert math.isfinite(eps) and eps == accounting.epsilon(
        noise_multiplier=1e6, sample_rate=1.0, steps=3, delta=1e-5)


# ------------------------------------------------------------------ 7. hostile names and files

@pytest.mark.parametrize("name", ["tu:../../x", "tu:a/b", "tu:..", "tu:x y", "tu:.hidden"])
def test_tu_names_cannot_leave_the_data_root(tmp_path, capsys, name):
    root = tmp_path / "root"
    root.mkdir()
    code = main(["train", *TINY, "--dataset", name, "--download", "true", "--data-root",
                 str(root), "--out", str(tmp_path / "o")])
    one_line(capsys, code, r"a TU dataset name is letters, digits")
    assert set(p.name for p in tmp_path.iterdir()) <= {"root", "o"}
    assert not any(root.iterdir()) and not (tmp_path.parent / "x").exists()
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_config_files_are_size_capped(tmp_path, capsys):
    one_line(capsys, main(["train", "--config", "/dev/zero"]), r"larger than 1 MiB")
    big = tmp_path / "big.toml"
    big.write_text("# x\n" * 400_000)
    one_line(capsys, main(["train", "--config", str(big)]), r"larger than 1 MiB")


@pytest.mark.parametrize("body, pattern", [
    ("[1, 2, 3]", r"not an slsec result \(a JSON list"),
    ('{"foo": 1}', r"not an slsec result: no 'config' object"),
    ('{"config": {}, "metrics": {}}', r"'config' lacks protocol"),
    ("{oops", r"cannot be read"),
])
def test_report_refuses_a_result_json_of_the_wrong_shape(tmp_path, capsys, body, pattern):
    f = tmp_path / "r"
    mark(f, "run")
    (f / "result.json").write_text(body)
    one_line(capsys, main(["report", str(f)]), pattern)
    assert not (f / "report.md").exists()


def test_report_refuses_a_sweep_json_of_the_wrong_shape(tmp_path, capsys):
    f = tmp_path / "s"
    mark(f, "sweep")
    append_row(f / "results.csv", {"cell": "c", "protocol": "vanilla", "accuracy": 0.5})
    (f / "sweep.json").write_text("[]")
    one_line(capsys, main(["report", str(f)]), r"sweep.json is not an slsec sweep record")


def test_report_embeds_only_valid_pngs(tmp_path):
    from slsec.report import checked_png, to_html
    bad = tmp_path / "reconstructions.png"
    bad.write_bytes(b"<script>alert(1)</script>")
    html = to_html("t", [("img", str(bad), "cap")])
    assert "script" not in html and "not embedded: not a PNG file" in html
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    assert checked_png(bad)[0] is None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(bad, format="png")
    plt.close(fig)
    assert checked_png(bad)[0] == bad.read_bytes()


# ------------------------------------------------------------------ 8. disk full, permission lost

def _fail_on(monkeypatch, predicate, code=errno.ENOSPC):
    real = os.replace

    def replace(src, dst, *a, **k):
        if predicate(Path(dst).name):
            raise OSError(code, os.strerror(code))
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_sweep_report_that_cannot_be_written_says_the_rows_are_kept(tmp_path, capsys,
                                                                    monkeypatch, code):
    out = tmp_path / "o"
    argv = ["sweep", "--lr", "0.001,0.002", *TINY, "--out", str(out), "--run-id", "s"]
    _fail_on(monkeypatch, lambda d: "report" in d or "frontier" in d, code)
    line = one_line(capsys, main(argv), r"cannot write .*(No space left|Permission denied)")
    assert "all 2 row(s) in" in line and "are kept" in line and "slsec report" in line
    assert len(read_rows(out / "s" / "results.csv")) == 2
    assert not list((out / "s").glob(".*.tmp"))
    monkeypatch.undo()
    assert main(["report", str(out / "s")]) == 0          # the next run recognises the folder


def test_disk_full_on_a_row_keeps_the_earlier_rows_and_resume_continues(tmp_path, capsys,
                                                                       monkeypatch):
    out = tmp_path / "o"
    argv = ["sweep", "--lr", "0.001,0.002,0.003", *TINY, "--out", str(out), "--run-id", "s"]
    calls = {"n": 0}

    def second_row(dst: str) -> bool:
        if dst.endswith("results.csv"):
            calls["n"] += 1
            return calls["n"] == 2
        return False
    _fail_on(monkeypatch, second_row)
    line = one_line(capsys, main(argv), r"No space left")
    assert "the 1 finished row(s)" in line and "--resume --run-id s" in line
    assert len(read_rows(out / "s" / "results.csv")) == 1
    monkeypatch.undo()
    assert main(argv + ["--resume"]) == 0
    assert len(read_rows(out / "s" / "results.csv")) == 3


def test_disk_full_on_a_run_says_nothing_was_kept(tmp_path, capsys, monkeypatch):
    _fail_on(monkeypatch, lambda d: d.endswith("result.json"))
    line = one_line(capsys, main(["train", *TINY, "--out", str(tmp_path), "--run-id", "r"]),
                    r"No space left")
    assert "nothing of this run was kept" in line
    monkeypatch.undo()
    assert main(["train", *TINY, "--out", str(tmp_path), "--run-id", "r"]) == 0   # reusable


# ------------------------------------------------------------------ 9. NaN loss, strict JSON

def test_nan_loss_stops_training_with_one_line(tmp_path, capsys):
    code = main(["train", *TINY, "--lr", "1e30", "--out", str(tmp_path), "--run-id", "d"])
    one_line(capsys, code, r"^error: training diverged at round 1 \(loss nan\); lower --lr$")
    assert not (tmp_path / "d" / "result.json").exists()


def test_json_is_written_strict(tmp_path):
    p = write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")],
                                         "c": {"d": -float("inf")}})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None, "b": [1.0, None], "c": {"d": None}}


# ------------------------------------------------------------------ SIGKILL at many points

@pytest.mark.slow
def test_sweep_killed_at_many_points_loses_duplicates_and_trusts_nothing():
    """bench/kill_sweep.py, shortened: 4 kills, the kill points in turn: a random moment 2-8 s
    after start (start-up, validation or mid-cell), mid-row write, mid-report, and a random
    moment again; the 4th attempt's resume also finds its last row cut in half when the sweep
    has rows then (--damage-every 3; usually so: mid-report comes after every row). The
    script exits non-zero on any lost, duplicated or damaged-and-trusted row, or a damaged row
    not moved to rejected-rows.csv. The cap of 8 s fits the 4-cell sweep (a later random kill
    finds it finished, an attempt spent on nothing). The full run (20 kills, random up to
    25 s) is in the report: see bench/README.md."""
    import subprocess
    import sys
    script = Path(__file__).resolve().parents[1] / "bench" / "kill_sweep.py"
    proc = subprocess.run([sys.executable, str(script), "--kills", "4", "--cells", "4",
                           "--random-max", "8", "--damage-every", "3"],
                          capture_output=True, text=True, timeout=1500)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lost 0, duplicated 0" in proc.stdout
