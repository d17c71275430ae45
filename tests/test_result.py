"""The engine's typed results: guesses cross an MPI link as named tensors and come back whole."""
from __future__ import annotations

import torch

from slsec.run.result import Guesses, MethodGuess, RunResult


def test_guesses_survive_their_wire_form():
    imgs, scores = torch.rand(4, 1, 8, 8), torch.rand(4, 10)
    sent = Guesses({"whitebox": MethodGuess(imgs, None, 1.25),
                    "hijack": MethodGuess(imgs * 0.5, scores, 2.0, hijack_steps=40,
                                          hijack_converged_at=33),
                    "prior": MethodGuess(imgs.mean(0, keepdim=True).expand_as(imgs), None, 0.1)},
                   prior_labels=torch.tensor([1, 2, 3, 4]), prior_label_source="predicted",
                   prior_reference=True)
    wire = sent.to_tensors()
    assert all(isinstance(v, torch.Tensor) for v in wire.values())   # nothing to unpickle
    got = Guesses.from_tensors(wire)
    assert list(got.methods) == ["whitebox", "hijack", "prior"]       # run order kept
    assert torch.equal(got.methods["whitebox"].images, imgs)
    assert got.methods["whitebox"].label_scores is None
    assert got.methods["whitebox"].seconds == 1.25 and got.methods["whitebox"].hijack_steps is None
    h = got.methods["hijack"]
    assert torch.equal(h.label_scores, scores) and (h.hijack_steps, h.hijack_converged_at) == (40, 33)
    assert torch.equal(got.prior_labels, torch.tensor([1, 2, 3, 4]))
    assert got.prior_label_source == "predicted" and got.prior_reference is True


def test_a_run_result_stores_what_result_json_holds():
    r = RunResult({"seed": 3}, {"accuracy": 0.9}, [{"round": 1}], {"slsec": "x"}, 3)
    assert r.to_dict() == {"config": {"seed": 3}, "metrics": {"accuracy": 0.9},
                           "curve": [{"round": 1}], "versions": {"slsec": "x"}, "seed": 3}
