"""The scripts in examples/ run as a user would run them (small settings, own output folder)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, out: Path) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), str(out)], capture_output=True,
                          text=True, timeout=600, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_example_evaluate(tmp_path):
    out = run_example("evaluate.py", tmp_path / "run")
    assert "defended" in out and "undefended" in out
    stored = json.loads((tmp_path / "run" / "result.json").read_text())
    assert stored["config"]["defense"] == ["dp"] and "undefended" in stored
    assert (tmp_path / "run" / "reconstructions.png").exists()


@pytest.mark.slow
def test_example_sweep(tmp_path):
    out = run_example("sweep.py", tmp_path)
    rows = (tmp_path / "example-sweep" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and "undefended_attack_ssim_mean" in out


@pytest.mark.slow
def test_example_custom_model(tmp_path):
    out = run_example("custom_model.py", tmp_path / "cm")
    assert "cut hidden:" in out
    stored = json.loads((tmp_path / "cm" / "run" / "result.json").read_text())
    assert stored["config"]["dataset"].startswith("npz:") and stored["metrics"]["cuts"] == ["hidden"]


@pytest.mark.slow
def test_example_imagefolder(tmp_path):
    out = run_example("imagefolder.py", tmp_path / "img")
    assert "probes of shape (3, 16, 16)" in out
    assert len(list((tmp_path / "img" / "images").glob("*/*.png"))) == 120
    assert (tmp_path / "img" / "run" / "report.html").exists()
