"""Splittable models: parts compose to the full model, cut validation, cut profiles."""
from __future__ import annotations

from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from slsec.errors import UserError
from slsec.data.models import MODELS, build_model, profile_cuts

CUTS = {
    "cnn": ["conv1", "pool1", "conv2", "pool2", "fc1"],
    "resnet18": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "gin": ["gin1", "gin2", "gin3", "readout", "fc1"],
}
CASES = [(m, cuts) for m, cps in CUTS.items()
         for cuts in [(c,) for c in cps] + list(combinations(cps, 2))]


def _graph_feats(n_graphs: int = 3, n_feat: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small random graph batch (x, edge_index, batch) with both edge directions."""
    g = torch.Generator().manual_seed(seed)
    xs, edges, batch, off = [], [], [], 0
    for k in range(n_graphs):
        n = 4 + k
        src = torch.randint(0, n, (2 * n,), generator=g)
        dst = torch.randint(0, n, (2 * n,), generator=g)
        edges.append(torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]) + off)
        xs.append(F.one_hot(torch.randint(0, n_feat, (n,), generator=g), n_feat).double())
        batch.append(torch.full((n,), k))
        off += n
    return {"x": torch.cat(xs), "edge_index": torch.cat(edges, 1), "batch": torch.cat(batch)}


def _setup(name: str):
    """Model (float64, train mode: BN uses batch statistics), a batch, and labels."""
    torch.manual_seed(0)
    if name == "gin":
        model, feats, y = build_model("gin", num_classes=2, num_features=7), _graph_feats(), \
            torch.tensor([0, 1, 1])
    elif name == "resnet18":  # 8x8 keeps it fast; the adaptive pool makes any size work
        model = build_model("resnet18", num_classes=10, input_shape=(3, 8, 8))
        feats, y = {"x": torch.rand(4, 3, 8, 8, dtype=torch.float64)}, torch.tensor([3, 7, 0, 1])
    else:
        model = build_model("cnn", num_classes=10, input_shape=(1, 28, 28))
        feats, y = {"x": torch.rand(4, 1, 28, 28, dtype=torch.float64)}, torch.tensor([0, 1, 2, 3])
    return model.double().train(), feats, y


@pytest.fixture(scope="module")
def reference():
    """Per model: the full model's logits and parameter gradients on its test batch."""
    cache = {}

    def get(name: str):
        if name not in cache:
            model, feats, y = _setup(name)
            model.zero_grad()
            out = model(feats)["x"]
            F.cross_entropy(out, y).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            cache[name] = (model, feats, y, out.detach(), grads)
        return cache[name]
    return get


def _run_split(model, cuts, feats, y):
    """Run the parts as split learning does: each part gets detached smashed data, the cut
    gradient flows back by hand (d loss / d smashed x) into the previous part."""
    parts = model.split(list(cuts))
    ins, outs, cur = [], [], feats
    for part in parts:
        inp = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in cur.items()}
        cur = part(inp)
        ins.append(inp)
        outs.append(cur)
    F.cross_entropy(outs[-1]["x"], y).backward()
    for i in range(len(parts) - 2, -1, -1):
        outs[i]["x"].backward(ins[i + 1]["x"].grad)
    return outs[-1]["x"].detach()


def test_cut_points_are_the_documented_ones():
    assert set(CUTS) <= set(MODELS.names())
    for name in CUTS:
        model = build_model(name, num_features=7) if name == "gin" else build_model(name)
        assert model.cut_points == CUTS[name]


@pytest.mark.parametrize("name,cuts", CASES, ids=[f"{m}-{'+'.join(c)}" for m, c in CASES])
def test_parts_compose_to_full_model(reference, name, cuts):
    """float64, train mode: same logits and same parameter gradients within 1e-6."""
    model, feats, y, ref_out, ref_grads = reference(name)
    model.zero_grad()
    out = _run_split(model, cuts, feats, y)
    assert (out - ref_out).abs().max().item() <= 1e-6
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert (p.grad - ref_grads[n]).abs().max().item() <= 1e-6, n


@pytest.mark.parametrize("name", list(CUTS))
def test_invalid_cut_names_valid_cuts(name):
    model = build_model(name, num_features=7) if name == "gin" else build_model(name)
    with pytest.raises(UserError) as err:
        model.split(["no_such_block"])
    msg = str(err.value)
    assert "\n" not in msg and all(c in msg for c in CUTS[name])
    with pytest.raises(UserError):
        model.split([CUTS[name][2], CUTS[name][0]])  # out of order
    with pytest.raises(UserError):
        model.split([model.block_names[-1]])  # after the last block is no cut


def test_resnet18_accepts_one_channel():
    model = build_model("resnet18", num_classes=10, input_shape=(1, 28, 28)).eval()
    assert model({"x": torch.rand(2, 1, 28, 28)})["x"].shape == (2, 10)


def test_gin_needs_num_features():
    with pytest.raises(UserError):
        build_model("gin", num_classes=2)


def test_gin_parts_carry_named_graph_tensors():
    model = build_model("gin", num_classes=2, num_features=7).double().eval()
    head, tail = model.split(["gin2"])
    smashed = head(_graph_feats())
    assert set(smashed) == {"x", "edge_index", "batch"} and smashed["x"].shape[1] == 64
    assert tail(smashed)["x"].shape == (3, 2)
    assert set(model.split(["readout"])[0](_graph_feats())) == {"x"}


@pytest.mark.parametrize("name", list(CUTS))
def test_profile_cuts(name):
    model, feats, _ = _setup(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rows = profile_cuts(model, feats)
    assert [r["cut"] for r in rows] == CUTS[name]
    params = [r["client_params"] for r in rows]
    flops = [r["client_flops"] for r in rows]
    assert params == sorted(params) and params[-1] > params[0] > 0
    assert flops == sorted(flops) and flops[0] > 0
    assert all(r["smashed_bytes_per_sample"] >= 4 * r["smashed_numel"] > 0 for r in rows)
    assert model.training  # mode restored, BN running stats untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    total = sum(p.numel() for p in model.parameters())
    assert params[-1] < total


def test_profile_cuts_known_values_cnn():
    rows = profile_cuts(build_model("cnn"), {"x": torch.rand(3, 1, 28, 28)})
    first = rows[0]
    assert first["smashed_numel"] == 32 * 28 * 28
    assert first["client_params"] == 32 * 1 * 9 + 32
    assert first["client_flops"] == 2 * 32 * 9 * 28 * 28  # 2 FLOPs per multiply-add
