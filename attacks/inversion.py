"""Model inversion at the cut: reconstruct client inputs from the smashed data the server saw.

Three methods, strongest first (each needs less knowledge than the one before):
- whitebox: regularised maximum likelihood (rMLE, He et al. 2019, "Model inversion attacks
  against collaborative inference"): optimise x in [0,1] so head(x) matches the observation.
- decoder: the black-box inverse network of the same paper: query the head with public
  auxiliary data, train a decoder smashed -> input, apply it to the observation.
- unsplit: UnSplit (Erdogan et al. 2022): architecture only; alternately optimise the inputs
  and a fresh surrogate head so that surrogate(x) matches the observation.

- prior: no inversion at all: the best guess from what the role already holds (aux data, and
  the label it received or predicts; see attacks/prior.py). Reported leakage is never below it.

Where the role holds or predicts labels, whitebox starts from the class image of the label and
is pulled towards it in proportion to the noise at the cut, and the decoder is conditioned on
the label (it learns a residual over the class image). Neither may do worse than the class
image it is given: each checks itself on held-out aux data (noise simulated with the public
mechanism) and outputs the class image where it does not beat it.

All three are adaptive to the public cut defense (Kerckhoffs): the clipping of the public
mechanism is part of their forward model, the matching loss is scale invariant, and with noise
the loss is the noise's likelihood (Gaussian: squared error, Laplace: absolute error).

The channel, the decoder network and the fresh head live in `inverse.py` (FORA and the hijack
use them too). At about 370 lines this file stays over the house's 300: the three methods share
the held-out check and the class-image fallback, and read best side by side.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from slsec import progress
from slsec.errors import UserError
from slsec.params import Param
from slsec.threat import View

from . import prior as priors
from .base import ATTACKS, Attack, Guess
from .inverse import (CutChannel, Decoder, fresh_head, frozen, native_bf16, shift,
                      total_variation)


@ATTACKS.register("inversion")
class Inversion(Attack):
    """Reconstruct every probed input from the smashed data observed at the cut."""

    name = "inversion"
    kind = "inversion"
    reviewed = "image"
    roles = {"vanilla": "server", "ushaped": "server", "splitfed": "server",
             "splitfed-async": "server"}
    methods = {
        "whitebox": frozenset({"architecture", "head_weights"}),
        "decoder": frozenset({"architecture", "aux_data", "query_head"}),
        "unsplit": frozenset({"architecture"}),
        "prior": frozenset({"aux_data"}),
    }
    default_order = ("whitebox", "decoder", "unsplit", "prior")
    # whitebox wins at shallow cuts without noise; the decoder wins at deep cuts and, trained
    # on noisy aux data, against DP at the cut (measured, conv2, sigma 0.01: SSIM 0.22 vs 0.91);
    # the prior is a contender so that the
    # reported leakage is never below what the role could guess without inverting
    contenders = ("whitebox", "decoder", "prior")
    # their randomness comes from generators of their own (`run`'s `gen`, the prior's, the
    # decoder's initialisation); unsplit builds a fresh head from the global generator
    side_by_side = frozenset({"whitebox", "decoder", "prior"})

    # Each method's settings are declared parameters (--inv-<method>-<key>, TOML keys
    # inv_<method>_<key>); DEFAULTS is what they default to. --attack-iters sets whitebox's
    # iterations, decoder's steps and unsplit's rounds.
    # whitebox stops early once `check_every` iterations improve the objective by under `tol`
    # (measured on MNIST conv1/conv2/fc1 with and without DP noise: SSIM within 0.001 of 600
    # full iterations, stops at ~150 where it has converged, runs on where it still gains).
    # decoder, with labels (a held-out aux split exists): at step `give_up_at` its held-out MSE
    # must be `margin` below the class images' or training ends there (where it learns, e.g.
    # conv1 without noise, it is ~70% below at step 50; under noise that drowns the signal it
    # stays within a few % and falls back to the class image anyway: bench/README).
    params = (
        Param("inv_whitebox_lr", "float", 0.05,
              "inversion whitebox: step size of the input search",
              check=('positive',), kw="whitebox_lr",
              unused="configures --attack inversion"),
        Param("inv_whitebox_tv", "float", 0.02,
              "inversion whitebox: total-variation weight",
              check=('non_negative',), kw="whitebox_tv",
              unused="configures --attack inversion"),
        Param("inv_whitebox_restarts", "int", 1,
              "inversion whitebox: random restarts, the best kept",
              check=('at_least_one',), kw="whitebox_restarts",
              unused="configures --attack inversion"),
        Param("inv_whitebox_batch", "int", 64,
              "inversion whitebox: probes inverted at once",
              check=('at_least_one',), kw="whitebox_batch",
              unused="configures --attack inversion"),
        Param("inv_whitebox_tol", "float", 0.005,
              "inversion whitebox: early stop: relative gain under this",
              check=('non_negative',), kw="whitebox_tol",
              unused="configures --attack inversion"),
        Param("inv_whitebox_check_every", "int", 50,
              "inversion whitebox: early stop: iterations between checks",
              check=('at_least_one',), kw="whitebox_check_every",
              unused="configures --attack inversion"),
        Param("inv_whitebox_prior_weight", "float", 0.05,
              "inversion whitebox: weight of the aux-mean prior",
              check=('non_negative',), kw="whitebox_prior_weight",
              unused="configures --attack inversion"),
        Param("inv_whitebox_validate", "int", 16,
              "inversion whitebox: aux samples that validate the search",
              check=('zero_or_more',), kw="whitebox_validate",
              unused="configures --attack inversion"),
        Param("inv_decoder_lr", "float", 0.003,
              "inversion decoder: learning rate of the decoder",
              check=('positive',), kw="decoder_lr",
              unused="configures --attack inversion"),
        Param("inv_decoder_batch", "int", 32,
              "inversion decoder: batch size of the decoder",
              check=('at_least_one',), kw="decoder_batch",
              unused="configures --attack inversion"),
        Param("inv_decoder_augment", "int", 3,
              "inversion decoder: augmented copies of each aux sample",
              check=('zero_or_more',), kw="decoder_augment",
              unused="configures --attack inversion"),
        Param("inv_decoder_width", "int", 16,
              "inversion decoder: channel width of the decoder",
              check=('at_least_one',), kw="decoder_width",
              unused="configures --attack inversion"),
        Param("inv_decoder_query_defended", "bool", False,
              "inversion decoder: query the head with the defense applied",
              kw="decoder_query_defended",
              unused="configures --attack inversion"),
        Param("inv_decoder_give_up_at", "int", 150,
              "inversion decoder: step of the held-out check",
              check=('at_least_one',), kw="decoder_give_up_at",
              unused="configures --attack inversion"),
        Param("inv_decoder_margin", "float", 0.1,
              "inversion decoder: held-out MSE gain needed to go on",
              check=('non_negative',), kw="decoder_margin",
              unused="configures --attack inversion"),
        Param("inv_decoder_bf16", "bool", True,
              "inversion decoder: train in bfloat16 autocast",
              kw="decoder_bf16", unused="configures --attack inversion"),
        Param("inv_unsplit_input_steps", "int", 20,
              "inversion unsplit: input steps per round",
              check=('at_least_one',), kw="unsplit_input_steps",
              unused="configures --attack inversion"),
        Param("inv_unsplit_model_steps", "int", 10,
              "inversion unsplit: model steps per round",
              check=('at_least_one',), kw="unsplit_model_steps",
              unused="configures --attack inversion"),
        Param("inv_unsplit_lr", "float", 0.05,
              "inversion unsplit: step size of the input search",
              check=('positive',), kw="unsplit_lr",
              unused="configures --attack inversion"),
        Param("inv_unsplit_model_lr", "float", 0.001,
              "inversion unsplit: learning rate of the substitute model",
              check=('positive',), kw="unsplit_model_lr",
              unused="configures --attack inversion"),
        Param("inv_unsplit_tv", "float", 0.05,
              "inversion unsplit: total-variation weight",
              check=('non_negative',), kw="unsplit_tv",
              unused="configures --attack inversion"),
        Param("inv_unsplit_restarts", "int", 1,
              "inversion unsplit: random restarts, the best kept",
              check=('at_least_one',), kw="unsplit_restarts",
              unused="configures --attack inversion"),
        Param("inv_unsplit_batch", "int", 64,
              "inversion unsplit: probes inverted at once",
              check=('at_least_one',), kw="unsplit_batch",
              unused="configures --attack inversion"),
    )
    DEFAULTS: dict[str, dict[str, Any]] = {
        "whitebox": {"iterations": 600}, "decoder": {"steps": 600}, "prior": {},
        "unsplit": {"rounds": 30}}
    for _p_ in params:
        DEFAULTS[_p_.keyword.split("_", 1)[0]][_p_.keyword.split("_", 1)[1]] = _p_.default
    del _p_

    def _p(self, method: str, key: str) -> Any:
        if key in self.params:
            return self.params[key]
        if f"{method}_{key}" in self.params:   # a declared parameter (--inv-<method>-<key>)
            return self.params[f"{method}_{key}"]
        it = self.params.get("iterations")  # the harness's generic --attack-iters
        if it is not None and method == "decoder" and key == "steps":
            return int(it)
        if it is not None and method == "unsplit" and key == "rounds":
            return max(1, int(it) // int(self._p("unsplit", "input_steps")))
        return self.DEFAULTS[method][key]

    def run(self, view: View) -> Guess:
        """Reconstruct the inputs behind `view.smashed` ([N, C, H, W] in [0, 1], probe order)."""
        method = self.pick_method(view.knowledge, self.method)
        if not view.smashed:
            raise UserError("inversion: the view holds no smashed data to invert")
        obs = torch.cat([m["x"] for m in view.smashed]).detach().float().cpu()
        shape = tuple(view.public.get("input_shape", ()))
        if len(shape) != 3:
            raise UserError("inversion needs view.public['input_shape'] = (C, H, W)")
        channel = CutChannel.from_public(view.public)
        seed = int(self.params.get("seed", 0))
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            prior = None
            if "aux_data" in view.knowledge and (method == "prior"
                                                 or self.params.get("use_prior", True)):
                prior = priors.build_prior(view, obs, channel, seed + 7)
            if method == "prior":
                images, info = prior.images, {}  # type: ignore[union-attr]
            elif method == "whitebox":
                images, info = self._whitebox(view, obs, shape, channel, gen, prior)
            elif method == "decoder":
                images, info = self._decoder(view, obs, shape, channel, gen, prior)
            else:
                images, info = self._unsplit(view, obs, shape, channel, gen)
        info.update(method=method, channel=channel.__dict__)
        if prior is not None:
            info.update(prior.info, label_source=prior.source)   # LABEL_NONE/HELD/PREDICTED
            if prior.labels is not None:
                info["labels"] = prior.labels
        return Guess(images=images.clamp(0, 1).detach(), info=info)

    # --- whitebox: rMLE with the real head -------------------------------------------------
    def _whitebox(self, view: View, obs: Tensor, shape: tuple[int, ...], channel: CutChannel,
                  gen: torch.Generator, prior: priors.Prior | None = None
                  ) -> tuple[Tensor, dict[str, Any]]:
        head = frozen(view.parts["head"])
        it, lr, tv = self._p("whitebox", "iterations"), self._p("whitebox", "lr"), \
            self._p("whitebox", "tv")
        restarts, bs = self._p("whitebox", "restarts"), self._p("whitebox", "batch")
        factor = self._noise_tv_factor(obs, channel)
        tv = tv * factor
        # label known: start from the label's class image, pulled towards it as noise grows
        labelled = prior is not None and prior.labels is not None
        pw = self._p("whitebox", "prior_weight") * (factor - 1.0) if labelled else 0.0
        fit = lambda x: head({"x": x})["x"]  # noqa: E731
        info: dict[str, Any] = {}
        if labelled and channel.noise_std > 0 and "aux_data" in view.knowledge:
            # under noise, check on held-out aux images (noise simulated with the public
            # mechanism) that the fit beats the class image; if not, the class image is the
            # answer (checked first: the probes' fit is then not needed)
            n_val = int(self._p("whitebox", "validate"))
            aux = view.aux
            pick = torch.randperm(len(aux), generator=gen)[:n_val]
            xv, yv = aux.inputs[pick].float().cpu(), aux.y[pick].long().cpu()
            with torch.no_grad():
                ov = channel.sample(fit(xv), gen)
            anchor_v = prior.templates[yv]  # type: ignore[union-attr,index]
            fit_v, _, _ = self._fit_inputs(fit, ov, anchor_v.clone(), channel, it, lr, tv,
                                           self._p("whitebox", "tol"),
                                           self._p("whitebox", "check_every"),
                                           anchor=anchor_v, anchor_weight=pw)
            from slsec import metrics
            wb, pr = float(metrics.ssim(xv, fit_v).mean()), float(metrics.ssim(xv, anchor_v).mean())
            info.update(heldout_ssim=wb, heldout_prior_ssim=pr)
            if wb < pr:
                info["fell_back_to_prior"] = True
                return prior.images.clone(), info  # type: ignore[union-attr]
        out, losses, iterations_run = [], [], []
        for lo in range(0, len(obs), bs):
            o = obs[lo:lo + bs]
            anchor = prior.images[lo:lo + bs] if labelled else None  # type: ignore[union-attr]
            best_x, best_l = None, None
            for r in range(restarts):
                init = (anchor.clone() if anchor is not None else torch.zeros(len(o), *shape)) \
                    if r == 0 else torch.rand(len(o), *shape, generator=gen)
                x, l, ran = self._fit_inputs(fit, o, init, channel, it, lr, tv,
                                             self._p("whitebox", "tol"),
                                             self._p("whitebox", "check_every"),
                                             anchor=anchor, anchor_weight=pw)
                iterations_run.append(ran)
                if best_x is None:
                    best_x, best_l = x, l
                else:
                    better = l < best_l
                    best_x[better], best_l[better] = x[better], l[better]
            out.append(best_x)
            losses.append(best_l)
        info.update(match_loss=float(torch.cat(losses).mean()), iterations_run=iterations_run)
        return torch.cat(out), info

    def _noise_tv_factor(self, obs: Tensor, channel: CutChannel) -> float:
        """Stronger prior when noise dominates: scale TV by 1 + noise energy / signal energy."""
        if channel.noise_std <= 0 or not self.params.get("adapt_tv", True):
            return 1.0
        noise_energy = channel.noise_std ** 2 * obs[0].numel()
        total = float(obs.flatten(1).square().sum(1).mean())
        signal = max(total - noise_energy, 1e-12)
        return 1.0 + min(noise_energy / signal, 100.0)

    @staticmethod
    def _fit_inputs(f, obs: Tensor, init: Tensor, channel: CutChannel, iterations: int,
                    lr: float, tv: float, tol: float = 0.0, check_every: int = 50,
                    anchor: Tensor | None = None,
                    anchor_weight: float = 0.0) -> tuple[Tensor, Tensor, int]:
        """Projected Adam on x in [0, 1]: per-sample match loss + tv * TV(x) (+ anchor_weight *
        mean squared distance to `anchor`, the prior image), learning rate on a
        cosine from lr to lr/20 over `iterations`. Once `check_every` iterations lower the
        objective by less than `tol` (relative), the cosine is compressed into the next
        check_every/2 iterations and the fit ends there (converged: more iterations only cost
        time). Returns (inputs, final per-sample match loss, iterations run)."""
        z = init.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        eta = lr / 20
        lr0, begin, end = lr, 0, iterations   # the cosine runs from lr0 at `begin` to eta at `end`
        last = math.inf
        i = 0
        while i < end:
            progress.tick_attack()
            now_lr = eta + (lr0 - eta) * (1 + math.cos(math.pi * (i - begin) / (end - begin))) / 2
            loss = (channel.loss(channel.forward(f(z)), obs) + tv * total_variation(z)).sum()
            if anchor is not None and anchor_weight > 0:
                loss = loss + anchor_weight * (z - anchor).square().flatten(1).mean(1).sum()
            if tol > 0 and end == iterations and i and i % check_every == 0:
                value = float(loss.detach())
                if last - value < tol * abs(last):   # converged: anneal quickly, then stop
                    lr0, begin, end = now_lr, i, min(iterations, i + max(1, check_every // 2))
                last = value
            for group in opt.param_groups:
                group["lr"] = now_lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.clamp_(0, 1)   # projected Adam: the box [0, 1] without sigmoid saturation
            i += 1
        with torch.no_grad():
            x = z.detach()
            final = channel.loss(channel.forward(f(x)), obs)
        return x.detach(), final, i

    # --- decoder: black-box inverse network trained on public auxiliary data ----------------
    def _decoder(self, view: View, obs: Tensor, shape: tuple[int, ...], channel: CutChannel,
                 gen: torch.Generator, prior: priors.Prior | None = None
                 ) -> tuple[Tensor, dict[str, Any]]:
        aux = view.aux.inputs.float().cpu()
        aux_y = view.aux.y.long().cpu()
        steps, lr, bs = self._p("decoder", "steps"), self._p("decoder", "lr"), \
            self._p("decoder", "batch")
        copies, width = self._p("decoder", "augment"), self._p("decoder", "width")
        labelled = prior is not None and prior.labels is not None
        valid = torch.empty(0, dtype=torch.long)
        if labelled:   # hold out aux images to check the decoder against the class image
            perm = torch.randperm(len(aux), generator=gen)
            valid, fit = perm[:max(1, len(aux) // 8)], perm[max(1, len(aux) // 8):]
            aux_v, y_v, aux, aux_y = aux[valid], aux_y[valid], aux[fit], aux_y[fit]
        xs = [aux] + [shift(aux, gen) for _ in range(copies)]
        x_train = torch.cat(xs)
        y_train = aux_y.repeat(copies + 1)
        with torch.no_grad():
            h = torch.cat([view.query_head({"x": x_train[i:i + 256]})["x"].float().cpu()
                           for i in range(0, len(x_train), 256)])
        defended = bool(self._p("decoder", "query_defended"))
        # standardise the decoder input to unit RMS per coordinate (from the aux features)
        scale = float(channel.forward(h).flatten(1).norm(dim=1).mean().clamp_min(1e-12)) \
            / math.sqrt(h[0].numel())
        templates = prior.templates if labelled else None  # type: ignore[union-attr]
        # its initial weights from a generator of its own (the draws torch's global one gave
        # after `run` seeded it), so that it may train beside the other methods
        dec = Decoder(tuple(obs.shape[1:]), shape, width, templates,
                      generator=torch.Generator().manual_seed(gen.initial_seed()))
        if h.dim() == 4:   # channels-last convolutions: ~0.8x the CPU time per step (oneDNN)
            dec = dec.to(memory_format=torch.channels_last)
            h = h.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.Adam(dec.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 20)
        # its training steps in bfloat16 where the CPU computes it natively (~0.5x the time per
        # step; weights, loss and the images it returns stay float32)
        fast = bool(self._p("decoder", "bf16")) and native_bf16()
        give_up = int(self._p("decoder", "give_up_at"))
        give_up = give_up if labelled and 0 < give_up < steps else -1
        if give_up > 0:   # the check's noise has its own generator: `gen` stays as is
            with torch.no_grad():
                hv_check = channel.sample(view.query_head({"x": aux_v})["x"].float().cpu(),
                                          torch.Generator().manual_seed(gen.initial_seed() + 1))
            class_mse = float(F.mse_loss(templates[y_v], aux_v))  # type: ignore[index]
        dec.train()
        step = 0
        while step < steps:
            progress.tick_attack()
            if step == give_up:
                dec.eval()
                with torch.no_grad():
                    mse = float(F.mse_loss(dec(hv_check / scale, y_v), aux_v))
                dec.train()
                if mse > (1 - self._p("decoder", "margin")) * class_mse:
                    break   # no closer to the held-out images than their class images: give up
            idx = torch.randint(len(x_train), (min(bs, len(x_train)),), generator=gen)
            hb = h[idx] if defended else channel.sample(h[idx], gen)  # fresh noise each step
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
                out = dec(hb / scale, y_train[idx] if labelled else None)
            loss = F.mse_loss(out.float(), x_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        dec.eval()
        labels = prior.labels if labelled else None  # type: ignore[union-attr]
        info: dict[str, Any] = {"aux_n": int(len(aux)), "train_pairs": int(len(x_train)),
                                "steps_run": step}
        with torch.no_grad():
            images = torch.cat([dec(obs[i:i + 256] / scale,
                                    labels[i:i + 256] if labels is not None else None)
                                for i in range(0, len(obs), 256)])
            if labelled:
                from slsec import metrics
                hv = channel.sample(view.query_head({"x": aux_v})["x"].float().cpu(), gen)
                dec_ssim = float(metrics.ssim(aux_v, dec(hv / scale, y_v)).mean())
                prior_ssim = float(metrics.ssim(aux_v, templates[y_v]).mean())  # type: ignore[index]
                info.update(heldout_ssim=dec_ssim, heldout_prior_ssim=prior_ssim)
                if dec_ssim < prior_ssim:   # no better than the class image: output that
                    images = prior.images.clone()  # type: ignore[union-attr]
                    info["fell_back_to_prior"] = True
        info["train_mse"] = float(loss.detach())
        return images, info

    # --- unsplit: architecture only, surrogate head and inputs jointly ---------------------
    def _unsplit(self, view: View, obs: Tensor, shape: tuple[int, ...], channel: CutChannel,
                 gen: torch.Generator) -> tuple[Tensor, dict[str, Any]]:
        g = lambda k: self._p("unsplit", k)  # noqa: E731
        rounds, in_steps, m_steps = g("rounds"), g("input_steps"), g("model_steps")
        tv = g("tv") * self._noise_tv_factor(obs, channel)
        out, losses = [], []
        for lo in range(0, len(obs), g("batch")):
            o = obs[lo:lo + g("batch")]
            best_x, best_l = None, None
            for _ in range(g("restarts")):
                x, l = self._unsplit_once(view, o, shape, channel, rounds, in_steps, m_steps,
                                          g("lr"), g("model_lr"), tv)
                if best_x is None or l.mean() < best_l.mean():
                    best_x, best_l = x, l
            out.append(best_x)
            losses.append(best_l)
        return torch.cat(out), {"match_loss": float(torch.cat(losses).mean())}

    @staticmethod
    def _unsplit_once(view: View, obs: Tensor, shape: tuple[int, ...], channel: CutChannel,
                      rounds: int, in_steps: int, m_steps: int, lr: float, model_lr: float,
                      tv: float) -> tuple[Tensor, Tensor]:
        head = fresh_head(view).train()
        x = torch.full((len(obs), *shape), 0.5, requires_grad=True)
        opt_x = torch.optim.Adam([x], lr=lr)
        opt_m = torch.optim.Adam(head.parameters(), lr=model_lr)
        match = lambda x: channel.loss(channel.forward(head({"x": x})["x"]), obs)  # noqa: E731
        for _ in range(rounds):
            progress.tick_attack()
            head.requires_grad_(False)
            for _ in range(in_steps):
                loss = (match(x) + tv * total_variation(x)).sum()
                opt_x.zero_grad(set_to_none=True)
                loss.backward()
                opt_x.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
            head.requires_grad_(True)
            xd = x.detach()
            for _ in range(m_steps):
                loss = match(xd).sum()
                opt_m.zero_grad(set_to_none=True)
                loss.backward()
                opt_m.step()
        with torch.no_grad():
            return x.detach(), match(x)
