"""Label inference by the role that receives the label holder's per-sample gradients.

U-shaped SL: the server sees its body outputs E (the tail's input) and d loss / d E sent back
by the client's tail. Vanilla SL / SplitFed with the server as label owner (two-party): the
client sees its own smashed data E and d loss / d E. With a loss that is the batch mean of
cross-entropy, row i of the gradient is J_i^T (softmax_i - onehot(y_i)) / B, J_i the tail's
Jacobian at E_i; for a linear tail all rows lie in the span of its weight rows and their
directions fall into one cone per label.

Methods (strongest first in `default_order`):
- `completion` (Fu et al. 2022, model completion; knowledge architecture + aux_data): train a
  surrogate of the label holder's part on a few labelled auxiliary samples (default 40)
  embedded the way the role can (its own head; or the relayed head / black-box head queries
  and its body), cluster the observed gradient directions, name the clusters with the
  surrogate's predictions, and fuse both per sample (Bayes, with the public label-DP channel).
- `cluster`: k-means on the normalised gradients (one cluster per class), named with what the
  role holds: the sign structure when the gradient is the logits gradient (the true class is
  the one coordinate of the other sign and the largest magnitude), a relayed tail, or aux
  labels; otherwise the clusters stay unnamed (`info["named"]` is False).
- `cosine` (Li et al. 2022, direction scoring): binary, cosine of each gradient with the
  principal gradient direction; multi-class, cosine with the (named) cluster directions.
- `norm` (Li et al. 2022, norm scoring): binary, the gradient norm.
Binary tasks give [N] scores in [0, 1] (probability of label 1); the side of the split that is
"label 1" is unidentifiable from gradients alone, so it is taken from a labelled reference
when the role holds one, else Li et al.'s prior (the positive class has the larger norms).

Adaptive to public mechanisms: under `max-norm` (random scalar per row, possibly negative)
clustering is sign-invariant and binary direction scores project the outputs E on the
gradient axis; under `label-rr` the gradient evidence is weighed by the public keep rate.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.attacks.base import ATTACKS, Attack, Guess
from slsec.errors import UserError
from slsec.threat import GradientScaling, LabelNoise, Mechanism, View

Feats = dict[str, Tensor]
_NOT_FEATS = ("y", "i")  # label / index fields that may ride along in a cut message


@dataclass
class _Obs:
    """The observed batches, per sample: tail inputs, flattened gradients times batch size."""

    feats: list[Feats]          # tail input per observed batch, as the label holder consumed it
    grads: Tensor               # [N, D] float64 rows, each times its batch size (undoes the mean)
    align: Tensor               # [N] <gradient, tail input> per sample (< 0 when predicted right)
    inputs: Tensor              # [N, F] float64 tail inputs, flattened (pooled per graph)
    num_classes: int
    mechanisms: list[Mechanism] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)

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


def _per_sample(t: Tensor, feats: Feats, pool: str) -> Tensor:
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


def _observe(view: View) -> _Obs:
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
        gs = _per_sample(g, f, "sum")
        rows.append(gs * gs.shape[0])
        inputs.append(_per_sample(f["x"], f, "mean"))
        dot = (g.detach().double() * f["x"].double()).reshape(g.shape[0], -1).sum(1, keepdim=True)
        align.append(_per_sample(dot, f, "sum")[:, 0])
    k = int(view.public.get("num_classes") or 0)
    if k < 2:
        raise UserError("label inference needs public num_classes >= 2")
    return _Obs(feats, torch.cat(rows), torch.cat(align), torch.cat(inputs), k,
                view.mechanisms(Mechanism))


# ------------------------------------------------------------------ clustering and naming

def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _directions(g: Tensor, dims: int = 32) -> Tensor:
    """Unit gradient directions in their principal subspace (at most `dims` coordinates)."""
    u = _unit(g)
    if u.shape[1] > dims:
        _, _, vh = torch.linalg.svd(u, full_matrices=False)
        u = _unit(u @ vh[:dims].T)
    return u


def _unflipped(obs: _Obs) -> Tensor:
    """The gradients, with each row's sign restored when max-norm may have flipped it.

    Row i is J_i^T (p_i - onehot(y_i)); its inner product with the tail input is about
    <p_i - onehot(y_i), logits_i> = E_p[logit] - logit_y <= 0 whenever the label is the
    predicted class (exact for a bias-free piecewise-linear tail), so rows are turned to make
    it negative. Wrong only for rows the model misclassifies."""
    if not obs.sign_flips:
        return obs.grads
    return obs.grads * torch.where(obs.align > 0, -1.0, 1.0).to(obs.grads.dtype)[:, None]


def _kmeans(x: Tensor, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means labels and centres (k capped by the number of distinct rows)."""
    from sklearn.cluster import KMeans
    xn = x.numpy()
    k = max(1, min(k, len(np.unique(xn.round(12), axis=0))))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(xn)
    return km.labels_, km.cluster_centers_


def _cluster_gradients(obs: _Obs, seed: int) -> tuple[np.ndarray, Tensor]:
    """Cluster ids [N] and cosine scores to each cluster's mean direction [N, k]."""
    k = obs.num_classes
    u = _directions(_unflipped(obs))
    labels, _ = _kmeans(u, k, seed)
    cos = torch.zeros(len(u), k, dtype=u.dtype)
    for c in range(k):
        members = u[torch.as_tensor(labels == c)]
        if len(members) == 0:
            cos[:, c] = -1.0
            continue
        cos[:, c] = u @ _unit(members.mean(0, keepdim=True))[0]
    return labels, cos


def _name(labels: np.ndarray, logp: Tensor) -> np.ndarray:
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


def _sign_structure(obs: _Obs) -> Tensor | None:
    """Scores from the logits gradient (D == K): p - onehot(y) is negative exactly at y.

    Under max-norm a row may be negated; for K >= 3 the true class is still the one coordinate
    whose sign differs from the majority; for K = 2 the sign is restored from the tail input."""
    if obs.grads.shape[1] != obs.num_classes:
        return None
    if not obs.sign_flips:
        return -obs.grads
    if obs.num_classes == 2:
        return -_unflipped(obs)
    majority = torch.sign(obs.grads.median(1, keepdim=True).values)
    return -majority * obs.grads


# ------------------------------------------------------------------ the label holder's part

def _tail_for(view: View) -> nn.Module:
    if view.build_model is None or not view.cuts:
        raise UserError("label inference needs the public architecture and cuts")
    return view.build_model().split(list(view.cuts))[-1]


def _embedder(view: View) -> Callable[[Feats], Feats] | None:
    """How this role maps raw inputs to the tail's input space, if it can."""
    head = view.parts.get("head")
    to_cut = (lambda f: head(f)) if head is not None else view.query_head
    if to_cut is None:
        return None
    if view.role == "server" and view.outputs:  # U-shaped: head, then the server's own body
        body = view.parts.get("body")
        if body is None:
            return None
        return lambda f: body({k: v for k, v in to_cut(f).items()})
    return to_cut


def _aux_batch(view: View, n: int, seed: int) -> tuple[Feats, Tensor] | None:
    """Up to n labelled aux samples (balanced over classes when possible) as tail inputs."""
    aux, embed = view.aux, _embedder(view)
    if aux is None or embed is None or len(aux.y) == 0:
        return None
    y = aux.y.long()
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    classes = y[order].unique()
    per = max(1, n // len(classes))
    pick = torch.cat([order[y[order] == c][:per] for c in classes])
    rest = order[~torch.isin(order, pick)]
    pick = torch.cat([pick, rest[: max(0, n - len(pick))]])[:n]
    feats, labels = aux.batch(pick) if hasattr(aux, "batch") else ({"x": aux.inputs[pick]}, y[pick])
    with torch.no_grad():
        out = embed(feats)
    return {k: v.detach() for k, v in out.items()}, labels.long()


def _train_surrogate(tail: nn.Module, feats: Feats, y: Tensor, *, steps: int,
                     lr: float) -> nn.Module:
    """Fit the surrogate tail to the labelled aux samples (full batch, Adam, weight decay)."""
    tail.train()
    opt = torch.optim.Adam(tail.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(tail(feats)["x"], y).backward()
        opt.step()
    return tail.eval()


def _predict(tail: nn.Module, feats: list[Feats]) -> Tensor:
    with torch.no_grad():
        return torch.cat([F.log_softmax(tail(f)["x"].double(), 1) for f in feats])


def _grad_match(tail: nn.Module, obs: _Obs) -> Tensor:
    """Cosine between each observed gradient and the tail's gradient for every candidate label."""
    k = obs.num_classes
    sims = []
    for f in obs.feats:
        x = f["x"].detach().float().requires_grad_(True)
        logits = tail({**f, "x": x})["x"]
        cand = []
        for c in range(k):
            (g,) = torch.autograd.grad(F.cross_entropy(logits, torch.full((len(logits),), c),
                                                       reduction="sum"), x, retain_graph=True)
            cand.append(_per_sample(g, f, "sum"))
        sims.append(torch.stack(cand, 1))
    cand = torch.cat(sims)  # [N, K, D]
    return (F.normalize(cand, dim=2) * _unit(_unflipped(obs))[:, None, :]).sum(2)


def _identity(f: Feats) -> Feats:
    return f


def _projector(obs: _Obs) -> Callable[[Feats], Feats]:
    """Map tail inputs onto the gradients' span (about the observed mean) when that span is
    small (a linear tail: rank <= K - 1): lossless for the true tail's label decision, and a
    surrogate fit on a few aux labels there cannot overfit the other directions."""
    g, x = obs.grads, obs.inputs
    if g.shape[1] != x.shape[1] or any(f["x"].shape[0] != len(f["x"]) or "batch" in f
                                       for f in obs.feats):
        return _identity
    s = torch.linalg.svdvals(_unit(g))
    energy = (s ** 2).cumsum(0) / (s ** 2).sum().clamp_min(1e-300)
    rank = int((energy < 0.999).sum()) + 1
    if rank > 2 * obs.num_classes:
        return _identity
    _, _, vh = torch.linalg.svd(_unit(g), full_matrices=False)
    basis, mean = vh[:rank].T, x.mean(0)

    def project(f: Feats) -> Feats:
        flat = f["x"].reshape(f["x"].shape[0], -1).double()
        out = mean + (flat - mean) @ basis @ basis.T
        return {**f, "x": out.to(f["x"].dtype).reshape(f["x"].shape)}
    return project


# ------------------------------------------------------------------ the attack

def _fuse(logp: Tensor, votes: Tensor | None, q: float, *, iters: int = 30,
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


@ATTACKS.register("label-inference")
class LabelInference(Attack):
    """Infer the label holder's labels from the per-sample gradients this role receives."""

    name = "label-inference"
    kind = "label"
    reviewed = "label"
    label_party = {"vanilla": "server", "splitfed": "server"}   # else the labels are sent
    roles = {"ushaped": "server", "vanilla": "client", "splitfed": "client"}
    methods = {
        "completion": frozenset({"architecture", "aux_data"}),
        "cluster": frozenset({"architecture"}),
        "cosine": frozenset({"architecture"}),
        "norm": frozenset({"architecture"}),
    }
    default_order = ("completion", "cluster", "cosine", "norm")

    def __init__(self, *, method: str | None = None, aux_labels: int = 40, seed: int = 0,
                 surrogate_steps: int = 300, surrogate_lr: float = 3e-3, adaptive: bool = True,
                 **params: Any) -> None:
        super().__init__(method=method, **params)
        if int(aux_labels) < 1:
            raise UserError(f"--aux-labels must be >= 1, got {aux_labels}")
        self.aux_labels, self.seed = int(aux_labels), int(seed)
        self.steps, self.lr, self.adaptive = int(surrogate_steps), float(surrogate_lr), adaptive

    def run(self, view: View) -> Guess:
        """Label scores for every observed gradient row, in the order of `view.grads`."""
        method = self.pick_method(view.knowledge, self.method)
        obs = _observe(view)
        if not self.adaptive:
            obs.mechanisms = []
        info: dict[str, Any] = {"method": method, "samples": len(obs.grads),
                                "adapted_to": sorted(m.name for m in obs.mechanisms)}
        scores = getattr(self, f"_{method}")(view, obs, info)
        return Guess(label_scores=scores.float(), info=info)

    # -- what the role holds that names classes
    def _teacher(self, view: View, obs: _Obs, info: dict[str, Any]) -> Tensor | None:
        """Log-probabilities [N, K] of the tail inputs: the relayed tail, or a surrogate of it
        fit on the labelled aux samples (in the gradients' span when that span is small)."""
        held = view.parts.get("tail")
        if held is not None:
            info["teacher"] = "held tail"
            return _predict(held.eval(), obs.feats)
        aux = _aux_batch(view, self.aux_labels, self.seed)
        if aux is None:
            info["teacher"] = None
            return None
        info["teacher"] = "surrogate"
        info["aux_used"] = int(len(aux[1]))
        best: tuple[float, str, Tensor] | None = None
        spaces = {"full": _identity}
        if (proj := _projector(obs)) is not _identity:
            spaces["gradient span"] = proj
        for space, f in spaces.items():
            with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
                torch.manual_seed(self.seed)
                tail = _train_surrogate(_tail_for(view), f(aux[0]), aux[1], steps=self.steps,
                                        lr=self.lr)
            logp = _predict(tail, [f(x) for x in obs.feats])
            # pick the space whose surrogate agrees best with the gradient clusters (no labels)
            labels = self._clusters(obs)
            agree = float((logp.argmax(1).numpy() == _name(labels, logp)[labels]).mean()) \
                if len(spaces) > 1 else 0.0
            if best is None or agree > best[0]:
                best = (agree, space, logp)
        info["surrogate_space"] = best[1]
        return best[2]

    def _clusters(self, obs: _Obs) -> np.ndarray:
        """Gradient cluster ids, computed once per observation."""
        if obs.cache.get("clusters") is None:
            obs.cache["clusters"] = _cluster_gradients(obs, self.seed)
        return obs.cache["clusters"][0]

    def _votes(self, view: View, obs: _Obs, info: dict[str, Any],
               logp: Tensor | None) -> Tensor | None:
        """One named label per row read from the gradient alone, if the role can name them."""
        held = view.parts.get("tail")
        if held is not None:
            info["named"] = "gradient matching with the held tail"
            return _grad_match(held.eval(), obs).argmax(1)
        ref = _sign_structure(obs)
        if ref is not None:
            info["named"] = "sign structure of the logits gradient"
            return ref.argmax(1)
        labels = self._clusters(obs)
        info["clusters"] = int(len(np.unique(labels)))
        if logp is None:
            info["named"] = False
            return None
        info["named"] = info["teacher"]
        return torch.as_tensor(_name(labels, logp)[labels])

    def _named_clusters(self, view: View, obs: _Obs, info: dict[str, Any]) -> Tensor:
        """Cosine scores [N, K] to the gradient clusters, columns in class order when named."""
        ref = _sign_structure(obs)
        if ref is not None:  # the logits gradient names every row by itself
            info["named"] = "sign structure of the logits gradient"
            return ref / ref.abs().amax(1, keepdim=True).clamp_min(1e-300)
        held = view.parts.get("tail")
        if held is not None:  # the label holder's own part: match its gradient for each label
            info["named"] = "gradient matching with the held tail"
            return _grad_match(held.eval(), obs)
        self._clusters(obs)
        labels, cos = obs.cache["clusters"]
        info["clusters"] = int(len(np.unique(labels)))
        logp = self._teacher(view, obs, info)
        if logp is None:
            info["named"] = False
            return cos
        info["named"] = info["teacher"]
        names = _name(labels, logp)
        out = torch.empty_like(cos)
        out[:, torch.as_tensor(names)] = cos
        return out

    # -- methods
    def _completion(self, view: View, obs: _Obs, info: dict[str, Any]) -> Tensor:
        logp = self._teacher(view, obs, info)
        if logp is None:
            raise UserError("method 'completion' needs labelled aux samples this role can embed "
                            "(its own head, the relayed head, or head queries) or the tail")
        votes = self._votes(view, obs, info, logp)
        post = _fuse(logp, votes, min(obs.keep_rate(), 0.98))
        return post[:, 1] if obs.num_classes == 2 else post

    def _cluster(self, view: View, obs: _Obs, info: dict[str, Any]) -> Tensor:
        post = torch.softmax(20.0 * self._named_clusters(view, obs, info), 1)
        return post[:, 1] if obs.num_classes == 2 else post

    def _cosine(self, view: View, obs: _Obs, info: dict[str, Any]) -> Tensor:
        if obs.num_classes > 2:
            return torch.softmax(20.0 * self._named_clusters(view, obs, info), 1)
        u = _unit(obs.grads)
        _, _, vh = torch.linalg.svd(u, full_matrices=False)
        axis = vh[0]
        if obs.sign_flips and obs.inputs.shape[1] == axis.shape[0]:
            # max-norm randomises each row's sign and norm but not its axis; the tail input
            # along that axis is the (linear tail's) logit margin, which no gradient noise touches
            info["scored"] = "tail input along the gradient axis"
            return self._binary(view, obs, info, (obs.inputs - obs.inputs.mean(0)) @ axis)
        return self._binary(view, obs, info, -(u @ axis))

    def _norm(self, view: View, obs: _Obs, info: dict[str, Any]) -> Tensor:
        if obs.num_classes != 2:
            raise UserError(f"method 'norm' scores binary labels; this task has "
                            f"{obs.num_classes} classes (use cluster, cosine or completion)")
        n = obs.grads.norm(dim=1).clamp_min(1e-300).log()
        return self._binary(view, obs, info, n, norm_score=True)

    def _binary(self, view: View, obs: _Obs, info: dict[str, Any], score: Tensor,
                *, norm_score: bool = False) -> Tensor:
        """Orient a binary score (which side is label 1) and squash it to a probability."""
        logp = self._teacher(view, obs, info)
        if logp is not None:
            p1 = logp[:, 1].exp()
            sign = 1.0 if torch.corrcoef(torch.stack([score, p1]))[0, 1] >= 0 else -1.0
            info["oriented_by"] = info["teacher"]
        else:
            info["oriented_by"] = "prior: label 1 has the larger gradient norms (Li et al.)"
            sign = 1.0
            if not norm_score:
                norms = obs.grads.norm(dim=1)
                hi = score > score.median()
                if hi.any() and (~hi).any() and norms[hi].mean() < norms[~hi].mean():
                    sign = -1.0
        s = sign * score
        t = _two_means_threshold(s)
        spread = (s - t).abs().median().clamp_min(1e-12)
        return torch.sigmoid(4.0 * (s - t) / spread)


def _two_means_threshold(s: Tensor) -> Tensor:
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
