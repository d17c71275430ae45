"""Asynchronous SplitFed: no round barrier, staleness-aware head merging (FedAsync rule).

The server handles each client's messages as they arrive (MPI Iprobe on any source, then a
point-to-point receive from that source) over one tag, each message carrying an `op`:
- op 0, a batch: smashed data + labels; the cut gradient goes back per sample to that client;
  the single server tail is updated in arrival order.
- op 1, a head push after every `async_every` local steps (and at the end of each epoch):
  the server merges it into the global head with FedAsync's polynomial staleness decay
      alpha_t = alpha * (1 + staleness) ** (-a),   global <- (1 - alpha_t) * global + alpha_t * pushed
  where staleness = (global version now) - (version the client last pulled), and sends the
  current global head (and its version) back.
- op 2: the client is done.
Clients never wait for each other. `async_order="fixed"` serves clients in a fixed cycle
instead of arrival order, which makes the local backend deterministic (used by tests).
"""
from __future__ import annotations

import torch

from slsec.params import Param
from slsec.protocols.base import (WEIGHTS, Context, Protocol, PROTOCOLS, batches, client_seed,
                                  load, make_optimizer, observing, probe_inference, serve_probe,
                                  state)
from slsec.protocols.vanilla import client_step, process_batch

ASYNC = 8
BATCH, PUSH, DONE = 0, 1, 2


def merge(global_w: dict[str, torch.Tensor], pushed: dict[str, torch.Tensor], staleness: int,
          alpha: float, a: float) -> dict[str, torch.Tensor]:
    """FedAsync: mix the pushed head in with weight alpha * (1 + staleness)^-a."""
    w = alpha * (1.0 + staleness) ** (-a)
    return {k: (1 - w) * v + w * pushed[k] if v.is_floating_point() else pushed[k].clone()
            for k, v in global_w.items()}


@PROTOCOLS.register("splitfed-async")
class SplitFedAsync(Protocol):
    params = (
        Param("async_every", "int", 10, "local steps between head pushes",
              check=("at_least_one",), unused="tunes --protocol splitfed-async"),
        Param("async_alpha", "float", 0.6, "FedAsync mixing weight alpha",
              check=("positive", "at_most_one"), unused="tunes --protocol splitfed-async"),
        Param("async_decay", "float", 0.5, "staleness decay exponent a",
              check=("non_negative",), unused="tunes --protocol splitfed-async"),
        Param("async_order", "str", "arrival", "serve head pushes in arrival order, or in a "
              "fixed cycle (deterministic)", choices=("arrival", "fixed"), unused="tunes --protocol splitfed-async"),
    )
    name = "splitfed-async"

    @staticmethod
    def client(ctx: Context) -> None:
        plan = ctx.plan
        head = ctx.model.split(list(plan.cuts))[0]
        opt = make_optimizer(head.parameters(), plan)
        ctx.defense.attach(ctx.model, plan.cuts)
        got = ctx.link.recv(0, WEIGHTS)
        version = got.pop("__version")
        load(head, got)
        for rnd in range(plan.rounds):
            gen = torch.Generator().manual_seed(client_seed(plan, ctx.rank, rnd))
            order = batches(len(ctx.shard), plan.batch_size, gen)
            for step, idx in enumerate(order):
                watch = ctx.rank == 1 and observing(ctx, rnd, step, len(order))
                client_step(ctx, head, opt, idx, gen, watch,
                            lambda msg: ctx.link.give(0, {**msg, "op": torch.tensor(BATCH)}, ASYNC))
                if (step + 1) % plan.async_every == 0 or step == len(order) - 1:
                    ctx.link.send(0, {**state(head), "__version": version,
                                      "op": torch.tensor(PUSH)}, ASYNC)
                    got = ctx.link.recv(0, WEIGHTS)
                    version = got.pop("__version")
                    load(head, got)
        ctx.link.send(0, {"op": torch.tensor(DONE)}, ASYNC)
        probe_inference(ctx, head, send_labels=True)

    @staticmethod
    def server(ctx: Context) -> None:
        plan = ctx.plan
        head, tail = ctx.model.split(list(plan.cuts))
        opt = make_optimizer(tail.parameters(), plan)
        labels = ctx.labels if plan.label_party == "server" else None
        global_w, version = state(head), 0
        for k in ctx.clients:
            ctx.link.send(k, {**global_w, "__version": torch.tensor(version)}, WEIGHTS)
        active = list(ctx.clients)
        merges, evals, turn = 0, 0, 0
        while active:
            if plan.async_order == "fixed":
                k = active[turn % len(active)]
                msg = ctx.link.recv(k, ASYNC)
                turn += 1
            else:
                k, msg = ctx.link.recv_any(ASYNC)
            op = int(msg.pop("op"))
            if op == BATCH:
                # no label attack targets the asynchronous protocol: nothing is watched here
                process_batch(ctx, k, msg, tail, opt, labels, watch=False)
            elif op == PUSH:
                staleness = version - int(msg.pop("__version"))
                global_w = merge(global_w, msg, staleness, plan.async_alpha, plan.async_decay)
                version += 1
                merges += 1
                ctx.link.send(k, {**global_w, "__version": torch.tensor(version)}, WEIGHTS)
                if merges % plan.clients == 0 and ctx.on_round:
                    load(head, global_w)
                    ctx.on_round(evals, ctx.model)
                    evals += 1
            else:
                active.remove(k)
        load(head, global_w)
        if ctx.on_round and merges % plan.clients:
            ctx.on_round(evals, ctx.model)
        serve_probe(ctx, ctx.clients, global_w)

