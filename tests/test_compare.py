"""`slsec compare`: one table and overlay plots across runs (with their twins), sweeps and seeds."""
from __future__ import annotations

import csv
import json

from slsec.cli import main


def _run(folder, seed: int, acc: float, ssim: float) -> None:
    folder.mkdir(parents=True)
    curve = [{"round": r, "accuracy": acc * r / 2, "loss": 2.0 / r, "wall_s": 3.0 * r,
              "bytes": 1e6 * r} for r in (1, 2)]
    metrics = {"accuracy": acc, "attack_ssim_mean": ssim, "attack_method": "decoder",
               "cuts": ["conv1"], "epsilon": 12.0, "train_seconds": 6.0, "mb_on_wire": 2.0}
    config = {"protocol": "vanilla", "dataset": "mnist", "attack": "inversion",
              "defense": ["dp"], "sigma": 0.1, "seed": seed, "rounds": 2}
    twin = {"config": {**config, "defense": [], "sigma": None},
            "metrics": {**metrics, "accuracy": 0.9, "attack_ssim_mean": 0.99, "epsilon": None},
            "curve": curve}
    (folder / "result.json").write_text(json.dumps(
        {"config": config, "metrics": metrics, "curve": curve, "undefended": twin}))


def test_compare_two_runs_and_a_sweep(tmp_path, capsys) -> None:
    _run(tmp_path / "a", 0, 0.80, 0.40)
    _run(tmp_path / "b", 1, 0.84, 0.30)
    sweep = tmp_path / "s"
    sweep.mkdir()
    with (sweep / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["cell", "protocol", "attack", "defense", "cut", "sigma", "seed",
                               "accuracy", "attack_ssim_mean", "attack_method",
                               "undefended_accuracy", "undefended_attack_ssim_mean"])
        w.writeheader()
        for i, (sigma, acc, ssim) in enumerate([(0.0, 0.9, 0.95), (0.5, 0.6, 0.2)]):
            w.writerow({"cell": f"c{i}", "protocol": "vanilla", "attack": "inversion",
                        "defense": "dp", "cut": "fc1", "sigma": sigma, "seed": 0,
                        "accuracy": acc, "attack_ssim_mean": ssim, "attack_method": "whitebox",
                        "undefended_accuracy": 0.92, "undefended_attack_ssim_mean": 0.7})
    rc = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), str(sweep), "--out",
               str(tmp_path), "--run-id", "cmp", "--plot-format", "png,svg"])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "cmp"
    md = (out / "report.md").read_text()
    # one row per run, per twin and per sweep cell
    assert md.count("| a |") == 1 and md.count("| a (undefended) |") == 1
    assert "| s: sigma=0 |" in md and "| s: sigma=0.5 |" in md
    # the two runs differ only in the seed: summarised across seeds
    assert "## Across seeds" in md and "0.820 ± 0.028" in md
    for name in ("accuracy_vs_attack_ssim_mean", "training_curves"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000]
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_compare_rejects_a_folder_that_is_neither(tmp_path, capsys) -> None:
    rc = main(["compare", str(tmp_path), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "neither a run" in err and "Traceback" not in err
