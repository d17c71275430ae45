"""FedAvg (McMahan et al. 2017), the baseline that gradient inversion targets.

Each round the server sends the global model to every client; each trains it on its shard for
`local_epochs`, sends it back, and the server takes the sample-weighted mean. After training,
the probe: client 1 computes one plain-SGD update (no momentum) from the global weights on
each of a few private batches of `probe_batch` samples and sends it; the curious aggregator
observes every update (what it legitimately receives) and gradient inversion attacks them.
"""
from __future__ import annotations

import torch

from slsec.params import Param
from slsec.protocols.base import (CTRL, FRACTION, PROBE, WEIGHTS, Context, Protocol, PROTOCOLS, batches,
                                  client_seed, cross_entropy, fresh_state_each_round, load,
                                  make_optimizer, participants, state, straggle, waves,
                                  weighted_average)
from slsec.threat import Update


def local_step(ctx: Context, model: torch.nn.Module, opt: torch.optim.Optimizer,
               feats: dict[str, torch.Tensor], y: torch.Tensor) -> None:
    """One local training step; a DP-SGD defense (if any) takes over the step."""
    private = next((d for d in ctx.defense.defenses if hasattr(d, "private_step")), None)
    if private is not None:
        private.private_step(model, opt, feats, y, gen=ctx.gen)
        return
    loss = cross_entropy(model(feats)["x"], y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _train_round(ctx: Context, rnd: int, model: torch.nn.Module,
                 opt: torch.optim.Optimizer) -> None:
    """One round of a FedAvg client: global weights in, local epochs, trained weights back."""
    plan = ctx.plan
    load(model, ctx.link.recv(0, WEIGHTS))
    for epoch in range(plan.local_epochs):
        gen = torch.Generator().manual_seed(client_seed(plan, ctx.rank, rnd * 1000 + epoch))
        for idx in batches(len(ctx.shard), plan.batch_size, gen):
            local_step(ctx, model, opt, *ctx.shard.batch(idx))
            straggle(ctx)
    ctx.link.send(0, {**state(model), "__samples": torch.tensor(len(ctx.shard))}, WEIGHTS)


def _cpu(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in w.items()}


@PROTOCOLS.register("fedavg")
class FedAvg(Protocol):
    params = (FRACTION,)
    name = "fedavg"
    cuts_needed = 0
    labels_to_server = False
    server_holds = frozenset({"model_weights"})

    @staticmethod
    def client(ctx: Context) -> None:
        plan, model = ctx.plan, ctx.model
        opt = make_optimizer(model.parameters(), plan)
        for rnd in range(plan.rounds):
            if ctx.rank in participants(plan, rnd):
                if fresh_state_each_round(plan):
                    opt = make_optimizer(model.parameters(), plan)
                _train_round(ctx, rnd, model, opt)
        FedAvg.client_finish(ctx)

    # the client program one round at a time (the local backend's client pool runs these)
    @staticmethod
    def client_round(ctx: Context, rnd: int) -> None:
        _train_round(ctx, rnd, ctx.model, make_optimizer(ctx.model.parameters(), ctx.plan))

    @staticmethod
    def client_finish(ctx: Context) -> None:
        """The probe: plain SGD updates on private batches, observed by the aggregator."""
        plan, model = ctx.plan, ctx.model
        global_w = {k: v for k, v in ctx.link.recv(0, PROBE).items()}
        chunks = list(torch.arange(len(ctx.probe)).split(plan.probe_batch)) \
            if ctx.rank == 1 and ctx.probe is not None else []
        ctx.link.send(0, {"n": torch.tensor(len(chunks))}, CTRL)
        sgd = torch.optim.SGD(model.parameters(), lr=plan.lr)
        for chunk in chunks:
            load(model, global_w)
            feats, y = ctx.probe.batch(chunk)
            if ctx.truth is not None:
                ctx.truth(feats["x"], y)
            local_step(ctx, model, sgd, feats, y)
            ctx.link.send(0, state(model), PROBE)

    @staticmethod
    def server(ctx: Context) -> None:
        plan, model = ctx.plan, ctx.model
        for rnd in range(plan.rounds):
            got = []
            for wave in waves(plan, participants(plan, rnd), independent=True):
                for k in wave:
                    ctx.link.send(k, state(model), WEIGHTS)
                got += [ctx.link.recv(k, WEIGHTS) for k in wave]
            weights = [float(g.pop("__samples")) for g in got]
            load(model, weighted_average(got, weights))
            if ctx.on_round:
                ctx.on_round(rnd, model)
        before = state(model)
        ks = list(ctx.clients)
        for k in ks:
            ctx.link.send(k, before, PROBE)
        ctx.observer.recording = True
        for k in ks:
            for _ in range(int(ctx.link.recv(k, CTRL)["n"])):
                after = ctx.link.recv(k, PROBE)
                ctx.observer.update(Update(client=k, before=_cpu(before), after=_cpu(after), lr=plan.lr,
                                           local_steps=1, batch_size=plan.probe_batch))
        ctx.observer.recording = False

    @staticmethod
    def server_parts(model: torch.nn.Module, cuts: tuple[str, ...]) -> dict[str, torch.nn.Module]:
        return {"model": model}
