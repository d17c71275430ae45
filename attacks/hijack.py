"""Feature-space hijacking (FSHA; Pasquini et al., "Unleashing the Tiger", CCS 2021).

A *malicious* server: instead of the task gradient it returns to every client the gradient of
an adversarial loss on the client's smashed data, so the client head is steered into the
feature space of a pilot encoder the server trains on its own public auxiliary data. The pilot
is trained jointly with its inverse (a decoder) as an autoencoder; a critic (WGAN-GP) tells
pilot features of aux data from the client's smashed data, and the client head, following the
critic's gradient, learns to produce features the critic cannot tell from the pilot's. Once the
two feature spaces coincide, the decoder inverts the client's smashed data: the probes the
client sends after training are reconstructed by `decoder(smashed)`. Where they coincide only
up to a per-pixel mix of channels (what a critic, a test on distributions, leaves at a
convolutional cut), the server first maps the smashed data into the pilot's space through a
1x1 convolution it fits itself, after training, on the training batches it observed.

What the server uses (its role's holdings only): the public architecture and cut (to build a
pilot whose output space the client head can reach), its aux split (inputs and labels), and the
cut messages it receives (smashed data and, in vanilla SL / SplitFed, the labels sent with
them). Labels, when present, condition the critic (projection discriminator, Miyato & Koyama
2018), which pairs each class of private data with the same class of pilot features and
converges much faster than the paper's unconditional critic.

Dense cuts (a flat smashed vector, e.g. the CNN's fc1: 128 ReLU units) need a different
target. There the critic matches each class's distribution but not each sample's place in it
(measured at fc1: SSIM 0.02-0.30 over 5,000 steps), since a dense layer, unlike a convolution,
has no locality that ties a feature to its input pixels. With `pilot="auto"` the pilot of a
dense cut is fixed: the top principal components of the aux images, split into positive and
negative parts for the ReLU (a code linear in the pixels, the simplest target the head can be
steered to, and one whose second moments pin it down up to sign). With `match="auto"` the
gradient sent back at a dense cut is that of a moment-matching loss: the client batch's mean
and covariance against the pilot's on aux data, plus per-class means when labels cross the
cut (fc1: SSIM 0.64 by step 400, where a learned decoder on the exact codes gives 0.92 and a
head trained on them directly 0.84).

Parameters (`Hijack(**params)`; defaults in `Hijack.DEFAULTS`): learning rates of the
autoencoder and the critic (the critic's 4e-4 and a decoder `width` of 32, tuned on
Fashion-MNIST seed 0 at conv1 in `bench/hijack.py`: SSIM 0.71 at step 300 where 1e-4 and 16
gave 0.52; end to end over seeds 0-2 0.685 ± 0.245, was 0.639 ± 0.099; MNIST seed 0
0.954; bench/README.md), the gradient-penalty weight `gp` (applied every `gp_every` critic
steps with its weight scaled to match: lazy regularisation, to save the double backward on
CPU), `warmup` autoencoder steps on aux data before the first client step, `freeze_pilot`
(keep the warmed-up pilot fixed and train only its decoder; measured at conv1 it plateaued
near SSIM 0.58 by step 400, so conv cuts train pilot and decoder jointly, as in the paper),
the critic's endgame (`freeze_at`: the client step from which the pilot stops training, so
the head chases a fixed target; `anneal_from` / `anneal_half`: from that step the gradient sent
back halves every `anneal_half` steps, which anneals the head's Adam steps; tuned on
Fashion-MNIST seed 1 at conv1 end to end: 0.594 -> 0.634; over seeds 0-2 0.695 ± 0.173, was
0.685 ± 0.245; bench/README.md, issue 29), the map fitted after training from the client's
smashed data into the pilot's space (`align_steps`, `align_lr`: see `Hijacker.align`;
Fashion-MNIST conv1 over seeds 0-2 0.695 ± 0.173 -> 0.894 ± 0.103, issue 29),
`conditional` (label-conditioned critic/means when
the labels cross the cut), `pilot`
(auto | model | pca), `match` (auto | critic | moments), and the early stop: the server
watches its own matching loss (critic gap or moment distance, smoothed) and, once it has not
set a new low since its peak for `patience` client steps after `min_steps` (or at `steps`), stops
training and returns zero gradients, so the head stays where the hijack put it. The run
needs client steps to act in: `run_defaults` makes `--rounds` 20 unless given.

(Over 300 lines: the critic, the PCA pilot, the hook and the attack are used only together.)

A hijacked client does not learn the task: its head is trained only towards the pilot space.
The run's task accuracy is reported as measured; the server's tail still trains on the
hijacked features as the protocol says, so it may be well above chance (conv1, 220 steps: the
assembled model reached 0.953, because features an autoencoder can invert keep the digit).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.errors import UserError
from slsec.params import Param
from slsec.threat import ServerHook, View

from .base import ATTACKS, Attack, Guess
from . import prior as priors
from .fora import Fora, mk_mmd
from .inverse import CutChannel, Decoder, shift


class _Critic(nn.Module):
    """WGAN critic on smashed tensors ([C, H, W] or [D]); with `classes`, a projection critic
    D(z, y) = w . phi(z) + embed(y) . phi(z)."""

    def __init__(self, shape: tuple[int, ...], classes: int, width: int = 32) -> None:
        super().__init__()
        if len(shape) == 3:
            c, h, w = shape
            layers: list[nn.Module] = []
            ch = c
            while h > 4:   # halve the resolution down to at most 4x4
                layers += [nn.Conv2d(ch, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
                ch, h, w = width, h // 2, w // 2
                width = min(width * 2, 128)
            layers += [nn.Flatten()]
            feat = ch * h * w
        else:
            layers, feat = [nn.Flatten()], int(torch.tensor(shape).prod())
        self.phi = nn.Sequential(*layers, nn.Linear(feat, 256), nn.LeakyReLU(0.2))
        self.out = nn.Linear(256, 1)
        self.embed = nn.Embedding(classes, 256) if classes > 0 else None

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        h = self.phi(z)
        s = self.out(h).squeeze(1)
        if self.embed is not None and y is not None:
            s = s + (self.embed(y) * h).sum(1)
        return s


class _PCAPilot(nn.Module):
    """A fixed pilot for a dense cut of `dims` non-negative units: the top dims/2 principal
    components of the aux images, split into positive and negative parts (the head ends in a
    ReLU). Its code is a linear function of the pixels, the simplest target the client head
    can be steered to."""

    def __init__(self, aux: Tensor, dims: int) -> None:
        super().__init__()
        flat = aux.flatten(1)
        mean = flat.mean(0)
        _, _, v = torch.linalg.svd(flat - mean, full_matrices=False)
        self.register_buffer("mean", mean)
        self.register_buffer("comps", v[:dims // 2].clone())
        self.odd = dims % 2

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        z = (feats["x"].flatten(1) - self.mean) @ self.comps.T
        parts = [z.clamp(min=0), (-z).clamp(min=0)] + ([z[:, :1] * 0] if self.odd else [])
        return {"x": torch.cat(parts, 1)}


class Hijacker(ServerHook):
    """The malicious server's training-time state: pilot, decoder, critic, and the cut-gradient
    replacement the protocol calls for every batch (per client, point to point)."""

    def __init__(self, view: View, params: dict[str, Any]) -> None:
        if view.aux is None or len(view.aux) == 0:
            raise UserError("attack 'hijack' needs public auxiliary data (knowledge aux_data)")
        if view.build_model is None or not view.cuts:
            raise UserError("attack 'hijack' needs the public architecture and the cut")
        self.p = params
        seed = int(params.get("seed", 0))
        self.gen = torch.Generator().manual_seed(seed + 4242)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 4242)
            self.pilot = view.build_model().split([view.cuts[0]])[0]
            self.aux_x = view.aux.inputs.float().cpu()
            self.aux_y = view.aux.y.long().cpu()
            with torch.no_grad():
                shape = tuple(self.pilot({"x": self.aux_x[:2]})["x"].shape[1:])
            self.smashed_shape = shape
            if params["pilot"] == "pca" or (params["pilot"] == "auto" and len(shape) == 1):
                self.pilot = _PCAPilot(self.aux_x, shape[0])
            self.fixed = not any(True for _ in self.pilot.parameters())
            self.classes = int(view.public.get("num_classes", 0)) if params["conditional"] else 0
            self.decoder = Decoder(shape, tuple(self.aux_x.shape[1:]), params["width"])
            self.critic = _Critic(shape, self.classes)
        self.opt_ae = torch.optim.Adam(list(self.pilot.parameters()) +
                                       list(self.decoder.parameters()), lr=params["lr_ae"])
        self.opt_dec = torch.optim.Adam(self.decoder.parameters(), lr=params["lr_ae"])
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=params["lr_d"],
                                      betas=(0.5, 0.9))
        self.moments = params["match"] == "moments" or \
            (params["match"] == "auto" and len(shape) == 1)
        self.steps = 0
        self.ema: float | None = None
        self.best: float | None = None
        self.peak: float | None = None
        self.best_step = 0
        self.converged: int | None = None   # the client step at which the server stopped
        self.warm = False
        self.total = int(view.public.get("train_steps", 0))
        self.on_step: Callable[[int, int], None] | None = None   # progress (step, total)

    def _aux_batch(self, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.aux_x), (n,), generator=self.gen)
        x = self.aux_x[idx]
        if self.p["augment"]:
            x = shift(x, self.gen, 1)
        return x, self.aux_y[idx]

    def warm_up(self) -> None:
        """The server holds its aux data before any client step: it trains the autoencoder
        first, then freezes the pilot, so the client chases a fixed target. Done on first use
        (only the rank that plays the server ever pays for it)."""
        if self.warm:
            return
        for _ in range(int(self.p["warmup"])):
            self._ae_step(train_pilot=True)
        if self.p["freeze_pilot"] or self.moments:   # moment matching needs a fixed target
            self.pilot.requires_grad_(False)
            self.fixed = True
        if self.moments:
            with torch.no_grad():
                f = torch.cat([self.pilot({"x": self.aux_x[i:i + 256]})["x"].flatten(1)
                               for i in range(0, len(self.aux_x), 256)])
            cls_mu = torch.stack([f[self.aux_y == k].mean(0) if (self.aux_y == k).any()
                                  else f.mean(0) for k in range(max(self.classes, 1))])
            self.stats = (f.mean(0), torch.cov(f.T), cls_mu)
        self.warm = True

    def _ae_step(self, train_pilot: bool) -> tuple[Tensor, Tensor, Tensor, float]:
        """One autoencoder step on an aux batch; returns the batch, labels, pilot features."""
        xa, ya = self._aux_batch(int(self.p["ae_batch"]))
        zp = self.pilot({"x": xa})["x"]
        loss = F.mse_loss(self.decoder(zp if train_pilot else zp.detach()), xa)
        opt = self.opt_ae if train_pilot else self.opt_dec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return xa, ya, zp.detach(), float(loss.detach())

    def cut_grad(self, client: int, msg: dict[str, Tensor], honest: Tensor) -> Tensor:
        """Train pilot/decoder/critic one step; return d(adversarial loss)/d(smashed). Once the
        server's own signal says the hijack converged, it stops training and sends zeros (the
        head stays in the pilot's space; the server's work per step drops to nothing)."""
        self.warm_up()
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps, self.total)
        if self.converged is not None:
            return torch.zeros_like(honest)
        z = msg["x"].detach().float().cpu()
        y = msg.get("y")
        y = y.long().cpu() if (y is not None and self.classes) else None
        # 1. autoencoder step on public data (pilot + decoder, as in the paper; with a fixed
        # pilot only the decoder keeps learning its inverse)
        freeze = 0 < int(self.p["freeze_at"]) <= self.steps   # the endgame: a fixed target
        _, _, _, loss_ae = self._ae_step(train_pilot=not (self.fixed or freeze))
        g, signal = self._moment_grad(z, y) if self.moments else self._critic_grad(z, y)
        self.last = {"ae_mse": loss_ae, "hijack_loss": signal}
        self._watch(signal)
        return (g * self._scale()).to(honest.dtype).to(honest.device).reshape(honest.shape)

    def _scale(self) -> float:
        """The critic's endgame: from client step `anneal_from` the gradient sent back halves
        every `anneal_half` steps. The client's Adam divides by a root mean square remembered
        over ~1,000 steps, so a shrinking gradient shrinks its steps: the server lowers the
        head's effective learning rate, as a GAN's generator is annealed, without touching
        the client (0 turns it off; moment matching at dense cuts is not annealed)."""
        start, half = int(self.p["anneal_from"]), int(self.p["anneal_half"])
        if self.moments or start <= 0 or self.steps <= start:   # a critic's endgame only
            return 1.0
        return 0.5 ** ((self.steps - start) / half)

    def _watch(self, signal: float) -> None:
        """Early stop on the server's own signal (the matching loss, smoothed over ~50 steps):
        after `min_steps`, converged once it has not set a new low (by 2%) since its last peak
        for `patience` steps (a critic's gap first rises as the critic learns), or at `steps`."""
        self.ema = signal if self.ema is None else 0.98 * self.ema + 0.02 * signal
        if self.steps < int(self.p["min_steps"]):
            return
        if self.peak is None or self.ema > self.peak:
            self.peak = self.best = self.ema
            self.best_step = self.steps
        elif self.ema < self.best - 0.02 * abs(self.best):
            self.best, self.best_step = self.ema, self.steps
        if self.steps - self.best_step >= int(self.p["patience"]) or \
                self.steps >= int(self.p["steps"]):
            self.converged = self.steps

    def _moment_grad(self, z: Tensor, y: Tensor | None) -> tuple[Tensor, float]:
        """Dense cuts: match the pilot's aux feature statistics (global mean and covariance,
        per-class means when labels cross the cut) on the client's batch."""
        zc = z.flatten(1).clone().requires_grad_(True)
        mu, cov, cls_mu = self.stats
        loss = (zc.mean(0) - mu).square().sum() + (torch.cov(zc.T) - cov).square().sum()
        if y is not None:
            for k in y.unique():
                pick = y == k
                loss = loss + (zc[pick].mean(0) - cls_mu[k]).square().sum() * pick.float().mean()
        return torch.autograd.grad(loss, zc)[0], float(loss.detach())

    def _critic_grad(self, z: Tensor, y: Tensor | None) -> tuple[Tensor, float]:
        """WGAN-GP critic: pilot features of aux data are "real", the client's are "fake"."""
        with torch.no_grad():   # pilot features of as many aux samples as the client sent
            xa, ya = self._aux_batch(len(z))
            zp = self.pilot({"x": xa})["x"]
        ya_c = ya if y is not None else None
        # the gradient sent back: the client should look like pilot features to the critic
        zc = z.clone().requires_grad_(True)
        g = torch.autograd.grad(-self.critic(zc, y).sum(), zc)[0]
        # critic step; the gradient penalty (the costly double backward) is applied lazily,
        # every gp_every steps with its weight scaled up to match (StyleGAN2's lazy regularisation)
        d_real, d_fake = self.critic(zp, ya_c), self.critic(z, y)
        loss_d = d_fake.mean() - d_real.mean()
        every = int(self.p["gp_every"])
        if self.steps % every == 0:
            eps = torch.rand(len(z), *([1] * (z.dim() - 1)), generator=self.gen)
            mix = (eps * zp + (1 - eps) * z).requires_grad_(True)
            gm = torch.autograd.grad(self.critic(mix, ya_c).sum(), mix, create_graph=True)[0]
            gp = (gm.flatten(1).norm(dim=1) - 1).square().mean()
            loss_d = loss_d + self.p["gp"] * every * gp
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return g, float((d_real.mean() - d_fake.mean()).detach())

    def align(self, seen: list[dict[str, Tensor]]) -> nn.Module | None:
        """After training: a map of the server's own from the client's smashed data into the
        pilot's space, a 1x1 convolution (identity at first) fitted so that the mapped training
        batches the server observed match the pilot's features of aux data, class with class
        (FORA's multi-kernel MMD; `align_steps` Adam steps at `align_lr`, at most as many as
        the client steps the hijack served: a short hijack gets a short fit). The critic leaves
        the head's features a per-pixel mix of the pilot's channels (conv1, Fashion-MNIST seed
        1: a least-squares 1x1 map fitted on the probes with the truth explains 99% of the
        pilot's features and the decoder reads them at SSIM 0.99 through it, 0.63 without),
        and the critic's gradient to the client, once annealed, no longer corrects it; here
        the server corrects it itself. None (the decoder reads the smashed data as they are)
        at dense cuts, without observations, or with `align_steps` 0."""
        steps = min(int(self.p["align_steps"]), self.steps)
        if self.moments or len(self.smashed_shape) != 3 or not seen or steps <= 0:
            return None
        c = self.smashed_shape[0]
        t = nn.Conv2d(c, c, 1)
        with torch.no_grad():
            t.weight.copy_(torch.eye(c).reshape(c, c, 1, 1))
            t.bias.zero_()
            z = torch.cat([m["x"] for m in seen]).detach().float().cpu()
            labelled = self.classes and all("y" in m for m in seen)
            y = torch.cat([m["y"] for m in seen]).long().cpu() if labelled else None
            zp = torch.cat([self.pilot({"x": self.aux_x[i:i + 256]})["x"]
                            for i in range(0, len(self.aux_x), 256)])
        gen = torch.Generator().manual_seed(int(self.p.get("seed", 0)) + 4343)
        opt = torch.optim.Adam(t.parameters(), lr=self.p["align_lr"])
        n = min(64, len(z))
        for _ in range(steps):
            i = torch.randperm(len(z), generator=gen)[:n]
            yi = y[i] if y is not None else None
            j = Fora._aux_batch(self.aux_y, yi, n, gen)
            ya = self.aux_y[j] if yi is not None else None
            loss = mk_mmd(t(z[i]).clamp(min=0), zp[j], yi, ya)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return t.requires_grad_(False)

    def invert(self, obs: Tensor, align: nn.Module | None = None) -> Tensor:
        """The decoder on smashed data (through the fitted map first, when given)."""
        self.warm_up()
        self.decoder.eval()
        with torch.no_grad():
            out = torch.cat([self.decoder(o if align is None else align(o).clamp(min=0))
                             for o in obs.split(256)])
        self.decoder.train()
        return out


@ATTACKS.register("hijack")
class Hijack(Attack):
    """FSHA: a malicious server hijacks the client head, then decodes the probes."""

    name = "hijack"
    kind = "inversion"
    malicious = True
    reviewed = "malicious"   # slsec review's malicious-server column runs this attack
    roles = {"vanilla": "server", "splitfed": "server"}
    # prior: the reference guess without inversion (attacks/prior.py), for the gain
    methods = {"fsha": frozenset({"architecture", "aux_data"}), "prior": frozenset({"aux_data"})}
    default_order = ("fsha", "prior")
    run_defaults = {"rounds": 20}   # ~1,100 client steps; the server stops early when converged

    # its parameters (flags --hijack-*, TOML keys hijack_*); DEFAULTS is what they default to
    params = (
        Param('hijack_lr_ae', 'float', 0.001,
              'hijack: learning rate of the pilot autoencoder',
              check=('positive',), kw='lr_ae', unused="configures --attack hijack"),
        Param('hijack_lr_d', 'float', 0.0004,
              'hijack: learning rate of the critic',
              check=('positive',), kw='lr_d', unused="configures --attack hijack"),
        Param('hijack_gp', 'float', 10.0,
              'hijack: gradient-penalty weight',
              check=('non_negative',), kw='gp', unused="configures --attack hijack"),
        Param('hijack_gp_every', 'int', 2,
              'hijack: critic steps between gradient penalties',
              check=('at_least_one',), kw='gp_every', unused="configures --attack hijack"),
        Param('hijack_width', 'int', 32,
              'hijack: channel width of pilot and decoder',
              check=('at_least_one',), kw='width', unused="configures --attack hijack"),
        Param('hijack_warmup', 'int', 0,
              'hijack: autoencoder steps on aux data before the first client step',
              check=('zero_or_more',), kw='warmup', unused="configures --attack hijack"),
        Param('hijack_freeze_pilot', 'bool', False,
              'hijack: keep the warmed-up pilot fixed, train only its decoder',
              kw='freeze_pilot', unused="configures --attack hijack"),
        Param('hijack_ae_batch', 'int', 32,
              'hijack: batch size of the autoencoder',
              check=('at_least_one',), kw='ae_batch', unused="configures --attack hijack"),
        Param('hijack_augment', 'bool', True,
              'hijack: augment the aux data',
              kw='augment', unused="configures --attack hijack"),
        Param('hijack_conditional', 'bool', True,
              'hijack: label-conditioned critic where labels cross the cut',
              kw='conditional', unused="configures --attack hijack"),
        Param('hijack_pilot', 'str', 'auto',
              'hijack: the pilot the head is pushed towards',
              choices=('auto', 'model', 'pca'), kw='pilot', unused="configures --attack hijack"),
        Param('hijack_match', 'str', 'auto',
              "hijack: how the smashed data are matched to the pilot's",
              choices=('auto', 'critic', 'moments'), kw='match',
              unused="configures --attack hijack"),
        Param('hijack_freeze_at', 'int', 500,
              'hijack: client step from which the pilot stops training (0: never)',
              check=('zero_or_more',), kw='freeze_at', unused="configures --attack hijack"),
        Param('hijack_anneal_from', 'int', 500,
              'hijack: client step from which the gradient sent back shrinks (0: never)',
              check=('zero_or_more',), kw='anneal_from', unused="configures --attack hijack"),
        Param('hijack_anneal_half', 'int', 150,
              'hijack: client steps over which the gradient sent back halves',
              check=('at_least_one',), kw='anneal_half', unused="configures --attack hijack"),
        Param('hijack_align_steps', 'int', 300,
              "hijack: steps of the map from the client's smashed data into the pilot's "
              "space, fitted after training (0: none)",
              check=('zero_or_more',), kw='align_steps', unused="configures --attack hijack"),
        Param('hijack_align_lr', 'float', 0.01,
              'hijack: learning rate of that map',
              check=('positive',), kw='align_lr', unused="configures --attack hijack"),
        Param('hijack_max_steps', 'int', 1500,
              'hijack: most client steps of hijacking',
              check=('at_least_one',), kw='steps', unused="configures --attack hijack"),
        Param('hijack_min_steps', 'int', 200,
              'hijack: client steps before the early stop may end it',
              check=('zero_or_more',), kw='min_steps', unused="configures --attack hijack"),
        Param('hijack_patience', 'int', 200,
              'hijack: client steps without a new low before it stops',
              check=('at_least_one',), kw='patience', unused="configures --attack hijack"),
    )
    DEFAULTS: dict[str, Any] = {p.keyword: p.default for p in params}

    def __init__(self, *, method: str | None = None, **params: Any) -> None:
        super().__init__(method=method, **params)
        self.hook: Hijacker | None = None

    def hijack(self, view: View) -> ServerHook:
        """Before training: build the server's pilot, decoder and critic from its holdings."""
        params = {**self.DEFAULTS, **{k: v for k, v in self.params.items() if k in self.DEFAULTS},
                  "seed": int(self.params.get("seed", 0))}
        self.hook = Hijacker(view, params)
        return self.hook

    def run(self, view: View) -> Guess:
        """After training: decode the smashed probe queries the server observed."""
        method = self.pick_method(view.knowledge, self.method)
        if method == "prior":   # what the server guesses from aux data and labels alone
            obs = torch.cat([m["x"] for m in view.smashed]).detach().float().cpu()
            prior = priors.build_prior(view, obs, CutChannel.from_public(view.public),
                                       int(self.params.get("seed", 0)) + 7)
            info = {**prior.info, "method": "prior", "label_source": prior.source}
            if prior.labels is not None:
                info["labels"] = prior.labels
            return Guess(images=prior.images.clamp(0, 1), info=info)
        if self.hook is None:
            raise UserError("attack 'hijack' acts during training: run it through the harness")
        if not view.smashed:
            raise UserError("hijack: the view holds no smashed data to invert")
        obs = torch.cat([m["x"] for m in view.smashed]).detach().float().cpu()
        images = self.hook.invert(obs, self.hook.align(view.seen))
        info = {"method": "fsha", "hijack_steps": self.hook.steps,
                "hijack_converged_at": self.hook.converged or self.hook.steps,
                **getattr(self.hook, "last", {})}
        return Guess(images=images.clamp(0, 1), info=info)
