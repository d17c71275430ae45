"""Gradient inversion: a curious FedAvg aggregator reconstructs a client's batch from its update.

For one local SGD step without momentum the client's mean-loss gradient over its batch is
(before - after) / lr; the attack optimises dummy inputs (and labels) so that their gradient
at `before` matches it. Methods, strongest first:
- ig: Inverting Gradients (Geiping et al. 2020): cosine-similarity gradient loss + total
  variation, signed Adam in the box [0, 1] from a black image, step decay at 3/8, 5/8, 7/8 of
  the iterations, optional restarts from noise (best final loss wins); labels from iDLG.
- idlg: improved DLG (Zhao et al. 2020): labels read off the last layer's gradient, then the
  DLG objective with those labels fixed.
- dlg: Deep Leakage from Gradients (Zhu et al. 2019): L-BFGS on the squared gradient distance,
  jointly over dummy inputs and soft labels.

Labels: with softmax cross-entropy and non-negative features a entering the last layer, the
gradient of class c's weight row is mean_i (p_ic - y_ic) a_i, negative only for classes in the
batch. B = 1: the label is the row with the smallest sum. B > 1 (the LLG-style extension): the
classes with a negative bias (or row-sum) gradient are present; the remaining B - #present
slots go to the classes with the largest negative mass, proportionally (D'Hondt rounding).

Adaptive to DP-SGD (public mechanism {"name": "dpsgd", "max_grad_norm", "noise_multiplier"}):
per-sample clipping is part of the forward model (for B = 1 it is only a global rescale, which
the scale-invariant cosine loss of ig ignores anyway; dlg/idlg's squared distance needs it), so
clipping cannot look safe by accident; the Gaussian noise is left to the loss (the squared
distance is its likelihood; a noisy target only lowers the attainable cosine similarity).
Several local steps (local_steps > 1) are treated as one step on the mean gradient.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec import progress
from slsec.errors import UserError
from slsec.params import Param
from slsec.threat import ClippedGradientNoise, Update, View

from .base import ATTACKS, Attack, Guess


def update_gradient(update: Update, names: list[str]) -> list[Tensor]:
    """The client's mean gradient per named parameter, (before - after) / (lr * steps), float64."""
    scale = update.lr * max(update.local_steps, 1)
    if scale <= 0:
        raise UserError("gradient inversion needs the update's public learning rate (> 0)")
    return [(update.before[n].double() - update.after[n].double()) / scale for n in names]


def last_layer(params: list[tuple[str, Tensor]], num_classes: int | None
               ) -> tuple[Tensor | None, Tensor | None]:
    """(weight gradient [K, D], bias gradient [K]) of the classifier: the last 2-D parameter."""
    w_idx = max((i for i, (_, g) in enumerate(params) if g.dim() == 2
                 and (num_classes is None or g.shape[0] == num_classes)), default=None)
    if w_idx is None:
        return None, None
    w = params[w_idx][1]
    b = next((g for _, g in params[w_idx + 1:] if g.dim() == 1 and g.shape[0] == w.shape[0]),
             None)
    return w, b


def label_evidence(w_grad: Tensor | None, b_grad: Tensor | None) -> Tensor:
    """Per-class evidence that the class is in the batch (higher = more likely): minus the
    row sums of the last-layer weight gradient (iDLG), or minus the bias gradient."""
    if w_grad is not None:
        return -w_grad.double().sum(1)
    if b_grad is not None:
        return -b_grad.double()
    raise UserError("gradient inversion: no classifier layer found to read labels from")


def infer_labels(w_grad: Tensor | None, b_grad: Tensor | None, batch_size: int) -> Tensor:
    """Labels of a batch (a multiset, in no particular order) from the last layer's gradient."""
    ev = label_evidence(w_grad, b_grad)
    if batch_size == 1:
        return ev.argmax().view(1)
    neg = -b_grad.double() if b_grad is not None else ev
    present = [int(c) for c in torch.argsort(neg, descending=True) if neg[c] > 0]
    if not present:
        present = [int(neg.argmax())]
    present = present[:batch_size]
    counts = {c: 1 for c in present}
    for _ in range(batch_size - len(present)):  # D'Hondt: next slot to the largest mass/(n+1)
        c = max(present, key=lambda k: float(neg[k]) / (counts[k] + 1))
        counts[c] += 1
    return torch.tensor([c for c in present for _ in range(counts[c])], dtype=torch.long)


def total_variation(x: Tensor) -> Tensor:
    """Mean anisotropic total variation of a batch."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def client_gradient(model: nn.Module, params: list[Tensor], x: Tensor, y_soft: Tensor, *,
                    clip: float | None = None) -> list[Tensor]:
    """The mean cross-entropy gradient a client sends for (x, soft labels), differentiable in x;
    with `clip`, DP-SGD's per-sample clipping to L2 norm <= clip before the mean (no noise)."""
    def ce(xs: Tensor, ys: Tensor) -> Tensor:
        logp = F.log_softmax(model({"x": xs})["x"], dim=1)
        return -(ys * logp).sum(1).mean()
    if clip is None:
        return list(torch.autograd.grad(ce(x, y_soft), params, create_graph=True))
    acc: list[Tensor] | None = None
    for i in range(len(x)):
        gi = torch.autograd.grad(ce(x[i:i + 1], y_soft[i:i + 1]), params, create_graph=True)
        norm = torch.sqrt(sum(g.square().sum() for g in gi))
        f = torch.clamp(clip / (norm + 1e-6), max=1.0)   # as DP-SGD (Opacus flat clipping)
        acc = [g * f for g in gi] if acc is None else [a + g * f for a, g in zip(acc, gi)]
    return [a / len(x) for a in acc]  # type: ignore[union-attr]


def _dpsgd(view: View) -> ClippedGradientNoise | None:
    return next(iter(view.mechanisms(ClippedGradientNoise)), None)


@ATTACKS.register("gradient-inversion")
class GradientInversion(Attack):
    """Reconstruct each FedAvg update's training batch (images and labels) from the weights."""

    name = "gradient-inversion"
    unordered_batches = True
    kind = "gradient"
    roles = {"fedavg": "aggregator"}
    methods = {"dlg": frozenset({"architecture"}), "idlg": frozenset({"architecture"}),
               "ig": frozenset({"architecture"})}
    default_order = ("ig", "idlg", "dlg")

    DEFAULTS: dict[str, dict[str, Any]] = {
        "ig": {"iterations": 1000, "lr": 0.1, "tv": 1e-2, "restarts": 1},
        "idlg": {"iterations": 100, "lr": 1.0, "tv": 0.0, "restarts": 1},
        "dlg": {"iterations": 100, "lr": 1.0, "tv": 0.0, "restarts": 1}}
    _U = "configures --attack gradient-inversion"   # --gi-* override each method's own
    params = (Param("gi_lr", "float", None, "gradient-inversion: input step size (not set: ig "
                    "0.1, idlg/dlg 1.0)", check=("positive",), kw="lr", unused=_U),
              Param("gi_tv", "float", None, "gradient-inversion: total-variation weight (not "
                    "set: ig 0.01, idlg/dlg 0)", check=("non_negative",), kw="tv", unused=_U),
              Param("gi_restarts", "int", None, "gradient-inversion: random restarts, the best "
                    "kept (not set: 1)", check=("at_least_one",), kw="restarts", unused=_U))

    def _p(self, key: str) -> Any:
        return self.params.get(key, self.DEFAULTS[self._method][key])

    def run(self, view: View) -> Guess:
        """Images [N, C, H, W] and label scores [N, K], batches in update order.

        Within a batch of B > 1 the order of the reconstructions is arbitrary (the gradient
        is a mean over the batch): score them after matching (`metrics.match_order`)."""
        self._method = self.pick_method(view.knowledge, self.method)
        if not view.updates:
            raise UserError("gradient inversion: the view holds no FedAvg updates")
        if view.build_model is None:
            raise UserError("gradient inversion needs the public architecture")
        shape = tuple(view.public.get("input_shape", ()))
        if len(shape) != 3:
            raise UserError("gradient inversion needs view.public['input_shape'] = (C, H, W)")
        seed = int(self.params.get("seed", 0))
        images, scores, info = [], [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            for u in view.updates:
                x, s, i = self._one(view, u, shape, gen)
                images.append(x)
                scores.append(s)
                info.append(i)
        return Guess(images=torch.cat(images).clamp(0, 1), label_scores=torch.cat(scores),
                     info={"method": self._method, "updates": info,
                           "dpsgd": _dpsgd(view) is not None})

    # ---------------------------------------------------------------------------------------
    def _one(self, view: View, u: Update, shape: tuple[int, ...], gen: torch.Generator
             ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        model = view.build_model()
        model.load_state_dict(u.before)
        model.eval()
        names = [n for n, _ in model.named_parameters()]
        params = [p for _, p in model.named_parameters()]
        for p in params:
            p.requires_grad_(True)
        target64 = update_gradient(u, names)
        target = [t.float() for t in target64]
        k = view.public.get("num_classes")
        w_g, b_g = last_layer(list(zip(names, target64)), k)
        num_classes = int(k) if k is not None else (w_g.shape[0] if w_g is not None else 10)
        b = int(self.params.get("batch_size", u.batch_size))
        dp = _dpsgd(view)
        clip = float(dp.max_grad_norm) if dp else None

        def grads(x: Tensor, y_soft: Tensor) -> list[Tensor]:
            return client_gradient(model, params, x, y_soft, clip=clip)

        if self._method == "dlg":
            x, y_soft, loss = self._dlg(grads, target, b, shape, num_classes, None, gen)
            labels = y_soft.argmax(1)
            scores = y_soft
        else:
            labels = infer_labels(w_g, b_g, b)
            y_soft = F.one_hot(labels, num_classes).float()
            if self._method == "idlg":
                x, _, loss = self._dlg(grads, target, b, shape, num_classes, y_soft, gen)
            else:
                x, loss = self._ig(grads, target, y_soft, shape, gen)
            if b == 1:
                ev = label_evidence(w_g, b_g).float()
                scores = (ev / ev.abs().max().clamp_min(1e-30)).view(1, -1)
            else:
                scores = y_soft
        return x.detach(), scores.detach(), {"loss": float(loss), "labels": labels.tolist(),
                                             "batch_size": b}

    def _ig(self, grads, target: list[Tensor], y: Tensor, shape: tuple[int, ...],
            gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Inverting Gradients: cosine gradient loss + TV, signed Adam in [0, 1], restarts."""
        it, lr, tv, restarts = (self._p(k) for k in ("iterations", "lr", "tv", "restarts"))
        t_norm = torch.sqrt(sum(t.square().sum() for t in target))
        best, best_loss = None, math.inf

        def cos_loss(x: Tensor) -> Tensor:
            g = grads(x, y)
            dot = sum((a * t).sum() for a, t in zip(g, target))
            norm = torch.sqrt(sum(a.square().sum() for a in g))
            return 1 - dot / (norm * t_norm + 1e-12)

        for r in range(restarts):
            # first start near a black image (exactly black for B = 1; a little noise breaks the
            # symmetry between slots of a batch), further restarts from uniform noise
            if r == 0:
                x = torch.zeros(len(y), *shape)
                if len(y) > 1:
                    x = 0.05 * torch.rand(len(y), *shape, generator=gen)
            else:
                x = torch.rand(len(y), *shape, generator=gen)
            x.requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            if self.params.get("schedule", "step") == "cosine":
                sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, it, eta_min=lr / 100)
            else:
                sched = torch.optim.lr_scheduler.MultiStepLR(
                    opt, milestones=[it * 3 // 8, it * 5 // 8, it * 7 // 8], gamma=0.1)
            for _ in range(it):
                progress.tick_attack()
                loss = cos_loss(x) + tv * total_variation(x)
                opt.zero_grad(set_to_none=True)
                x.grad, = torch.autograd.grad(loss, [x])
                if self.params.get("signed", True):
                    x.grad.sign_()
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
            final = float(cos_loss(x).detach()) + tv * float(total_variation(x.detach()))
            if final < best_loss:
                best, best_loss = x.detach().clone(), final
        return best, torch.tensor(best_loss)

    def _dlg(self, grads, target: list[Tensor], b: int, shape: tuple[int, ...],
             num_classes: int, y_fixed: Tensor | None, gen: torch.Generator
             ) -> tuple[Tensor, Tensor, Tensor]:
        """DLG (labels learned) / iDLG (labels fixed): L-BFGS on the squared gradient distance."""
        it, lr, tv, restarts = (self._p(k) for k in ("iterations", "lr", "tv", "restarts"))
        best = (None, None, torch.tensor(math.inf))
        t_sq = sum(t.square().sum() for t in target).clamp_min(1e-30)  # relative distance
        for _ in range(restarts):
            x = torch.rand(b, *shape, generator=gen).requires_grad_(True)
            y_logit = torch.randn(b, num_classes, generator=gen).requires_grad_(True)
            leaves = [x] if y_fixed is not None else [x, y_logit]
            opt = torch.optim.LBFGS(leaves, lr=lr, max_iter=20, history_size=100,
                                    tolerance_grad=1e-12, tolerance_change=1e-14,
                                    line_search_fn="strong_wolfe")

            def objective() -> Tensor:
                y = y_fixed if y_fixed is not None else F.softmax(y_logit, dim=1)
                g = grads(x, y)
                return sum((a - t).square().sum() for a, t in zip(g, target)) / t_sq \
                    + tv * total_variation(x)

            def closure() -> Tensor:
                opt.zero_grad(set_to_none=True)
                loss = objective()
                loss.backward()
                return loss

            for _ in range(max(1, it // 20)):
                progress.tick_attack(20)
                opt.step(closure)
                if not torch.isfinite(objective()):
                    break
            with torch.no_grad():
                x.clamp_(0, 1)
            loss = objective().detach()
            y = y_fixed if y_fixed is not None else F.softmax(y_logit, dim=1).detach()
            if not torch.isfinite(best[2]) or (torch.isfinite(loss) and loss < best[2]):
                best = (x.detach().clone(), y.detach().clone(), loss)
        if best[0] is None:
            raise RuntimeError("gradient inversion: every restart diverged")
        return best
