"""Where plug-ins live, and their declarations read from source without importing them.

Plug-ins are the modules of the `slsec.protocols`, `slsec.attacks` and `slsec.defenses`
packages, plus any file (or folder of files) named in the SLSEC_PLUGINS environment variable
(os.pathsep-separated). A plug-in class registers with `@PROTOCOLS.register("name")` (or
ATTACKS, DEFENSES) and declares its parameters as a class attribute `params = (Param(...),)`;
defenses also declare `point` and `protocols`. `declarations()` reads all of that with `ast`
(literals only; module-level constants may be named, and so may the constants a plug-in
imports from its package's base module, e.g. a parameter two protocols share), so `slsec list`,
`--help` and the config never wait for torch. `load_extra()` imports the SLSEC_PLUGINS files
so they register.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slsec.params import Param

KINDS = {"PROTOCOLS": "protocol", "ATTACKS": "attack", "DEFENSES": "defense"}
PACKAGES = ("slsec.protocols", "slsec.attacks", "slsec.defenses")
ENV = "SLSEC_PLUGINS"


@dataclass(frozen=True)
class Declared:
    """One registered plug-in as its source declares it."""

    kind: str                       # protocol | attack | defense
    name: str
    params: tuple[Param, ...]
    attrs: dict[str, Any]           # other literal class attributes (point, protocols, ...)
    path: str


class _NotLiteral(Exception):
    pass


_CALLS = {"Param": Param, "frozenset": frozenset, "tuple": tuple, "set": set, "dict": dict}


def _eval(node: ast.AST, env: dict[str, Any]) -> Any:
    """A literal expression, Param(...) / frozenset(...) calls and names bound to literals."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Set):
        return frozenset(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_eval(k, env): _eval(v, env) for k, v in zip(node.keys, node.values)
                if k is not None}
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, env)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _eval(node.left, env) | _eval(node.right, env)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _CALLS):
        args = [_eval(a, env) for a in node.args]
        kwargs = {k.arg: _eval(k.value, env) for k in node.keywords if k.arg}
        return _CALLS[node.func.id](*args, **kwargs)
    raise _NotLiteral


def _assigns(body: list[ast.stmt], env: dict[str, Any]) -> dict[str, Any]:
    """name -> value of the simple literal assignments in `body` (others are skipped)."""
    out: dict[str, Any] = {}
    for stmt in body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                out[target.id] = _eval(value, {**env, **out})
            except (_NotLiteral, TypeError, ValueError, KeyError):
                pass
    return out


def _registration(cls: ast.ClassDef) -> tuple[str, str] | None:
    """(kind, name) of `@KIND.register("name")` on a class, if it has one."""
    for d in cls.decorator_list:
        if (isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
                and d.func.attr == "register" and isinstance(d.func.value, ast.Name)
                and d.func.value.id in KINDS and d.args and isinstance(d.args[0], ast.Constant)):
            return KINDS[d.func.value.id], str(d.args[0].value)
    return None


@functools.lru_cache(maxsize=None)
def _base_constants(package: str) -> dict[str, Any]:
    """The literal module-level constants of a plug-in package's base module."""
    path = _package_folder(package) / "base.py"
    return _assigns(ast.parse(path.read_text(encoding="utf-8")).body, {})


def _imported(tree: ast.Module) -> dict[str, Any]:
    """The literal constants `from slsec.<package>.base import ...` brings into a plug-in."""
    env: dict[str, Any] = {}
    bases = {f"{package}.base": package for package in PACKAGES}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module in bases:
            consts = _base_constants(bases[stmt.module])
            env.update({a.asname or a.name: consts[a.name]
                        for a in stmt.names if a.name in consts})
    return env


def read_file(path: Path) -> list[Declared]:
    """The plug-ins one source file registers, with their declarations."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imported = _imported(tree)
    env = {**imported, **_assigns(tree.body, imported)}
    out = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and (reg := _registration(node)):
            attrs = _assigns(node.body, env)
            params = tuple(attrs.pop("params", ()))
            out.append(Declared(reg[0], reg[1], params, attrs, str(path)))
    return out


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)   # imports only the parent (slsec), not the package
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0])


def _package_files(package: str) -> list[Path]:
    folder = _package_folder(package)
    return sorted(p for p in folder.glob("*.py") if p.name not in ("__init__.py", "base.py"))


def extra_files() -> list[Path]:
    """The plug-in files named by SLSEC_PLUGINS (files, or every .py file of a folder)."""
    files: list[Path] = []
    for entry in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        p = Path(entry)
        files += sorted(p.glob("*.py")) if p.is_dir() else [p]
    return files


@functools.lru_cache(maxsize=None)
def _declarations(extra: tuple[str, ...]) -> tuple[Declared, ...]:
    files = [f for pkg in PACKAGES for f in _package_files(pkg)] + [Path(e) for e in extra]
    return tuple(d for f in files for d in read_file(f))


def declarations(kind: str | None = None) -> list[Declared]:
    """Every declared plug-in (of `kind`), built-ins first, in file order."""
    found = _declarations(tuple(str(f) for f in extra_files()))
    return [d for d in found if kind is None or d.kind == kind]


def import_all(package: str, path: Any) -> None:
    """Import every module of a plug-in package (its registrations run): built-in plug-ins
    are found like the user's, by their file, with no list to edit."""
    import pkgutil
    for info in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{info.name}")


def load_extra() -> None:
    """Import the SLSEC_PLUGINS files once, so their classes register."""
    for path in extra_files():
        name = "slsec_plugin_" + path.stem.replace("-", "_")
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
