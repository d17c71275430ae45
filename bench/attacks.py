"""Attack cost: seconds per attack iteration ÷ seconds of one training step on the same batch.

Usage (from the repo root):

    .venv/bin/python bench/attacks.py [--reps 5] [--cuts conv1,pool2,fc1] [--ig-batches 1,8]
    .venv/bin/python bench/attacks.py --only ig      # or --only whitebox

- whitebox model inversion (attacks/inversion.py, `Inversion(method="whitebox")`), run through
  its public `run(view)` on a View built by slsec.run.harness.make_view from what the vanilla
  server observed (64 smashed probe images of the embedded MNIST CNN), restarts=1 (its
  default). Seconds per iteration =
  (t(I2) - t(I1)) / (I2 - I1), so set-up costs cancel. Baseline: one Adam training step of the
  whole CNN on the same 64 images (and, for reference, of the client head alone).
- `ig` gradient inversion (Inverting Gradients, Geiping et al. 2020; attacks/
  gradient_inversion.py), on the FedAvg aggregator's View of one plain-SGD update of B images,
  timed the same way, with restarts=1 (one optimisation step per iteration) and with the
  class's default restarts (an "iteration" then runs one step per restart: the whole attack's
  cost per iteration); baseline: one training step of the CNN on the same B images. If that
  module or its `ig` method is not importable yet, the script times a reference IG iteration
  (model gradients with create_graph, cosine distance + TV, double backward, Adam on the
  dummy input) and says so.
Target: <= 3x. One torch thread; variants interleaved; medians over repetitions.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch

from _common import Clock, interleaved, med, one_thread, table

TRAIN_SAMPLES = 512


def setup_for(protocol: str, cut: str | None, batch: int):
    from slsec.config import make_config
    from slsec.run.setup import prepare
    values = {"dataset": "mnist", "protocol": protocol, "clients": 1, "aux_size": 0,
              "max_train": TRAIN_SAMPLES, "batch_size": batch, "probe_size": batch}
    if cut:
        values["cut"] = cut
    cfg = make_config(values)
    return cfg, prepare(cfg)


def fake_outcome(model: torch.nn.Module, role: str, protocol: str, feed: Callable[[Any], None]):
    """A RankOutcome whose observer saw what `feed` records (what the role really receives)."""
    from slsec.run.runner import RankOutcome
    from slsec.threat import Observer
    obs = Observer(role, protocol)
    obs.recording = True
    feed(obs)
    obs.recording = False
    return RankOutcome(rank=0, observer=obs, model=model)


def train_step(model: torch.nn.Module, feats: dict, y: torch.Tensor) -> Callable[[], tuple[float, float]]:
    """One Adam step of `model` on (feats, y), timed."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> tuple[float, float]:
        with Clock() as c:
            for _ in range(3):
                out = model(feats)["x"]
                loss = (torch.nn.functional.cross_entropy(out, y) if out.shape[-1] > 1
                        else out.sum())
                opt.zero_grad()
                loss.backward()
                opt.step()
        return c.wall / 3, c.cpu / 3
    return step


def head_step(head: torch.nn.Module, feats: dict) -> Callable[[], tuple[float, float]]:
    """The client's share of a training step: head forward + backward of a cut gradient + Adam."""
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    g = torch.randn_like(head(feats)["x"])

    def step() -> tuple[float, float]:
        with Clock() as c:
            for _ in range(3):
                x = head(feats)["x"]
                opt.zero_grad()
                x.backward(g)
                opt.step()
        return c.wall / 3, c.cpu / 3
    return step


def attack_run(cls: type, method: str, view: Any, iters: int,
               **params: Any) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        with Clock() as c:
            cls(method=method, iterations=iters, **params).run(view)
        return c.pair
    return run


def per_iter(t: dict, lo: str, hi: str, n: int, what: str) -> float:
    return max((med(t[hi][what]) - med(t[lo][what])) / n, 0.0)


def whitebox(args: argparse.Namespace, rows: list) -> None:
    import slsec.attacks  # noqa: F401
    from slsec.attacks.base import ATTACKS
    from slsec.run.harness import DEFAULT_KNOWLEDGE, make_view, resolve

    cls = ATTACKS.get("inversion")
    for cut in args.cuts.split(","):
        cfg, setup = setup_for("vanilla", cut, args.batch)
        model = setup.fresh_model()
        head = model.split(list(setup.cuts))[0]
        feats, y = setup.probe.batch(torch.arange(len(setup.probe)))
        with torch.no_grad():
            smashed = {k: v.detach() for k, v in head(feats).items()}
        outcome = fake_outcome(model, "server", "vanilla", lambda o: o.smashed(smashed))
        view = make_view(resolve(cfg, setup), outcome, "server", DEFAULT_KNOWLEDGE["server"])
        i1, i2 = args.iters
        t = interleaved({"lo": attack_run(cls, "whitebox", view, i1, restarts=1),
                         "hi": attack_run(cls, "whitebox", view, i2, restarts=1),
                         "step": train_step(setup.fresh_model(), feats, y),
                         "head step": head_step(setup.fresh_model().split(list(setup.cuts))[0], feats)},
                        args.reps)
        for what in ("wall", "cpu"):
            it = per_iter(t, "lo", "hi", i2 - i1, what)
            rows.append(["whitebox inversion", f"cut {cut}", len(feats["x"]), 1, what,
                         f"{1e3 * it:.2f}", f"{1e3 * med(t['step'][what]):.2f}",
                         f"{it / med(t['step'][what]):.2f}",
                         f"{it / med(t['head step'][what]):.2f}",
                         "yes" if it <= 3 * med(t["step"][what]) else "NO"])
        print(f"whitebox, cut {cut}: done", flush=True)


def reference_ig(model: torch.nn.Module, update: Any, shape: tuple, n: int, num_classes: int,
                 iters: int) -> Callable[[], tuple[float, float]]:
    """A reference `ig` loop (when attacks/gradient_inversion.py is not available)."""
    params = [p for p in model.parameters()]
    names = [k for k, _ in model.named_parameters()]
    target = [(update.before[k] - update.after[k]) / update.lr for k in names]
    y = torch.arange(n) % num_classes

    def run() -> tuple[float, float]:
        with Clock() as c:
            x = torch.rand(n, *shape, requires_grad=True)
            opt = torch.optim.Adam([x], lr=0.1)
            for _ in range(iters):
                loss = torch.nn.functional.cross_entropy(model({"x": x})["x"], y)
                grads = torch.autograd.grad(loss, params, create_graph=True)
                dot = sum((g * t).sum() for g, t in zip(grads, target))
                gn = torch.sqrt(sum(g.square().sum() for g in grads))
                tn = torch.sqrt(sum(t.square().sum() for t in target))
                tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + \
                    (x[..., 1:] - x[..., :-1]).abs().mean()
                obj = 1 - dot / (gn * tn) + 1e-2 * tv
                opt.zero_grad()
                obj.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
        return c.pair
    return run


def ig(args: argparse.Namespace, rows: list) -> None:
    import slsec.attacks  # noqa: F401
    from slsec.attacks.base import ATTACKS
    from slsec.run.harness import DEFAULT_KNOWLEDGE, make_view, resolve
    from slsec.protocols.base import state
    from slsec.threat import Update

    cls = ATTACKS.get("gradient-inversion") if "gradient-inversion" in ATTACKS else None
    real = cls is not None and "ig" in getattr(cls, "methods", {})
    for b in [int(v) for v in args.ig_batches.split(",")]:
        cfg, setup = setup_for("fedavg", None, b)
        cfg = cfg.replace(probe_batch=b)
        model = setup.fresh_model()
        feats, y = setup.probe.batch(torch.arange(b))
        before = state(model)
        sgd = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        loss = torch.nn.functional.cross_entropy(model(feats)["x"], y)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        upd = Update(client=1, before=before, after=state(model), lr=cfg.lr, local_steps=1,
                     batch_size=b)
        model.load_state_dict(before)
        i1, i2 = args.ig_iters
        fns: dict[str, Callable[[], tuple[float, float]]] = {}
        if real:
            outcome = fake_outcome(model, "aggregator", "fedavg", lambda o: o.update(upd))
            view = make_view(resolve(cfg, setup), outcome, "aggregator", DEFAULT_KNOWLEDGE["aggregator"])
            restarts = [1, cls.DEFAULTS["ig"].get("restarts", 1)] \
                if hasattr(cls, "DEFAULTS") else [None]
            for r in dict.fromkeys(restarts):
                extra = {"restarts": r} if r is not None else {}
                fns[f"lo{r}"] = attack_run(cls, "ig", view, i1, **extra)
                fns[f"hi{r}"] = attack_run(cls, "ig", view, i2, **extra)
            label = "ig gradient inversion"
        else:
            restarts = [1]
            shape, nc = setup.data.input_shape, setup.data.num_classes
            fns["lo1"] = reference_ig(model, upd, shape, b, nc, i1)
            fns["hi1"] = reference_ig(model, upd, shape, b, nc, i2)
            label = "ig (REFERENCE loop: attacks/gradient_inversion.py absent)"
        fns["step"] = train_step(setup.fresh_model(), feats, y)
        t = interleaved(fns, args.reps)
        for r in dict.fromkeys(restarts):
            for what in ("wall", "cpu"):
                it = per_iter(t, f"lo{r}", f"hi{r}", i2 - i1, what)
                rows.append([label, "FedAvg update", b, r if r is not None else "default", what,
                             f"{1e3 * it:.2f}", f"{1e3 * med(t['step'][what]):.2f}",
                             f"{it / med(t['step'][what]):.2f}", "-",
                             "yes" if it <= 3 * med(t["step"][what]) else "NO"])
        print(f"ig, batch {b}: done", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64, help="probe images inverted by whitebox")
    ap.add_argument("--cuts", default="conv1,pool2,fc1")
    ap.add_argument("--iters", type=int, nargs=2, default=(10, 40), help="whitebox I1 I2")
    ap.add_argument("--ig-batches", default="1,8")
    ap.add_argument("--ig-iters", type=int, nargs=2, default=(10, 40), help="ig I1 I2")
    ap.add_argument("--only", choices=("whitebox", "ig"), help="run one of the two parts")
    args = ap.parse_args()
    one_thread()
    rows: list = []
    if args.only != "ig":
        whitebox(args, rows)
    if args.only != "whitebox":
        ig(args, rows)
    table(f"attack iteration ÷ training step on the same batch, 1 thread, {time.strftime('%Y-%m-%d')}"
          " (target <= 3x)",
          ["attack", "setting", "batch", "restarts", "clock", "ms / iteration", "ms / train step",
           "ratio (whole model step)", "ratio (client head step)", "<= 3x"], rows)


if __name__ == "__main__":
    main()
