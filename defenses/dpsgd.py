"""DP-SGD (Abadi et al. 2016) for the FedAvg baseline, with Opacus per-sample gradients.

Each client trains its local copy with DP-SGD: per-sample gradients (Opacus GradSampleModule,
which works on the SplitModel's feats-dict forward), each clipped to L2 norm <= C
(max_grad_norm), summed, plus N(0, (noise_multiplier * C)^2) per coordinate, divided by the
batch size. The aggregator sees only weights computed from these noisy gradients.

Sensitivity argument: under add/remove-one adjacency (the one Opacus' accountants assume) one
sample changes the clipped sum by at most C, so the Gaussian noise has noise multiplier
`noise_multiplier` w.r.t. that sensitivity. With Poisson sampling at rate q = batch/n, each
step is a subsampled Gaussian mechanism; T steps (all local steps of all rounds of one client)
compose to epsilon = accountant(noise_multiplier, q, T) at delta, per sample of that client's
shard. The weights the client sends are post-processing and cost nothing extra.

Not covered: with `poisson_sampling=False` (shuffled fixed-size batches, for determinism) the
accountant's Poisson assumption does not hold and the reported epsilon is an approximation
(commonly used, but not a proven bound; shuffling can be worse than Poisson for some
settings); with replace-one adjacency the sensitivity is 2C, i.e. read epsilon at noise
multiplier noise_multiplier/2. Hyper-parameter tuning on the private data is not accounted.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.privacy import accounting
from slsec.privacy import reid_bound
from slsec.defenses.base import DEFENSES, TARGET_EPSILON, Defense, dp_accounting, overflow_check
from slsec.errors import UserError
from slsec.params import Param, check_given
from slsec.threat import ClippedGradientNoise

# Opacus' hooks note that the inputs never require grad: benign here. Filtered once, for the
# whole process: a catch_warnings() block is not thread-safe and the local backend runs every
# client in its own thread, so a per-call filter let the note through to the user.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


def per_sample_grads(model: nn.Module, loss_fn: Callable[[Any, Tensor], Tensor], x: Any,
                     y: Tensor) -> tuple[Tensor, list[tuple[nn.Parameter, Tensor]]]:
    """Per-sample gradients of a mean-reduced loss via Opacus; returns (loss, [(param, g [B,...])])."""
    from opacus import GradSampleModule   # lazy: opacus takes ~2 s to import
    gsm = GradSampleModule(model, loss_reduction="mean")
    try:
        for p in model.parameters():
            p.grad = None
        loss = loss_fn(gsm(x), y)
        with warnings.catch_warnings():   # inputs never require grad: the hook note is benign
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        grads = [(p, p.grad_sample.detach().clone()) for p in model.parameters()
                 if p.requires_grad and getattr(p, "grad_sample", None) is not None]
    finally:
        gsm.cleanup()               # removes hooks and grad_sample attributes; model unchanged
        for p in model.parameters():
            p.grad = None           # never leave the non-private gradient behind
    return loss.detach(), grads


def default_loss(out: Any, y: Tensor) -> Tensor:
    """Mean cross-entropy on the model output (feats dict or tensor)."""
    return F.cross_entropy(out["x"] if isinstance(out, dict) else out, y)


@DEFENSES.register("dpsgd")
class DPSGD(Defense):
    """DP-SGD on each FedAvg client: per-sample clipping to C plus Gaussian noise sigma*C."""

    name = "dpsgd"
    protocols = frozenset({"fedavg"})
    point = "train"
    reports_epsilon = True
    sweep_param = "noise_multiplier"
    sweep_values = "0.3,0.6,1,2"
    params = (
        Param("noise_multiplier", "float", None, "DP-SGD noise multiplier z (noise std = z * "
              "max-grad-norm; 1.0 when not set)", check=("non_negative",),
              unused="is the noise of --defense dpsgd",
              excludes=("target_epsilon", "the target solves the noise multiplier")),
        Param("max_grad_norm", "float", 1.0, "DP-SGD per-sample gradient clip C",
              check=("positive",), unused="is the clip of --defense dpsgd"),
        TARGET_EPSILON,
    )

    def __init__(self, *, noise_multiplier: float | None = None, max_grad_norm: float = 1.0,
                 delta: float = 1e-5, accountant: str = "prv", poisson_sampling: bool = True,
                 target_epsilon: float | None = None) -> None:
        check_given(type(self).params, noise_multiplier=noise_multiplier,
                    max_grad_norm=max_grad_norm, target_epsilon=target_epsilon)
        self.max_grad_norm = float(max_grad_norm)
        self.delta, self.accountant = dp_accounting(delta, accountant)
        self.poisson_sampling = bool(poisson_sampling)
        self.target_epsilon = None if target_epsilon is None else float(target_epsilon)
        self.noise_multiplier: float | None = (
            None if target_epsilon is not None
            else float(1.0 if noise_multiplier is None else noise_multiplier))
        self.engine: Any = None   # opacus.PrivacyEngine once attached

    def calibrate(self, *, sample_rate: float, epochs: int | None = None,
                  steps: int | None = None) -> float:
        """Solve the noise multiplier reaching the target epsilon after epochs (or steps) at sample_rate.

        epochs count ceil(epochs / sample_rate) steps; pass `steps` equal to what `epsilon` will be
        given (all local steps of all rounds) for an exact match.
        """
        if self.target_epsilon is None:
            raise UserError(f"calibration needs {TARGET_EPSILON.flag}")
        if (epochs is None) == (steps is None):
            raise ValueError("calibrate takes exactly one of epochs or steps")
        n = int(steps) if steps is not None else math.ceil(epochs / sample_rate - 1e-9)  # type: ignore[operator]
        self.noise_multiplier = accounting.noise_for_epsilon(
            target_epsilon=self.target_epsilon, delta=self.delta, sample_rate=sample_rate,
            steps=n, accountant=self.accountant)
        return self.noise_multiplier

    def _nm(self) -> float:
        if self.noise_multiplier is None:
            raise RuntimeError("DPSGD with a target epsilon needs calibrate(...) first")
        return self.noise_multiplier

    def make_private(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                     data_loader: torch.utils.data.DataLoader, *,
                     gen: torch.Generator | None = None) -> tuple[nn.Module, Any, Any]:
        """Wrap (module, optimizer, loader) with an Opacus PrivacyEngine; noise drawn from `gen`.

        With poisson_sampling the loader draws Poisson batches from its own generator; without
        it the loader is left as is (see the module doc for what that does to the accounting).
        """
        with warnings.catch_warnings():   # secure_mode off on purpose: seeded, reproducible noise
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            from opacus import PrivacyEngine
            self.engine = PrivacyEngine(accountant=self.accountant, secure_mode=False)
        return self.engine.make_private(
            module=module, optimizer=optimizer, data_loader=data_loader,
            noise_multiplier=self._nm(), max_grad_norm=self.max_grad_norm,
            poisson_sampling=self.poisson_sampling, noise_generator=gen)

    def private_grad(self, model: nn.Module, x: Any, y: Tensor, *,
                     gen: torch.Generator | None = None,
                     loss_fn: Callable[[Any, Tensor], Tensor] | None = None) -> dict[str, Any]:
        """Set p.grad to the DP-SGD gradient of one batch; returns loss and per-sample norms."""
        loss, grads = per_sample_grads(model, loss_fn or default_loss, x, y)
        if not grads:
            raise ValueError("the model has no trainable parameters")
        batch = grads[0][1].shape[0]
        sums, norms, factor = self.noisy_sum([g for _, g in grads], gen=gen)
        for (p, _), summed in zip(grads, sums):
            p.grad = summed / batch
        return {"loss": float(loss), "batch": batch, "norms": norms,
                "clipped_norms": norms * factor,
                "noise_std": self._nm() * self.max_grad_norm / batch}

    def noisy_sum(self, per_sample: list[Tensor], *, gen: torch.Generator | None = None
                  ) -> tuple[list[Tensor], Tensor, Tensor]:
        """The mechanism itself: clip each sample's gradient (all tensors of `per_sample`
        [B, ...] together) to L2 norm C, sum over the batch, add N(0, (z*C)^2) per coordinate.
        Returns (noisy sums, per-sample norms, clip factors); the audit calls it directly."""
        batch = per_sample[0].shape[0]
        norms = torch.stack([g.reshape(batch, -1).norm(dim=1) for g in per_sample], 1).norm(dim=1)
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)   # as Opacus' flat clipping
        std = self._nm() * self.max_grad_norm
        sums = []
        for g in per_sample:
            summed = torch.einsum("i,i...->...", factor, g)
            if std > 0:
                device = gen.device if gen is not None else g.device
                noise = torch.randn(g.shape[1:], generator=gen, device=device, dtype=g.dtype)
                summed = summed + std * noise.to(g.device)
            sums.append(summed)
        return sums, norms, factor

    def private_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: Any,
                     y: Tensor, *, gen: torch.Generator | None = None,
                     loss_fn: Callable[[Any, Tensor], Tensor] | None = None) -> dict[str, Any]:
        """One DP-SGD step: the private gradient into p.grad, then `optimizer.step()`.

        Returns private_grad's stats (a non-empty dict, so callers may test it for "step taken").
        """
        optimizer.zero_grad(set_to_none=True)
        stats = self.private_grad(model, x, y, gen=gen, loss_fn=loss_fn)
        optimizer.step()
        return stats

    def epsilon(self, *, steps: int, sample_rate: float, delta: float,
                accountant: str | None = None) -> float | None:
        """Per-sample epsilon of one client's T = steps DP-SGD steps at sampling rate q;
        `accountant` overrides the defense's own (RDP is printed beside the tight one)."""
        return accounting.epsilon(noise_multiplier=self._nm(), sample_rate=sample_rate,
                                  steps=steps, delta=delta, accountant=accountant or self.accountant)

    def check_numbers(self) -> None:
        overflow_check("--noise-multiplier", self.noise_multiplier, self.max_grad_norm)

    def guess_bounds(self, *, eps: float, steps: int, sample_rate: float,
                     kappa: float | None, num_classes: int) -> dict[str, Any]:
        """The subsampled Gaussian's bound over all steps, and the probe's own release (one
        DP-SGD step on a batch it is surely in)."""
        if kappa is None:
            return {}
        nm = self._nm()
        return {"reid_bound": reid_bound.subsampled_gaussian_bound(
                    noise_multiplier=nm, sample_rate=sample_rate, steps=steps, kappa=kappa,
                    accountant=self.accountant),
                "reid_bound_probe_release": reid_bound.gaussian_bound(1.0 / nm, kappa)}

    def public_mechanism(self) -> ClippedGradientNoise:
        return ClippedGradientNoise(self.name, max_grad_norm=self.max_grad_norm,
                                    noise_multiplier=self.noise_multiplier)

    @classmethod
    def report_text(cls, cfg: dict[str, Any], m: dict[str, Any]) -> tuple[str, str]:
        nm = cfg.get("noise_multiplier")
        eps = m.get("epsilon_dpsgd", m.get("epsilon"))
        text = ("DP-SGD on every FedAvg client (Abadi et al. 2016, per-sample gradients with "
                f"Opacus): each sample's gradient is clipped to L2 norm C = "
                f"{cfg.get('max_grad_norm', 1.0):g}, the clipped sum gets Gaussian noise of std "
                "z*C per coordinate"
                + (f" (noise multiplier z = {nm:g})" if isinstance(nm, (int, float)) else "")
                + " and is divided by the batch size. Add/remove-one adjacency: one sample moves "
                "the clipped sum by at most C, so each step is a subsampled Gaussian mechanism "
                "with noise multiplier z at sample rate q = batch size / shard size; all local "
                "steps of all rounds compose.")
        if isinstance(eps, (int, float)):
            text += (f" epsilon = {eps:.3f} at delta = {m.get('delta', cfg.get('delta')):g} per "
                     f"sample of a client's shard "
                     f"({m.get('accountant_dpsgd', cfg.get('accountant', 'prv'))} accountant"
                     + (f"; RDP gives {m['epsilon_dpsgd_rdp']:.3f}"
                        if isinstance(m.get("epsilon_dpsgd_rdp"), (int, float)) else "") + ").")
        text += (" It covers everything the aggregator sees (the weights are post-processing of "
                 "the noisy gradients). Not covered: batches here are shuffled fixed-size "
                 "batches, not Poisson samples, so the accountant's number is the common "
                 "approximation rather than a proven bound; under replace-one adjacency read it "
                 "at noise multiplier z/2; hyper-parameter tuning on the private data is not "
                 "accounted.")
        return "Differential privacy: DP-SGD", text
