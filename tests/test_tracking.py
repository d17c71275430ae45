"""--log tensorboard: scalars per round and the final metrics, or one clear line without it."""
from __future__ import annotations

import importlib.util

import pytest

from slsec.cli import main

HAS_TB = importlib.util.find_spec("tensorboard") is not None


@pytest.mark.skipif(HAS_TB, reason="tensorboard is installed here")
def test_without_tensorboard_one_clear_line(tmp_path, capsys) -> None:
    assert main(["evaluate", "--log", "tensorboard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: --log tensorboard needs the tensorboard package "
                           "(pip install tensorboard)")
    assert not any(tmp_path.iterdir())          # failed before any work


def test_unknown_logger(tmp_path, capsys) -> None:
    assert main(["evaluate", "--log", "wandb", "--out", str(tmp_path)]) == 2
    assert "--log must be one of tensorboard" in capsys.readouterr().err


def test_event_file_reads_back(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from slsec.report.tracking import write
    curve = [{"round": r, "accuracy": 0.5 + r / 10, "loss": 1.0 / r, "wall_s": r, "bytes": 10 * r}
             for r in (1, 2)]
    result = {"curve": curve, "metrics": {"accuracy": 0.7, "epsilon": float("inf")},
              "undefended": {"metrics": {"accuracy": 0.9}}}
    write("tensorboard", tmp_path / "tb", result)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("curve/accuracy")] == pytest.approx([0.6, 0.7])
    assert acc.Scalars("metrics/accuracy")[0].value == pytest.approx(0.7)
    assert acc.Scalars("undefended/accuracy")[0].value == pytest.approx(0.9)
    assert "metrics/epsilon" not in acc.Tags()["scalars"]      # ∞ is not a scalar to plot
