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
- `residual` (binary; adaptive to Marvell's public mechanism): Marvell adds its noise along one
  direction per batch (the batch's class-mean difference) and none across it, so each observed
  batch's dominant gradient direction is removed and the norm of what is left is the score
  (the label's |p - y| scales the whole row, the noise only one axis of it).
- `embedding` (Sun et al. 2022, SecretFlow's similarity attack; architecture + aux_data):
  no gradient at all: a few labelled public samples per class (default 10), embedded the way
  the role can, label the observed embeddings by similarity (`label_embedding.py`).
- `sdar` (Zhu et al. 2025, SDAR's label inference; U-shaped server, architecture + aux_data):
  no gradient and none of the client's parts: a simulated head and tail trained on the aux data
  through the server's own body, the head regularised adversarially against the smashed data
  the server observed, label the body outputs (`label_sdar.py`).
- `prior`: the public class frequencies (the majority guess), the reference for the others.
With no --method every contender the role's knowledge allows runs on the same observations and
the scorer reports the most leaking (and the most accurate hard labels, never below the prior's).
Binary tasks give [N] scores in [0, 1] (probability of label 1); the side of the split that is
"label 1" is unidentifiable from gradients alone, so it is taken from a labelled reference
when the role holds one, else Li et al.'s prior (the positive class has the larger norms).

Adaptive to public mechanisms: under `max-norm` (random scalar per row, possibly negative)
clustering is sign-invariant and binary direction scores project the outputs E on the
gradient axis; under `label-rr` the gradient evidence is weighed by the public keep rate.

Shared gradient geometry (observations, clustering, naming, the fusion): `label_gradients.py`;
the surrogate of the label holder's part: `label_surrogate.py`.

Over 300 lines: every method's scoring and the choice among them read in one place.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from slsec.attacks.base import ATTACKS, Attack, Guess
from slsec.errors import UserError
from slsec.params import Param, check_given
from slsec.threat import View

PRIOR = "prior"   # the public majority guess, the reference every method must beat

from . import label_embedding as embedding, label_sdar
from .label_gradients import (Observed, bayes_threshold, cluster_gradients, fuse, name_clusters,
                              observe, off_axis, sign_structure, two_means_threshold, unit)
from .label_surrogate import (aux_batch, grad_match, identity, predict, projector, tail_for,
                              train_surrogate)


@ATTACKS.register("label-inference")
class LabelInference(Attack):
    """Infer the label holder's labels from the per-sample gradients this role receives."""

    name = "label-inference"
    kind = "label"
    reviewed = "label"
    label_party = {"vanilla": "server", "splitfed": "server", "vertical": "server"}
    roles = {"ushaped": "server", "vanilla": "client", "splitfed": "client", "vertical": "client"}
    methods = {
        "completion": frozenset({"architecture", "aux_data"}),
        "cluster": frozenset({"architecture"}),
        "cosine": frozenset({"architecture"}),
        "norm": frozenset({"architecture"}),
        "residual": frozenset({"architecture"}),
        "embedding": frozenset({"architecture", "aux_data"}),
        "sdar": frozenset({"architecture", "aux_data"}),
        PRIOR: frozenset({"aux_data"}),
    }
    default_order = ("completion", "cluster", "cosine", "norm", "residual", "embedding", "sdar",
                     PRIOR)
    method_protocols = {"sdar": frozenset({"ushaped"})}   # the U-shaped server's view only
    # none is strongest everywhere (gradient defenses leave `embedding` whole, a head the role
    # cannot embed with leaves only the gradient methods): with no --method all the role's
    # knowledge allows run and the most leaking is reported; the prior (the public majority
    # class) keeps the accuracy from falling below a guess. `norm` (binary only): --method
    contenders = ("completion", "embedding", "sdar", "cluster", "cosine", PRIOR)
    _U = "configures --attack label-inference"   # its settings: flags --li-*, TOML keys li_*
    params = (Param("li_aux_labels", "int", 40, "label-inference completion: labelled aux samples "
                    "for the surrogate", check=("at_least_one",), kw="aux_labels", unused=_U),
              Param("li_surrogate_steps", "int", 300, "label-inference completion: surrogate "
                    "steps", check=("at_least_one",), kw="surrogate_steps", unused=_U),
              Param("li_surrogate_lr", "float", 0.003, "label-inference completion: surrogate "
                    "learning rate", check=("positive",), kw="surrogate_lr", unused=_U),
              Param("li_labels_per_class", "int", 10, "label-inference embedding: public "
                    "samples per class", check=("at_least_one",), kw="labels_per_class", unused=_U),
              Param("li_sdar_steps", "int", 300, "label-inference sdar: steps training the "
                    "simulated head and tail (--attack-iters sets it too)",
                    check=("at_least_one",), kw="sdar_steps", unused=_U),
              Param("li_sdar_lr", "float", 0.001, "label-inference sdar: learning rate of the "
                    "simulated head and tail", check=("positive",), kw="sdar_lr", unused=_U),
              Param("li_sdar_weight", "float", 0.02, "label-inference sdar: weight of the "
                    "discriminator term", check=("non_negative",), kw="sdar_weight", unused=_U),
              Param("li_sdar_batch", "int", 32, "label-inference sdar: aux samples per step",
                    check=("at_least_one",), kw="sdar_batch", unused=_U))

    def __init__(self, *, method: str | None = None, aux_labels: int = 40, seed: int = 0,
                 surrogate_steps: int = 300, surrogate_lr: float = 3e-3, adaptive: bool = True,
                 labels_per_class: int = 10, sdar_steps: int = 300, sdar_lr: float = 1e-3,
                 sdar_weight: float = 0.02, sdar_batch: int = 32, **params: Any) -> None:
        super().__init__(method=method, **params)
        check_given(type(self).params, aux_labels=aux_labels, surrogate_steps=surrogate_steps,
                    surrogate_lr=surrogate_lr, labels_per_class=labels_per_class,
                    sdar_steps=sdar_steps, sdar_lr=sdar_lr, sdar_weight=sdar_weight,
                    sdar_batch=sdar_batch)
        # sdar's steps: --attack-iters where given (as for SDAR's inversion), else --li-sdar-steps
        steps = params.get("iterations") or sdar_steps
        self.sdar = dict(steps=int(steps), lr=float(sdar_lr), weight=float(sdar_weight),
                         batch=int(sdar_batch))
        self.aux_labels, self.seed, self.per_class = int(aux_labels), int(seed), int(labels_per_class)
        self.steps, self.lr, self.adaptive = int(surrogate_steps), float(surrogate_lr), adaptive

    def run(self, view: View) -> Guess:
        """Label scores for every observed gradient row, in the order of `view.grads`."""
        method = self.pick_method(view.knowledge, self.method)
        if method in ("embedding", "sdar"):   # forward messages only: no gradient is read
            if method == "embedding":
                scores, info = embedding.scores(view, self.per_class, self.seed)
            else:
                scores, info = label_sdar.scores(view, seed=self.seed, **self.sdar)
            k = int(view.public["num_classes"])
            out = scores[:, 1] if k == 2 else scores
            return Guess(label_scores=out.float(), info={"method": method, **info})
        if method == PRIOR:
            return Guess(label_scores=self._prior(view), info={"method": method})
        obs = observe(view)
        if not self.adaptive:
            obs.mechanisms = []
        info: dict[str, Any] = {"method": method, "samples": len(obs.grads),
                                "adapted_to": sorted(m.name for m in obs.mechanisms)}
        scores = getattr(self, f"_{method}")(view, obs, info)
        return Guess(label_scores=scores.float(), info=info)

    def _prior(self, view: View) -> Tensor:
        """The public class frequencies for every observed sample (argmax: the majority class)."""
        k = int(view.public.get("num_classes") or 0)
        y = getattr(view.aux, "y", None)
        if y is None or len(y) == 0 or k < 2:
            raise UserError("method 'prior' needs labelled aux samples and num_classes >= 2")
        freq = torch.bincount(torch.as_tensor(y).long(), minlength=k).double() / len(y)
        n = len(embedding.observed(view))   # one row per observed sample, as the others
        out = freq.expand(n, k)
        return (out[:, 1] if k == 2 else out).float().clone()

    # -- what the role holds that names classes
    def _teacher(self, view: View, obs: Observed, info: dict[str, Any]) -> Tensor | None:
        """Log-probabilities [N, K] of the tail inputs: the relayed tail, or a surrogate of it
        fit on the labelled aux samples (in the gradients' span when that span is small)."""
        held = view.parts.get("tail")
        if held is not None:
            info["teacher"] = "held tail"
            return predict(held.eval(), obs.feats)
        aux = aux_batch(view, self.aux_labels, self.seed)
        if aux is None:
            info["teacher"] = None
            return None
        info["teacher"] = "surrogate"
        info["aux_used"] = int(len(aux[1]))
        best: tuple[float, str, Tensor] | None = None
        spaces = {"full": identity}
        if (proj := projector(obs)) is not identity:
            spaces["gradient span"] = proj
        for space, f in spaces.items():
            with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
                torch.manual_seed(self.seed)
                tail = train_surrogate(tail_for(view), f(aux[0]), aux[1], steps=self.steps,
                                        lr=self.lr)
            logp = predict(tail, [f(x) for x in obs.feats])
            # pick the space whose surrogate agrees best with the gradient clusters (no labels)
            labels = self._clusters(obs)
            agree = float((logp.argmax(1).numpy() == name_clusters(labels, logp)[labels]).mean()) \
                if len(spaces) > 1 else 0.0
            if best is None or agree > best[0]:
                best = (agree, space, logp)
        info["surrogate_space"] = best[1]
        return best[2]

    def _clusters(self, obs: Observed) -> np.ndarray:
        """Gradient cluster ids, computed once per observation."""
        if obs.cache.get("clusters") is None:
            obs.cache["clusters"] = cluster_gradients(obs, self.seed)
        return obs.cache["clusters"][0]

    def _votes(self, view: View, obs: Observed, info: dict[str, Any],
               logp: Tensor | None) -> Tensor | None:
        """One named label per row read from the gradient alone, if the role can name them."""
        held = view.parts.get("tail")
        if held is not None:
            info["named"] = "gradient matching with the held tail"
            return grad_match(held.eval(), obs).argmax(1)
        ref = sign_structure(obs)
        if ref is not None:
            info["named"] = "sign structure of the logits gradient"
            return ref.argmax(1)
        labels = self._clusters(obs)
        info["clusters"] = int(len(np.unique(labels)))
        if logp is None:
            info["named"] = False
            return None
        info["named"] = info["teacher"]
        return torch.as_tensor(name_clusters(labels, logp)[labels])

    def _named_clusters(self, view: View, obs: Observed, info: dict[str, Any]) -> Tensor:
        """Cosine scores [N, K] to the gradient clusters, columns in class order when named."""
        ref = sign_structure(obs)
        if ref is not None:  # the logits gradient names every row by itself
            info["named"] = "sign structure of the logits gradient"
            return ref / ref.abs().amax(1, keepdim=True).clamp_min(1e-300)
        held = view.parts.get("tail")
        if held is not None:  # the label holder's own part: match its gradient for each label
            info["named"] = "gradient matching with the held tail"
            return grad_match(held.eval(), obs)
        self._clusters(obs)
        labels, cos = obs.cache["clusters"]
        info["clusters"] = int(len(np.unique(labels)))
        logp = self._teacher(view, obs, info)
        if logp is None:
            info["named"] = False
            return cos
        info["named"] = info["teacher"]
        names = name_clusters(labels, logp)
        out = torch.empty_like(cos)
        out[:, torch.as_tensor(names)] = cos
        return out

    # -- methods
    def _completion(self, view: View, obs: Observed, info: dict[str, Any]) -> Tensor:
        logp = self._teacher(view, obs, info)
        if logp is None:
            raise UserError("method 'completion' needs labelled aux samples this role can embed "
                            "(its own head, the relayed head, or head queries) or the tail")
        votes = self._votes(view, obs, info, logp)
        post = fuse(logp, votes, min(obs.keep_rate(), 0.98))
        return post[:, 1] if obs.num_classes == 2 else post

    def _cluster(self, view: View, obs: Observed, info: dict[str, Any]) -> Tensor:
        post = torch.softmax(20.0 * self._named_clusters(view, obs, info), 1)
        return post[:, 1] if obs.num_classes == 2 else post

    def _cosine(self, view: View, obs: Observed, info: dict[str, Any]) -> Tensor:
        if obs.num_classes > 2:
            return torch.softmax(20.0 * self._named_clusters(view, obs, info), 1)
        u = unit(obs.grads)
        _, _, vh = torch.linalg.svd(u, full_matrices=False)
        axis = vh[0]
        if obs.sign_flips and obs.inputs.shape[1] == axis.shape[0]:
            # max-norm randomises each row's sign and norm but not its axis; the tail input
            # along that axis is the (linear tail's) logit margin, which no gradient noise touches
            info["scored"] = "tail input along the gradient axis"
            return self._binary(view, obs, info, (obs.inputs - obs.inputs.mean(0)) @ axis)
        # the two labels' gradients point opposite ways along the axis ((p - y) flips sign):
        # the hard labels are the sign clusters (Li et al.'s cosine with a reference gradient)
        return self._binary(view, obs, info, -(u @ axis), sign_split=True)

    def _norm(self, view: View, obs: Observed, info: dict[str, Any]) -> Tensor:
        if obs.num_classes != 2:
            raise UserError(f"method 'norm' scores binary labels; this task has "
                            f"{obs.num_classes} classes (use cluster, cosine or completion)")
        n = obs.grads.norm(dim=1)
        n = (n + 1e-3 * n.median().clamp_min(1e-300)).log()   # zero rows: no -inf outliers
        return self._binary(view, obs, info, n, norm_score=True)

    def _residual(self, view: View, obs: Observed, info: dict[str, Any]) -> Tensor:
        if obs.num_classes != 2:
            raise UserError(f"method 'residual' scores binary labels; this task has "
                            f"{obs.num_classes} classes (use cluster, cosine or completion)")
        n = off_axis(obs).norm(dim=1)
        n = (n + 1e-3 * n.median().clamp_min(1e-300)).log()
        info["scored"] = "gradient norm off each batch's dominant (Marvell noise) axis"
        # oriented by Li et al.'s prior alone (|p - y| is larger for the rarer label 1): a
        # surrogate taught on a few public rows is no better than the noise it would read
        return self._binary(view, obs, info, n, norm_score=True, teacher=False)

    def _binary(self, view: View, obs: Observed, info: dict[str, Any], score: Tensor,
                *, norm_score: bool = False, sign_split: bool = False,
                teacher: bool = True) -> Tensor:
        """Orient a binary score (which side is label 1) and squash it to a probability."""
        logp = self._teacher(view, obs, info) if teacher else None
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
        rate = public_rate(view)
        if not norm_score and rate is not None and abs(rate - 0.5) >= IMBALANCED:
            # clearly imbalanced public labels: a direction score's label 1 is the cluster whose
            # share matches the public rate of label 1 (a weak teacher's sign can flip; the norm
            # score keeps Li et al.'s orientation)
            split = 0.0 if sign_split else two_means_threshold(s)
            above = float((s > split).double().mean())
            if abs(above - rate) > abs(1.0 - above - rate):
                s = -s
                info["oriented_by"] = "public label rate"
        if sign_split and (s > 0).any() and (s < 0).any():
            t = torch.zeros((), dtype=s.dtype)
            info["threshold"] = "sign of the cosine with the gradient axis"
        else:
            t = self._threshold(view, s, info)
        spread = (s - t).abs().median().clamp_min(1e-12)
        return torch.sigmoid(4.0 * (s - t) / spread)

    def _threshold(self, view: View, s: Tensor, info: dict[str, Any]) -> Tensor:
        """Where the hard labels split a binary score, set from what the role holds: with
        labelled public data, the Bayes rule under its positive rate (`bayes_threshold`: the
        class frequencies a majority guess would use); without, a 2-means split."""
        q = public_rate(view)
        if q is not None and 0.0 < q < 1.0:
            info["threshold"] = f"Bayes rule, public positive rate {q:.3f}"
            return bayes_threshold(s, q).to(s.dtype)
        info["threshold"] = "2-means split of the scores"
        return two_means_threshold(s)


IMBALANCED = 0.25   # |share of label 1 - 0.5| from which the public label rate orients


def public_rate(view: View) -> float | None:
    """The positive rate of the role's labelled public data (None: it holds none)."""
    aux = view.aux if "aux_data" in view.knowledge else None
    y = getattr(aux, "y", None)
    if y is None or len(y) == 0:
        return None
    return float((torch.as_tensor(y).long() == 1).float().mean())
