"""Run reports describe the defenses that ran, and headers never print empty fields."""
from __future__ import annotations

import json

import pytest

from slsec.cli import main
from slsec.cli.commands import defense_sections, render_run, run_title_parts

TINY = ["--max-train", "64", "--aux-size", "64", "--rounds", "1", "--probe-size", "2",
        "--attack-iters", "1", "--batch-size", "32"]


def test_each_defense_contributes_its_own_section() -> None:
    cfg = {"defense": ["dp", "nopeek"], "clip": None, "mechanism": "gaussian", "delta": 1e-5,
           "accountant": "rdp", "sigma": 0.1, "nopeek_weight": 0.5}
    m = {"epsilon": 3.0, "epsilon_dp": 3.0, "delta": 1e-5, "clip_used": 2.5, "sigma_used": 0.1}
    sections = defense_sections(cfg, m)
    assert [h for h, _ in sections] == ["Differential privacy at the cut", "NoPeek"]
    assert "C = 2.5" in sections[0][1] and "epsilon = 3.000" in sections[0][1]
    assert "dCor" in sections[1][1] and "no DP claim" in sections[1][1]


def test_title_has_no_empty_fields() -> None:
    parts = run_title_parts({"protocol": "fedavg", "dataset": "mnist", "attack": None}, {"cuts": []})
    assert parts == ["fedavg", "mnist/cnn"]
    parts = run_title_parts({"protocol": "ushaped", "dataset": "mnist", "attack": "inversion"},
                            {"cuts": ["conv1", "fc1"], "attack_method": "decoder",
                             "attack_role": "server"})
    assert parts == ["ushaped", "mnist/cnn", "cuts conv1,fc1", "attack inversion (decoder, server)"]


@pytest.mark.slow
def test_fedavg_dpsgd_report_has_the_dpsgd_text_only(tmp_path, capsys) -> None:
    rc = main(["evaluate", "--protocol", "fedavg", "--attack", "gradient-inversion",
               "--defense", "dpsgd", "--noise-multiplier", "0.5", "--out", str(tmp_path),
               "--run-id", "run", *TINY])
    out = capsys.readouterr()
    assert rc == 0, out.err
    title = " ".join(line.strip() for line in out.out.splitlines()[:2])   # rich may wrap it
    assert title.startswith("fedavg · mnist/cnn · attack gradient-inversion (")
    assert "cut" not in title and "  " not in title and "aggregator)" in title
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Differential privacy: DP-SGD" in md
    assert "noise multiplier z = 0.5" in md and "aggregator" in md
    assert "smashed" not in md and "at the cut" not in md     # nothing of DP at the cut
    assert "cuts -" not in md and "cuts ," not in md
    # re-rendering from result.json gives the same sections
    render_run(tmp_path / "run", json.loads((tmp_path / "run" / "result.json").read_text()))
    assert (tmp_path / "run" / "report.md").read_text() == md


@pytest.mark.slow
def test_json_stdout_is_the_result_alone(tmp_path) -> None:
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, "-m", "slsec.cli", "evaluate", "--protocol", "vanilla", "--attack",
         "inversion", "--defense", "dp", "--sigma", "0", "--out", str(tmp_path), "--json", *TINY],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)            # nothing but the object on stdout
    assert result["config"]["defense"] == ["dp"] and "undefended" in result
    assert result["metrics"]["epsilon"] is None  # ε = ∞ at σ = 0: strict JSON has no Infinity
    assert "wall-clock" in proc.stderr and "attack SSIM" in proc.stderr


def test_plain_progress_is_rate_limited(monkeypatch) -> None:
    import io
    import time

    from slsec import progress
    rep = progress.Reporter()
    rep.stream, rep.tty, rep.file = io.StringIO(), False, None
    monkeypatch.setattr(progress, "FIRST_LINE_S", 0.0)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.2)
    monkeypatch.setattr(progress, "REPORTER", rep)
    start = time.monotonic()
    with progress.phase("attack demo", total=400, unit="iterations"):
        for _ in range(400):
            progress.tick("attack demo")
            time.sleep(0.002)
    took = time.monotonic() - start
    lines = rep.stream.getvalue().splitlines()
    assert lines and all(line.startswith("attack demo: ") for line in lines)
    assert lines[-1].startswith("attack demo: 400/400 iterations") and lines[-1].endswith("done")
    assert len(lines) <= took / 0.2 + 2          # one line per interval, plus the closing one
    progress.tick("not open")                    # a phase nobody opened: silent no-op
    assert len(rep.stream.getvalue().splitlines()) == len(lines)


def test_labels_say_what_was_measured() -> None:
    import slsec
    from slsec.cli.commands import command_seconds, shown
    from slsec.study.sweeps import axis_text, methods_text
    # a run whose best accuracy stayed at chance has not converged
    assert shown({"rounds_to_convergence": 1, "best_accuracy": 0.12, "chance_accuracy": 0.1},
                 "rounds_to_convergence") == "not reached"
    assert shown({"rounds_to_convergence": 2, "best_accuracy": 0.9, "chance_accuracy": 0.1},
                 "rounds_to_convergence") == 2
    # sigma = 0 with a finite clip is clipped but unnoised; without dp it is just 0
    assert axis_text({"sigma": 0.0, "clip_used": 23.0}, "sigma") == "0 (clipped, no noise)"
    assert axis_text({"sigma": 0.0, "clip_used": float("inf")}, "sigma") == "0"
    assert axis_text({"sigma": 0.1, "clip_used": 23.0}, "sigma") == "0.1"
    recs = [{"attack_method": m} for m in ("decoder", "decoder", "whitebox", "decoder")]
    assert methods_text(recs) == "per cell: decoder ×3, whitebox ×1"
    assert methods_text(recs[:2]) == "decoder"
    # the wall-clock counts from this interpreter's import of slsec, not the process start
    import time
    assert abs(command_seconds() - (time.perf_counter() - slsec.STARTED)) < 1.0
