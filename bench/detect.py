"""Client-side detection of a hijacking server (`--defense splitguard`, `--defense gradient-check`).

Plays vanilla SL with one client step for step as the protocol does (protocols/vanilla.py):
the client's head on a private batch, smashed data + labels to the server, the server's tail
computes the honest cut gradient (and trains on the batch), a malicious server replaces it with
the real `Hijack` hook's answer, the client backpropagates what came back and calls the
detector's hooks exactly as `client_step` does (decoy labels before sending, `inspect` after
the backward, no update on a decoy batch). Detection ends a run early (the client stops
sending). Servers:

- `honest`: the task gradient (false positives are counted over `--honest-steps`);
- `fsha`: the hijack hook with its defaults (label-conditioned critic);
- `fsha-uncond`: the hijack as in the paper (critic without labels);
- `adapt-decoy`: FSHA that answers a batch with the honest gradient when it judges it a decoy
  (its own tail agrees with the batch's labels on less than half as many samples as on recent
  batches it judged regular), the hijack gradient otherwise;
- `adapt-oracle`: FSHA that knows exactly which batches are decoys (an upper bound on the above);
- `adapt-mix`: FSHA whose answer is (1 - m) hijack + m task gradient, each scaled to the task
  gradient's norm (m = `--mix`, 0.5).

For attacked runs the script also scores the hijack's reconstruction of the 64 probe images at
the end of the run (or at detection: what the server could invert then).

    nice -n 10 .venv/bin/python bench/detect.py --detectors splitguard,gradient-check \
        --servers honest,fsha --seeds 10 --steps 500 --honest-steps 1000
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from _common import one_thread  # noqa: E402  (puts the checkout on sys.path)
from slsec import metrics
from slsec.attacks.hijack import Hijack
from slsec.config import make_config
from slsec.defenses.base import DEFENSES
from slsec.run.harness import resolve, train_steps
from slsec.run.setup import prepare
from slsec.threat import View

MIX = [0.5]   # share of the task gradient in adapt-mix's answer (--mix)


class Server:
    """The server side of one vanilla-SL run: tail, optional hijack hook, adaptive variants."""

    def __init__(self, kind: str, cfg: Any, setup: Any, seed: int) -> None:
        self.kind = kind
        self.tail = setup.fresh_model().split([cfg.cut])[1]
        self.opt = torch.optim.Adam(self.tail.parameters(), lr=cfg.lr)
        self.hook = None
        self.agree: list[float] = []
        if kind != "honest":
            view = View(role="server", protocol="vanilla",
                        knowledge=frozenset({"architecture", "aux_data"}),
                        build_model=setup.build, cuts=setup.cuts, aux=setup.aux,
                        public={**resolve(cfg, setup).public(), "train_steps": train_steps(cfg, setup)})
            params = {"conditional": False} if kind == "fsha-uncond" else {}
            self.hook = Hijack(seed=seed, **params).hijack(view)
            self.hook.warm_up()

    def answer(self, h: torch.Tensor, y: torch.Tensor, is_decoy: bool) -> torch.Tensor:
        z = h.detach().requires_grad_(True)
        out = self.tail({"x": z})["x"]
        loss = F.cross_entropy(out, y)
        self.opt.zero_grad()
        loss.backward()
        honest = z.grad.detach()
        self.opt.step()
        if self.hook is None:
            return honest
        agree = float((out.argmax(1) == y).float().mean())
        if self.kind == "adapt-oracle" and is_decoy:
            return honest
        if self.kind == "adapt-decoy":
            recent = statistics.fmean(self.agree[-20:]) if self.agree else 1.0
            if len(self.agree) >= 5 and agree < 0.5 * recent:
                return honest
            self.agree.append(agree)
        g = self.hook.cut_grad(1, {"x": h.detach(), "y": y}, honest)
        if self.kind == "adapt-mix":
            m = MIX[0]
            g = (1 - m) * g * (honest.norm() / g.norm().clamp_min(1e-12)) + m * honest
        return g


def run(detector: str, server: str, seed: int, steps: int, cut: str,
        dataset: str = "mnist") -> dict[str, Any]:
    cfg = make_config({"cut": cut, "clients": 1, "seed": seed, "dataset": dataset,
                       "attack": None if server == "honest" else "hijack"})
    setup = prepare(cfg)
    torch.manual_seed(seed)
    det = None
    if detector != "none":
        det = DEFENSES.get(detector)(**({"seed": seed} if detector == "gradient-check" else {}))
    srv = Server(server, cfg, setup, seed)
    model = setup.fresh_model()
    head = model.split([cut])[0]
    if det:
        det.attach(model, (cut,))
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    shard = setup.shard(1)
    gen = torch.Generator().manual_seed(seed)
    step, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while step < steps and not (det and det.withholding):
        for idx in torch.randperm(len(shard), generator=gen).split(cfg.batch_size):
            feats, y = shard.batch(idx)
            fake = det.decoy(y, num_classes=10, gen=gen) if det else None
            h = head(feats)["x"]
            g = srv.answer(h, fake if fake is not None else y, fake is not None)
            opt.zero_grad()
            h.backward(g)
            if det:
                det.inspect(g=g, head=head, x=h.detach(), y=y, decoy=fake is not None)
            if fake is None:
                opt.step()
            step += 1
            if step >= steps or (det and det.withholding):
                break
    out: dict[str, Any] = {"flag": det.flagged_at if det else None, "steps": step,
                           "fakes": getattr(det, "fakes", 0), "cpu_s": time.process_time() - cpu0,
                           "scores": [s for _, s in det.trace] if det else []}
    probe, py = setup.probe.batch(torch.arange(len(setup.probe)))
    with torch.no_grad():
        if srv.hook is not None:
            out["ssim"] = float(metrics.ssim(probe["x"], srv.hook.invert(head(probe)["x"])).mean())
        test, ty = setup.data.test.batch(torch.arange(len(setup.data.test)))
        out["acc"] = float((srv.tail(head(test))["x"].argmax(1) == ty).float().mean())
    return out


def fmt_scores(s: list[float]) -> str:
    if not s:
        return "-"
    return f"min {min(s):.3f} median {statistics.median(s):.3f} max {max(s):.3f} (n={len(s)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectors", default="splitguard,gradient-check,none",
                    help="'none': the undefended baseline (honest server only: the cost)")
    ap.add_argument("--servers", default="honest,fsha")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=500, help="client steps of an attacked run")
    ap.add_argument("--honest-steps", type=int, default=1000, help="client steps of an honest run")
    ap.add_argument("--cut", default="pool1")
    ap.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist (embedded)")
    ap.add_argument("--mix", type=float, default=0.5, help="adapt-mix: share of the task gradient")
    args = ap.parse_args()
    MIX[0] = args.mix
    one_thread()
    summary = []
    for det in args.detectors.split(","):
        for srv in args.servers.split(","):
            steps = args.honest_steps if srv == "honest" else args.steps
            rows = []
            if det == "none" and srv != "honest":
                continue
            for seed in range(args.seeds):
                r = run(det, srv, seed, steps, args.cut, args.dataset)
                rows.append(r)
                extra = f"  SSIM {r['ssim']:.3f}" if "ssim" in r else ""
                print(f"{det:14s} {srv:12s} seed {seed}: flagged at step {r['flag'] or '-':>5}"
                      f" of {r['steps']:4d}  decoys {r['fakes']:3d}  accuracy {r['acc']:.3f}{extra}"
                      f"  score {fmt_scores(r['scores'])}  {r['cpu_s']:.0f} s CPU", flush=True)
            flagged = [r["flag"] for r in rows if r["flag"] is not None]
            summary.append((det, srv, steps, len(flagged), len(rows), flagged,
                            statistics.fmean(r["acc"] for r in rows),
                            statistics.fmean(r["ssim"] for r in rows) if "ssim" in rows[0] else None))
    print(f"\n{args.dataset}, cut {args.cut}, adapt-mix share {args.mix}; detector / server / steps: seeds "
          "flagged, detection steps, mean tail accuracy, mean SSIM at the end (or at detection)")
    for det, srv, steps, k, n, flagged, acc, ssim in summary:
        print(f"{det:14s} {srv:12s} {steps:5d} steps: {k}/{n} flagged  steps {flagged}  "
              f"acc {acc:.3f}" + (f"  SSIM {ssim:.3f}" if ssim is not None else ""))


if __name__ == "__main__":
    main()
