"""SplitFed (Thapa et al. 2022): clients run in parallel; heads averaged with FedAvg each round.

Each round the server sends the global head to every client; all clients train their shard at
once (same client program as vanilla SL), the server serving their batches in a fixed client
order per step (deterministic whatever the arrival order); then heads come back and are
averaged, weighted by sample counts.
- `v1`: the server keeps one tail copy per client and averages the copies every round.
- `v2`: one server tail, updated by the clients' batches in sequence.
Cut gradients go back per sample to the client that sent the batch; nothing averages them.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from slsec.params import Param
from slsec.protocols.base import (CTRL, FRACTION, WEIGHTS, Context, Protocol, PROTOCOLS,
                                  fresh_state_each_round, load, make_optimizer, observing,
                                  participants, probe_inference, serve_probe, state, waves,
                                  weighted_average)
from slsec.protocols.vanilla import label_sending_client, label_sending_round, serve_batch


@PROTOCOLS.register("splitfed")
class SplitFed(Protocol):
    params = (
        FRACTION,
        Param("variant", "str", "v1", "SplitFed variant: v1 (tail copy per client) | v2 (one "
              "shared tail)", choices=("v1", "v2"),
              unused="chooses the SplitFed variant (--protocol splitfed)"),
    )
    name = "splitfed"

    @classmethod
    def independent_clients(cls, cfg: Any) -> bool:
        return cfg.variant == "v1"   # v2: one shared tail, trained client after client

    @staticmethod
    def server(ctx: Context) -> None:
        plan = ctx.plan
        head, tail = ctx.model.split(list(plan.cuts))
        v1 = plan.variant == "v1"
        shared_opt = None if v1 else make_optimizer(tail.parameters(), plan)

        def tails_for(ks: list[int]) -> tuple[dict, dict]:
            tails = {k: (copy.deepcopy(tail) if v1 else tail) for k in ks}
            return tails, {k: (make_optimizer(tails[k].parameters(), plan) if v1 else shared_opt)
                           for k in ks}

        # with client sampling, tail copies exist only for the clients sampled in a round
        tails, opts = tails_for([] if fresh_state_each_round(plan) else list(ctx.clients))
        labels = ctx.labels if plan.label_party == "server" else None
        head_state = state(head)
        for rnd in range(plan.rounds):
            ks = participants(plan, rnd)
            heads, tail_states, weights = [], [], []
            for wave in waves(plan, ks, independent=v1):
                if fresh_state_each_round(plan):
                    tails, opts = tails_for(wave)
                for k in wave:
                    ctx.link.send(k, head_state, WEIGHTS)
                ctrl = {k: ctx.link.recv(k, CTRL) for k in wave}
                left = {k: int(ctrl[k]["n"]) for k in wave}
                total = dict(left)
                while any(left.values()):
                    for k in wave:
                        if left[k]:
                            i = total[k] - left[k]
                            watch = k == 1 and observing(ctx, rnd, i, total[k])
                            serve_batch(ctx, k, tails[k], opts[k], labels, watch)
                            left[k] -= 1
                            if v1 and fresh_state_each_round(plan):
                                opts[k].zero_grad()   # free a sampled tail's gradients meanwhile
                weights += [float(ctrl[k]["samples"]) for k in wave]
                heads += [ctx.link.recv(k, WEIGHTS) for k in wave]
                if v1:
                    tail_states += [state(tails[k]) for k in wave]
            head_state = weighted_average(heads, weights)
            load(head, head_state)
            if v1:
                avg = weighted_average(tail_states, weights)
                load(tail, avg)
                for k in tails:
                    load(tails[k], avg)
            if ctx.on_round:
                ctx.on_round(rnd, ctx.model)
        serve_probe(ctx, ctx.clients, head_state)

    client = staticmethod(label_sending_client)

    # the client program one round at a time (the local backend's client pool runs these)
    @staticmethod
    def client_round(ctx: Context, rnd: int) -> None:
        head = ctx.model.split(list(ctx.plan.cuts))[0]
        ctx.defense.attach(ctx.model, ctx.plan.cuts)
        label_sending_round(ctx, rnd, head, make_optimizer(head.parameters(), ctx.plan))

    @staticmethod
    def client_finish(ctx: Context) -> None:
        probe_inference(ctx, ctx.model.split(list(ctx.plan.cuts))[0], send_labels=True)
