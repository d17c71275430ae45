"""FSHA (`--attack hijack`): reconstruction SSIM over client steps, per cut.

The end-to-end number is `slsec evaluate --attack hijack --cut CUT --clients 1 --rounds R`
(one vanilla client serves 55 steps per round at batch 64). To draw the curve without a run per
point, this script plays the vanilla client's loop itself, step for step as the protocol does
(head forward on a private batch, smashed data + labels to the server, the returned gradient
g, Adam on (h * g).sum()), with the real `Hijack` hook as the server, and every `--every`
steps decodes the 64 private probe images from the current head's smashed data. The SSIM is
scored here by the experimenter; the hook itself only ever sees the messages. Beside it: the
SSIM of the decoder on the pilot's own features of the probes (the ceiling), the server's own
signal (smoothed matching loss) and the step where its early stop fired (zero gradients from
then on; `--param min_steps=100000` turns it off to draw the whole curve).

    .venv/bin/python bench/hijack.py --cuts conv1,pool1,conv2,pool2,fc1 --steps 5000 --every 500
"""
from __future__ import annotations

import argparse
import time

import torch

from slsec import metrics
from slsec.attacks.hijack import Hijack
from slsec.config import make_config
from slsec.run.harness import resolve, train_steps
from slsec.run.setup import prepare
from slsec.threat import View


def curve(cut: str, steps: int, every: int, seed: int, params: dict,
          dataset: str = "mnist") -> tuple[list[tuple[int, float, float]], int | None]:
    cfg = make_config({"cut": cut, "clients": 1, "seed": seed, "attack": "hijack",
                       "dataset": dataset})
    setup = prepare(cfg)
    view = View(role="server", protocol="vanilla", knowledge=frozenset({"architecture", "aux_data"}),
                build_model=setup.build, cuts=setup.cuts, aux=setup.aux,
                public={**resolve(cfg, setup).public(), "train_steps": train_steps(cfg, setup)})
    t0 = time.perf_counter()
    hook = Hijack(seed=seed, **params).hijack(view)
    hook.warm_up()
    head = setup.fresh_model().split([cut])[0]
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    shard = setup.shard(1)
    probe, _ = setup.probe.batch(torch.arange(len(setup.probe)))
    with torch.no_grad():   # the ceiling: the pilot's own autoencoder on the probe images
        ceiling = float(metrics.ssim(probe["x"], hook.invert(hook.pilot(probe)["x"])).mean())
    print(f"{cut}: pilot autoencoder warm-up {time.perf_counter() - t0:.0f} s, its SSIM on the "
          f"probe (ceiling) {ceiling:.3f}", flush=True)
    gen = torch.Generator().manual_seed(seed)
    out, step, t0 = [], 0, time.perf_counter()
    while step < steps:
        for idx in torch.randperm(len(shard), generator=gen).split(cfg.batch_size):
            feats, y = shard.batch(idx)
            h = head(feats)["x"]
            g = hook.cut_grad(1, {"x": h.detach(), "y": y}, torch.zeros_like(h))
            opt.zero_grad()
            (h * g).sum().backward()
            opt.step()
            step += 1
            if step % every == 0 or step == steps:
                with torch.no_grad():
                    rec = hook.invert(head(probe)["x"])
                    own = hook.invert(hook.pilot(probe)["x"])
                s = float(metrics.ssim(probe["x"], rec).mean())
                c = float(metrics.ssim(probe["x"], own).mean())
                out.append((step, s, time.perf_counter() - t0))
                sig = f"{hook.ema:.3g}" if hook.ema is not None else "-"
                print(f"{cut}: step {step:5d}  SSIM {s:.3f}  (pilot's own {c:.3f})  server "
                      f"signal {sig}{' (stopped)' if hook.converged else ''}  "
                      f"{time.perf_counter() - t0:6.0f} s", flush=True)
            if step >= steps:
                break
    print(f"{cut}: the server's early stop at client step {hook.converged or '-'}", flush=True)
    return out, hook.converged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", default="conv1,pool1,conv2,pool2,fc1")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist (embedded)")
    ap.add_argument("--param", action="append", default=[],
                    help="hook parameter override, e.g. --param gp=100 (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = {k: type(Hijack.DEFAULTS[k])(v) if not isinstance(Hijack.DEFAULTS[k], bool)
              else v.lower() in ("1", "true") for k, v in (p.split("=", 1) for p in args.param)}
    rows = {cut: curve(cut, args.steps, args.every, args.seed, params, args.dataset)
            for cut in args.cuts.split(",")}
    print("\ncut     first step with SSIM >= 0.70   server stopped at   final SSIM")
    for cut, (pts, stop) in rows.items():
        first = next((s for s, v, _ in pts if v >= 0.70), None)
        print(f"{cut:7s} {str(first or '-'):>27s}   {str(stop or '-'):>17s}   "
              f"{pts[-1][1]:.3f} at step {pts[-1][0]}")


if __name__ == "__main__":
    main()
