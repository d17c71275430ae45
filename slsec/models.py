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


@MODELS.register("cnn")
def cnn(*, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28),
        **_: object) -> SplitModel:
    """Small CNN for 28x28 (or 32x32) images: two conv blocks, two dense layers."""
    c, h, w = input_shape
    flat = 64 * (h // 4) * (w // 4)
    return SplitModel("cnn", [
        ("conv1", Block(nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.ReLU()))),
        ("pool1", Block(nn.MaxPool2d(2))),
        ("conv2", Block(nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU()))),
        ("pool2", Block(nn.MaxPool2d(2))),
        ("fc1", Block(nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU()))),
        ("fc2", Block(nn.Linear(128, num_classes))),
    ])


def build_model(name: str, **kwargs: object) -> SplitModel:
    """Build a registered model by name (kwargs: num_classes, input_shape, num_features)."""
    return MODELS.get(name)(**kwargs)
