"""MLPs for tabular rows: `mlp` is a plain splittable MLP, or with `parties` = K > 0 (vertical
SL) K bottom MLPs, one per column group, whose embeddings a top MLP consumes.

The vertical model cuts once, after "bottoms": head = every party's bottom (on full rows; each
reads only its own columns), tail = the top. Party k (1-based) runs `party_bottom(k)` on its
own columns; `party_head(k)` is the same bottom reading its columns out of full rows (what that
party can apply to public rows); `party_model(k)` is that bottom with a fresh top on its own
embedding only (the model a passive party completes with a few labelled rows, Fu et al. 2022).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from slsec.data.models import MODELS, Block, SplitModel
from slsec.errors import UserError


def dense(d_in: int, widths: Sequence[int], d_out: int | None, *, last_relu: bool) -> nn.Sequential:
    """Linear-ReLU layers through `widths`, then a Linear to `d_out` (ReLU after it if asked)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d_in, w), nn.ReLU()]
        d_in = w
    if d_out is not None:
        layers.append(nn.Linear(d_in, d_out))
        if last_relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def column_groups(encoding: list[dict[str, Any]] | None, width: int, parties: int,
                  split: str = "equal") -> list[list[int]]:
    """Encoded column indices of each party: `equal` contiguous groups of the original columns
    (a column's one-hot and missing indicators stay together), or `A,B|C,D` named lists."""
    enc = encoding or [{"column": f"x{i}", "start": i, "width": 1} for i in range(width)]
    spans = {e["column"]: list(range(e["start"], e["start"] + e["width"])) for e in enc}
    if split and split != "equal":
        groups = [[c.strip() for c in g.split(",") if c.strip()] for g in split.split("|")]
        if len(groups) != parties:
            raise UserError(f"--feature-split names {len(groups)} group(s) for {parties} "
                            "parties (give one '|'-separated column list per party)")
        names = [c for g in groups for c in g]
        unknown = [c for c in names if c not in spans]
        if unknown:
            raise UserError(f"--feature-split: no feature column '{unknown[0]}'")
        if len(set(names)) != len(names) or set(names) != set(spans):
            raise UserError("--feature-split must name every feature column exactly once")
        return [[i for c in g for i in spans[c]] for g in groups]
    if parties > len(enc):
        raise UserError(f"--clients {parties}: more parties than the {len(enc)} feature columns")
    bounds = [round(j * len(enc) / parties) for j in range(parties + 1)]
    return [[i for e in enc[lo:hi] for i in spans[e["column"]]]
            for lo, hi in zip(bounds, bounds[1:])]


class ColumnBottom(nn.Module):
    """A party's bottom applied to its own columns of full rows."""

    def __init__(self, cols: Sequence[int], net: nn.Module) -> None:
        super().__init__()
        self.cols = torch.as_tensor(list(cols), dtype=torch.long)
        self.net = net

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"x": self.net(feats["x"][:, self.cols.to(feats["x"].device)])}


class Bottoms(nn.Module):
    """Every party's bottom on full rows, aggregated (concatenation or sum)."""

    def __init__(self, groups: list[list[int]], nets: Sequence[nn.Module], aggregate: str) -> None:
        super().__init__()
        self.groups, self.aggregate = groups, aggregate
        self.nets = nn.ModuleList(nets)

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        outs = [ColumnBottom(g, n)(feats)["x"] for g, n in zip(self.groups, self.nets)]
        return {"x": aggregate(outs, self.aggregate)}


def aggregate(outs: list[Tensor], how: str) -> Tensor:
    """The top's input from the parties' embeddings (in party order)."""
    return torch.cat(outs, 1) if how == "concat" else torch.stack(outs).sum(0)


class VerticalModel(SplitModel):
    """K bottoms (one per column group) and a top; cut after "bottoms"."""

    def __init__(self, groups: list[list[int]], num_classes: int, bottom: Sequence[int],
                 top: Sequence[int], aggregate: str, spec: str | None = None) -> None:
        emb, hidden = int(bottom[-1]), [int(w) for w in bottom[:-1]]
        nets = [dense(len(g), hidden, emb, last_relu=True) for g in groups] if spec is None \
            else user_bottoms(spec, groups)
        if spec is not None:
            emb = embedding_size(nets, groups, spec)
        d_top = emb * len(groups) if aggregate == "concat" else emb
        super().__init__("mlp", [("bottoms", Bottoms(groups, nets, aggregate)),
                                 ("top", Block(dense(d_top, top, num_classes, last_relu=False)))])
        self.groups, self.emb, self.top_widths = groups, emb, [int(w) for w in top]
        self.num_classes = num_classes

    def party_bottom(self, k: int) -> nn.Module:
        """Party k's bottom (on its own columns), as {"x"} -> {"x"}."""
        return Block(self.blocks["bottoms"].nets[k - 1])

    def party_head(self, k: int) -> ColumnBottom:
        return ColumnBottom(self.groups[k - 1], self.blocks["bottoms"].nets[k - 1])

    def party_model(self, k: int) -> SplitModel:
        """Party k's bottom (on full rows) and a fresh top on its embedding alone."""
        return SplitModel("mlp-party", [
            ("bottoms", self.party_head(k)),
            ("top", Block(dense(self.emb, self.top_widths, self.num_classes, last_relu=False)))])


def user_bottoms(spec: str, groups: list[list[int]]) -> list[nn.Module]:
    """The user's bottoms: `FACTORY(party=k, num_features=d_k)` called once per party (k from
    1), or a factory returning a list of one module per party; each maps [B, d_k] -> [B, E]."""
    from slsec.data.usermodel import _call, _load_factory
    factory = _load_factory(spec)
    first = _call(factory, spec, {"party": 1, "num_features": len(groups[0]),
                                  "parties": len(groups)})
    if isinstance(first, (list, tuple)):
        nets = list(first)
        if len(nets) != len(groups) or not all(isinstance(n, nn.Module) for n in nets):
            raise UserError(f"--model {spec}: a list of bottoms needs one nn.Module per party "
                            f"({len(groups)})")
        return nets
    rest = [_call(factory, spec, {"party": k, "num_features": len(g), "parties": len(groups)})
            for k, g in enumerate(groups[1:], start=2)]
    nets = [first, *rest]
    if not all(isinstance(n, nn.Module) for n in nets):
        raise UserError(f"--model {spec}: the factory must return an nn.Module (a party's "
                        "bottom) or a list of one per party")
    return nets


def embedding_size(nets: Sequence[nn.Module], groups: list[list[int]], spec: str) -> int:
    """Every user bottom's embedding width (they must agree), from one row of zeros."""
    sizes = set()
    with torch.no_grad():
        for net, g in zip(nets, groups):
            try:
                out = net(torch.zeros(2, len(g)))
            except Exception as e:   # noqa: BLE001 - the user's code: one line
                raise UserError(f"--model {spec}: a bottom fails on rows of {len(g)} columns "
                                f"({type(e).__name__}: {e})") from None
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise UserError(f"--model {spec}: a bottom must return [batch, embedding]")
            sizes.add(int(out.shape[1]))
    if len(sizes) != 1:
        raise UserError(f"--model {spec}: the parties' embeddings differ in width "
                        f"({sorted(sizes)})")
    return sizes.pop()


def _widths(v: Any, flag: str) -> list[int]:
    items = [v] if isinstance(v, (int, str)) else list(v or ())
    try:
        out = [int(w) for w in items]
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be a comma list of layer widths, got {v!r}") from None
    if any(w < 1 for w in out):
        raise UserError(f"{flag} must be widths >= 1, got {v!r}")
    return out


@MODELS.register("mlp")
def mlp(*, num_classes: int = 2, num_features: int | None = None, parties: int = 0,
        encoding: list[dict[str, Any]] | None = None, feature_split: str = "equal",
        bottom_widths: Any = ("64", "16"), top_widths: Any = ("32",),
        aggregate: str = "concat", bottom_spec: str | None = None, **_: object) -> SplitModel:
    """MLP for tabular rows (vertical with `parties` > 0; see the module docstring)."""
    if not num_features or num_features < 1:
        raise UserError("model 'mlp' is for tabular data (rows of features): use --dataset "
                        "spam, csv:FILE or a 2-D npz:FILE")
    bottom = _widths(bottom_widths, "--bottom-widths")
    top = _widths(top_widths, "--top-widths")
    if parties:
        groups = column_groups(encoding, num_features, parties, feature_split)
        return VerticalModel(groups, num_classes, bottom, top, aggregate, bottom_spec)
    return SplitModel("mlp", [
        ("fc1", Block(nn.Sequential(nn.Linear(num_features, bottom[0]), nn.ReLU()))),
        *[(f"fc{i + 2}", Block(nn.Sequential(nn.Linear(a, b), nn.ReLU())))
          for i, (a, b) in enumerate(zip(bottom, bottom[1:]))],
        ("out", Block(dense(bottom[-1], top, num_classes, last_relu=False))),
    ])
