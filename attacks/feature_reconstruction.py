"""Feature reconstruction by the active party in vertical SL: passive party 1's columns (encoded
rows) from the embeddings that party sent it (its inference queries, `view.smashed`).

Methods (strongest first):
- `whitebox` (knowledge architecture + head_weights: the party's bottom is known): optimise rows
  so that the bottom maps them onto each observed embedding, starting from (and pulled towards)
  the learned inverse's estimate when public rows are known, else the zero row (the bottom
  loses information; the pull picks, of the rows that fit, the nearest to the estimate).
- `inverse` (architecture + head_weights + aux_data): a learned inverse (MLP) trained on the
  bottom's embeddings of public rows of those columns, augmented by mixing public rows (the
  attacker can embed any row it likes with the known bottom).
- `substitute` (architecture + aux_data; FORA-style, Xu et al. 2024, for tables): a fresh bottom
  of the public architecture trained so that its embeddings of the public rows match the
  observed embeddings in distribution (multi-bandwidth MMD), then a learned inverse through it.
  (Training the substitute jointly with its inverse, FORA-style, with a cycle through the
  observed embeddings, measured no better on spam: R² -0.861 ± 0.363; bench/README.md.)
- `prior` (aux_data): the public rows' mean for every record (the attacker's prior).
Adaptive: with DP on the embeddings (`CutNoise`), the inverse is trained on clipped and noised
embeddings as the public mechanism makes them, and white-box matches the clipped output.
The guess is `Guess.rows` [N, D] in the encoded space of the party's columns; the scorer decodes
them per column (slsec/run/tabular_scoring.py).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slsec.attacks.base import ATTACKS, Attack, Guess
from slsec.errors import UserError
from slsec.threat import View

from .inverse import CutChannel

def party_columns(view: View) -> tuple[nn.Module, Tensor]:
    """The attacked party's bottom (as the role holds it) and which encoded columns it reads."""
    head = view.parts.get("head")
    if head is None or not hasattr(head, "cols"):
        raise UserError("feature reconstruction targets a vertical SL party's bottom")
    return head.net, head.cols


def public_rows(view: View, cols: Tensor, n: int) -> Tensor:
    if view.aux is None or len(view.aux) == 0:
        raise UserError("this method needs public rows (--aux-size > 0)")
    return view.aux.inputs[:n][:, cols].float()


def mixed(rows: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """`n` rows mixed from pairs of public rows (plus the rows themselves)."""
    i = torch.randint(len(rows), (n,), generator=gen)
    j = torch.randint(len(rows), (n,), generator=gen)
    w = torch.rand(n, 1, generator=gen)
    return torch.cat([rows, w * rows[i] + (1 - w) * rows[j]])


def mmd(a: Tensor, b: Tensor) -> Tensor:
    """Squared MMD with Gaussian kernels of several bandwidths (about the median distance)."""
    x = torch.cat([a, b])
    d = torch.cdist(x, x).pow(2)
    scale = d.detach().median().clamp_min(1e-6)
    k = sum(torch.exp(-d / (scale * s)) for s in (0.25, 1.0, 4.0))
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


@ATTACKS.register("feature-reconstruction")
class FeatureReconstruction(Attack):
    """Reconstruct a passive party's columns from the embeddings the active party received."""

    name = "feature-reconstruction"
    kind = "tabular"
    roles = {"vertical": "server"}
    methods = {
        "whitebox": frozenset({"architecture", "head_weights"}),
        "inverse": frozenset({"architecture", "head_weights", "aux_data"}),
        "substitute": frozenset({"architecture", "aux_data"}),
        "prior": frozenset({"aux_data"}),
    }
    default_order = ("inverse", "whitebox", "substitute", "prior")
    contenders = ("inverse", "whitebox", "substitute", "prior")

    def __init__(self, *, method: str | None = None, seed: int = 0, iterations: int = 1500,
                 public_rows: int = 200, **params: Any) -> None:
        super().__init__(method=method, **params)
        self.seed, self.iters, self.n_public = int(seed), int(iterations), int(public_rows)

    def run(self, view: View) -> Guess:
        method = self.pick_method(view.knowledge, self.method)
        obs = torch.cat([m["x"] for m in view.smashed]).float() if view.smashed else None
        if obs is None:
            raise UserError("feature reconstruction: the active party observed no embeddings")
        gen = torch.Generator().manual_seed(self.seed)
        channel = CutChannel.from_public(view.public)
        rows = getattr(self, f"_{method}")(view, obs, channel, gen)
        return Guess(rows=rows.detach(), info={"method": method, "samples": len(obs)})

    def _prior(self, view: View, obs: Tensor, channel: CutChannel, gen: torch.Generator) -> Tensor:
        head = view.parts.get("head")
        cols = head.cols if head is not None and hasattr(head, "cols") else \
            view.build_model().party_head(1).cols
        return public_rows(view, cols, self.n_public).mean(0).expand(len(obs), -1)

    def _inverse(self, view: View, obs: Tensor, channel: CutChannel,
                 gen: torch.Generator) -> Tensor:
        bottom, cols = party_columns(view)
        return self._learned(bottom.eval(), public_rows(view, cols, self.n_public), obs,
                             channel, gen)

    def _learned(self, bottom: nn.Module, pub: Tensor, obs: Tensor, channel: CutChannel,
                 gen: torch.Generator) -> Tensor:
        """Train an inverse MLP on (embedding of mixed public rows, rows); apply it to `obs`."""
        x = mixed(pub, 20 * len(pub), gen)
        with torch.no_grad():
            e = channel.sample(bottom(x), gen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            dec = nn.Sequential(nn.Linear(e.shape[1], 128), nn.ReLU(), nn.Linear(128, 128),
                                nn.ReLU(), nn.Linear(128, x.shape[1]))
        opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
        for _ in range(self.iters):
            i = torch.randint(len(x), (256,), generator=gen)
            opt.zero_grad()
            F.mse_loss(dec(e[i]), x[i]).backward()
            opt.step()
        with torch.no_grad():
            return dec(obs)

    def _whitebox(self, view: View, obs: Tensor, channel: CutChannel,
                  gen: torch.Generator) -> Tensor:
        """Rows the known bottom maps onto each observed embedding. With public rows the search
        starts at the learned inverse's estimate and is pulled towards it (the bottom loses
        information: among the rows that fit, the one nearest that estimate); without, at the
        zero row (the training mean of standardised columns)."""
        bottom, cols = party_columns(view)
        bottom.eval()
        if view.aux is not None and len(view.aux):
            start = self._learned(bottom, public_rows(view, cols, self.n_public), obs, channel,
                                  gen)
        else:
            start = torch.zeros(len(obs), len(cols))
        x = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.02)
        for _ in range(self.iters):
            opt.zero_grad()
            fit = (channel.forward(bottom(x)) - obs).pow(2).sum(1).mean()
            (fit + 1e-3 * (x - start).pow(2).sum(1).mean()).backward()
            opt.step()
        return x.detach()

    def _substitute(self, view: View, obs: Tensor, channel: CutChannel,
                    gen: torch.Generator) -> Tensor:
        if view.build_model is None:
            raise UserError("method 'substitute' needs the public architecture")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)
            head = view.build_model().party_head(1)
        sub, cols = head.net, head.cols
        pub = public_rows(view, cols, self.n_public)
        x = mixed(pub, 10 * len(pub), gen)
        opt = torch.optim.Adam(sub.parameters(), lr=1e-3)
        for _ in range(self.iters):
            i = torch.randint(len(x), (256,), generator=gen)
            j = torch.randint(len(obs), (256,), generator=gen)
            opt.zero_grad()
            mmd(channel.forward(sub(x[i])), obs[j]).backward()
            opt.step()
        return self._learned(sub.eval(), pub, obs, channel, gen)
