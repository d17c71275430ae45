"""Vertical split learning (split VFL): K passive parties hold different columns of the same
records; the active party (rank 0) holds the labels and the top model.

Records are aligned by position (private set intersection assumed done); every party draws the
same batch order from a shared seed each epoch. Per batch each passive party k (rank k) runs
its bottom on its own columns and sends its embedding; the active party aggregates them
(concatenation, or sum), computes the loss on the top and returns to each party its own
per-sample gradient d loss / d embedding_k, point-to-point, never averaged. After each epoch
the parties send the embeddings of their columns of the test rows (joint inference), so the
active party measures test accuracy; after training, party 1 sends its private probe rows
through its bottom (inference queries: what a feature-reconstruction attack targets).

Who holds what: the active party holds the labels, the top, and the bottoms' initial weights
(every role builds the same seeded model, as in the other protocols), never a raw column; a
passive party holds its columns of the training and test rows and its bottom, never a label.

Defense hooks, per passive party: `smashed` (its embedding, on the party), `regularizer` (its
bottom's loss), `labels` (the active party's labels) and `cut_grad` (each returned gradient,
on the active party, once per party).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from slsec.params import Param
from slsec.protocols.base import (GRAD, PROBE, SMASHED, Context, Protocol, PROTOCOLS,
                                  backward_cut, batches, cross_entropy, make_optimizer,
                                  observing, straggle)

EVAL = 8   # message tag: embeddings of the test rows (joint inference after each epoch)


def shared_order(plan: Any, rnd: int, n: int) -> list[Tensor]:
    """Epoch `rnd`'s batch order, identical on every party (a seed they share)."""
    gen = torch.Generator().manual_seed(plan.seed * 1_000_003 + 31 * rnd + 7)
    return batches(n, plan.batch_size, gen)


class JointPredictions(nn.Module):
    """The test rows' logits from one joint inference (the experimenter's measurement)."""

    def __init__(self, top: nn.Module, logits: Tensor) -> None:
        super().__init__()
        self.top, self.joint_logits = top, logits


@PROTOCOLS.register("vertical")
class Vertical(Protocol):
    name = "vertical"
    splits_columns = True
    labels_to_server = False      # labels never travel: the active party owns them
    server_holds = frozenset({"head_weights"})   # the bottoms' initial weights
    params = (
        Param("parties", "int", None, "vertical: passive parties K (the clients; MPI: K+1 "
              "ranks; not set: --clients)", check=("at_least_one",),
              outside="(passive parties) is for {owners}; protocol '{protocol}' has clients "
              "(--clients)"),
        Param("feature_split", "str", "equal", "vertical: columns of each passive party, "
              "'equal' contiguous groups or 'A,B|C,D' (one '|'-separated list per party)",
              outside="(the columns of each party) is for {owners}; protocol '{protocol}' "
              "does not split columns"),
        Param("aggregate", "str", "concat", "vertical: how the active party combines the "
              "embeddings", choices=("concat", "sum"),
              outside="is for {owners}; protocol '{protocol}' has no embeddings to combine"),
        Param("bottom_widths", "list", ("64", "16"), "vertical: each party's bottom MLP widths "
              "(the last is the embedding size)",
              outside="is for {owners}; protocol '{protocol}' has no bottom models"),
        Param("top_widths", "list", ("32",), "vertical: the active party's top MLP hidden "
              "widths", outside="is for {owners}; protocol '{protocol}' has no top model"),
    )
    run_defaults = {"dataset": "spam", "label_party": "server", "rounds": 5}

    @classmethod
    def independent_clients(cls, cfg: Any) -> bool:
        return False

    @staticmethod
    def model_options(cfg: Any, data: Any) -> dict[str, Any]:
        """What the vertical model needs beyond the data's shape: parties and column groups
        (and the user's bottoms: `--model FILE.py:FACTORY`, see slsec.data.tabular_models)."""
        spec = cfg.model if cfg.model and ":" in cfg.model else None
        user = {"model": "mlp", "bottom_spec": spec} if spec else {}
        return dict(user, parties=cfg.clients, encoding=getattr(data, "encoding", None),
                    feature_split=cfg.feature_split, bottom_widths=cfg.bottom_widths,
                    top_widths=cfg.top_widths, aggregate=cfg.aggregate)

    @staticmethod
    def client_data(setup: Any, rank: int, split: Any) -> Any:
        """Party `rank`'s view of `split`: its columns only, no labels, and its columns of the
        test rows (joint inference)."""
        cols = torch.as_tensor(setup.model_groups()[rank - 1])
        return PartySplit(split.inputs[:, cols], torch.full((len(split),), -1, dtype=torch.long),
                          setup.data.test.inputs[:, cols])

    @staticmethod
    def server_parts(model: nn.Module, cuts: tuple[str, ...]) -> dict[str, nn.Module]:
        """The active party's parts: party 1's bottom as it initialised it, and the top."""
        return {"head": model.party_head(1), "tail": model.split(list(cuts))[-1]}

    @staticmethod
    def client_parts(model: nn.Module, cuts: tuple[str, ...], rank: int) -> dict[str, nn.Module]:
        return {"head": model.party_head(rank)}

    @staticmethod
    def client_build(build: Callable[[], nn.Module], rank: int) -> Callable[[], nn.Module]:
        return lambda: build().party_model(rank)

    @staticmethod
    def server(ctx: Context) -> None:
        plan = ctx.plan
        top = ctx.model.split(list(plan.cuts))[-1]
        how = ctx.model.blocks["bottoms"].aggregate
        opt = make_optimizer(top.parameters(), plan)
        y_all = ctx.labels[1]
        from slsec.data.tabular_models import aggregate
        for rnd in range(plan.rounds):
            order = shared_order(plan, rnd, len(y_all))
            for i, idx in enumerate(order):
                msgs = {k: ctx.link.recv(k, SMASHED) for k in ctx.clients}
                if observing(ctx, rnd, i, len(order)) and ctx.truth is not None:
                    ctx.truth(None, y_all[idx])   # the scorer's truth for the observed rows
                xs = [msgs[k]["x"].requires_grad_(True) for k in ctx.clients]
                y = ctx.defense.labels(y_all[idx], num_classes=plan.num_classes, gen=ctx.gen)
                loss = cross_entropy(top({"x": aggregate(xs, how)})["x"], y)
                opt.zero_grad()
                loss.backward()
                for k, x in zip(ctx.clients, xs):   # each party its own rows, never averaged
                    g = ctx.defense.label_grad(ctx.defense.cut_grad(x.grad, gen=ctx.gen),
                                               y_all[idx], gen=ctx.gen)
                    if ctx.hook is not None:
                        g = ctx.hook.cut_grad(k, msgs[k], g)
                    ctx.link.give(k, {"g": g}, GRAD)
                opt.step()
            embs = [ctx.link.recv(k, EVAL)["x"] for k in ctx.clients]
            with torch.no_grad():
                top.eval()
                logits = top({"x": aggregate(embs, how)})["x"]
                top.train()
            if ctx.on_round:
                ctx.on_round(rnd, JointPredictions(top, logits))
        ctx.observer.recording = True    # party 1's inference queries after training
        for k in ctx.clients:
            for _ in range(int(ctx.link.recv(k, PROBE)["n"])):
                ctx.observer.smashed(ctx.link.recv(k, PROBE))
        ctx.observer.recording = False

    @staticmethod
    def client(ctx: Context) -> None:
        plan, k = ctx.plan, ctx.rank
        bottom = ctx.model.party_bottom(k)
        opt = make_optimizer(bottom.parameters(), plan)
        ctx.defense.attach(ctx.model, plan.cuts)
        for rnd in range(plan.rounds):
            order = shared_order(plan, rnd, len(ctx.shard))
            for i, idx in enumerate(order):
                feats, _ = ctx.shard.batch(idx)
                h = bottom(feats)
                x = ctx.defense.smashed(h["x"], train=True, gen=ctx.gen)
                msg = {"x": x.detach()}
                ctx.link.give(0, msg, SMASHED)
                g = ctx.link.recv(0, GRAD)["g"]
                if k == 1 and observing(ctx, rnd, i, len(order)):
                    ctx.observer.recording = True   # a curious passive party keeps both
                    ctx.observer.smashed(msg)
                    ctx.observer.grad(g)
                    ctx.observer.recording = False
                reg = ctx.defense.regularizer(feats["x"], h["x"])
                opt.zero_grad()
                backward_cut(x, g, reg)
                opt.step()
                straggle(ctx)
            ctx.link.send(0, {"x": embed(ctx, bottom, ctx.shard.test_inputs)}, EVAL)
        probe = ctx.probe if k == 1 else None
        chunks = list(torch.arange(len(probe)).split(plan.batch_size)) if probe is not None else []
        ctx.link.send(0, {"n": torch.tensor(len(chunks))}, PROBE)
        for chunk in chunks:
            rows = probe.batch(chunk)[0]["x"]
            ctx.link.send(0, {"x": embed(ctx, bottom, rows)}, PROBE)
            if ctx.truth is not None:
                ctx.truth(rows, None)   # the scorer's truth: this party's raw columns


def embed(ctx: Context, bottom: nn.Module, rows: Tensor) -> Tensor:
    """The (defended) embeddings of `rows` at inference."""
    was = bottom.training
    bottom.eval()
    with torch.no_grad():
        x = ctx.defense.smashed(bottom({"x": rows})["x"], train=False, gen=ctx.gen)
    bottom.train(was)
    return x.detach()


class PartySplit:
    """A passive party's rows: its columns of its training rows (labels withheld: -1) and of
    the test rows."""

    def __init__(self, inputs: Tensor, y: Tensor, test_inputs: Tensor) -> None:
        self.inputs, self.y, self.test_inputs = inputs, y, test_inputs

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batch(self, idx: Any) -> tuple[dict[str, Tensor], Tensor]:
        i = torch.as_tensor(idx).long()
        return {"x": self.inputs[i]}, self.y[i]
