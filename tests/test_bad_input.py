"""Every user mistake is one line on stderr starting with "error:", exit code 2, no traceback.

Table-driven through `slsec.cli.main([...])` in this process, and a few through the installed
`slsec` executable. `{d}` in an argument is a folder of prepared bad files (see `bad_dir`).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slsec.cli import main

SLSEC = Path(sys.executable).parent / "slsec"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"
TINY = ["--max-train", "64", "--probe-size", "8", "--aux-size", "100", "--batch-size", "32",
        "--rounds", "1"]


def case(argv: str, pattern: str, name: str) -> pytest.param:
    return pytest.param(argv.split(), pattern, id=name)


CASES = [
    # types
    case("train --clients two", r"'clients' must be int, got 'two'", "clients-not-int"),
    case("train --sigma abc", r"'sigma' must be float.*'abc'", "sigma-not-float"),
    case("train --rounds 1.5", r"'rounds' must be int, got '1.5'", "rounds-not-int"),
    case("train --download maybe", r"'download' must be bool, got 'maybe'", "download-not-bool"),
    case("train --clip nan", r"'clip' must be float.*'nan'", "clip-nan"),
    # ranges
    case("train --sigma -1", r"--sigma must be a finite number >= 0, got -1", "sigma-negative"),
    case("train --clip 0", r"--clip must be > 0", "clip-zero"),
    case("train --clients 0", r"--clients must be >= 1, got 0", "clients-zero"),
    case("train --alpha 0", r"--alpha must be a finite number > 0, got 0", "alpha-zero"),
    case("train --delta 2", r"--delta must be in \(0, 1\), got 2", "delta-two"),
    case("train --batch-size 0", r"--batch-size must be >= 1, got 0", "batch-size-zero"),
    case("train --lr -1", r"--lr must be a finite number > 0", "lr-negative"),
    case("train --timeout 0", r"--timeout must be a finite number > 0", "timeout-zero"),
    case("train --seed -1", r"--seed must be >= 0", "seed-negative"),
    case("train --max-train 0", r"--max-train must be >= 1", "max-train-zero"),
    case("train --target-accuracy 2", r"--target-accuracy must be in \(0, 1\]", "target-acc-2"),
    case("train --straggler 9:1", r"--straggler must be k:seconds with 1 <= k <= 2 and seconds a finite number >= 0, got .9:1.",
         "straggler-beyond-clients"),
    case("train --run-id ../escape", r"--run-id names a folder under --out: .*'../escape'",
         "run-id-with-slash"),
    case("train --aux-size 999999", r"--aux-size 999999 leaves no training data", "aux-too-big"),
    # unknown names
    case("train --protocol foo",
         r"unknown protocol 'foo'; valid: fedavg, splitfed, splitfed-async, ushaped, vanilla",
         "protocol-unknown"),
    case("evaluate --attack foo", r"unknown attack 'foo'; valid: .*inversion", "attack-unknown"),
    case("train --defense foo", r"unknown defense 'foo'; valid: (\S+, )*dp, dpsgd", "defense-unknown"),
    case("train --dataset foo", r"unknown dataset 'foo'; valid: .*mnist", "dataset-unknown"),
    case("train --model foo", r"unknown model 'foo'; valid: cnn, gin, (mlp, )?resnet18", "model-unknown"),
    case("train --cut nope", r"invalid cut 'nope' for model 'cnn'; valid cuts: conv1, pool1",
         "cut-unknown"),
    case("train --partition x", r"--partition must be one of iid, dirichlet, got 'x'",
         "partition-unknown"),
    case("train --backend pigeon", r"--backend must be one of local, mpi", "backend-unknown"),
    case("train --device tpu", r"--device must be one of auto, cpu, cuda", "device-unknown"),
    case("train --mechanism foo", r"--mechanism must be one of gaussian, laplace", "mech-unknown"),
    case("train --variant v3", r"--variant must be one of v1, v2", "variant-unknown"),
    case("evaluate --attack inversion --knowledge telepathy",
         r"--knowledge: unknown item\(s\) telepathy; valid: architecture", "knowledge-unknown"),
    case("train --frobnicate 1", r"No such option: --frobnicate", "flag-unknown"),
    case("frobnicate", r"No such command 'frobnicate'", "command-unknown"),
    # incompatible combinations
    case("evaluate --attack gradient-inversion --protocol vanilla",
         r"gradient-inversion'(; valid:| does not apply to protocol 'vanilla')",
         "gradient-inversion-on-vanilla"),
    case("train --defense dpsgd --protocol vanilla",
         r"defense 'dpsgd' does not apply to protocol 'vanilla'; it applies to fedavg",
         "dpsgd-on-vanilla"),
    case("train --defense dp --protocol fedavg",
         r"defense 'dp' does not apply to protocol 'fedavg'", "dp-on-fedavg"),
    case("train --cut2 conv2", r"--cut2 is only for U-shaped SL; protocol 'vanilla' has one cut",
         "cut2-on-vanilla"),
    case("evaluate --attack inversion --method whitebox --knowledge architecture",
         r"method 'whitebox' of attack 'inversion' needs head_weights", "whitebox-no-weights"),
    case("evaluate --attack label-inference --protocol fedavg",
         r"attack 'label-inference' does not apply to protocol 'fedavg'", "label-inf-on-fedavg"),
    # files
    case("train --config {d}/malformed.toml", r"config file \S*malformed.toml is not valid TOML",
         "toml-malformed"),
    case("train --config {d}/unknown.toml",
         r"config file \S*unknown.toml: unknown key 'roundz' \(did you mean 'rounds'\?\)",
         "toml-unknown-key"),
    case("train --config {d}/badvalue.toml", r"config file \S*badvalue.toml: 'clients' must be int",
         "toml-bad-value"),
    case("train --config {d}/missing.toml", r"config file \S*missing.toml does not exist",
         "toml-missing"),
    case("train --config {d}", r"config file \S* cannot be read", "toml-is-a-folder"),
    case("train --dataset mnist-full --data-root {d}/nonexistent",
         r"--data-root \S*nonexistent is not a folder", "data-root-missing"),
    case("train --dataset mnist-full --data-root {d}/corrupt",
         r"data file \S*train-images-idx3-ubyte is truncated or corrupt", "idx-corrupt"),
    case("train --dataset mnist-full --data-root {d}/empty",
         r"data file \S*-idx\d-ubyte is missing", "idx-missing"),
    case("train --out {d}/afile/sub", r"report folder \S*afile/sub is not writable",
         "out-under-a-file"),
    case("report {d}/nonexistent", r"holds neither result.json nor results.csv", "report-nothing"),
    case("sweep --sigma 0,abc", r"grid cell sigma=abc: .*'sigma' must be float", "sweep-bad-axis"),
    # infinity where it makes no sense: the message states the real rule
    case("train --sigma inf", r"--sigma must be a finite number >= 0, got inf", "sigma-inf"),
    case("train --target-epsilon inf", r"--target-epsilon must be a finite number > 0, got inf",
         "target-eps-inf"),
    case("train --noise-multiplier inf", r"--noise-multiplier must be a finite number >= 0",
         "noise-mult-inf"),
    case("train --alpha inf", r"--alpha must be a finite number > 0, got inf", "alpha-inf"),
    case("train --label-epsilon inf", r"--label-epsilon must be a finite number > 0",
         "label-eps-inf"),
    case("train --nopeek-weight inf", r"--nopeek-weight must be a finite number >= 0",
         "nopeek-inf"),
    case("train --lr inf", r"--lr must be a finite number > 0, got inf", "lr-inf"),
    case("train --straggler 1:inf", r"seconds a finite number >= 0, got '1:inf'", "straggler-inf"),
    case("train --seed 18446744073709551616", r"--seed must be a whole number from 0 to 4294967295",
         "seed-beyond-64-bits"),
    case("train --run-id .cache", r"starting with a letter or digit.*'.cache'", "run-id-dot"),
    # hostile names and files
    case("train --dataset tu:../../x --download true", r"a TU dataset name is letters, digits",
         "tu-name-escapes"),
    case("train --config /dev/zero", r"config file /dev/zero is larger than 1 MiB", "config-zero"),
    # options nothing uses, refused like --cut2 on vanilla
    case("train --sigma 0.1", r"--sigma is the noise of --defense dp; it does not apply",
         "sigma-without-dp"),
    case("train --variant v2", r"--variant chooses the SplitFed variant", "variant-on-vanilla"),
    case("train --defense split-select --cut pool2", r"split-select .* use slsec evaluate",
         "train-split-select"),
]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """malformed/unknown-key/bad-value TOML, a regular file, a corrupt and an empty MNIST root."""
    d = tmp_path_factory.mktemp("bad")
    (d / "malformed.toml").write_text('protocol = "vanilla"\nrounds = \n')
    (d / "unknown.toml").write_text('protocol = "vanilla"\nroundz = 2\n')
    (d / "badvalue.toml").write_text('[run]\nclients = "two"\n')
    (d / "afile").write_text("a regular file: nothing can be created under it\n")
    raw = d / "corrupt" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train", "t10k"):       # well-formed headers, images cut short
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(
            b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(range(10)))
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(
            b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28)) + bytes(99))
    (d / "empty" / "MNIST" / "raw").mkdir(parents=True)
    return d


def expand(argv: list[str], d: Path, out: Path) -> list[str]:
    args = [a.replace("{d}", str(d)) for a in argv]
    if args[0] in ("train", "evaluate", "sweep"):
        given = set(args)
        extra = [TINY[i:i + 2] for i in range(0, len(TINY), 2) if TINY[i] not in given]
        args += [x for pair in extra for x in pair]
        if "--out" not in given:
            args += ["--out", str(out)]
    return args


def check_one_line(code: int, out: str, err: str, pattern: str) -> str:
    assert code == 2, f"exit {code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("argv,pattern", CASES)
def test_bad_input_is_one_line_and_exit_2(argv, pattern, bad_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # nothing may land in the repo
    code = main(expand(argv, bad_dir, tmp_path / "reports"))
    cap = capsys.readouterr()
    line = check_one_line(code, cap.out, cap.err, pattern)
    print(line)
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_at_least_twenty_bad_inputs():
    assert len(CASES) >= 20


SUBPROCESS_CASES = [
    case("train --clients two", r"'clients' must be int, got 'two'", "clients-not-int"),
    case("train --protocol foo", r"unknown protocol 'foo'; valid:", "protocol-unknown"),
    case("train --config {d}/unknown.toml", r"unknown.toml: unknown key 'roundz'", "toml-key"),
    case("train --out {d}/afile/sub", r"is not writable", "out-under-a-file"),
]


@pytest.mark.parametrize("argv,pattern", SUBPROCESS_CASES)
def test_bad_input_through_the_slsec_executable(argv, pattern, bad_dir, tmp_path):
    proc = subprocess.run([str(SLSEC), *expand(argv, bad_dir, tmp_path / "reports")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    check_one_line(proc.returncode, proc.stdout, proc.stderr, pattern)


def test_real_corrupt_mnist_file_is_one_line(tmp_path, capsys):
    """The shared real MNIST idx files with the training images truncated mid-image."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"{SHARED_MNIST} not present")
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in SHARED_MNIST.iterdir():
        shutil.copy(f, raw / f.name)
    img = raw / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:5000])
    code = main(["train", "--dataset", "mnist-full", "--data-root", str(tmp_path / "root"),
                 "--out", str(tmp_path / "out"), *TINY])
    cap = capsys.readouterr()
    check_one_line(code, cap.out, cap.err, r"train-images-idx3-ubyte is truncated or corrupt")


def test_mpi_backend_without_a_working_mpi_library_is_one_line(tmp_path):
    """mpi4py present but its MPI library cannot be loaded (simulated with MPI4PY_LIBMPI)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPI4PY_LIBMPI": "/nonexistent/libmpi.so.12"}
    proc = subprocess.run([str(SLSEC), "train", "--backend", "mpi", "--out", str(tmp_path / "o"),
                           *TINY], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    check_one_line(proc.returncode, proc.stdout, proc.stderr,
                   r"--backend mpi.*MPI library.*--backend local")
