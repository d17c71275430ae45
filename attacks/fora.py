"""Feature-oriented reconstruction (FORA; Xu et al., "A Stealthy Wrongdoer", CVPR 2024).

An honest-but-curious server that holds neither the client head nor any way to query it: only
the public architecture and cut, its public auxiliary data, and the smashed data it observed.
Three stages:

1. substitute head: a fresh head of the public architecture is trained on aux data so that the
   distribution of its features matches that of the observed smashed data: a multi-kernel
   MMD between the two feature sets plus a discriminator that tells them apart (the substitute
   learns to fool it). Where the observations arrived with labels (vanilla SL, SplitFed), both
   terms compare class with class: the MMD kernel is multiplied by "same label" (the MMD of
   the joint distribution of feature and label) and the discriminator is a projection
   discriminator (Miyato & Koyama 2018). Where the server holds model parts past the cut (its
   tail), the substitute's features must also serve the task through them (`task_weight`):
   the tail was trained on the client's features, so it ties the substitute to their meaning.
   It fits to the probes' smashed data and the training batches' in the server's observation
   window (`View.seen`, labelled where they arrived so; `seen=False`: the probes alone).
2. inverse network: a decoder is trained on aux data to invert the (frozen) substitute;
3. attack: the decoder is applied to the observed smashed data.

Adaptive to the public cut defense: the substitute's features pass through the same public
mechanism (clip, then fresh noise) before they are compared with the observations and before
the decoder sees them, so the decoder learns to invert what the defense releases.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec import progress
from slsec.errors import UserError
from slsec.params import Param
from slsec.threat import View

from . import prior as priors
from .base import ATTACKS, Attack, Guess
from .inverse import CutChannel, Decoder, fresh_head, observed, shift

BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)   # MK-MMD: multiples of the median squared distance


def mk_mmd(a: Tensor, b: Tensor, ya: Tensor | None = None, yb: Tensor | None = None) -> Tensor:
    """Squared multi-kernel MMD between feature sets a [n, ...] and b [m, ...] (Gaussian
    kernels at BANDWIDTHS times the median squared distance). With labels, each kernel is
    multiplied by "same label": the MMD between the joint distributions of feature and label."""
    a, b = a.flatten(1), b.flatten(1)
    z = torch.cat([a, b])
    d = torch.cdist(z, z).square()
    scale = d.detach()[d.detach() > 0].median().clamp_min(1e-12)
    k = sum(torch.exp(-d / (scale * w)) for w in BANDWIDTHS)
    if ya is not None and yb is not None:
        y = torch.cat([ya, yb])
        k = k * (y[:, None] == y[None, :])
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class _Discriminator(nn.Module):
    """Observed smashed data (real) vs substitute features (fake): strided convolutions down to
    at most 4x4 for [C, H, W], a dense layer for [D]; with `classes`, a projection term."""

    def __init__(self, shape: tuple[int, ...], classes: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if len(shape) == 3:
            ch, h = shape[0], shape[1]
            while h > 4:
                layers += [nn.Conv2d(ch, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
                ch, h, width = width, h // 2, min(2 * width, 128)
            layers.append(nn.AdaptiveAvgPool2d(4 if h >= 4 else h))
        layers.append(nn.Flatten())
        self.phi = nn.Sequential(*layers, nn.LazyLinear(128), nn.LeakyReLU(0.2))
        self.out = nn.Linear(128, 1)
        self.embed = nn.Embedding(classes, 128) if classes else None

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.phi(z)
        s = self.out(h).squeeze(1)
        if self.embed is not None and y is not None:
            s = s + (self.embed(y) * h).sum(1)
        return s


def server_rest(view: View) -> Callable[[Tensor], Tensor] | None:
    """The model parts the server holds past the cut (body, tail), as smashed -> logits; None
    where it holds no tail (the task then cannot anchor the substitute)."""
    parts = view.parts
    if "tail" not in parts or ("body" not in parts and len(view.cuts) != 1):
        return None
    rest = [copy.deepcopy(parts[n]).cpu().eval().requires_grad_(False)
            for n in ("body", "tail") if n in parts]

    def forward(z: Tensor) -> Tensor:
        h = {"x": z}
        for m in rest:
            h = m(h)
        return h["x"]
    return forward


@ATTACKS.register("fora")
class Fora(Attack):
    """Invert the observed smashed data through a substitute head fitted to their statistics."""

    name = "fora"
    kind = "inversion"
    roles = {"vanilla": "server", "ushaped": "server", "splitfed": "server",
             "splitfed-async": "server"}
    methods = {"fora": frozenset({"architecture", "aux_data"}),
               "prior": frozenset({"aux_data"})}
    default_order = ("fora", "prior")

    # its parameters (flags --fora-*, TOML keys fora_*); DEFAULTS is what they default to
    # `iterations` (the harness's --attack-iters) sets both `steps` and `decoder_steps`
    params = (
        Param('fora_steps', 'int', 600,
              'fora: steps fitting the substitute head (--attack-iters sets it too)',
              check=('at_least_one',), kw='steps', unused="configures --attack fora"),
        Param('fora_lr', 'float', 0.001,
              'fora: learning rate of the substitute head',
              check=('positive',), kw='lr', unused="configures --attack fora"),
        Param('fora_lr_d', 'float', 0.0002,
              'fora: learning rate of its discriminator',
              check=('positive',), kw='lr_d', unused="configures --attack fora"),
        Param('fora_batch', 'int', 64,
              'fora: batch size of the substitute fit',
              check=('at_least_one',), kw='batch', unused="configures --attack fora"),
        Param('fora_mmd_weight', 'float', 1.0,
              'fora: weight of the MMD term',
              check=('non_negative',), kw='mmd_weight', unused="configures --attack fora"),
        Param('fora_disc_weight', 'float', 0.1,
              'fora: weight of the adversarial term',
              check=('non_negative',), kw='disc_weight', unused="configures --attack fora"),
        Param('fora_task_weight', 'float', 1.0,
              'fora: weight of the task term',
              check=('non_negative',), kw='task_weight', unused="configures --attack fora"),
        Param('fora_conditional', 'bool', True,
              'fora: class-conditional matching where labels cross the cut',
              kw='conditional', unused="configures --attack fora"),
        Param('fora_seen', 'bool', True, 'fora: fit the substitute to the training batches seen '
              '(the window of --observe-samples) beside the probes', kw='seen',
              unused="configures --attack fora"),
        Param('fora_decoder_steps', 'int', 600,
              'fora: steps training the decoder (--attack-iters sets it too)',
              check=('at_least_one',), kw='decoder_steps', unused="configures --attack fora"),
        Param('fora_decoder_lr', 'float', 0.003,
              'fora: learning rate of the decoder',
              check=('positive',), kw='decoder_lr', unused="configures --attack fora"),
        Param('fora_decoder_batch', 'int', 32,
              'fora: batch size of the decoder',
              check=('at_least_one',), kw='decoder_batch', unused="configures --attack fora"),
        Param('fora_width', 'int', 16,
              'fora: channel width of the decoder',
              check=('at_least_one',), kw='width', unused="configures --attack fora"),
    )
    DEFAULTS: dict[str, Any] = {p.keyword: p.default for p in params}

    def _p(self, key: str) -> Any:
        if key == "steps" and self.params.get("iterations") is not None:
            return int(self.params["iterations"])   # the harness's generic --attack-iters
        if key == "decoder_steps" and self.params.get("iterations") is not None:
            return int(self.params["iterations"])
        return self.params.get(key, self.DEFAULTS[key])

    def run(self, view: View) -> Guess:
        """Reconstruct the inputs behind `view.smashed` from aux data and the observations."""
        return invert_with_prior(self, view, self._fora)

    def _fora(self, view: View, obs: Tensor, channel: CutChannel, gen: torch.Generator,
              prior: priors.Prior) -> tuple[Tensor, dict[str, Any]]:
        aux_x, aux_y = view.aux.inputs.float().cpu(), view.aux.y.long().cpu()
        obs_y = priors.received_labels(view) if self._p("conditional") else None
        steps, dsteps = int(self._p("steps")), int(self._p("decoder_steps"))
        progress.attack_total(steps + dsteps)
        real, real_y = observed(view, obs, obs_y) if self._p("seen") else (obs, obs_y)
        sub, info = self._substitute(view, real, real_y, aux_x, aux_y, channel, gen, steps)
        dec, scale, mse = self._inverse(sub, aux_x, channel, gen, tuple(obs.shape[1:]), dsteps)
        with torch.no_grad():
            images = torch.cat([dec(obs[i:i + 256] / scale) for i in range(0, len(obs), 256)])
        info.update(decoder_train_mse=mse, conditional=obs_y is not None,
                    observations=len(real))
        return images, info

    def _substitute(self, view: View, obs: Tensor, obs_y: Tensor | None, aux_x: Tensor,
                    aux_y: Tensor, channel: CutChannel, gen: torch.Generator,
                    steps: int) -> tuple[nn.Module, dict[str, Any]]:
        """Stage 1: a fresh head whose (defended) features on aux data look like `obs`."""
        sub = fresh_head(view).train()
        classes = int(view.public.get("num_classes") or 0) if obs_y is not None else 0
        disc = _Discriminator(tuple(obs.shape[1:]), classes)
        rest = server_rest(view)
        feats = lambda x: channel.sample(sub({"x": x})["x"], gen)  # noqa: E731
        with torch.no_grad():
            disc(obs[:2], obs_y[:2] if obs_y is not None else None)   # materialise lazy layers
        opt = torch.optim.Adam(sub.parameters(), lr=self._p("lr"))
        opt_d = torch.optim.Adam(disc.parameters(), lr=self._p("lr_d"), betas=(0.5, 0.999))
        bs = min(int(self._p("batch")), len(obs))
        w_mmd, w_d, w_task = (float(self._p(k)) for k in ("mmd_weight", "disc_weight",
                                                           "task_weight"))
        mmd = task = torch.tensor(0.0)
        for _ in range(steps):
            progress.tick_attack()
            pick = torch.randperm(len(obs), generator=gen)[:bs]
            zo, yo = obs[pick], (obs_y[pick] if obs_y is not None else None)
            idx = self._aux_batch(aux_y, yo, bs, gen)
            xa, ya = shift(aux_x[idx], gen, 1), aux_y[idx]
            yc = ya if obs_y is not None else None
            za = feats(xa)
            # discriminator: observed smashed data are real, substitute features fake
            loss_d = F.softplus(-disc(zo, yo)).mean() + F.softplus(disc(za.detach(), yc)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # substitute: fool the discriminator, match the statistics, serve the task
            mmd = mk_mmd(za, zo, yc, yo)
            loss = w_mmd * mmd + w_d * F.softplus(-disc(za, yc)).mean()
            if rest is not None and w_task > 0:
                task = F.cross_entropy(rest(za), ya)
                loss = loss + w_task * task
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sub.eval().requires_grad_(False)
        return sub, {"final_mmd": float(mmd.detach()), "final_task_ce": float(task.detach()),
                     "task_anchor": rest is not None and w_task > 0}

    @staticmethod
    def _aux_batch(aux_y: Tensor, yo: Tensor | None, n: int, gen: torch.Generator) -> Tensor:
        """Aux indices: uniform, or (with observed labels) one aux sample of each observed
        sample's class, so that both sides of the conditional comparison hold the same classes."""
        if yo is None:
            return torch.randint(len(aux_y), (n,), generator=gen)
        out = []
        for y in yo.tolist():
            pool = (aux_y == y).nonzero().flatten()
            pool = pool if len(pool) else torch.arange(len(aux_y))
            out.append(pool[torch.randint(len(pool), (1,), generator=gen)])
        return torch.cat(out)

    def _inverse(self, sub: nn.Module, aux_x: Tensor, channel: CutChannel, gen: torch.Generator,
                 smashed_shape: tuple[int, ...], steps: int) -> tuple[nn.Module, float, float]:
        """Stage 2: a decoder from (defended) substitute features back to aux images."""
        with torch.no_grad():
            h = torch.cat([sub({"x": aux_x[i:i + 256]})["x"] for i in range(0, len(aux_x), 256)])
        scale = float(channel.forward(h).flatten(1).norm(dim=1).mean().clamp_min(1e-12)) \
            / math.sqrt(h[0].numel())
        dec = Decoder(smashed_shape, tuple(aux_x.shape[1:]), int(self._p("width")))
        lr = float(self._p("decoder_lr"))
        opt = torch.optim.Adam(dec.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=lr / 20)
        bs = int(self._p("decoder_batch"))
        loss = torch.tensor(0.0)
        dec.train()
        for _ in range(steps):
            progress.tick_attack()
            idx = torch.randint(len(aux_x), (min(bs, len(aux_x)),), generator=gen)
            x = shift(aux_x[idx], gen)
            with torch.no_grad():
                z = channel.sample(sub({"x": x})["x"], gen)   # fresh noise every step
            loss = F.mse_loss(dec(z / scale), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        dec.eval()
        return dec, scale, float(loss.detach())


def invert_with_prior(attack: Attack, view: View,
                      invert: Callable[[View, Tensor, CutChannel, torch.Generator, priors.Prior],
                                       tuple[Tensor, dict[str, Any]]]) -> Guess:
    """The run of a server's passive inversion from aux data (FORA, SDAR): the observations
    and the public cut channel, the label prior built on them, and `invert` (given that prior;
    or the prior alone for method 'prior'), under the attack's seed."""
    method = attack.pick_method(view.knowledge, attack.method)
    if not view.smashed:
        raise UserError(f"{attack.name}: the view holds no smashed data to invert")
    if view.aux is None or len(view.aux) == 0:
        raise UserError(f"attack '{attack.name}' needs public auxiliary data (knowledge aux_data)")
    obs = torch.cat([m["x"] for m in view.smashed]).detach().float().cpu()
    channel = CutChannel.from_public(view.public)
    seed = int(attack.params.get("seed", 0))
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = priors.build_prior(view, obs, channel, seed + 7)
        if method == "prior":
            images, info = prior.images, {}
        else:
            images, info = invert(view, obs, channel, gen, prior)
    info.update(prior.info, method=method, channel=channel.__dict__,
                label_source=prior.source)
    if prior.labels is not None:
        info["labels"] = prior.labels
    return Guess(images=images.clamp(0, 1).detach(), info=info)
