"""Canaries for the one-run audit, one construction per DP mechanism, run on the mechanism.

Each function takes a defense object (its real `smashed`, `noisy_sum` or `labels` code), m
canaries with secret bits S_i in {-1, +1} drawn from the seed (each side with probability 1/2),
runs the mechanism once for the run's number of releases, and returns the auditor's scores
(score > 0: it guesses S_i = +1) with the secrets. The auditor is white-box and plays the role
the mechanism protects against; it knows the public mechanism and its own canaries, nothing
else. Every construction offers two scores: the plain one, and one that cancels whatever the
release shares across rows or steps (a noise draw reused where it must be fresh);
`slsec.privacy.audit.eps_lower` pays for trying both (Bonferroni).

- DP at the cut (`cut_canaries`, replace-one): the server sees the noisy smashed rows. Canary
  i's row is +-A*C*e_j (A = 100: far beyond the clip, so a clip applied after the noise shows),
  j its own slot within its batch of `batch` canaries; clipped it is +-C*e_j, the extreme pair
  at distance 2C. Score: the release's coordinate j (minus its mean over the batch's other
  rows, which carry no signal there), summed over the releases.
- DP-SGD (`gradient_canaries`, add/remove, Dirac gradient canaries, Nasr et al. 2023): the
  aggregator sees every step's noisy clipped sum (white-box: the intermediate models). Canary
  i's gradient is A*C*e_i, present only when S_i = +1 and Poisson-sampled at rate q; background
  samples have gradients in other coordinates. Score: the log-likelihood ratio of the
  subsampled Gaussian, sum over steps of log(1 - q + q exp((x_t - 1/2) / z^2)) with
  x_t = coordinate i / C (the second score first subtracts x's median over the steps).
- DP-SGD through training (`training_canaries`): the same Dirac canaries as inputs A*e_i of a
  linear model trained by the defense's own `private_step`; the aggregator reads the weights
  after every step and projects the update on the canary's known gradient direction.
- Label DP (`label_canaries`, replace-one on a label): the auditor sees the labels after
  randomized response (everything downstream is post-processing of them). Canary i has label
  a_i or b_i = a_i + 1; score: uses that came out a_i minus uses that came out b_i (the second
  score first undoes the shift seen on a reference sample of known label in the same batch).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

SCALE = 100.0          # canary norm before clipping, in units of the clip


def _secrets(m: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1, 1]), size=m)


def cut_canaries(defense: Any, *, m: int, releases: int, seed: int, batch: int = 64,
                 row_shape: tuple[int, ...] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Scores of the server watching `releases` noisy smashed releases of m canaries."""
    secrets = _secrets(m, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    clip = defense.clip if math.isfinite(defense.clip) else 1.0
    shape = tuple(row_shape) if row_shape else (batch,)
    d = int(np.prod(shape))
    batch = min(batch, d, max(m, 2))
    n_batches = math.ceil(m / batch)
    value = torch.as_tensor(secrets * SCALE * clip, dtype=torch.float32)
    plain, centred = np.zeros(m), np.zeros(m)
    idx = torch.arange(batch)
    for _ in range(releases):
        for b in range(n_batches):
            k = slice(b * batch, min(m, (b + 1) * batch))
            n = k.stop - k.start
            x = torch.zeros(batch, d)                       # the padding rows stay zero
            x[idx[:n], idx[:n]] = value[k]
            y = defense.smashed(x.reshape(batch, *shape), train=True, gen=gen)
            y = y.reshape(batch, d)[:, :batch].double()
            own = y[idx, idx]
            others = (y.sum(0) - own) / (batch - 1)
            plain[k] += own[:n].numpy()
            centred[k] += (own - others)[:n].numpy()
    return [plain, centred], secrets


def _llr(x: np.ndarray, q: float, z: float) -> np.ndarray:
    """Sum over steps (axis 0) of the log-likelihood ratio of 'canary present' for the
    Poisson-subsampled Gaussian with noise multiplier z (x in units of the clip)."""
    a = (x - 0.5) / max(z, 1e-6) ** 2
    if q >= 1:
        return a.sum(axis=0)
    return np.logaddexp(math.log1p(-q), math.log(q) + a).sum(axis=0)


def gradient_canaries(defense: Any, *, m: int, steps: int, sample_rate: float, seed: int,
                      background: int = 32) -> tuple[list[np.ndarray], np.ndarray]:
    """Scores of the aggregator watching `steps` noisy DP-SGD sums with m Dirac canaries."""
    secrets = _secrets(m, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng(seed + 2)
    c = defense.max_grad_norm
    present = np.flatnonzero(secrets > 0)
    d = m + 8                                  # 8 coordinates of the background's own
    bg = torch.zeros(background, d)
    bg[:, m:] = torch.randn(background, 8, generator=torch.Generator().manual_seed(seed + 3)) * c
    x = np.zeros((steps, m))
    for t in range(steps):
        take = present[rng.random(len(present)) < sample_rate]
        g = torch.zeros(len(take), d)
        g[np.arange(len(take)), take] = SCALE * c
        g = torch.cat([g, bg[torch.as_tensor(rng.random(background) < sample_rate)]])
        if len(g) == 0:
            g = torch.zeros(1, d)               # an empty batch still releases noise
        (summed,), _, _ = defense.noisy_sum([g], gen=gen)
        x[t] = summed[:m].double().numpy() / c
    z = defense.noise_multiplier
    return [_llr(x, sample_rate, z), _llr(x - np.median(x, axis=0), sample_rate, z)], secrets


def label_canaries(defense: Any, *, m: int, uses: int, num_classes: int, seed: int,
                   batch: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    """Scores of an observer of the randomized labels of m canaries over `uses` uses each."""
    secrets = _secrets(m, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    a = torch.as_tensor(np.random.default_rng(seed + 2).integers(0, num_classes, m))
    y = torch.where(torch.as_tensor(secrets > 0), a, (a + 1) % num_classes)
    plain, decoded = np.zeros(m), np.zeros(m)
    for _ in range(uses):
        for b in range(0, m, batch - 1):
            k = slice(b, min(m, b + batch - 1))
            lab = torch.cat([torch.zeros(1, dtype=torch.long), y[k]])   # row 0: the reference
            out = defense.labels(lab, num_classes=num_classes, gen=gen)
            seen, shift = out[1:], out[0]            # the reference's true label is 0
            fixed = (seen - shift) % num_classes
            plain[k] += ((seen == a[k]).double() - (seen == (a[k] + 1) % num_classes).double()).numpy()
            decoded[k] += ((fixed == a[k]).double()
                           - (fixed == (a[k] + 1) % num_classes).double()).numpy()
    return [plain, decoded], secrets


def training_canaries(defense: Any, *, m: int, steps: int, sample_rate: float, seed: int,
                      num_classes: int = 10, lr: float = 0.1,
                      background: int = 16) -> tuple[list[np.ndarray], np.ndarray]:
    """The same Dirac canaries, but through training: `defense.private_step` (Opacus
    per-sample gradients, the optimizer's step) trains a bias-free linear model on
    Poisson-sampled batches of input canaries x_i = A*e_i (label y_i; in when S_i = +1) and
    background samples in other coordinates. The white-box aggregator sees the weights after
    every step (and the realized batch size); column i of -(W_t+1 - W_t) * B / lr is the noisy
    clipped sum there, and the canary's clipped gradient points along the known unit vector
    (softmax(W_t x_i) - e_y) / norm, so its projection is N(C, (zC)^2) when sampled, else N(0, .)."""
    secrets = _secrets(m, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng(seed + 2)
    d, c = m + 8, defense.max_grad_norm
    model = torch.nn.Linear(d, num_classes, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    y = torch.as_tensor(rng.integers(0, num_classes, m))
    bg_x = torch.zeros(background, d)
    bg_x[:, m:] = torch.randn(background, 8, generator=torch.Generator().manual_seed(seed + 3))
    bg_y = torch.as_tensor(rng.integers(0, num_classes, background))
    present = np.flatnonzero(secrets > 0)
    eye = torch.eye(num_classes)
    x = np.zeros((steps, m))
    for t in range(steps):
        take = present[rng.random(len(present)) < sample_rate]
        bg = torch.as_tensor(rng.random(background) < sample_rate)
        xs = torch.zeros(len(take), d)
        xs[np.arange(len(take)), take] = SCALE * c
        xb, yb = torch.cat([xs, bg_x[bg]]), torch.cat([y[take], bg_y[bg]])
        if len(yb) == 0:
            xb, yb = bg_x[:1], bg_y[:1]         # a step needs a batch; the auditor knows this one
        with torch.no_grad():
            w = model.weight.detach().clone()
            p = torch.softmax(SCALE * c * w[:, :m].T, dim=1)     # canary i's output at W_t
            u = p - eye[y]
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        defense.private_step(model, opt, xb, yb, gen=gen)
        with torch.no_grad():
            g = -(model.weight.detach() - w)[:, :m] * len(yb) / lr       # [K, m]
            x[t] = (g.T * u).sum(dim=1).double().numpy() / c
    z = defense.noise_multiplier
    return [_llr(x, sample_rate, z), _llr(x - np.median(x, axis=0), sample_rate, z)], secrets
