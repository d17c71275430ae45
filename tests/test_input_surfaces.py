"""Input classes hardened together: numbers at the edges, options that do not apply, config
files, MPI launches without --backend mpi, SIGTERM, concurrent runs into one --run-id. Each
mistake is one line and exit 2 before training (in this process, through slsec.cli.main)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slsec.cli import main
from test_bad_input import check_one_line, expand

SLSEC = Path(sys.executable).parent / "slsec"


def case(argv: str, pattern: str, name: str) -> pytest.param:
    return pytest.param(argv.split(), pattern, id=name)


CASES = [
    # numbers at the edges
    case("train --batch-size 99999999999999999999", r"--batch-size must be a whole number of "
         r"at most 64 bits", "batch-beyond-64-bits"),
    case("train --rounds -99999999999999999999", r"--rounds must be >= 1", "rounds-negative-huge"),
    case("train --defense dp --sigma 1e-320", r"--sigma 1e-320 is too small to compute with",
         "sigma-subnormal"),
    case("train --lr 5e-324", r"--lr 5e-324 is too small", "lr-subnormal"),
    case("train --threads 100000", r"--threads must be at most 1024, got 100000", "threads-huge"),
    case("evaluate --attack inversion --attack-iters -5", r"--attack-iters must be >= 1, got -5",
         "attack-iters-negative"),
    case("evaluate --attack inversion --attack-iters 0", r"--attack-iters must be >= 1, got 0",
         "attack-iters-zero"),
    # options that do not apply
    case("train --alpha 0.1", r"--alpha is the concentration of --partition dirichlet; it does "
         r"not apply", "alpha-with-iid"),
    case("train --protocol fedavg --cut conv2", r"--cut places the cut of a split-learning "
         r"protocol; it does not apply", "cut-with-fedavg"),
    case("train --protocol fedavg --cut2 fc1", r"--cut2 places the second cut", "cut2-fedavg"),
    case("train --straggler 1:0.1,1:0.2", r"--straggler names the same client twice \(1\)",
         "straggler-twice"),
    case("train --defense dp,dp", r"--defense names the same item twice \(dp\)", "defense-twice"),
    case("evaluate --attack inversion --knowledge aux_data,aux_data",
         r"--knowledge names the same item twice", "knowledge-twice"),
    case("train --attack inversion", r"--attack inversion: slsec train runs no attack",
         "train-attack"),
    case("train --label-epsilon 1", r"--label-epsilon is the epsilon of --defense label-rr; it "
         r"does not apply", "plugin-flag-at-its-default"),
    case("evaluate --attack inversion --max-grad-norm 1", r"--max-grad-norm is the clip of "
         r"--defense dpsgd; it does not apply", "plugin-flag-at-its-default-evaluate"),
    # config files
    case("train --config {d}/deep.toml", r"deep.toml nests tables or arrays too deeply",
         "toml-deep-arrays"),
    case("train --config {d}/deept.toml", r"deept.toml nests tables or arrays too deeply",
         "toml-deep-tables"),
    case("train --config {d}/dup.toml", r"'rounds' is given both at the top level and in "
         r"\[run\]", "toml-key-twice"),
    case("train --config {d}/bomtypo.toml", r"bomtypo.toml: unknown key 'roundz'",
         "toml-bom-then-read"),
]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("surfaces")
    (d / "deep.toml").write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    (d / "deept.toml").write_text("x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n")
    (d / "dup.toml").write_text("rounds = 1\n[run]\nrounds = 2\n")
    (d / "bomtypo.toml").write_bytes(b"\xef\xbb\xbfroundz = 1\n")
    return d


@pytest.mark.parametrize("argv,pattern", CASES)
def test_edges_and_inapplicable_options_are_one_line(argv, pattern, bad_dir, tmp_path, capsys,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(expand(argv, bad_dir, tmp_path / "reports"))
    cap = capsys.readouterr()
    check_one_line(code, cap.out, cap.err, pattern)
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_a_toml_file_after_a_bom_is_read(tmp_path):
    from slsec.config import merged_config
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbfrounds = 3\n")
    assert merged_config(str(tmp_path / "bom.toml"), {}).rounds == 3


def test_vanishing_noise_accounts_as_no_guarantee():
    import math

    from slsec.privacy.accounting import epsilon, epsilons
    assert epsilon(noise_multiplier=1e-300, sample_rate=1.0, steps=3, delta=1e-5) == math.inf
    assert epsilons(noise_multiplier=1e-300, sample_rate=1.0, steps=3,
                    deltas=[1e-5, 1e-3]) == [math.inf, math.inf]
    assert epsilon(noise_multiplier=1.0, sample_rate=1.0, steps=3, delta=1e-5) < 100


@pytest.mark.parametrize("env", [{"PMI_SIZE": "3", "PMI_RANK": "0"},
                                 {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}])
def test_an_mpi_launch_without_backend_mpi_is_refused(env, tmp_path, capsys, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = main(["train", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    check_one_line(code, cap.out, cap.err, r"started as \d MPI ranks \(mpiexec\) but --backend "
                                           r"is local.*add --backend mpi")
    assert not (tmp_path / "o").exists()


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c_and_keeps_finished_rows(tmp_path):
    """SIGTERM mid-sweep: one line, exit 143, the finished rows stay in results.csv."""
    argv = [str(SLSEC), "sweep", "--max-train", "300", "--aux-size", "64", "--probe-size", "4",
            "--lr", ",".join(f"0.00{i}" for i in range(1, 10)), "--out", str(tmp_path),
            "--run-id", "s"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    rows = tmp_path / "s" / "results.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if rows.exists() and len(rows.read_text().splitlines()) >= 2:   # one cell finished
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert errors == ["error: terminated (SIGTERM); finished results are kept, nothing is "
                      "half-written"], err
    assert "Traceback" not in err
    from slsec.report.results import scan_rows
    good, bad = scan_rows(rows)           # every finished row kept, none half-written
    assert len(good) >= 1 and bad == []
    assert not list((tmp_path / "s").glob(".*.tmp"))


@pytest.mark.slow
def test_two_runs_with_one_run_id_at_once_one_is_refused(tmp_path):
    argv = [str(SLSEC), "train", "--max-train", "64", "--aux-size", "64", "--probe-size", "4",
            "--out", str(tmp_path)]
    procs = [subprocess.Popen(argv + ["--run-id", "same"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    procs += [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env()) for _ in range(2)]   # generated names, one second
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes[:2]) == [0, 2], outs
    loser = outs[codes.index(2)][1]
    assert ("another slsec command is writing" in loser or "already exists" in loser), loser
    assert len(loser.strip().splitlines()) == 1
    assert codes[2:] == [0, 0], outs[2:]
    results = sorted(tmp_path.glob("*/result.json"))
    assert len(results) == 3   # 'same' once, and two distinct generated folders


def test_attack_settings_are_declared_params():
    """fora's and hijack's settings are Params (flags, TOML keys, help, checks); the value
    given reaches the attack, and the defaults are the declarations'."""
    import slsec.attacks  # noqa: F401
    from conftest import one_line_user_error
    from slsec.attacks.base import ATTACKS
    from slsec.config import make_config
    from slsec.run.harness import declared_params
    fora, hijack = ATTACKS.get("fora"), ATTACKS.get("hijack")
    assert fora.DEFAULTS["steps"] == 600 and hijack.DEFAULTS["patience"] == 200
    cfg = make_config({"attack": "fora", "fora_steps": "7", "fora_width": 8})
    given = declared_params(cfg, fora)
    assert given["steps"] == 7 and given["width"] == 8 and given["lr"] == 1e-3
    one_line_user_error(lambda: make_config({"attack": "fora", "fora_steps": 0}), "--fora-steps")
    one_line_user_error(lambda: make_config({"attack": "hijack", "hijack_pilot": "x"}),
                        "--hijack-pilot must be one of auto, model, pca")
    from slsec.run.preflight import inapplicable
    assert "fora_lr" in inapplicable(make_config({"fora_lr": 0.5}))
    gi = ATTACKS.get("gradient-inversion")    # per-method defaults: not set = the method's own
    assert declared_params(make_config({"protocol": "fedavg", "attack": "gradient-inversion"}),
                           gi) == {}
    attack = gi(method="ig", **declared_params(make_config(
        {"protocol": "fedavg", "attack": "gradient-inversion", "gi_tv": 0.5}), gi))
    attack._method = "ig"
    assert attack._p("tv") == 0.5 and attack._p("lr") == 0.1
    inv = ATTACKS.get("inversion")
    attack = inv(method="whitebox", **declared_params(make_config(
        {"attack": "inversion", "inv_whitebox_tv": 0.3, "attack_iters": 7}), inv),
        iterations=7)
    assert attack._p("whitebox", "tv") == 0.3 and attack._p("decoder", "lr") == 3e-3
    assert attack._p("decoder", "steps") == 7 and inv.DEFAULTS["whitebox"]["iterations"] == 600
