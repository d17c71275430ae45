"""U-shaped split learning (Vepakomma et al. 2018): two cuts, labels never leave the client.

The client holds head and tail, the server the body. Per batch: client -> smashed -> server;
server -> body output -> client; the client computes the loss with its private labels and
sends d loss / d body output back; the server backpropagates through the body and returns
d loss / d smashed for every sample. Clients take turns as in vanilla SL; head and tail are
handed on via the server (in the clear). The curious server observes the body outputs it
computed and the gradients coming back from the client's tail (label inference targets them),
and the smashed probe queries at inference (inversion targets those).
"""
from __future__ import annotations

import torch

from slsec.protocols.base import (BODY_GRAD, BODY_OUT, CTRL, GRAD, SMASHED, WEIGHTS, Context,
                                  Protocol, PROTOCOLS, backward_cut, batches, client_seed,
                                  cross_entropy, cut_message, load, make_optimizer, observing,
                                  probe_inference, receive_cut, serve_probe, state, straggle)


def _client_parts(ctx: Context) -> tuple[torch.nn.Module, torch.nn.Module]:
    head, _, tail = ctx.model.split(list(ctx.plan.cuts))
    return head, tail


def _pack(head: torch.nn.Module, tail: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**{f"head.{k}": v for k, v in state(head).items()},
            **{f"tail.{k}": v for k, v in state(tail).items()}}


def _unpack(msg: dict[str, torch.Tensor], head: torch.nn.Module, tail: torch.nn.Module) -> None:
    load(head, {k[5:]: v for k, v in msg.items() if k.startswith("head.")})
    load(tail, {k[5:]: v for k, v in msg.items() if k.startswith("tail.")})


@PROTOCOLS.register("ushaped")
class UShaped(Protocol):
    name = "ushaped"
    alternating = True
    cuts_needed = 2
    labels_to_server = False

    @staticmethod
    def client(ctx: Context) -> None:
        plan = ctx.plan
        head, tail = _client_parts(ctx)
        opt = make_optimizer(list(head.parameters()) + list(tail.parameters()), plan)
        for rnd in range(plan.rounds):
            _unpack(ctx.link.recv(0, WEIGHTS), head, tail)
            gen = torch.Generator().manual_seed(client_seed(plan, ctx.rank, rnd))
            order = batches(len(ctx.shard), plan.batch_size, gen)
            ctx.link.send(0, {"n": torch.tensor(len(order))}, CTRL)
            for i, idx in enumerate(order):
                feats, y = ctx.shard.batch(idx)
                if ctx.rank == 1 and observing(ctx, rnd, i, len(order)) and ctx.truth is not None:
                    ctx.truth(None, y)
                h = head(feats)
                x = ctx.defense.smashed(h["x"], train=True, gen=gen)
                ctx.link.give(0, cut_message(h, x), SMASHED)
                body_out = receive_cut(ctx.link.recv(0, BODY_OUT))
                y_used = ctx.defense.labels(y, num_classes=plan.num_classes, gen=gen)
                loss = cross_entropy(tail(body_out)["x"], y_used)
                reg = ctx.defense.regularizer(feats["x"], h["x"])
                opt.zero_grad()
                loss.backward()
                gb = ctx.defense.cut_grad(body_out["x"].grad, gen=gen)
                ctx.link.give(0, {"g": gb}, BODY_GRAD)
                g = ctx.link.recv(0, GRAD)["g"]
                backward_cut(x, g, reg)
                opt.step()
                straggle(ctx)
            ctx.link.send(0, _pack(head, tail), WEIGHTS)
        probe_inference(ctx, head, adopt=lambda msg: _unpack(msg, head, tail))

    @staticmethod
    def server(ctx: Context) -> None:
        plan = ctx.plan
        head, body, tail = ctx.model.split(list(plan.cuts))
        opt = make_optimizer(body.parameters(), plan)
        handoff = _pack(head, tail)
        for rnd in range(plan.rounds):
            for k in ctx.clients:
                ctx.link.send(k, handoff, WEIGHTS)
                n = int(ctx.link.recv(k, CTRL)["n"])
                for i in range(n):
                    msg = ctx.link.recv(k, SMASHED)
                    feats = receive_cut(msg)
                    out = body(feats)
                    ctx.link.give(k, cut_message(out, out["x"]), BODY_OUT)
                    gb = ctx.link.recv(k, BODY_GRAD)["g"]
                    if k == 1 and observing(ctx, rnd, i, n):
                        ctx.observer.seen(msg)
                        ctx.observer.recording = True
                        ctx.observer.output(cut_message(out, out["x"]))
                        ctx.observer.grad(gb)
                        ctx.observer.recording = False
                    opt.zero_grad()
                    out["x"].backward(gb)
                    ctx.link.give(k, {"g": feats["x"].grad}, GRAD)
                    opt.step()
                handoff = ctx.link.recv(k, WEIGHTS)
            _unpack(handoff, head, tail)
            if ctx.on_round:
                ctx.on_round(rnd, ctx.model)
        serve_probe(ctx, ctx.clients, handoff)

