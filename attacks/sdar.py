"""SDAR (Zhu et al., "Passive Inference Attacks on Split Learning via Adversarial
Regularization", NDSS 2025): the honest-but-curious server without the head's weights or
queries (knowledge: the public architecture and its aux data) reconstructs the inputs behind
the smashed data it observed. FORA's sibling (`fora.py`); what differs:

1. simulator: a fresh head of the public architecture (and, where the server holds no tail,
   a simulated tail) is trained on the task with the labelled aux data, with an adversarial
   regulariser: a feature discriminator tells the simulator's features from the observed
   smashed data and the simulator learns to fool it (class-conditional, a projection
   discriminator, where the observations arrived with labels). The observed smashed data are
   the probes' and, as the paper's server trains online on every batch it serves, those of
   the training batches in the server's observation window (`View.seen`, `--observe-samples`,
   with their labels where they arrived with one; `seen=False`: the probes alone). Where the
   server holds its trained tail, the simulator serves the task through it (it was trained on
   the client's features, which ties the simulator to their meaning). Beyond the paper, for a
   head deeper than one weight layer the simulator also minimises FORA's class-conditional
   MMD to the observations (`mmd_weight`, `_weights`): the discriminator alone left it far
   from them at the deeper cuts (bench/README, issue 28's fifth pass). `fit_mmd` in the info
   is that distance after the fit, computed from the attacker's own data.
2. decoder: trained after it to invert the (frozen) simulator on aux data (MSE), with its own
   adversarial regulariser: an image discriminator tells the decoder's outputs on the
   *observed* smashed data from real aux images (label-conditioned where labels arrived), so
   the decoder is also fitted to the observations it will invert, not only to the simulator.
   Its weight is small (0.001; the paper's public code keeps it small too): at 0.01 it fights
   the reconstruction, at 0 the decoder loses what the observations tell it (bench/README).
   With `decoder_labels` the decoder is also conditioned on each probe's label (the one that
   arrived with it, else the prior's prediction) and outputs a residual over the label's class
   image, as the paper conditions its decoder; off by default, because at pool2 of the MNIST
   CNN it reconstructed worse than the unconditioned decoder on the same simulator (bench/README).
3. attack: the decoder applied to the observed smashed data.

Adaptive to the public cut mechanisms (`CutChannel`: clipping, compression, noise, MID's
sampling): the simulator's features pass through them before the discriminator and the decoder
see them. Scored like every inversion (prior, gain, re-identification; `prior` is its reference).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec import progress
from slsec.params import Param
from slsec.threat import View

from . import prior as priors
from .base import ATTACKS, Attack, Guess
from .fora import Fora, _Discriminator, invert_with_prior, mk_mmd, server_rest
from .inverse import CutChannel, Decoder, fresh_head, observed, shift


def _simulated_tail(view: View, shape: tuple[int, ...]) -> nn.Module:
    """A small classifier from the cut to the classes, for a server without a tail."""
    k = int(view.public.get("num_classes") or 10)
    d = int(torch.tensor(shape).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, k))


@ATTACKS.register("sdar")
class Sdar(Attack):
    """Invert the observed smashed data through a simulator and a decoder, both regularised
    adversarially against the observations."""

    name = "sdar"
    kind = "inversion"
    roles = {"vanilla": "server", "ushaped": "server", "splitfed": "server",
             "splitfed-async": "server"}
    methods = {"sdar": frozenset({"architecture", "aux_data"}),
               "prior": frozenset({"aux_data"})}
    default_order = ("sdar", "prior")

    # its parameters (flags --sdar-*, TOML keys sdar_*); DEFAULTS is what they default to
    # `iterations` (the harness's --attack-iters) sets both `steps` and `decoder_steps`
    params = (
        Param('sdar_steps', 'int', 600,
              'sdar: steps training the simulator (--attack-iters sets it too)',
              check=('at_least_one',), kw='steps', unused="configures --attack sdar"),
        Param('sdar_decoder_steps', 'int', 600,
              'sdar: steps training the decoder (--attack-iters sets it too)',
              check=('at_least_one',), kw='decoder_steps', unused="configures --attack sdar"),
        Param('sdar_lr', 'float', 0.001,
              'sdar: learning rate of the simulator',
              check=('positive',), kw='lr', unused="configures --attack sdar"),
        Param('sdar_lr_d', 'float', 0.0002,
              'sdar: learning rate of its discriminators',
              check=('positive',), kw='lr_d', unused="configures --attack sdar"),
        Param('sdar_batch', 'int', 32,
              'sdar: batch size of the simulator and decoder fits',
              check=('at_least_one',), kw='batch', unused="configures --attack sdar"),
        Param('sdar_feat_weight', 'float', None,
              'sdar: weight of the feature discriminator term (not set: 2.0 where the public '
              'head has one weight layer, else 0.1)',
              check=('non_negative',), kw='feat_weight', unused="configures --attack sdar"),
        Param('sdar_img_weight', 'float', 0.001,
              'sdar: weight of the image discriminator term',
              check=('non_negative',), kw='img_weight', unused="configures --attack sdar"),
        Param('sdar_mmd_weight', 'float', None,
              'sdar: weight of a class-conditional MMD between the simulator\'s features and the '
              'observations (FORA\'s term, beyond the paper; not set: 0 where the public head '
              'has one weight layer, else 1.0)',
              check=('non_negative',), kw='mmd_weight', unused="configures --attack sdar"),
        Param('sdar_width', 'int', 16,
              'sdar: channel width of the decoder',
              check=('at_least_one',), kw='width', unused="configures --attack sdar"),
        Param('sdar_decoder_lr', 'float', 0.003,
              'sdar: learning rate of the decoder',
              check=('positive',), kw='decoder_lr', unused="configures --attack sdar"),
        Param('sdar_conditional', 'bool', True,
              'sdar: label-conditioned discriminators where labels cross the cut',
              kw='conditional', unused="configures --attack sdar"),
        Param('sdar_seen', 'bool', True,
              'sdar: train the discriminators on the training batches\' smashed data the '
              'server saw (its observation window, --observe-samples) as well as on the probes\'',
              kw='seen', unused="configures --attack sdar"),
        Param('sdar_decoder_labels', 'bool', False,
              'sdar: decoder conditioned on each probe\'s label (held, else the prior\'s '
              'predicted one), its output a residual over the label\'s class image (off by '
              'default: worse at pool2, see bench/README)',
              kw='decoder_labels', unused="configures --attack sdar"),
    )
    DEFAULTS: dict[str, Any] = {p.keyword: p.default for p in params}

    def _p(self, key: str) -> Any:
        if key in ("steps", "decoder_steps") and self.params.get("iterations") is not None:
            return int(self.params["iterations"])
        return self.params.get(key, self.DEFAULTS[key])

    def _weights(self, head: nn.Module) -> tuple[float, float, float]:
        """The feature discriminator's, the image discriminator's and the MMD's weights; not
        set, they follow the public head's depth (the server holds the architecture):
        - one weight layer (the CNN's conv1, pool1): nearly invertible; the image prior costs
          the decoder precision and the feature match matters most: (2.0, 0.001, 0);
        - deeper (conv2, pool2, fc1): the discriminator alone leaves the simulator far from the
          observations (their MMD 0.45 against FORA's 0.11 at pool2 of Fashion-MNIST) and off
          the task; FORA's class-conditional MMD (beyond the paper) fits it, with a weaker
          discriminator and the small image weight: (0.1, 0.001, 1.0)
        (bench/README, issue 28's fourth and fifth passes)."""
        shallow = self._shallow(head)
        w_f, w_i, w_m = (self._p(k) for k in ("feat_weight", "img_weight", "mmd_weight"))
        return (float(w_f) if w_f is not None else (2.0 if shallow else 0.1),
                float(w_i),
                float(w_m) if w_m is not None else (0.0 if shallow else 1.0))

    @staticmethod
    def _shallow(head: nn.Module) -> bool:
        """Whether the public head has a single weight layer."""
        return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in head.modules()) <= 1

    def run(self, view: View) -> Guess:
        """Reconstruct the inputs behind `view.smashed` from aux data and the observations."""
        return invert_with_prior(self, view, self._sdar)

    @staticmethod
    def _batch(obs: Tensor, obs_y: Tensor | None, aux_x: Tensor, aux_y: Tensor, bs: int,
               gen: torch.Generator, pick: Tensor | None = None) -> tuple:
        """Observed features (and labels), and aux images of the same classes where labelled."""
        pick = torch.randperm(len(obs), generator=gen)[:bs] if pick is None else pick
        zo, yo = obs[pick], (obs_y[pick] if obs_y is not None else None)
        idx = Fora._aux_batch(aux_y, yo, bs, gen)
        xa, ya = shift(aux_x[idx], gen, 1), aux_y[idx]
        return zo, yo, xa, ya, (ya if obs_y is not None else None)

    def _simulate(self, sim: nn.Module, tail: nn.Module | None, d_feat: nn.Module, real: Tensor,
                  real_y: Tensor | None, aux_x: Tensor, aux_y: Tensor, channel: CutChannel,
                  gen: torch.Generator, rest: Any, bs: int, w_f: float, w_mmd: float,
                  steps: int) -> Tensor:
        """Stage 1: train the simulator (and a simulated tail where the server holds none) on
        the task, against the feature discriminator; with `mmd_weight`, also FORA's
        class-conditional MMD to the observations. Returns the last task loss."""
        gen_params = list(sim.parameters()) + (list(tail.parameters()) if tail else [])
        opt = torch.optim.Adam(gen_params, lr=self._p("lr"))
        opt_f = torch.optim.Adam(d_feat.parameters(), lr=self._p("lr_d"), betas=(0.5, 0.999))
        task = torch.tensor(0.0)
        for _ in range(steps):
            progress.tick_attack()
            zo, yo, xa, ya, yc = self._batch(real, real_y, aux_x, aux_y, bs, gen)
            za = channel.sample(sim({"x": xa})["x"], gen)
            loss_d = F.softplus(-d_feat(zo, yo)).mean() + F.softplus(d_feat(za.detach(), yc)).mean()
            opt_f.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_f.step()
            task = F.cross_entropy(rest(za) if rest is not None else tail(za), ya)
            loss = task + w_f * F.softplus(-d_feat(za, yc)).mean()
            if w_mmd > 0:
                loss = loss + w_mmd * mk_mmd(za, zo, yc, yo)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sim.eval()
        return task.detach()

    def _fit_score(self, sim: nn.Module, real: Tensor, real_y: Tensor | None, aux_x: Tensor,
                   aux_y: Tensor, channel: CutChannel) -> float:
        """How far the simulator's features on aux data are from the observed smashed data, by
        what the attacker holds alone: the (class-conditional where labels arrived) MK-MMD
        over a few fixed batches, its own generator (the fit's randomness is left as it is)."""
        g = torch.Generator().manual_seed(int(self.params.get("seed", 0)) + 1)
        vals = []
        with torch.no_grad():
            for _ in range(4):
                pick = torch.randperm(len(real), generator=g)[:128]
                zo, yo = real[pick], (real_y[pick] if real_y is not None else None)
                idx = Fora._aux_batch(aux_y, yo, len(pick), g)
                za = channel.sample(sim({"x": aux_x[idx]})["x"], g)
                vals.append(float(mk_mmd(za, zo, aux_y[idx] if yo is not None else None, yo)))
        return sum(vals) / len(vals)

    def _sdar(self, view: View, obs: Tensor, channel: CutChannel, gen: torch.Generator,
              prior: priors.Prior) -> tuple[Tensor, dict[str, Any]]:
        aux_x, aux_y = view.aux.inputs.float().cpu(), view.aux.y.long().cpu()
        obs_y = priors.received_labels(view) if self._p("conditional") else None
        classes = int(view.public.get("num_classes") or 0) if obs_y is not None else 0
        # what the discriminators take as real: the probes' observations, and the training
        # batches' the server saw (with their labels where it holds them)
        real, real_y = observed(view, obs, obs_y) if self._p("seen") else (obs, obs_y)
        shape = tuple(obs.shape[1:])
        steps, dsteps = int(self._p("steps")), int(self._p("decoder_steps"))
        progress.attack_total(steps + dsteps)
        sim = fresh_head(view).train()
        rest = server_rest(view)
        tail = None if rest is not None else _simulated_tail(view, shape)
        d_feat = _Discriminator(shape, classes)
        d_img = _Discriminator(tuple(aux_x.shape[1:]), classes)
        # the decoder's labels: aux labels for aux images; for the observations, the labels
        # that arrived with them, else the ones the prior predicted (None: unconditioned)
        labelled = bool(self._p("decoder_labels")) and prior.labels is not None
        obs_l = prior.labels if labelled else None
        # the decoder's adversarial term reconstructs the observations: with label-conditioning
        # only those it holds a label for (the training batches' where they arrived with one)
        dec_obs, dec_y, dec_l = real, real_y, obs_l
        if labelled and len(real) > len(obs):
            if real_y is not None:
                dec_l = torch.cat([obs_l, real_y[len(obs):]])
            else:
                dec_obs, dec_y = obs, obs_y
        dec = Decoder(shape, tuple(aux_x.shape[1:]), int(self._p("width")),
                      prior.templates if labelled else None)
        with torch.no_grad():   # materialise lazy layers; the decoder's input scale
            y2 = obs_y[:2] if obs_y is not None else None
            d_feat(obs[:2], y2), d_img(aux_x[:2], y2)
            scale = float(channel.forward(obs).flatten(1).norm(dim=1).mean().clamp_min(1e-12)) \
                / math.sqrt(obs[0].numel())
        bs = min(int(self._p("batch")), len(obs))
        w_f, w_i, w_mmd = self._weights(sim)
        task = self._simulate(sim, tail, d_feat, real, real_y, aux_x, aux_y, channel, gen, rest,
                              bs, w_f, w_mmd, steps)
        score = self._fit_score(sim, real, real_y, aux_x, aux_y, channel)
        rec = torch.tensor(0.0)
        sim.eval().requires_grad_(False)
        lr = float(self._p("decoder_lr"))
        opt_dec = torch.optim.Adam(dec.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_dec, max(1, dsteps), eta_min=lr / 20)
        opt_i = torch.optim.Adam(d_img.parameters(), lr=self._p("lr_d"), betas=(0.5, 0.999))
        dec.train()
        for _ in range(dsteps):   # 2: the decoder, against the image discriminator
            progress.tick_attack()
            pick = torch.randperm(len(dec_obs), generator=gen)[:bs]
            zo, yo, xa, ya, yc = self._batch(dec_obs, dec_y, aux_x, aux_y, bs, gen, pick)
            with torch.no_grad():
                za = channel.sample(sim({"x": xa})["x"], gen)
            # its reconstructions of the observations
            xo = dec(zo / scale, dec_l[pick] if dec_l is not None else None)
            loss_d = F.softplus(-d_img(xa, yc)).mean() + F.softplus(d_img(xo.detach(), yo)).mean()
            opt_i.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_i.step()
            rec = F.mse_loss(dec(za / scale, ya if labelled else None), xa)
            loss_g = rec + w_i * F.softplus(-d_img(xo, yo)).mean()
            opt_dec.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_dec.step()
            sched.step()
        dec.eval()
        with torch.no_grad():
            images = torch.cat([dec(obs[i:i + 256] / scale,
                                    obs_l[i:i + 256] if obs_l is not None else None)
                                for i in range(0, len(obs), 256)])
        return images, {"final_task_ce": float(task.detach()), "feat_weight": w_f,
                        "fit_mmd": score, "mmd_weight": w_mmd,
                        "img_weight": w_i,
                        "decoder_train_mse": float(rec.detach()),
                        "conditional": obs_y is not None, "decoder_labels": labelled,
                        "observations": len(real),
                        "task_anchor": rest is not None}
