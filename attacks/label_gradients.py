"""Gradient geometry for label inference (`label_inference.py`): the observed per-sample cut
gradients and tail inputs, clustering and naming of gradient directions, and the Bayes fusion
with the public label-DP channel. The surrogate of the label holder's part is in
`label_surrogate.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slsec.errors import UserError
from slsec.threat import GradientScaling, LabelNoise, Mechanism, View

Feats = dict[str, Tensor]
_NOT_FEATS = ("y", "i")  # label / index fields that may ride along in a cut message


@dataclass
class Observed:
    """The observed batches, per sample: tail inputs, flattened gradients times batch size."""

    feats: list[Feats]          # tail input per observed batch, as the label holder consumed it
    grads: Tensor               # [N, D] float64 rows, each times its batch size (undoes the mean)
    align: Tensor               # [N] <gradient, tail input> per sample (< 0 when predicted right)
    inputs: Tensor              # [N, F] float64 tail inputs, flattened (pooled per graph)
    num_classes: int
    mechanisms: list[Mechanism] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)   # rows of each observed batch, in order

    @property
    def sign_flips(self) -> bool:
        return any(isinstance(m, GradientScaling) for m in self.mechanisms)

    def keep_rate(self) -> float:
        """Probability that the gradient's label is the true one (public label-rr channel)."""
        rr = next((m for m in self.mechanisms if isinstance(m, LabelNoise)), None)
        if rr is None:
            return 1.0
        k = self.num_classes
        return 1.0 / (1.0 + (k - 1) * math.exp(-float(rr.epsilon)))


def per_sample(t: Tensor, feats: Feats, pool: str) -> Tensor:
    """Rows per sample: node-level rows of graph batches are pooled per graph."""
    batch = feats.get("batch")
    t = t.detach().reshape(t.shape[0], -1).double()
    if batch is None or batch.shape[0] != t.shape[0]:
        return t
    n = int(batch.max()) + 1 if batch.numel() else 0
    out = torch.zeros(n, t.shape[1], dtype=t.dtype).index_add_(0, batch.long(), t)
    if pool == "mean":
        out = out / torch.bincount(batch.long(), minlength=n).clamp_min(1)[:, None].double()
    return out


def observe(view: View) -> Observed:
    if not view.grads:
        raise UserError("label inference needs observed cut gradients; this view has none")
    feats: list[Feats] = []
    for i, g in enumerate(view.grads):
        msg = view.smashed[i] if i < len(view.smashed) else {}
        if view.outputs:  # U-shaped server: the tail consumed the body output (a cut message)
            out = view.outputs[i]
            msg = out if isinstance(out, dict) else {"x": out}
        extra = {k: v for k, v in msg.items() if k != "x" and k not in _NOT_FEATS}
        if "x" in msg:  # U-shaped: the body output; vanilla / SplitFed client: the smashed data
            x = msg["x"]
        else:
            raise UserError("label inference needs the tail's input (body outputs or smashed data)")
        feats.append({**extra, "x": x.detach()})
    rows, inputs, align = [], [], []
    for f, g in zip(feats, view.grads):
        gs = per_sample(g, f, "sum")
        rows.append(gs * gs.shape[0])
        inputs.append(per_sample(f["x"], f, "mean"))
        dot = (g.detach().double() * f["x"].double()).reshape(g.shape[0], -1).sum(1, keepdim=True)
        align.append(per_sample(dot, f, "sum")[:, 0])
    k = int(view.public.get("num_classes") or 0)
    if k < 2:
        raise UserError("label inference needs public num_classes >= 2")
    return Observed(feats, torch.cat(rows), torch.cat(align), torch.cat(inputs), k,
                    view.mechanisms(Mechanism), sizes=[len(r) for r in rows])


def off_axis(obs: Observed) -> Tensor:
    """Each row without its batch's dominant direction (the top right-singular vector of the
    batch's rows): Marvell's noise lies along one direction per batch, so what is left is
    noise-free. A batch of one row keeps nothing."""
    out, start = [], 0
    for n in obs.sizes or [len(obs.grads)]:
        g = obs.grads[start:start + n]
        start += n
        if n < 2:
            out.append(torch.zeros_like(g))
            continue
        axis = torch.linalg.svd(g, full_matrices=False)[2][0]
        out.append(g - (g @ axis)[:, None] * axis[None, :])
    return torch.cat(out)


# ------------------------------------------------------------------ clustering and naming

def unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)


def directions(g: Tensor, dims: int = 32) -> Tensor:
    """Unit gradient directions in their principal subspace (at most `dims` coordinates)."""
    u = unit(g)
    if u.shape[1] > dims:
        _, _, vh = torch.linalg.svd(u, full_matrices=False)
        u = unit(u @ vh[:dims].T)
    return u


def unflipped(obs: Observed) -> Tensor:
    """The gradients, with each row's sign restored when max-norm may have flipped it.

    Row i is J_i^T (p_i - onehot(y_i)); its inner product with the tail input is about
    <p_i - onehot(y_i), logits_i> = E_p[logit] - logit_y <= 0 whenever the label is the
    predicted class (exact for a bias-free piecewise-linear tail), so rows are turned to make
    it negative. Wrong only for rows the model misclassifies."""
    if not obs.sign_flips:
        return obs.grads
    return obs.grads * torch.where(obs.align > 0, -1.0, 1.0).to(obs.grads.dtype)[:, None]


def kmeans(x: Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means labels and centres (k capped by the number of distinct rows)."""
    from sklearn.cluster import KMeans
    xn = x.numpy()
    k = max(1, min(k, len(np.unique(xn.round(12), axis=0))))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(xn)
    return km.labels_, km.cluster_centers_


def cluster_gradients(obs: Observed, seed: int) -> tuple[np.ndarray, Tensor]:
    """Cluster ids [N] and cosine scores to each cluster's mean direction [N, k]."""
    k = obs.num_classes
    u = directions(unflipped(obs))
    labels, _ = kmeans(u, k, seed)
    cos = torch.zeros(len(u), k, dtype=u.dtype)
    for c in range(k):
        members = u[torch.as_tensor(labels == c)]
        if len(members) == 0:
            cos[:, c] = -1.0
            continue
        cos[:, c] = u @ unit(members.mean(0, keepdim=True))[0]
    return labels, cos


def name_clusters(labels: np.ndarray, logp: Tensor) -> np.ndarray:
    """Cluster -> class map maximising the summed class log-probabilities (Hungarian)."""
    from scipy.optimize import linear_sum_assignment
    k = logp.shape[1]
    gain = np.zeros((k, k))
    for c in range(k):
        m = labels == c
        if m.any():
            gain[c] = logp[torch.as_tensor(m)].sum(0).numpy()
    rows, cols = linear_sum_assignment(-gain)
    names = np.arange(k)
    names[rows] = cols
    return names


def sign_structure(obs: Observed) -> Tensor | None:
    """Scores from the logits gradient (D == K): p - onehot(y) is negative exactly at y.

    Under max-norm a row may be negated; for K >= 3 the true class is still the one coordinate
    whose sign differs from the majority; for K = 2 the sign is restored from the tail input."""
    if obs.grads.shape[1] != obs.num_classes:
        return None
    if not obs.sign_flips:
        return -obs.grads
    if obs.num_classes == 2:
        return -unflipped(obs)
    majority = torch.sign(obs.grads.median(1, keepdim=True).values)
    return -majority * obs.grads


# ------------------------------------------------------------------ fusion

def fuse(logp: Tensor, votes: Tensor | None, q: float, *, iters: int = 30,
          strength: float = 10.0) -> Tensor:
    """Posterior [N, K] of the label from the teacher's scores and one vote per sample read
    from the gradient. The vote channel M[y, c] = P(vote c | label y) starts at the keep rate
    q (the public label-DP channel) and is re-estimated by EM with the teacher as prior; the
    teacher's temperature is chosen by the votes' marginal likelihood. Uninformative votes
    fade out, and an over-confident surrogate cannot overrule reliable ones."""
    k = logp.shape[1]
    if votes is None:
        return logp.softmax(1)
    m0 = torch.full((k, k), (1 - q) / (k - 1), dtype=logp.dtype).fill_diagonal_(q)
    onehot = F.one_hot(votes.long(), k).to(logp.dtype)
    best: tuple[float, Tensor] | None = None
    for temp in (1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 1e6):
        prior, m = torch.log_softmax(logp / temp, 1), m0
        for _ in range(iters):
            post = torch.softmax(prior + m.log()[:, votes].T, 1)
            counts = post.T @ onehot + strength * m0
            m = counts / counts.sum(1, keepdim=True)
        joint = prior + m.log()[:, votes].T
        score = float(torch.logsumexp(joint, 1).sum() + strength * (m0 * m.log()).sum())
        if best is None or score > best[0]:
            best = (score, torch.softmax(joint, 1))
    return best[1]


def two_means_threshold(s: Tensor) -> Tensor:
    """Threshold between the two groups of a 1-D score (1-D k-means, a few Lloyd steps)."""
    lo, hi = s.min(), s.max()
    t = (lo + hi) / 2
    for _ in range(50):
        a, b = s[s <= t], s[s > t]
        if len(a) == 0 or len(b) == 0:
            break
        new = (a.mean() + b.mean()) / 2
        if torch.isclose(new, t):
            break
        t = new
    return t


def bayes_threshold(s: Tensor, q: float, iters: int = 200) -> Tensor:
    """Threshold of a 1-D score under the public positive rate q: a two-Gaussian mixture of the
    scores with its weights fixed at (1 - q, q) (EM on the means and variances, started from
    the top-q split); label 1 where the posterior of label 1 exceeds 1/2 (the Bayes rule).
    A score that separates the classes splits at its gap; one that barely does labels few or
    none positive, so the accuracy stays near the majority prior, not below; where one Gaussian
    fits the scores as well (BIC), none.
    With unequal variances the posterior is not monotone in the score: the k samples it labels 1
    are replaced by the k top scores."""
    s = s.double()
    order = torch.sort(s, descending=True).values
    n = len(s)
    top = max(1, min(n - 1, int(round(q * n))))
    hi = s >= order[top - 1]
    if hi.all() or len(s) < 4:
        return order[-1] - 1.0
    parts = (s[~hi], s[hi])
    mean = torch.stack([p.mean() for p in parts])
    var = torch.stack([p.var() if len(p) > 1 else s.var() for p in parts]) \
        + 1e-12 * (1 + float(s.var()))
    logw = torch.tensor([1 - q, q], dtype=s.dtype).log()
    for _ in range(iters):
        ll = -0.5 * (s[:, None] - mean) ** 2 / var - 0.5 * var.log() + logw
        r = torch.softmax(ll, 1)
        mass = r.sum(0).clamp_min(1e-12)
        mean = (r * s[:, None]).sum(0) / mass
        var = (r * (s[:, None] - mean) ** 2).sum(0) / mass + 1e-12 * (1 + float(s.var()))
    # one Gaussian explains the scores as well (BIC, 2 more parameters): no evidence of two
    # groups, so every sample gets the majority label
    mixed = float(torch.logsumexp(-0.5 * (s[:, None] - mean) ** 2 / var - 0.5 * var.log()
                                  + logw, 1).sum())
    single = float(-0.5 * n * (1 + s.var(unbiased=False).clamp_min(1e-300).log()))
    if mixed - single <= math.log(n):
        return order[0] + 1.0
    ll = -0.5 * (order[:, None] - mean) ** 2 / var - 0.5 * var.log() + logw
    positive = torch.softmax(ll, 1)[:, 1] > 0.5
    k = int(positive.sum())   # as many labelled 1, taken from the top (the rule stays monotone)
    if k == 0:
        return order[0] + 1.0
    if k == n:
        return order[-1] - 1.0
    return (order[k - 1] + order[k]) / 2
