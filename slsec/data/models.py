"""Splittable models: an ordered list of named blocks; a cut lies after a named block.

Every block maps a dict of named tensors to a dict of named tensors ("feats"): images travel
as {"x": [B, C, H, W]}, graph batches as {"x": node features, "edge_index", "batch"} until the
readout pools them to {"x": [G, hidden]}. `split(cuts)` returns head | tail (one cut) or
head | body | tail (two cuts); the parts share parameters with the model.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from slsec.errors import UserError
from slsec.registry import Registry

Feats = dict[str, Tensor]


class Block(nn.Module):
    """Applies a plain tensor module to feats["x"], passing the other entries through."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, feats: Feats) -> Feats:
        return {**feats, "x": self.module(feats["x"])}


class Part(nn.Module):
    """A contiguous run of blocks: what one role holds."""

    def __init__(self, names: Sequence[str], blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.names = list(names)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, feats: Feats) -> Feats:
        for block in self.blocks:
            feats = block(feats)
        return feats


class SplitModel(nn.Module):
    """A model as named blocks, with the cut points between them."""

    def __init__(self, name: str, blocks: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.name = name
        self.block_names = [n for n, _ in blocks]
        self.blocks = nn.ModuleDict(blocks)

    @property
    def cut_points(self) -> list[str]:
        """Names of the blocks after which the model can be cut (all but the last)."""
        return self.block_names[:-1]

    def forward(self, feats: Feats) -> Feats:
        for name in self.block_names:
            feats = self.blocks[name](feats)
        return feats

    def check_cuts(self, cuts: Sequence[str]) -> list[int]:
        """Indices of `cuts`, or a UserError naming the valid cut points."""
        idx = []
        for c in cuts:
            if c not in self.cut_points:
                raise UserError(f"invalid cut '{c}' for model '{self.name}'; "
                                f"valid cuts: {', '.join(self.cut_points)}")
            idx.append(self.block_names.index(c))
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise UserError(f"cuts must be distinct and in model order "
                            f"({', '.join(self.cut_points)}), got {', '.join(cuts)}")
        return idx

    def split(self, cuts: Sequence[str]) -> list[Part]:
        """The parts between the cuts (len(cuts) + 1 of them), sharing this model's parameters."""
        bounds = [0] + [i + 1 for i in self.check_cuts(cuts)] + [len(self.block_names)]
        parts = []
        for lo, hi in zip(bounds, bounds[1:]):
            names = self.block_names[lo:hi]
            parts.append(Part(names, [self.blocks[n] for n in names]))
        return parts


MODELS: Registry[Callable[..., SplitModel]] = Registry("model")
# builds "<file.py|module>:<factory>" specs, the user's own models; registered by slsec.data.usermodel
MODEL_SPECS: Registry[Callable[..., SplitModel]] = Registry("model spec")


@MODELS.register("cnn")
def cnn(*, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28),
        **_: object) -> SplitModel:
    """Small CNN for 28x28 (or 32x32) images: two conv blocks, two dense layers."""
    c, h, w = input_shape
    if h < 4 or w < 4:
        raise UserError(f"model 'cnn' needs images of at least 4x4 pixels (it pools twice by "
                        f"2), got {h}x{w}; use your own --model for smaller inputs")
    flat = 64 * (h // 4) * (w // 4)
    return SplitModel("cnn", [
        ("conv1", Block(nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU()))),
        ("pool1", Block(nn.MaxPool2d(2))),
        ("conv2", Block(nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU()))),
        ("pool2", Block(nn.MaxPool2d(2))),
        ("fc1", Block(nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU()))),
        ("fc2", Block(nn.Linear(128, num_classes))),
    ])


@MODELS.register("resnet18")
def resnet18(*, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32),
             **_: object) -> SplitModel:
    """CIFAR ResNet-18: 3x3 stem (no max-pool), four stages of two BasicBlocks, avgpool + linear."""
    from torchvision.models.resnet import BasicBlock

    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(cout))
        return nn.Sequential(BasicBlock(cin, cout, stride, down), BasicBlock(cout, cout))

    c = input_shape[0]
    return SplitModel("resnet18", [
        ("stem", Block(nn.Sequential(nn.Conv2d(c, 64, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(64), nn.ReLU(inplace=True)))),
        ("layer1", Block(stage(64, 64, 1))),
        ("layer2", Block(stage(64, 128, 2))),
        ("layer3", Block(stage(128, 256, 2))),
        ("layer4", Block(stage(256, 512, 2))),
        ("head", Block(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(512, num_classes)))),
    ])


class GINBlock(nn.Module):
    """One GINConv (MLP: Linear-BN-ReLU-Linear-ReLU) on node features; keeps edge_index, batch."""

    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        from torch_geometric.nn import GINConv
        self.conv = GINConv(nn.Sequential(nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                          nn.Linear(hidden, hidden), nn.ReLU()))

    def forward(self, feats: Feats) -> Feats:
        return {**feats, "x": self.conv(feats["x"], feats["edge_index"])}


class SumReadout(nn.Module):
    """Sum-pools node features per graph: {"x", "edge_index", "batch"} -> {"x": [G, hidden]}."""

    def forward(self, feats: Feats) -> Feats:
        x, batch = feats["x"], feats["batch"]
        n_graphs = int(batch.max()) + 1 if batch.numel() else 0
        return {"x": x.new_zeros(n_graphs, x.shape[1]).index_add_(0, batch, x)}


@MODELS.register("gin")
def gin(*, num_classes: int = 2, num_features: int | None = None, hidden: int = 64,
        **_: object) -> SplitModel:
    """GIN for graph classification: three GINConv layers, sum readout, two dense layers."""
    if not num_features or num_features < 1:
        raise UserError("model 'gin' needs num_features (node feature size) >= 1")
    return SplitModel("gin", [
        ("gin1", GINBlock(num_features, hidden)),
        ("gin2", GINBlock(hidden, hidden)),
        ("gin3", GINBlock(hidden, hidden)),
        ("readout", SumReadout()),
        ("fc1", Block(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()))),
        ("fc2", Block(nn.Linear(hidden, num_classes))),
    ])


def _n_samples(feats: Feats) -> int:
    """Samples in a feats batch: graphs when a batch vector is present, else rows of x."""
    if "batch" in feats:
        b = feats["batch"]
        return int(b.max()) + 1 if b.numel() else 0
    return int(feats["x"].shape[0])


def profile_cuts(model: SplitModel, feats: Feats) -> list[dict]:
    """Per cut point: smashed size and the client head's parameters and forward FLOPs per sample.

    smashed_numel counts every tensor that crosses the cut (for graphs x, edge_index and batch,
    averaged per graph); bytes count floating tensors as float32 and integer tensors at their
    own width. Runs one no-grad forward in eval mode (BN running stats are left untouched).
    """
    from torch.utils.flop_counter import FlopCounterMode

    n = _n_samples(feats)
    if n == 0:
        raise UserError("profile_cuts needs a non-empty batch")
    was_training = model.training
    model.eval()
    rows, params, flops = [], 0, 0
    try:
        with torch.no_grad():
            for name in model.block_names[:-1]:
                block = model.blocks[name]
                counter = FlopCounterMode(display=False)
                with counter:
                    feats = block(feats)
                flops += counter.get_total_flops()
                params += sum(p.numel() for p in block.parameters())
                numel = sum(t.numel() for t in feats.values())
                nbytes = sum(t.numel() * (4 if t.is_floating_point() else t.element_size())
                             for t in feats.values())
                rows.append({"cut": name, "smashed_numel": numel / n,
                             "smashed_bytes_per_sample": nbytes / n,
                             "client_params": params, "client_flops": flops / n})
    finally:
        model.train(was_training)
    return rows


def build_model(name: str, **kwargs: object) -> SplitModel:
    """Build a registered model by name (kwargs: num_classes, input_shape, num_features), or the
    user's own from a `file.py:factory` / `module:factory` spec (see slsec.data.usermodel)."""
    if (":" in name or name.endswith(".py")) and "factory" in MODEL_SPECS:
        return MODEL_SPECS.get("factory")(name, **kwargs)
    return MODELS.get(name)(**kwargs)
