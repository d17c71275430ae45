"""The Python API refuses bad calls in one line (unknown keyword with the closest valid one,
non-callable progress, a non-bool twin, ragged arrays, an attack given to train), writes where
out=/run_id= ask and never over earlier results, and gives threads the numbers of sequential
calls (runs are serialised: torch's global generator is shared by every thread)."""
from __future__ import annotations

import json
import threading

import pytest
import torch

import slsec
from slsec.errors import UserError
from conftest import one_line_user_error

TINY = dict(max_train=128, aux_size=64, probe_size=4, batch_size=32)


def test_an_unknown_keyword_names_the_closest_and_the_valid_ones():
    with pytest.raises(UserError) as e:
        slsec.train(sigmaa=1.0)
    msg = str(e.value)
    assert "unknown keyword 'sigmaa' (did you mean sigma?)" in msg and "\n" not in msg
    assert "valid: model, dataset, config, progress, protocol" in msg and "run_id" in msg
    with pytest.raises(UserError, match="unknown keyword 'twins' \\(did you mean twin\\?\\)"):
        slsec.evaluate(twins=False)


@pytest.mark.parametrize("call,flag", [
    (lambda: slsec.train(progress=5), "progress must be a function"),
    (lambda: slsec.evaluate(attack="inversion", twin="no"), "twin must be True or False"),
    (lambda: slsec.evaluate(attack="inversion", twin=1), "twin must be True or False"),
    (lambda: slsec.train(attack="inversion"), "train runs no attack"),
    (lambda: slsec.train(dataset=([[1, 2], [3]], [0, 1])), "'x' is not a rectangular"),
    (lambda: slsec.train(dataset=([[0.5]], [[0, 1], [1]])), "'y' is not a rectangular"),
])
def test_bad_api_calls_are_one_line(call, flag):
    one_line_user_error(call, flag)


def test_out_and_run_id_write_a_new_folder_and_never_overwrite(tmp_path):
    r = slsec.train(out=str(tmp_path), run_id="mine", **TINY)
    stored = json.loads((tmp_path / "mine" / "result.json").read_text())
    assert stored["metrics"]["accuracy"] == r.metrics["accuracy"]
    before = (tmp_path / "mine" / "result.json").read_bytes()
    one_line_user_error(lambda: slsec.train(out=str(tmp_path), run_id="mine", **TINY),
                        "--run-id mine already exists")
    one_line_user_error(lambda: r.save(tmp_path / "mine"), "already holds results")
    assert (tmp_path / "mine" / "result.json").read_bytes() == before
    r.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "result.json").exists()
    slsec.train(out=str(tmp_path / "gen"), **TINY)   # out= alone: a generated name
    assert len(list((tmp_path / "gen").glob("*/result.json"))) == 1


def _numbers(r: slsec.Result) -> list:
    return [r.metrics["accuracy"], [(row["accuracy"], row["loss"]) for row in r.curve]]


def test_two_threads_get_the_numbers_of_sequential_calls():
    torch.set_num_threads(1)
    seeds = (0, 1)
    alone = {s: _numbers(slsec.train(seed=s, **TINY)) for s in seeds}
    together: dict[int, list] = {}
    threads = [threading.Thread(target=lambda s=s: together.__setitem__(
        s, _numbers(slsec.train(seed=s, **TINY)))) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
