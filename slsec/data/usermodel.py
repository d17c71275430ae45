"""Bring your own model: `--model path/to/file.py:factory` or `--model package.module:factory`.

The factory returns a splittable model, an ordered set of named blocks:
- an `nn.Sequential` (its children's names are the block names; unnamed children are
  "0", "1", ...),
- an `OrderedDict` (or dict) of name -> nn.Module, or a list/tuple of (name, module) pairs,
- or a `slsec.data.models.SplitModel` (needed for graph data: its blocks take dicts of tensors).
Every boundary between two blocks is a valid cut (`--cut <block name>`). Plain blocks act on
image batches [N, C, H, W] in [0, 1]; the last block must output logits [N, num_classes].

The factory is called with whichever of `num_classes`, `input_shape` (C, H, W) and
`num_features` (graphs) it accepts, once per model build (every rank builds its own under the
run's seed, so a factory that creates fresh layers gets seeded, identical weights). A module
spec is imported like `python -m` does: the current folder first, then installed packages.
Importing a file runs it: point only at your own code.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from slsec.errors import UserError
from slsec.data.models import MODEL_SPECS, Block, SplitModel

OBJECT = "object:"              # prefix of in-memory models registered by the Python API
_OBJECTS: dict[str, Any] = {}   # key -> nn.Module template or factory (this process only)
_LOCK = threading.Lock()
_FACTORIES: dict[tuple, Callable[..., Any]] = {}
_CHECKED: set[tuple] = set()


def register_object(obj: Any) -> str:
    """Keep an nn.Module or factory for this process; the spec that builds it ('object:...')."""
    with _LOCK:
        for key, held in _OBJECTS.items():
            if held is obj:
                return key
        label = getattr(obj, "__qualname__", type(obj).__name__)
        key = f"{OBJECT}{label}-{len(_OBJECTS) + 1}-{id(obj) & 0xffffff:06x}"
        _OBJECTS[key] = obj
        return key


def _load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by `spec` (cached per file version), or a UserError saying why not."""
    if spec.startswith(OBJECT):
        if spec not in _OBJECTS:
            raise UserError(f"--model {spec}: in-memory models exist only in the Python process "
                            f"that passed them (use a FILE.py:FACTORY spec elsewhere)")
        obj = _OBJECTS[spec]
        return (lambda **_: _fresh_copy(obj)) if isinstance(obj, nn.Module) else obj
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise UserError(f"--model {spec!r}: expected FILE.py:FACTORY or MODULE:FACTORY")
    key = (spec, *_file_version(where))
    with _LOCK:
        if key not in _FACTORIES:
            module = _import_file(where) if where.endswith(".py") else _import_module(where)
            if not hasattr(module, attr):
                raise UserError(f"--model {spec}: {where} has no attribute '{attr}'")
            fn = getattr(module, attr)
            if not callable(fn):
                raise UserError(f"--model {spec}: '{attr}' in {where} is not callable "
                                f"(a function returning the model's blocks)")
            _FACTORIES[key] = fn
        return _FACTORIES[key]


def _file_version(where: str) -> tuple:
    p = Path(where).expanduser()
    if where.endswith(".py") and p.is_file():
        st = p.stat()
        return (str(p.resolve()), st.st_size, st.st_mtime_ns)
    return ()


def _import_file(where: str) -> Any:
    path = Path(where).expanduser()
    if not path.is_file():
        what = f"{path} is a folder, not a Python file" if path.is_dir() else \
            f"{path} is not a regular file" if path.exists() else f"file {path} does not exist"
        raise UserError(f"--model: {what}")
    name = "slsec_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except (Exception, SystemExit, KeyboardInterrupt) as e:   # the user's code (an exit or
        sys.modules.pop(name, None)                            # an interrupt it raises too)
        raise UserError(f"--model: importing {path} failed: {_line(e)}") from None
    return module


def _import_module(where: str) -> Any:
    added = "" not in sys.path and str(Path.cwd()) not in sys.path
    if added:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and where.startswith(e.name):
            raise UserError(f"--model: no module named '{where}' (nor a file; a file spec "
                            f"ends in .py)") from None
        raise UserError(f"--model: importing {where} failed: {_line(e)}") from None
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        raise UserError(f"--model: importing {where} failed: {_line(e)}") from None
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))


def _line(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return f"SystemExit (it called sys.exit({e.code!r}))"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _fresh_copy(template: nn.Module) -> nn.Module:
    """A deep copy of `template` with every layer's parameters re-initialised (seeded by the
    caller's RNG, like built-in models), so the run's seed decides the initial weights."""
    m = copy.deepcopy(template)
    for sub in m.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return m


def _call(factory: Callable[..., Any], spec: str, kwargs: dict[str, Any]) -> Any:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    given = {k: v for k, v in kwargs.items() if v is not None and (takes_all or k in params)}
    try:
        return factory(**given)
    except UserError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as e:   # sys.exit(3) in it, too
        raise UserError(f"--model {spec}: the factory raised {_line(e)}") from None


def as_blocks(obj: Any, spec: str) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs of an nn.Sequential, a mapping or a list of pairs, checked."""
    if isinstance(obj, nn.Sequential):
        pairs = list(obj.named_children())
    elif isinstance(obj, (dict, nn.ModuleDict)):
        pairs = list(obj.items())
    elif isinstance(obj, (list, tuple)) and all(isinstance(p, tuple) and len(p) == 2 for p in obj):
        pairs = list(obj)
    else:
        raise UserError(f"--model {spec}: the factory returned {type(obj).__name__}, not an "
                        f"ordered set of named blocks (nn.Sequential, OrderedDict of name -> "
                        f"nn.Module, or a list of (name, module) pairs)")
    if len(pairs) < 2:
        raise UserError(f"--model {spec}: needs at least 2 blocks to have a cut, got {len(pairs)}")
    names = [n for n, _ in pairs]
    for name, module in pairs:
        if not isinstance(name, str) or not (name.isidentifier() or name.isdigit()):
            raise UserError(f"--model {spec}: block name {name!r} is not an identifier "
                            f"(letters, digits, '_'; cut names must be typeable)")
        if not isinstance(module, nn.Module):
            raise UserError(f"--model {spec}: block '{name}' is of type {type(module).__name__}, "
                            f"not an nn.Module")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"--model {spec}: block names must be unique; repeated: {', '.join(dup)}")
    return pairs


def _check_output(model: SplitModel, spec: str, num_classes: int | None,
                  input_shape: tuple[int, ...] | None) -> None:
    """One no-grad forward of a zero batch of 2: the output must be logits [2, num_classes]."""
    if input_shape is None or num_classes is None:
        return
    shape = [2, *input_shape]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model({"x": torch.zeros(shape)})["x"]
    except Exception as e:
        raise UserError(f"--model {spec}: fails on an input batch of shape {shape}: "
                        f"{_line(e)}") from None
    finally:
        model.train(was)
    if tuple(out.shape) != (2, num_classes):
        raise UserError(f"--model {spec}: outputs shape {list(out.shape)} for input {shape}; "
                        f"the dataset has {num_classes} classes (expected [N, {num_classes}])")


def check_parts(model: SplitModel, cuts: list[str], spec: str,
                input_shape: tuple[int, ...] | None) -> None:
    """Each party's part must have weights to train, and one training step on a batch of two
    (zeros) must run across the cut as the protocol runs it (the received tensor a fresh leaf):
    one line instead of a traceback at the first step (an in-place op on the cut tensor, a
    block returning a tuple in training mode). Graph models are checked by their first step."""
    parts = model.split(cuts)
    for i, part in enumerate(parts):
        if not any(p.requires_grad for p in part.parameters()):
            where = (f"before cut '{cuts[0]}'" if i == 0 else f"after cut '{cuts[i - 1]}'")
            raise UserError(f"--model {spec}: the part {where} (blocks {', '.join(part.names)}) "
                            "has no trainable parameters, and each party trains its part; "
                            "cut after a block with weights")
    if input_shape is None:
        return
    with torch.random.fork_rng(devices=[]):   # dropout draws: the run's numbers stay the same
        try:
            feats: Any = {"x": torch.zeros([2, *input_shape])}
            for part in parts:
                out = part(feats)
                feats = {k: (v.detach().requires_grad_() if torch.is_tensor(v)
                             and v.is_floating_point() else v) for k, v in out.items()}
            loss = feats["x"].float().sum()
            loss.backward()
        except Exception as e:
            hint = " (a block modifies the received cut tensor in place: use out-of-place " \
                "ops, e.g. relu() not relu_())" if "in-place" in str(e) else ""
            raise UserError(f"--model {spec}: a training step across cut(s) "
                            f"{', '.join(cuts)} fails: {_line(e)}{hint}") from None
        finally:
            model.zero_grad(set_to_none=True)


def build_user_model(spec: str, *, num_classes: int | None = None,
                     input_shape: tuple[int, ...] | None = None,
                     num_features: int | None = None, **_: object) -> SplitModel:
    """Build and check the model named by `spec` (see the module docstring) as a SplitModel."""
    factory = _load_factory(spec)
    obj = _call(factory, spec, {"num_classes": num_classes, "input_shape": input_shape,
                                "num_features": num_features})
    if isinstance(obj, SplitModel):
        model = obj
    else:
        if input_shape is None:
            raise UserError(f"--model {spec}: graph datasets need a factory returning "
                            f"slsec.data.models.SplitModel (blocks that take dicts of tensors)")
        model = SplitModel(spec, [(n, Block(m)) for n, m in as_blocks(obj, spec)])
    key = (spec, *_file_version(spec.rpartition(":")[0]), num_classes, input_shape)
    if key not in _CHECKED:
        _check_output(model, spec, num_classes, input_shape)
        _CHECKED.add(key)
    return model


def fingerprint(spec: str) -> str:
    """What the model's code is (for cache keys): a hash of its source file ('' for built-in
    names; in-memory objects have keys unique to their process)."""
    where = spec.rpartition(":")[0]
    if not where or spec.startswith(OBJECT):
        return ""
    path = Path(where).expanduser() if where.endswith(".py") else \
        Path(getattr(_import_module(where), "__file__", "") or "")
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""
    except OSError:
        return ""


def as_model_spec(model: Any) -> str | None:
    """The --model text for the Python API's `model=`: a name or spec as given, or an
    nn.Module / factory kept for this process."""
    if model is None or isinstance(model, str):
        return model
    if isinstance(model, nn.Module) or callable(model):
        return register_object(model)
    raise UserError(f"model= must be a name, a 'file.py:factory' spec, an nn.Module or a "
                    f"factory, got {type(model).__name__}")


MODEL_SPECS.register("factory", build_user_model)
