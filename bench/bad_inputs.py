"""Run many bad inputs through the installed `slsec` executable and print a table.

    python bench/bad_inputs.py [--only SUBSTRING] [--keep DIR]

(bench/bad_inputs_more.py adds the cases of plug-ins, own models and data, config files,
numbers at the edges, options that do not apply, results and MPI launches; a case may set
environment variables, e.g. SLSEC_PLUGINS or an mpiexec's PMI_SIZE.)

Each case is a command line (run in a scratch folder that holds earlier results: a finished
run, a sweep, a benchmark), the exit code it gave, and the first line of stderr. A case passes
when: no traceback, a non-zero exit (or exit 0 with a warning for the cases marked "warn" /
"ok"), at most one line on stderr, and no file that existed before it changed (except the
files the case is expected to rewrite, e.g. report.md on `slsec report`). Tiny settings
(--max-train 200 --rounds 1 --probe-size 4) keep the few cases that train fast; inputs
refused at validation take a few seconds each (the time is mostly Python + torch start-up).
The disk-full cases mount a small tmpfs, so they run only as root (skipped otherwise).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bad_inputs_more as more   # plug-ins, own models and data, edges, MPI (bench/)

SLSEC = str(Path(sys.executable).parent / "slsec")
PROGRESS = re.compile(r"^[a-z][\w-]*: .* · ")   # a plain progress line (slsec/progress.py)
TINY = ["--max-train", "200", "--rounds", "1", "--probe-size", "4", "--aux-size", "100",
        "--batch-size", "64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


def run(argv: list[str], cwd: Path, timeout: int = 300,
        env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([SLSEC, *argv], cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, env={**ENV, **(env or {})})
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        return -9, "", f"TIMEOUT after {timeout} s", time.perf_counter() - t0


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                pass
    return out


def setup_scratch(w: Path) -> None:
    """Earlier results the bad inputs must not harm, and prepared bad files."""
    o = w / "o"
    for argv in (["train", *TINY, "--out", "o", "--run-id", "keep"],
                 ["sweep", *TINY, "--lr", "0.001,0.002", "--out", "o", "--run-id", "sw"],
                 ["benchmark", *TINY, "--dataset", "mnist", "--protocol", "vanilla",
                  "--partition", "iid", "--out", "o", "--run-id", "b"]):
        code, _, err, _ = run(argv, w)
        assert code == 0, (argv, err)
    f = w / "files"
    f.mkdir()
    (f / "big.toml").write_text("# padding\n" * 200_000)
    (f / "bin.toml").write_bytes(bytes(range(256)) * 10)
    (f / "ok.toml").write_text('rounds = 1\nmax_train = 200\nprobe_size = 4\n')
    (f / "nested.toml").write_text('[run.deeper]\nx = 1\n')
    (f / "inf.toml").write_text('sigma = inf\ndefense = "dp"\n')
    (f / "grid.toml").write_text('[grid]\nsigma = [0.1, nan]\n')
    # damaged copies of the sweep, one per kind of damage
    sw = o / "sw"
    text = (sw / "results.csv").read_text()
    header, *rest = text.splitlines(keepends=True)
    variants = {
        "cut": text[: len(text) - len(rest[-1]) // 2],                        # last row halved
        "garbage": text + "this is not a row\n",
        "quote": header + rest[0] + '"' + rest[1],                            # opens a quote
        "edited": text.replace(",0.001,", ",0.005,", 1),                      # value changed
        "allbad": header + "x,y\n",
        "nul": text + "\x00\x00,1\n",
    }
    for name, body in variants.items():
        d = o / f"sw-{name}"
        shutil.copytree(sw, d)
        (d / "results.csv").write_text(body)
    # result.json of the wrong shape, sweep.json of the wrong shape
    for name, body in {"list": "[1, 2, 3]", "foo": '{"foo": 1}', "empty": "{}",
                       "nometrics": '{"config": {"protocol": "vanilla"}}',
                       "badjson": "{not json", "nan": '{"config": NaN}',
                       "cuts": None}.items():
        d = o / f"rj-{name}"
        shutil.copytree(o / "keep", d)
        if body is None:
            r = json.loads((d / "result.json").read_text())
            r["metrics"]["cuts"] = "conv1"
            body = json.dumps(r)
        (d / "result.json").write_text(body)
    for name, body in {"list": "[]", "axes": '{"axes": 5}'}.items():
        d = o / f"sj-{name}"
        shutil.copytree(sw, d)
        (d / "sweep.json").write_text(body)
    d = o / "png"
    shutil.copytree(o / "keep", d)
    (d / "reconstructions.png").write_bytes(b"<script>alert(1)</script>" * 10)
    d = o / "png2"
    shutil.copytree(o / "keep", d)
    (d / "reconstructions.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    d = o / "kind"
    shutil.copytree(o / "keep", d)
    (d / ".slsec-kind").write_text("bogus\n")
    d = o / "both"
    shutil.copytree(o / "keep", d)
    (d / ".slsec-kind").unlink()
    shutil.copy(sw / "results.csv", d / "results.csv")
    (w / "huge.json").parent.mkdir(exist_ok=True)
    d = o / "rj-huge"
    shutil.copytree(o / "keep", d)
    with open(d / "result.json", "wb") as fh:
        fh.truncate(65 << 20)          # 65 MiB of zero bytes (sparse)


# (name, argv, expect, files the case may rewrite (relative to the scratch folder), check)
# expect: "fail" = non-zero exit; "warn" = exit 0 with a warning line; "ok" = exit 0
def cases() -> list[tuple]:
    t = TINY
    o = ["--out", "o"]
    c: list[tuple] = [
        # 1 -- earlier results are never overwritten; folders keep their kind
        ("run-id exists (train)", ["train", *t, *o, "--run-id", "keep"], "fail"),
        ("run-id exists (evaluate)", ["evaluate", "--attack", "inversion", *t, *o,
                                      "--run-id", "keep"], "fail"),
        ("sweep into a run folder", ["sweep", *t, "--lr", "0.001,0.002", *o, "--run-id", "keep"],
         "fail"),
        ("sweep --resume into a run", ["sweep", *t, "--lr", "0.001", *o, "--run-id", "keep",
                                       "--resume"], "fail"),
        ("train into a sweep folder", ["train", *t, *o, "--run-id", "sw"], "fail"),
        ("train --force into a sweep", ["train", *t, *o, "--run-id", "sw", "--force"], "fail"),
        ("review into a sweep folder", ["review", *t, *o, "--run-id", "sw"], "fail"),
        ("sweep again without --resume", ["sweep", *t, "--lr", "0.001,0.002", *o, "--run-id",
                                          "sw"], "fail"),
        ("--resume with other --rounds", ["sweep", *t[:2], "--rounds", "2", *t[4:], "--lr",
                                          "0.001,0.002", *o, "--run-id", "sw", "--resume"],
         "fail"),
        ("--resume with other --batch-size", ["sweep", *t[:8], "--batch-size", "32", "--lr",
                                              "0.001,0.002", *o, "--run-id", "sw", "--resume"],
         "fail"),
        ("benchmark again without --resume", ["benchmark", *t, "--dataset", "mnist",
                                              "--protocol", "vanilla", "--partition", "iid",
                                              *o, "--run-id", "b"], "fail"),
        ("sweep --resume into a benchmark", ["sweep", *t, "--lr", "0.001", *o, "--run-id",
                                             "benchmark-b", "--resume"], "fail"),
        ("report: unknown kind file", ["report", "o/kind"], "fail"),
        ("report: run + sweep files", ["report", "o/both"], "fail"),
        ("report: nothing there", ["report", "o/nothing"], "fail"),
        ("report: a file, not a folder", ["report", "files/ok.toml"], "fail"),
        # 2 -- damaged rows are never trusted
        ("report: last row cut in half", ["report", "o/sw-cut"], "warn", ["o/sw-cut/report"]),
        ("report: garbage line", ["report", "o/sw-garbage"], "warn", ["o/sw-garbage/report"]),
        ("report: unclosed quote", ["report", "o/sw-quote"], "warn", ["o/sw-quote/report"]),
        ("report: edited value", ["report", "o/sw-edited"], "warn", ["o/sw-edited/report"]),
        ("report: NUL bytes", ["report", "o/sw-nul"], "warn", ["o/sw-nul/report"]),
        ("report: no intact row", ["report", "o/sw-allbad"], "fail"),
        # 3 -- validation before training (all fail in seconds)
        ("benchmark --cut conv1 (not a GIN cut)", ["benchmark", *t, "--cut", "conv1",
                                                   "--dataset", "mnist,mutag", *o], "fail"),
        ("sweep with one bad cut", ["sweep", *t, "--cut", "conv1,nope", *o], "fail"),
        ("sweep: bad cell last", ["sweep", *t, "--lr", "0.001,0.002", "--cut", "conv1,fc9",
                                  *o], "fail"),
        ("sweep: sigma overflow in one cell", ["sweep", *t, "--defense", "dp", "--sigma",
                                               "0.1,1e308", *o], "fail"),
        ("--sigma 1e308 (dp at the cut)", ["evaluate", "--attack", "inversion", "--defense",
                                           "dp", "--sigma", "1e308", *t, *o], "fail"),
        ("--aux-size 0 + inversion", ["evaluate", "--attack", "inversion", *t[:4],
                                      "--aux-size", "0", *o], "fail"),
        ("--aux-size 0 + label-inference", ["evaluate", "--attack", "label-inference",
                                            "--protocol", "ushaped", *t[:4], "--aux-size", "0",
                                            *o], "fail"),
        ("--probe-size 100000", ["evaluate", "--attack", "inversion", *t[:4], "--probe-size",
                                 "100000", *o], "fail"),
        ("--probe-size 100000 (train)", ["train", *t[:4], "--probe-size", "100000", *o], "fail"),
        ("--straggler 1:inf", ["train", *t, "--straggler", "1:inf", *o], "fail"),
        ("--straggler 1:nan", ["train", *t, "--straggler", "1:nan", *o], "fail"),
        ("--straggler 1:-2", ["train", *t, "--straggler", "1:-2", *o], "fail"),
        ("--straggler x", ["train", *t, "--straggler", "x", *o], "fail"),
        ("--seed 2**64", ["train", *t, "--seed", str(2**64), *o], "fail"),
        ("--seed 2**32", ["train", *t, "--seed", str(2**32), *o], "fail"),
        ("--seed 1e3", ["train", *t, "--seed", "1e3", *o], "fail"),
        # 4 -- bounded solver
        ("--target-epsilon 1e300 (bounded)", ["train", *t, "--defense", "dp",
                                              "--target-epsilon", "1e300", *o], "ok", ["o/"]),
        # 5 -- silently ignored or overridden input
        ("train --defense split-select --cut pool2", ["train", *t, "--defense", "split-select",
                                                      "--cut", "pool2", *o], "fail"),
        ("evaluate split-select --cut pool2", ["evaluate", "--attack", "inversion", *t,
                                               "--defense", "split-select", "--cut", "pool2",
                                               *o], "fail"),
        ("--lr 1e30 (diverges)", ["train", *t, "--lr", "1e30", *o], "fail"),
        ("--sigma without dp", ["train", *t, "--sigma", "0.1", *o], "fail"),
        ("--variant v2 on vanilla", ["train", *t, "--variant", "v2", *o], "fail"),
        ("--noise-multiplier without dpsgd", ["train", *t, "--noise-multiplier", "1", *o],
         "fail"),
        ("--nopeek-weight without nopeek", ["train", *t, "--nopeek-weight", "2", *o], "fail"),
        ("--method without --attack", ["train", *t, "--method", "whitebox", *o], "fail"),
        ("--async-every on vanilla", ["train", *t, "--async-every", "3", *o], "fail"),
        ("--clip without dp", ["train", *t, "--clip", "2", *o], "fail"),
        ("sweep: --sigma no cell uses", ["sweep", *t, "--lr", "0.001,0.002", "--sigma", "0.1",
                                         *o], "fail"),
        # 6 -- messages state the real rule
        ("--sigma inf", ["train", *t, "--sigma", "inf", *o], "fail"),
        ("--target-epsilon inf", ["train", *t, "--target-epsilon", "inf", *o], "fail"),
        ("--target-epsilon 0", ["train", *t, "--target-epsilon", "0", *o], "fail"),
        ("--alpha inf", ["train", *t, "--alpha", "inf", *o], "fail"),
        ("--noise-multiplier inf", ["train", *t, "--noise-multiplier", "inf", *o], "fail"),
        ("--noise-multiplier 1e308 (dpsgd)", ["train", *t, "--protocol", "fedavg", "--defense",
                                              "dpsgd", "--noise-multiplier", "1e308", *o],
         "fail"),
        ("--label-epsilon inf", ["train", *t, "--label-epsilon", "inf", *o], "fail"),
        ("--nopeek-weight inf", ["train", *t, "--nopeek-weight", "inf", *o], "fail"),
        ("--lr inf", ["train", *t, "--lr", "inf", *o], "fail"),
        ("--lr nan", ["train", *t, "--lr", "nan", *o], "fail"),
        ("--delta nan", ["train", *t, "--delta", "nan", *o], "fail"),
        ("--timeout inf", ["train", *t, "--timeout", "inf", *o], "fail"),
        ("--async-decay inf", ["train", *t, "--async-decay", "inf", *o], "fail"),
        ("--max-grad-norm -inf", ["train", *t, "--max-grad-norm", "-inf", *o], "fail"),
        ("--run-id .cache", ["train", *t, "--run-id", ".cache", *o], "fail"),
        ("--run-id 'a b'", ["train", *t, "--run-id", "a b", *o], "fail"),
        ("--run-id 200 chars", ["train", *t, "--run-id", "x" * 200, *o], "fail"),
        # 7 -- hostile names and files
        ("--dataset tu:../../x --download", ["train", *t, "--dataset", "tu:../../x",
                                             "--download", "true", "--data-root", "files", *o],
         "fail"),
        ("--dataset tu:a/b", ["train", *t, "--dataset", "tu:a/b", *o], "fail"),
        ("--dataset 'tu:..'", ["train", *t, "--dataset", "tu:..", *o], "fail"),
        ("--dataset 'tu:x y'", ["train", *t, "--dataset", "tu:x y", *o], "fail"),
        ("--config /dev/zero", ["train", "--config", "/dev/zero", *o], "fail"),
        ("--config /dev/urandom", ["train", "--config", "/dev/urandom", *o], "fail"),
        ("--config 2 MB file", ["train", "--config", "files/big.toml", *o], "fail"),
        ("--config binary", ["train", "--config", "files/bin.toml", *o], "fail"),
        ("--config nested table", ["train", "--config", "files/nested.toml", *o], "fail"),
        ("--config sigma = inf", ["train", "--config", "files/inf.toml", *o], "fail"),
        ("sweep --config grid with nan", ["sweep", "--config", "files/grid.toml", *t, *o],
         "fail"),
        ("sweep --config /dev/zero", ["sweep", "--config", "/dev/zero", *o], "fail"),
        ("benchmark --config /dev/zero", ["benchmark", "--config", "/dev/zero", *o], "fail"),
        ("report: result.json [1,2,3]", ["report", "o/rj-list"], "fail"),
        ("report: result.json {foo:1}", ["report", "o/rj-foo"], "fail"),
        ("report: result.json {}", ["report", "o/rj-empty"], "fail"),
        ("report: result.json no metrics", ["report", "o/rj-nometrics"], "fail"),
        ("report: result.json not JSON", ["report", "o/rj-badjson"], "fail"),
        ("report: result.json NaN config", ["report", "o/rj-nan"], "fail"),
        ("report: result.json cuts a string", ["report", "o/rj-cuts"], "fail"),
        ("report: result.json 65 MiB", ["report", "o/rj-huge"], "fail"),
        ("report: sweep.json []", ["report", "o/sj-list"], "fail"),
        ("report: sweep.json axes=5", ["report", "o/sj-axes"], "fail"),
        ("report: reconstructions.png is HTML", ["report", "o/png"], "ok", ["o/png/report"]),
        ("report: reconstructions.png bad PNG", ["report", "o/png2"], "ok", ["o/png2/report"]),
        ("--data-root a file", ["train", *t, "--dataset", "mnist-full", "--data-root",
                                "files/ok.toml", *o], "fail"),
        ("--out under a file", ["train", *t, "--out", "files/ok.toml/x"], "fail"),
    ]
    return c


def disk_full_cases(w: Path) -> list[tuple]:
    """A sweep folder copied onto a tmpfs with no byte to spare, then `slsec report` (ENOSPC on
    the first report write); a train run and a sweep --resume into a full tmpfs. Root only."""
    if os.geteuid() != 0:
        return []
    pages = sum(-(-p.stat().st_size // 4096) for p in (w / "o" / "sw").iterdir() if p.is_file())
    made = []
    for name, size in (("tiny", f"{pages * 4}k"), ("full", "12k"), ("full2", "64k")):
        (w / name).mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(w / name)], capture_output=True).returncode:
            return []
        made.append(name)
    shutil.copytree(w / "o" / "sw", w / "tiny" / "sw")
    shutil.copytree(w / "o" / "sw-cut", w / "full2" / "sw")
    for name in ("full", "full2"):     # fill to the last byte
        subprocess.run(["dd", "if=/dev/zero", f"of={w / name}/fill", "bs=1k", "count=100"],
                       capture_output=True)
    return [
        ("disk full: slsec report", ["report", "tiny/sw"], "fail"),
        ("disk full: train", ["train", *TINY, "--out", "full", "--run-id", "r"], "fail"),
        ("disk full: sweep --resume", ["sweep", *TINY, "--lr", "0.001,0.002", "--out", "full2",
                                       "--run-id", "sw", "--resume"], "fail"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="run the cases whose name holds one of these "
                    "comma-separated substrings")
    ap.add_argument("--keep", default=None, help="scratch folder to use (kept afterwards)")
    args = ap.parse_args()
    w = Path(args.keep or tempfile.mkdtemp(prefix="slsec-bad-"))
    w.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    setup_scratch(w)
    more.prepare(w)
    print(f"scratch folder {w} prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    only = args.only.split(",")   # several substrings, comma-separated
    todo = [c for c in cases() + more.cases(w) + disk_full_cases(w)
            if any(o in c[0] for o in only)]
    rows, failures = [], 0
    try:
        for i, (name, argv, expect, *rest) in enumerate(todo, 1):
            may_change = rest[0] if rest else []
            env = rest[1] if len(rest) > 1 else None
            before = snapshot(w / "o") | {f"../{k}": v for k, v in snapshot(w).items()
                                          if not k.startswith("o/")}
            code, out, err, secs = run(argv, w, env=env)
            after = snapshot(w / "o") | {f"../{k}": v for k, v in snapshot(w).items()
                                         if not k.startswith("o/")}
            changed = [k for k, v in before.items() if after.get(k) != v
                       and not any(k.startswith(m.removeprefix("o/")) or
                                   k.startswith("../" + m) for m in may_change)]
            lines = [ln for ln in err.splitlines() if ln.strip()]
            # a loaded machine turns the live progress bar into plain lines ("train: 0/2
            # batches · 8 s"): not messages; the one error or warning line is what counts
            lines = [ln for ln in lines if ln.startswith(("error:", "warning:"))
                     or not PROGRESS.match(ln)] or lines[-1:]
            problems = []
            if "Traceback" in out + err:
                problems.append("traceback")
            if expect == "fail" and code == 0:
                problems.append("exit 0")
            if expect in ("ok", "warn") and code != 0:
                problems.append(f"exit {code}")
            if expect == "warn" and not any("warning" in ln for ln in lines):
                problems.append("no warning")
            if len(lines) > 1:
                problems.append(f"{len(lines)} stderr lines")
            if changed:
                problems.append("changed: " + ", ".join(changed[:3]))
            failures += bool(problems)
            msg = lines[0] if lines else (out.strip().splitlines() or [""])[-1]
            rows.append((i, name, " ".join(argv), code, f"{secs:.1f}", msg,
                         "; ".join(problems) or "ok"))
            print(f"{i:3d} | {name} | exit {code} | {secs:.1f} s | {msg} | "
                  f"{'; '.join(problems) or 'ok'}", flush=True)
    finally:
        for m in ("tiny", "full", "full2"):
            if (w / m).is_mount():
                subprocess.run(["umount", str(w / m)])
    print(f"\n{len(rows)} bad inputs, {failures} misbehaved, {time.perf_counter() - t0:.0f} s "
          f"in all (scratch {w})")
    print(f"\n$T = {' '.join(TINY)}\n\n| # | case | command | exit | s | message |\n"
          "|---|---|---|---|---|---|")
    for i, name, cmd, code, secs, msg, _ in rows:
        cmd = cmd.replace(" ".join(TINY), "$T")
        cmd = cmd if len(cmd) < 160 else cmd[:157] + "…"
        print(f"| {i} | {name} | `slsec {cmd}` | {code} | {secs} | {msg.replace('|', '/')} |")
    if not args.keep:
        shutil.rmtree(w, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
