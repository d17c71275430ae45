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

A user's plug-in file that cannot be used (missing, not a regular file, not UTF-8 text, a
syntax error, a declaration without the attributes its kind needs, a name a built-in already
has, a parameter named like a core option) is left out of the declarations and recorded:
`problems()` lists one line per file, `check()` raises the first as a UserError (every command
calls it when it builds its config), and `slsec list` shows them.

Over 300 lines: the source reader (literal evaluation) and the checks of a user's file are
one concern, reading declarations without importing; split, each would import the other.
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

from slsec.errors import UserError
from slsec.params import Param, _public

KINDS = {"PROTOCOLS": "protocol", "ATTACKS": "attack", "DEFENSES": "defense"}
PACKAGES = ("slsec.protocols", "slsec.attacks", "slsec.defenses")
ENV = "SLSEC_PLUGINS"
RESERVED: set[str] = set()   # the core's option names, filled in by slsec.config (no plug-in
                             # parameter may take one)
MAX_PLUGIN_BYTES = 1 << 20   # a plug-in is one source file, not a data set
# class attributes a plug-in of each kind must declare (the others have defaults in its base)
REQUIRED = {"attack": ("roles", "methods", "default_order"),
            "defense": ("point", "protocols"), "protocol": ()}


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
    return _read_tree(tree, path)


def _read_tree(tree: ast.Module, path: Path) -> list[Declared]:
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
        found = sorted(p.glob("*.py")) if p.is_dir() else [p]
        files += found or [p]   # an empty folder: named as a problem, never silently nothing
    return files


def _read_user_file(path: Path) -> list[Declared]:
    """read_file for a user's plug-in: every problem is a UserError naming the file."""
    if not path.exists():
        raise UserError(f"{ENV}: plug-in {path} does not exist")
    if path.is_dir():
        raise UserError(f"{ENV}: plug-in folder {path} holds no .py files")
    if not path.is_file():
        raise UserError(f"{ENV}: plug-in {path} is not a regular file (a Python source file "
                        "or a folder of them)")
    try:
        data = path.read_bytes()[:MAX_PLUGIN_BYTES + 1]
    except OSError as e:
        raise UserError(f"{ENV}: plug-in {path} cannot be read: {e.strerror or e}") from None
    if len(data) > MAX_PLUGIN_BYTES:
        raise UserError(f"{ENV}: plug-in {path} is larger than 1 MiB; a plug-in is one "
                        "Python source file")
    try:
        tree = ast.parse(data.decode("utf-8"), filename=str(path))
    except UnicodeDecodeError:
        raise UserError(f"{ENV}: plug-in {path} is not UTF-8 text (a Python source file)") \
            from None
    except (SyntaxError, ValueError) as e:
        line = f" at line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise UserError(f"{ENV}: plug-in {path} is not valid Python{line}: "
                        f"{getattr(e, 'msg', None) or e}") from None
    found = _read_tree(tree, path)
    if not found:
        raise UserError(f"{ENV}: plug-in {path} registers nothing (a class decorated with "
                        "@PROTOCOLS.register, @ATTACKS.register or @DEFENSES.register)")
    return found


def _check_user(found: list[Declared], known: list[Declared], reserved: frozenset[str]) -> None:
    """A user's declarations: the attributes their kind needs, no name or core option taken."""
    for d in found:
        missing = [a for a in REQUIRED[d.kind] if a not in d.attrs]
        if missing:
            raise UserError(f"{ENV}: plug-in {d.path}: {d.kind} '{d.name}' does not declare "
                            f"{', '.join(missing)} (class attributes, literals)")
        if d.kind == "attack" and not _attack_shape(d.attrs):
            raise UserError(f"{ENV}: plug-in {d.path}: attack '{d.name}' must declare roles "
                            "{protocol: role}, methods {method: frozenset(knowledge)} and "
                            "default_order (a tuple of those methods)")
        if d.kind == "defense" and not (isinstance(d.attrs["point"], str) and isinstance(
                d.attrs["protocols"], frozenset | tuple)):
            raise UserError(f"{ENV}: plug-in {d.path}: defense '{d.name}' must declare point "
                            "(a string) and protocols (a frozenset of protocol names)")
        if any(k.kind == d.kind and k.name == d.name for k in known):
            raise UserError(f"{ENV}: plug-in {d.path}: {d.kind} '{d.name}' is already "
                            "registered; choose another name")
        for p in d.params:
            if not isinstance(p, Param):
                raise UserError(f"{ENV}: plug-in {d.path}: {d.kind} '{d.name}': params must "
                                "be Param(...) declarations")
            if p.name in reserved:
                raise UserError(f"{ENV}: plug-in {d.path}: parameter '{p.name}' of {d.kind} "
                                f"'{d.name}' clashes with the core option {p.flag}")
            other = next((k for k in known for q in k.params
                          if q.name == p.name and _public(q) != _public(p)), None)
            if other is not None:
                raise UserError(f"{ENV}: plug-in {d.path}: parameter '{p.name}' of {d.kind} "
                                f"'{d.name}' differs from the one {other.kind} '{other.name}' "
                                "declares; rename it or declare it the same way")
        known.append(d)


def _attack_shape(a: dict[str, Any]) -> bool:
    roles, methods, order = a["roles"], a["methods"], a["default_order"]
    return (isinstance(roles, dict) and all(isinstance(v, str) for v in roles.values())
            and isinstance(methods, dict) and bool(methods)
            and all(isinstance(v, frozenset) for v in methods.values())
            and isinstance(order, tuple) and bool(order) and set(order) <= set(methods)
            and set(a.get("contenders", ())) <= set(methods))


@functools.lru_cache(maxsize=None)
def _declarations(extra: tuple[str, ...], reserved: frozenset[str]
                  ) -> tuple[tuple[Declared, ...], tuple[str, ...]]:
    found = [d for pkg in PACKAGES for f in _package_files(pkg) for d in read_file(f)]
    problems: list[str] = []
    for e in extra:
        try:
            mine = _read_user_file(Path(e))
            _check_user(mine, list(found), reserved)
        except UserError as err:
            problems.append(str(err))
            continue
        found += mine
    return tuple(found), tuple(problems)


def _found() -> tuple[tuple[Declared, ...], tuple[str, ...]]:
    return _declarations(tuple(str(f) for f in extra_files()), frozenset(RESERVED))


def declarations(kind: str | None = None) -> list[Declared]:
    """Every declared plug-in (of `kind`), built-ins first, in file order (a broken user
    plug-in is left out: see problems())."""
    found = _found()[0]
    return [d for d in found if kind is None or d.kind == kind]


def problems() -> list[str]:
    """One line per SLSEC_PLUGINS file that cannot be used (naming the file and why)."""
    return list(_found()[1])


def check() -> None:
    """Refuse to run with a broken plug-in: its first problem, as a UserError."""
    found = problems()
    if found:
        raise UserError(found[0])


def import_all(package: str, path: Any) -> None:
    """Import every module of a plug-in package (its registrations run): built-in plug-ins
    are found like the user's, by their file, with no list to edit."""
    import pkgutil
    for info in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{info.name}")


def load_extra() -> None:
    """Import the SLSEC_PLUGINS files once, so their classes register; a file that fails (or
    exits) at import is a UserError naming it, as is one that registers other than it declares."""
    check()
    for path in extra_files():
        name = "slsec_plugin_" + path.stem.replace("-", "_").replace(".", "_")
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserError(f"{ENV}: plug-in {path} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except UserError as e:
            del sys.modules[name]
            raise UserError(f"{ENV}: plug-in {path} failed at import: {e}") from None
        except (Exception, SystemExit, KeyboardInterrupt) as e:   # its own bug: one line
            del sys.modules[name]
            what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise UserError(f"{ENV}: plug-in {path} failed at import ({what})") from None
