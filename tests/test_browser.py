"""The HTML reports in a real browser: headless Chromium loads the run, sweep, review and compare
report.html; every image must load, the console must stay quiet, the screenshot must not
be blank and the page must fit a 1,280-px window (no horizontal scrolling). Skipped when
chromium is absent, except in CI (.ci/run installs it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slsec.cli import main

TINY = ["--max-train", "64", "--aux-size", "64", "--rounds", "2", "--probe-size", "4",
        "--attack-iters", "2", "--batch-size", "32"]
WINDOW = 1280   # px: a laptop's browser window; every report must fit it
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
# after load: how many images there are, how many did not decode (naturalWidth 0) and how wide
# the page is laid out (scrollWidth: wider than the window means a horizontal scroll bar)
PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
         "document.body.setAttribute('data-images',i.length);"
         "document.body.setAttribute('data-width',document.documentElement.scrollWidth);"
         "document.body.setAttribute('data-broken',i.filter(x=>!x.complete||x.naturalWidth===0)"
         ".length);});</script>")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                           *args], capture_output=True, text=True, timeout=120)


def check_page(html: Path, shot: Path) -> dict[str, int]:
    """Load `html` in Chromium: images, console, screenshot. Returns what it counted."""
    probe = html.with_name(".probe.html")
    probe.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium("--dump-dom", f"--window-size={WINDOW},900", probe.as_uri())
    probe.unlink()
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', dom.stdout).group(1))
    broken = int(re.search(r'data-broken="(\d+)"', dom.stdout).group(1))
    assert broken == 0, f"{broken} of {images} images did not load in {html}"
    width = int(re.search(r'data-width="(\d+)"', dom.stdout).group(1))
    assert width <= WINDOW, f"{html} is {width} px wide: it does not fit a {WINDOW}-px window"
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    shot_run = _chromium(f"--screenshot={shot}", f"--window-size={WINDOW},2400", html.as_uri())
    assert shot_run.returncode == 0 and shot.exists(), shot_run.stderr[-2000:]
    import matplotlib.image as mpimg
    px = mpimg.imread(shot)[..., :3]
    inked = float((px.mean(axis=2) < 0.9).mean())     # share of non-white pixels
    assert px.std() > 0.05 and inked > 0.01, f"{shot} looks blank (std {px.std():.3f})"
    return {"images": images, "inked_permille": int(inked * 1000), "width": width}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="chromium is not installed (CI installs it)")
def test_reports_render_in_a_browser(tmp_path, capsys, cnn_review) -> None:
    """The review is the session's real one (cnn_review in tests/conftest.py, also checked by
    tests/test_review.py), copied here: a second review of its own would add ~30 s to CI."""
    assert CHROMIUM is not None, "CI must install chromium (see .ci/run)"
    out = str(tmp_path)
    assert main(["evaluate", "--protocol", "vanilla", "--attack", "inversion", "--defense", "dp",
                 "--sigma", "0.5", "--out", out, "--run-id", "run", *TINY]) == 0
    assert main(["sweep", "--attack", "inversion", "--defense", "dp", "--sigma", "0,0.5",
                 "--cut", "conv1,fc1", "--out", out, "--run-id", "sweep", *TINY]) == 0
    assert cnn_review.code == 0
    shutil.copytree(cnn_review.folder, tmp_path / "review")
    assert main(["compare", f"{out}/run", f"{out}/sweep", "--out", out, "--run-id", "cmp"]) == 0
    capsys.readouterr()
    shots = Path(os.environ.get("SLSEC_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    review = next(p for p in tmp_path.iterdir() if p.name.startswith("review"))
    expect = {"run": 2, "sweep": 1, review.name: 1, "cmp": 2}   # at least this many figures
    for name, least in expect.items():
        seen = check_page(tmp_path / name / "report.html", shots / f"{name.split('-')[0]}.png")
        assert seen["images"] >= least, (name, seen)
    run_html = (tmp_path / "run" / "report.html").read_text()
    first = re.search(r"<p>(.*?)</p>", run_html).group(1)
    assert first.startswith("Verdict: vanilla with dp")      # the page opens with the verdict
    assert "Versions: slsec " in run_html and "{'" not in run_html
