"""Building blocks the inversion attacks share (`inversion.py`, `fora.py`, `sdar.py`,
`hijack.py`): the public cut channel an adaptive attack models, an inverse network (decoder), a
fresh head of the public architecture, the observations a server fits to, and the small helpers
around them.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.errors import UserError
from slsec.threat import CutCompression, CutNoise, View


@dataclass(frozen=True)
class CutChannel:
    """The public mechanism between head output and observation: clip to L2 norm, add noise."""

    clip: float | None = None      # per-sample L2 clipping bound C (None: no clipping)
    noise_std: float = 0.0         # per-coordinate noise std (sigma * C)
    mechanism: str = "gaussian"    # "gaussian" | "laplace"
    keep: float = 1.0              # compression: top-k fraction kept per row (1: all)
    bits: int | None = None        # compression: quantisation bits per coordinate

    @classmethod
    def from_public(cls, public: dict[str, Any]) -> "CutChannel":
        """Compose the public cut mechanisms (`CutNoise`, `CutCompression`) of
        `view.public['defenses']` (compression modelled after clipping, before noise)."""
        clip, std, mech, keep, bits = None, 0.0, "gaussian", 1.0, None
        for d in public.get("defenses", []) or []:
            if isinstance(d, CutCompression):
                keep = min(keep, float(d.keep))
                bits = d.bits if bits is None else (min(bits, d.bits) if d.bits else bits)
                continue
            if not isinstance(d, CutNoise):
                continue
            c = d.clip
            if c is not None and math.isfinite(float(c)):
                clip = float(c) if clip is None else min(clip, float(c))
            sigma = float(d.sigma or 0.0)
            if sigma > 0:
                scale = float(c) if c is not None and math.isfinite(float(c)) else 1.0
                std = math.hypot(std, sigma * scale)
                mech = d.mechanism
        return cls(clip=clip, noise_std=std, mechanism=mech, keep=keep, bits=bits)

    def forward(self, h: Tensor) -> Tensor:
        """The deterministic part the attacker can model: per-sample clipping, then the public
        compression (top-k, quantisation; the gradient passes straight through the rounding)."""
        if self.clip is not None:
            norm = h.flatten(1).norm(dim=1).clamp_min(1e-12)
            scale = (self.clip / norm).clamp(max=1.0)
            h = h * scale.view(-1, *([1] * (h.dim() - 1)))
        if self.keep < 1.0 or self.bits:
            from slsec.defenses.compression import compress
            h = compress(h, self.keep, self.bits)
        return h

    def sample(self, h: Tensor, gen: torch.Generator | None = None) -> Tensor:
        """Clip and add the mechanism's noise (to simulate the defense on attacker data)."""
        h = self.forward(h)
        if self.noise_std <= 0:
            return h
        if self.mechanism == "laplace":
            u = torch.rand(h.shape, generator=gen, dtype=h.dtype) - 0.5
            noise = -(self.noise_std / math.sqrt(2)) * u.sign() * torch.log1p(-2 * u.abs())
        else:
            noise = torch.randn(h.shape, generator=gen, dtype=h.dtype) * self.noise_std
        return h + noise

    def loss(self, pred: Tensor, obs: Tensor) -> Tensor:
        """Per-sample scale-invariant mismatch: the noise's negative log-likelihood (up to a
        constant) divided by the observation's energy, so a pure rescaling changes nothing."""
        d = (pred - obs).flatten(1)
        if self.noise_std > 0 and self.mechanism == "laplace":
            return d.abs().sum(1) / obs.flatten(1).abs().sum(1).clamp_min(1e-12)
        return d.square().sum(1) / obs.flatten(1).square().sum(1).clamp_min(1e-12)


def observed(view: View, obs: Tensor, obs_y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The probes' observations `obs` (labels `obs_y`) followed by the training batches' smashed
    data the role saw in its observation window (`view.seen`), with the labels it holds for
    them; where `obs_y` is given but a training message came without a label, the probes alone."""
    if not view.seen:
        return obs, obs_y
    seen = torch.cat([m["x"] for m in view.seen]).detach().float().cpu()
    if obs_y is None:
        return torch.cat([obs, seen]), None
    if any("y" not in m for m in view.seen):
        return obs, obs_y
    return torch.cat([obs, seen]), torch.cat([obs_y] + [m["y"].long().cpu() for m in view.seen])


def total_variation(x: Tensor) -> Tensor:
    """Per-image anisotropic total variation (mean absolute neighbour difference)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def frozen(module: nn.Module) -> nn.Module:
    """A private, frozen, eval-mode copy (the attack never changes what the role holds)."""
    m = copy.deepcopy(module).cpu().eval()   # attacks run on the CPU, like the observations
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def fresh_head(view: View) -> nn.Module:
    if view.build_model is None or not view.cuts:
        raise UserError("this inversion method needs the public architecture and the cut")
    return view.build_model().split(list(view.cuts))[0]


def shift(x: Tensor, gen: torch.Generator, max_shift: int = 2) -> Tensor:
    """Randomly translate each image by up to `max_shift` pixels (zero fill)."""
    n, _, hgt, wid = x.shape
    pad = F.pad(x, [max_shift] * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    return torch.stack([pad[i, :, dy[i]:dy[i] + hgt, dx[i]:dx[i] + wid] for i in range(n)])


def default_init(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw the parameters of `module`'s convolutions, linear layers and embeddings as their
    own `reset_parameters` does (torch's defaults), in module order, from `gen`."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
            if m.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(m.bias, -bound, bound, generator=gen)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, generator=gen)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports):
    only then are bfloat16 training steps faster than float32 ones."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Decoder(nn.Module):
    """Inverse network: smashed tensor ([C', H', W'] or [D]) -> image [C, H, W] in [0, 1].

    Transposed-convolution upsampling by 2 until the input size; channels halve with every
    doubling (`width` at full resolution), so the cost per resolution level stays flat.

    `generator`: its initial weights are drawn from it instead of torch's global generator
    (the same draws, in the same order, as torch's default initialisation), so that decoders
    built in threads side by side stay reproducible."""

    def __init__(self, smashed_shape: tuple[int, ...], input_shape: tuple[int, ...],
                 width: int, templates: Tensor | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        # conditioned on the label (when given class images [K, C, H, W]): a learned per-class
        # bias after the stem, and the output is a residual over the label's class image
        self.templates = templates
        c, h, w = input_shape
        self.out_hw = (h, w)
        start = smashed_shape[1] if len(smashed_shape) == 3 else max(h // 4, 1)
        levels = 0
        while start * 2 ** levels < h:
            levels += 1
        ch = width * 2 ** levels
        stem_ch = ch
        if len(smashed_shape) == 3:
            self.stem = nn.Sequential(nn.Conv2d(smashed_shape[0], ch, 3, padding=1),
                                      nn.LeakyReLU(0.1))
        else:
            d = int(torch.tensor(smashed_shape).prod())
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(d, ch * start * start),
                                      nn.Unflatten(1, (ch, start, start)), nn.LeakyReLU(0.1))
        ups: list[nn.Module] = []
        for _ in range(levels):
            ups += [nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1),
                    nn.LeakyReLU(0.1)]
            ch //= 2
        self.up = nn.Sequential(*ups)
        self.refine = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1))
        self.out = nn.Conv2d(ch, c, 3, padding=1)
        if templates is not None:
            self.embed = nn.Embedding(len(templates), stem_ch)
        if generator is not None:
            default_init(self, generator)
        if templates is not None:
            nn.init.zeros_(self.embed.weight)
            nn.init.zeros_(self.out.weight)   # starts at the class image
            nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor, labels: Tensor | None = None) -> Tensor:
        s = self.stem(h)
        if self.templates is not None and labels is not None:
            s = s + self.embed(labels)[:, :, None, None]
        y = self.up(s)
        if tuple(y.shape[-2:]) != self.out_hw:
            y = F.interpolate(y, size=self.out_hw, mode="bilinear", align_corners=False)
        y = self.out(self.refine(y))
        if self.templates is not None and labels is not None:
            y = y + self.templates[labels]
        # linear output while training (a sigmoid saturates on the mostly-black targets and
        # can stall the whole decoder); the box [0, 1] at inference
        return y if self.training else y.clamp(0, 1)
