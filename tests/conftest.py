"""Shared fixtures: the real data folder (../shared/data), single-threaded torch and one real
`slsec review` of the CNN (cnn_review); shared helpers: ordinary training (train_epoch) and the
one-line-error check (one_line_user_error)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch

from slsec.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (relative to the repo root); skips the test when it is absent."""
    path = (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not present")
    return path


@pytest.fixture(autouse=True)
def torch_threads() -> None:
    """Run every test with one torch thread (the test machines are shared)."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grids in this process run their cells one after another unless a test passes --jobs
    (the suite already runs tests side by side; tests/test_grid.py covers the workers)."""
    monkeypatch.setattr("slsec.study.executor.default_jobs", lambda: 1)


@pytest.fixture(scope="session")
def cnn_review(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One real `slsec review` of the CNN on MNIST (every cut, both default protocols, the
    malicious-server column at 5 client steps), run once per session: tests/test_review.py
    checks its table, report and rows, tests/test_browser.py renders its report.html (a review
    is ~25 s on 2 cores; running it once instead of twice saves that in CI).
    Fields: code (the exit status), out (what it printed on stdout), folder (its run folder)."""
    from slsec.cli import main
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("review")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["review", "--model", "cnn", "--dataset", "mnist", "--max-train", "300",
                     "--probe-size", "8", "--attack-iters", "30", "--hijack-steps", "5",
                     "--out", str(out), "--run-id", "rv"])
    return SimpleNamespace(code=code, out=printed.getvalue(), folder=out / "rv")


def train_epoch(model: torch.nn.Module, split, batch_size: int = 32, lr: float = 1e-3) -> None:
    """One epoch of ordinary (monolithic) Adam training in order: the attacks' 'trained model'."""
    opt = torch.optim.Adam(model.parameters(), lr)
    for i in range(0, len(split), batch_size):
        feats, y = split.batch(torch.arange(i, min(i + batch_size, len(split))))
        loss = torch.nn.functional.cross_entropy(model(feats)["x"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def one_line_user_error(make: Callable[[], Any], flag: str) -> None:
    """`make()` raises a UserError of one line that names `flag`."""
    with pytest.raises(UserError) as e:
        make()
    assert flag in str(e.value) and "\n" not in str(e.value)
