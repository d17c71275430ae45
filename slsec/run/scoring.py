"""Scoring: the scorer holds the ground truth the attacker never sees and compares each
method's guesses with it: SSIM/PSNR or label AUC, the gain over the attacker's prior,
top-1 re-identification among the candidates, and the bounds DP puts on guessing."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slsec.run.experiment import Experiment
from slsec.run.result import Guesses, MethodGuess, Reconstructions
from slsec.run.setup import Setup, accounting_steps


def score(exp: Experiment, guess: Guesses, truth_inputs: Tensor,
          truth_labels: Tensor) -> tuple[dict[str, Any], Reconstructions | None]:
    """Compare each method's guesses with the ground truth the scorer holds and report the
    method that leaked most (highest SSIM, or label AUC); baselines make scores meaningful.
    Returns the metrics and the reported method's reconstructions (for the report's grid)."""
    setup = exp.setup
    reference = [PRIOR] if guess.prior_reference else []
    scored = {m: _score_one(exp, guess.methods[m], truth_inputs, truth_labels)
              for m in guess.methods}
    methods = [m for m in guess.methods if m not in reference]

    def leak(r: dict[str, Any]) -> float:
        v = r.get("attack_ssim_mean", r.get("label_auc", r.get("attack_numeric_r2", r.get(
            "attack_categorical_accuracy", float("nan")))))
        return -math.inf if v is None or math.isnan(v) else v
    # on a tie the prior is reported: the attack learned nothing beyond it
    best = max(methods, key=lambda m: (leak(scored[m]), m == PRIOR))
    out = dict(scored[best], attack_method=best,
               attack_seconds=sum(guess.methods[m].seconds for m in methods))
    if len(methods) > 1:
        out["methods_compared"] = ",".join(methods)
        key = next((k for k in ("attack_ssim_mean", "label_auc", "attack_numeric_r2",
                                "attack_categorical_accuracy") if k in out), "label_auc")
        out[f"{key}_by_method"] = {m: scored[m].get(key) for m in methods}
    if guess.methods[best].rows is not None:   # tabular records (vertical SL)
        out.update(rows_beyond_prior(setup, guess, best, truth_inputs))
    if "label_accuracy" in out and len(methods) > 1:
        # hard labels: the method with the most right is reported too (the defender's worst
        # case for each metric; a method with a high AUC may threshold worse than another, or
        # than the prior's majority guess)
        acc = {m: scored[m].get("label_accuracy") for m in methods}
        out["label_accuracy_by_method"] = acc
        top = max(methods, key=lambda m: (leak_or_nan(acc[m]), m == best))
        if top != best:
            out["label_accuracy"], out["label_accuracy_method"] = acc[top], top
    if "label_accuracy" in out and "label_baseline_accuracy" in out:
        out["label_accuracy_gain"] = out["label_accuracy"] - out["label_baseline_accuracy"]
    images = guess.methods[best].images
    if images is None:
        return out, None
    truth = truth_inputs[: len(images)]
    shown = Reconstructions(truth, images,
                            guess.methods[PRIOR].images if PRIOR in guess.methods else None)
    cands = reid_candidates(setup, truth)   # built once: the reported method's and the others'
    out.update(beyond_prior(setup, shown, guess, cands))
    if len(methods) > 1 and cands is not None:   # top-1 re-identification of every method
        from slsec import metrics
        idx = torch.arange(len(images))
        out["reid_top1_by_method"] = {
            m: metrics.reidentification(cands, guess.methods[m].images, idx)["reid_top1"]
            for m in methods if guess.methods[m].images is not None}
    return out, shown


PRIOR = "prior"   # the inversion method that only guesses from what the role holds


def rows_beyond_prior(setup: Setup, guess: Guesses, best: str, truth: Tensor) -> dict[str, Any]:
    """A tabular reconstruction of party 1's columns scored per column type and per record
    beside the prior (the `prior` method: public column means), re-identified among the targets
    and REID_OTHERS other training records outside the aux set (slsec/run/tabular_scoring.py)."""
    from slsec.run.tabular_scoring import party_encoding, record_scores
    rows = guess.methods[best].rows
    prior = guess.methods[PRIOR].rows if PRIOR in guess.methods else None
    cols = setup.model_groups()[0]
    truth = truth[: len(rows)]
    if prior is None:
        prior = setup.aux.inputs[:, cols].float().mean(0).expand_as(rows)
    private = setup.shards[0][-REID_OTHERS:]
    others = setup.data.train.inputs[torch.as_tensor(private)][:, cols]
    return record_scores(truth, rows, prior, party_encoding(setup.data.encoding, cols), others)


def leak_or_nan(v: float | None) -> float:
    return -math.inf if v is None or math.isnan(v) else v


REID_OTHERS = 1000   # re-identification: the probes plus at least this many other records


def reid_candidates(setup: Setup, truth: Tensor) -> Tensor | None:
    """The candidate records for re-identification: the probes (in probe order, so probe i is
    candidate i), then every other test image, then training images outside the aux set until
    there are REID_OTHERS others. The same for every method and for runs with the same seed."""
    import numpy as np

    from slsec.run.setup import probe_indices
    test, train = setup.data.test, setup.data.train
    if not isinstance(test.inputs, Tensor) or not isinstance(train.inputs, Tensor):
        return None
    others = np.setdiff1d(np.arange(len(test)), probe_indices(setup.cfg, len(test)))
    parts = [truth.float(), test.inputs[torch.as_tensor(others)].float()]
    need = max(0, REID_OTHERS - len(others))
    if need:
        private = np.random.default_rng(setup.cfg.seed).permutation(len(train))[setup.cfg.aux_size:]
        parts.append(train.inputs[torch.as_tensor(private[-need:])].float())
    return torch.cat(parts)


def beyond_prior(setup: Setup, shown: Reconstructions, guess: Guesses,
                 cands: Tensor | None) -> dict[str, Any]:
    """Leakage beyond what the role already holds: per-sample gain of the reported attack over
    the prior (the `prior` method's guess; for attacks without one, the public aux mean image),
    re-identification among the candidates (`reid_candidates`), and how well the prior knew
    the labels."""
    from slsec import metrics
    truth, images, prior = shown.inputs, shown.images, shown.prior
    if prior is None:
        prior = setup.aux.inputs.float().mean(0).expand_as(images)
    out: dict[str, Any] = dict(metrics.gain_over_prior(truth, images, prior))
    out["prior_label_source"] = guess.prior_label_source
    labels = guess.prior_labels
    if guess.prior_label_source == "predicted" and labels is not None:
        out["prior_label_accuracy"] = float(
            (labels.long() == setup.probe.y[: len(labels)].long()).float().mean())
    if cands is not None and tuple(cands.shape[1:]) == tuple(images.shape[1:]):
        idx = torch.arange(len(images))
        out.update(metrics.reidentification(cands, images, idx))
        out.update({f"prior_{k}": v for k, v in
                    metrics.reidentification(cands, prior, idx).items()
                    if k.startswith("reid_top")})
    return out


def reid_bounds(exp: Experiment, m: dict[str, Any]) -> dict[str, Any]:
    """The upper bound each DP defense's guarantee puts on top-1 re-identification among the
    run's candidates (prior 1/N), see slsec/privacy/reid_bound.py; label DP bounds label guessing."""
    from slsec.privacy import reid_bound as rb
    cfg, setup = exp.cfg, exp.setup
    n = int(m.get("reid_candidates") or 0)
    out: dict[str, Any] = {}
    if "epsilon" not in m:
        return out
    kappa = 1.0 / n if n else None
    bounds = []
    for d in exp.defense.defenses:
        steps, rate = accounting_steps(cfg, setup, d)
        eps = d.epsilon(steps=steps, sample_rate=rate, delta=cfg.delta)
        if eps is None:
            continue
        own = d.guess_bounds(eps=eps, steps=steps, sample_rate=rate, kappa=kappa,
                             num_classes=setup.data.num_classes)
        if own.pop("labels_only", False):   # protects labels only: a bound on guessing them
            out.update(own)
            continue
        if kappa is None:
            continue
        out["reid_bound_eps_delta"] = rb.eps_delta_bound(m["epsilon"], m["delta"], kappa)
        bounds.append(own.pop("reid_bound", out["reid_bound_eps_delta"]))
        out.update(own)
    if bounds:
        # several mechanisms: the (eps, delta) bound of their composition is what holds
        out["reid_bound"] = bounds[0] if len(bounds) == 1 else out["reid_bound_eps_delta"]
        out["reid_bound_vacuous"] = rb.vacuous(out["reid_bound"])
    return out


def _score_one(exp: Experiment, guess: MethodGuess, truth_inputs: Tensor,
               truth_labels: Tensor) -> dict[str, Any]:
    """One method's scores; puts an unordered attack's images in probe order first."""
    from slsec import metrics
    cfg, setup = exp.cfg, exp.setup
    unordered = exp.attack is not None and exp.attack.cls.unordered_batches

    out: dict[str, Any] = {}
    images, scores = guess.images, guess.label_scores
    if guess.rows is not None:   # tabular: the leak() key; the rest in rows_beyond_prior
        from slsec.run.tabular_scoring import column_scores, party_encoding
        cols = setup.model_groups()[0]
        out.update({f"attack_{k}": v for k, v in column_scores(
            truth_inputs[: len(guess.rows)], guess.rows,
            party_encoding(setup.data.encoding, cols)).items()})
    if images is not None:
        truth = truth_inputs[: len(images)]
        if unordered and cfg.probe_batch > 1:
            # a batch's update is a mean over its samples: the attack recovers each batch's
            # images in no particular order, so pair them with the truth batch by batch
            images = torch.cat([g[torch.as_tensor(metrics.match_order(t, g))] for t, g in zip(
                truth.split(cfg.probe_batch), images.split(cfg.probe_batch))])
            guess.images = images
        out.update({f"attack_{k}": v for k, v in metrics.image_summary(truth, images).items()})
        out.update({f"baseline_{k}": v for k, v in
                    metrics.mean_image_baseline(truth, setup.train_mean).items()})
    if scores is not None:
        batch = cfg.probe_batch if unordered else 1
        m, guess.label_scores = label_scores(truth_labels[: len(scores)], scores, batch,
                                             setup.aux.y)
        out.update(m)
    return out


def label_scores(y: Tensor, scores: Tensor, batch: int, public_labels: Tensor
                 ) -> tuple[dict[str, Any], Tensor]:
    """Label accuracy and AUC of `scores` against the true labels `y`, beside the prior (the
    majority class of the role's public labels). `batch` > 1: the scores come in unordered
    batches of that size (a batch's labels recovered as a multiset in no order); they are
    paired with the truth batch by batch on their own, not through the images' pairing (which
    a poor reconstruction makes random), so the accuracy is the multiset's overlap.
    Returns the metrics and the scores in the order they were scored in."""
    from slsec import metrics
    out: dict[str, Any] = {}
    if batch > 1:
        scores = torch.cat([s[torch.as_tensor(metrics.match_labels(t, s))] for t, s in zip(
            y.split(batch), scores.split(batch))])
        out["label_pairing"] = "multiset per batch"
    out["label_accuracy"] = metrics.label_accuracy(y, scores)
    out["label_auc"] = metrics.label_auc(y, scores)
    out["label_baseline_accuracy"] = metrics.majority_baseline(y, public_labels)
    return out, scores
