"""SplitFed (Thapa et al. 2022): clients run in parallel; heads averaged with FedAvg each round.

Each round the server sends the global head to every client; all clients train their shard at
once (same client program as vanilla SL), the server serving their batches in a fixed client
order per step (deterministic whatever the arrival order); then heads come back and are
averaged, weighted by sample counts.
- `v1`: the server keeps one tail copy per client and averages the copies every round. As in
  the paper, the server runs the clients' tails at once: each step it takes one batch from every
  client (in client order), computes the tails' forward and backward passes on a thread pool,
  and returns the cut gradients in client order. A tail that draws random numbers (a dropout
  module) is run one client after the other instead, so that one seed gives one result.
- `v2`: one server tail, updated by the clients' batches in sequence.
Cut gradients go back per sample to the client that sent the batch; nothing averages them.
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import torch

from slsec.params import Param
from slsec.protocols.base import (CTRL, FRACTION, SMASHED, WAVE, WEIGHTS, Context, Protocol,
                                  PROTOCOLS, fresh_state_each_round, load, make_optimizer,
                                  observing, participants, probe_inference, serve_probe, state,
                                  waves, weighted_average)
from slsec.protocols.vanilla import (batch_in, grad_out, label_sending_client, label_sending_round,
                                     serve_batch, tail_backward)

# modules that draw random numbers in training: their draws come from torch's one global
# generator, whose order threads running side by side would make vary
STOCHASTIC = (torch.nn.modules.dropout._DropoutNd, torch.nn.RReLU)


def serve_at_once(ctx: Context, ks: list[int], tails: dict, opts: dict, labels: Any,
                  watch: dict[int, bool], pool: ThreadPoolExecutor) -> None:
    """One batch from each client of `ks` (each with its own tail copy): received and
    label-defended in client order, the tails' forward and backward passes at once on `pool`,
    the cut gradients back in client order, then the tails' optimiser steps."""
    running = []
    for k in ks:
        msg = ctx.link.recv(k, SMASHED)
        feats, y = batch_in(ctx, k, msg, labels, watch[k])
        running.append((k, msg, feats, pool.submit(tail_backward, tails[k], opts[k], feats, y)))
    for k, msg, feats, done in running:
        done.result()
        grad_out(ctx, k, msg, feats)
    for k in ks:
        opts[k].step()


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
        at_once = v1 and not any(isinstance(m, STOCHASTIC) for m in tail.modules())
        # at most a wave's tails run at once (their activations are what the pool holds)
        with (ThreadPoolExecutor(max_workers=max(1, min(len(ctx.clients), WAVE)),
                                 thread_name_prefix="tail") if at_once else nullcontext()) as pool:
            for rnd in range(plan.rounds):
                head_state = SplitFed._round(ctx, rnd, head, head_state, tail, tails_for,
                                             tails, opts, labels, pool)
                if ctx.on_round:
                    ctx.on_round(rnd, ctx.model)
        serve_probe(ctx, ctx.clients, head_state)

    @staticmethod
    def _round(ctx: Context, rnd: int, head: torch.nn.Module, head_state: dict,
               tail: torch.nn.Module, tails_for: Any, tails: dict, opts: dict, labels: Any,
               pool: ThreadPoolExecutor | None) -> dict:
        """One round: every wave of the round's clients trained, heads (and v1's tail copies)
        averaged into `head` and `tail`; returns the new head weights."""
        plan = ctx.plan
        v1 = plan.variant == "v1"
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
                step = [k for k in wave if left[k]]
                watch = {k: k == 1 and observing(ctx, rnd, total[k] - left[k], total[k])
                         for k in step}
                if pool is not None and len(step) > 1:
                    serve_at_once(ctx, step, tails, opts, labels, watch, pool)
                else:
                    for k in step:
                        serve_batch(ctx, k, tails[k], opts[k], labels, watch[k])
                for k in step:
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
        return head_state

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
