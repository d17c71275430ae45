"""Vanilla split learning (Gupta & Raskar 2018): one cut, clients take turns.

Round r: for k = 1..K in order, the server hands client k the current head weights (relayed
via the server, in the clear), client k trains on its whole shard batch by batch, then returns
its head to the server. Per batch the client sends the smashed data (and, by default, the
labels: the server computes the loss) and receives d loss / d smashed for every sample.

`label_party="server"` models two-party SL (Li et al. 2022): the server owns the labels of
the client's samples and the client sends only sample indices; a curious client may then try
to infer labels from the cut gradients it receives.
"""
from __future__ import annotations

from typing import Callable

import torch

from slsec.protocols.base import (CTRL, GRAD, SMASHED, WEIGHTS, Context, Protocol, PROTOCOLS,
                                  backward_cut, batches, client_seed, cross_entropy, cut_message,
                                  fresh_state_each_round, load, make_optimizer, observing,
                                  participants, probe_inference, receive_cut, serve_probe, state,
                                  straggle)


def label_sending_client(ctx: Context) -> None:
    """Client of vanilla SL and SplitFed: head on the client, labels (or indices) to the server."""
    plan = ctx.plan
    head = ctx.model.split(list(plan.cuts))[0]
    opt = make_optimizer(head.parameters(), plan)
    ctx.defense.attach(ctx.model, plan.cuts)
    for rnd in range(plan.rounds):
        if ctx.rank in participants(plan, rnd):
            if fresh_state_each_round(plan):
                opt = make_optimizer(head.parameters(), plan)
            label_sending_round(ctx, rnd, head, opt)
    probe_inference(ctx, head, send_labels=True)


def label_sending_round(ctx: Context, rnd: int, head: torch.nn.Module,
                        opt: torch.optim.Optimizer) -> None:
    """One round of a label-sending client: the server's head in, a pass over the shard, the
    trained head back."""
    plan = ctx.plan
    load(head, ctx.link.recv(0, WEIGHTS))
    gen = torch.Generator().manual_seed(client_seed(plan, ctx.rank, rnd))
    order = batches(len(ctx.shard), plan.batch_size, gen)
    ctx.link.send(0, {"n": torch.tensor(len(order)), "samples": torch.tensor(len(ctx.shard))}, CTRL)
    for i, idx in enumerate(order):
        client_step(ctx, head, opt, idx, gen, ctx.rank == 1 and observing(ctx, rnd, i, len(order)),
                    lambda msg: ctx.link.give(0, msg, SMASHED))
    ctx.link.send(0, state(head), WEIGHTS)


def client_step(ctx: Context, head: torch.nn.Module, opt: torch.optim.Optimizer, idx: torch.Tensor,
                gen: torch.Generator, watch: bool,
                send: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """One batch on a label-sending client: smashed data (+ labels, or sample indices in
    two-party SL) out via `send`, per-sample cut gradient back, head update."""
    feats, y = ctx.shard.batch(idx)
    two_party = ctx.plan.label_party == "server"
    # a detector may send this batch with decoy labels (and not learn from it)
    fake = None if two_party else ctx.defense.decoy(y, num_classes=ctx.plan.num_classes, gen=gen)
    h = head(feats)
    x = ctx.defense.smashed(h["x"], train=True, gen=gen)
    msg = cut_message(h, x)
    msg["i" if two_party else "y"] = idx if two_party else (y if fake is None else fake)
    send(msg)
    g = ctx.link.recv(0, GRAD)["g"]
    if watch:  # a curious client (two-party SL) keeps what it sent and got back
        ctx.observer.recording = True
        ctx.observer.smashed(msg)
        ctx.observer.grad(g)
        ctx.observer.recording = False
    if not ctx.defense.withholding:   # a detector that flagged the server: nothing more to learn
        reg = ctx.defense.regularizer(feats["x"], h["x"])
        opt.zero_grad()
        backward_cut(x, g, reg)
        ctx.defense.inspect(g=g, head=head, x=x, y=None if two_party else y,
                            decoy=fake is not None, feats=msg)
        if fake is None and not ctx.defense.withholding:
            opt.step()
    straggle(ctx)


def serve_batch(ctx: Context, k: int, tail: torch.nn.Module, opt: torch.optim.Optimizer,
                labels: dict[int, torch.Tensor] | None, watch: bool) -> None:
    """Server: one batch from client k through the tail; return per-sample cut gradients."""
    return process_batch(ctx, k, ctx.link.recv(k, SMASHED), tail, opt, labels, watch)


def process_batch(ctx: Context, k: int, msg: dict[str, torch.Tensor], tail: torch.nn.Module,
                  opt: torch.optim.Optimizer, labels: dict[int, torch.Tensor] | None,
                  watch: bool) -> None:
    """Loss on the server's tail for a received batch; the cut gradient goes back to k alone."""
    feats, y_used = batch_in(ctx, k, msg, labels, watch)
    tail_backward(tail, opt, feats, y_used)
    grad_out(ctx, k, msg, feats)
    opt.step()


# process_batch's three phases; SplitFed v1 runs the middle one of several clients at once
def batch_in(ctx: Context, k: int, msg: dict[str, torch.Tensor],
             labels: dict[int, torch.Tensor] | None, watch: bool
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The received batch as the tail's input and the labels its loss uses (after the label
    defense)."""
    y = labels[k][msg["i"]] if labels is not None else msg["y"]
    if watch and ctx.truth is not None and labels is not None:
        ctx.truth(None, y)  # two-party: the label owner is the server; scorer keeps the truth
    feats = receive_cut(msg)
    ctx.observer.smashed(msg)
    if watch:   # a training batch in the observation window, with the label the server holds
        ctx.observer.seen({**msg, "y": y})
    return feats, ctx.defense.labels(y, num_classes=ctx.plan.num_classes, gen=ctx.gen)


def tail_backward(tail: torch.nn.Module, opt: torch.optim.Optimizer,
                  feats: dict[str, torch.Tensor], y: torch.Tensor) -> None:
    """The tail's loss, backpropagated into its parameters and the cut (feats["x"].grad)."""
    loss = cross_entropy(tail(feats)["x"], y)
    opt.zero_grad()
    loss.backward()


def grad_out(ctx: Context, k: int, msg: dict[str, torch.Tensor],
             feats: dict[str, torch.Tensor]) -> None:
    """The per-sample cut gradient (after the gradient defense, or a malicious server's own)
    back to client k alone."""
    g = ctx.defense.cut_grad(feats["x"].grad, gen=ctx.gen)
    if ctx.hook is not None:   # a malicious server sends what it likes instead
        g = ctx.hook.cut_grad(k, msg, g)
    ctx.link.give(k, {"g": g}, GRAD)


@PROTOCOLS.register("vanilla")
class Vanilla(Protocol):
    name = "vanilla"
    alternating = True

    @staticmethod
    def server(ctx: Context) -> None:
        plan = ctx.plan
        head, tail = ctx.model.split(list(plan.cuts))
        opt = make_optimizer(tail.parameters(), plan)
        head_state = state(head)
        labels = ctx.labels if plan.label_party == "server" else None
        for rnd in range(plan.rounds):
            for k in ctx.clients:
                ctx.link.send(k, head_state, WEIGHTS)
                n = int(ctx.link.recv(k, CTRL)["n"])
                for i in range(n):
                    serve_batch(ctx, k, tail, opt, labels, k == 1 and observing(ctx, rnd, i, n))
                head_state = ctx.link.recv(k, WEIGHTS)
            load(head, head_state)
            if ctx.on_round:
                ctx.on_round(rnd, ctx.model)
        serve_probe(ctx, ctx.clients, head_state)

    client = staticmethod(label_sending_client)
