"""`slsec audit` end to end on a tiny configuration, its files, and its bad input."""
import json

import pytest

from slsec.cli import main

TINY = ["--max-train", "64", "--probe-size", "8", "--aux-size", "100", "--batch-size", "32",
        "--rounds", "2"]


def test_audit_prints_and_writes_eps_lower_beside_eps(tmp_path, capsys):
    code = main(["audit", "--defense", "dp", "--target-epsilon", "2", "--canaries", "400",
                 "--out", str(tmp_path), "--run-id", "a", *TINY])
    assert code in (0, None)
    out = capsys.readouterr().out
    assert "eps_lower one-run" in out and "eps_lower f-DP" in out and "eps (RDP)" in out
    assert "consistent: eps_lower <= eps" in out
    stored = json.loads((tmp_path / "a" / "result.json").read_text())
    (r,) = stored["audits"]
    assert r["defense"] == "dp" and r["accountant"] == "prv" and r["canaries"] == 400
    assert 1.9 < r["epsilon"] <= 2.0 and r["epsilon_rdp"] > r["epsilon"]   # PRV is the tighter
    assert 0 <= r["eps_lower_one_run"] <= r["epsilon"] and 0 <= r["eps_lower_fdp"] <= r["epsilon"]
    assert 0 < r["reconstruction_bound"] < 1
    md = (tmp_path / "a" / "report.md").read_text()
    assert "eps_lower f-DP" in md and (tmp_path / "a" / "report.html").exists()
    # the broken copy of the same mechanism is caught, and the first folder is kept
    code = main(["audit", "--defense", "dp", "--target-epsilon", "2", "--canaries", "400",
                 "--broken", "reused-noise", "--out", str(tmp_path), "--run-id", "b", *TINY])
    assert "claim violated: eps_lower > eps" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "result.json").read_text())["audits"][0]["violated"]
    assert json.loads((tmp_path / "a" / "result.json").read_text()) == stored
    assert main(["report", str(tmp_path / "a")]) in (0, None)


@pytest.mark.parametrize("argv,pattern", [
    (["--defense", "dp", "--canaries", "1"], "--canaries must be a whole number >= 2, got 1"),
    (["--defense", "dp", "--canaries", "many"], "--canaries must be a whole number, got 'many'"),
    (["--defense", "dp", "--confidence", "1.5"], r"--confidence must be in \(0, 1\), got 1.5"),
    (["--defense", "dp", "--broken", "nope"], "--broken must be one of weak-noise"),
    (["--defense", "nopeek"], "slsec audit needs a DP defense"),
    (["--defense", "dp", "--mechanism", "laplace"], "needs --defense dp with --mechanism gaussian"),
])
def test_bad_audit_input_is_one_line_exit_2(tmp_path, capsys, argv, pattern):
    import re
    code = main(["audit", *argv, "--out", str(tmp_path), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and re.search(pattern, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())          # nothing written for a refused audit
