"""Small explicit name -> object registries (one per kind of plug-in)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from slsec.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes or factories; refuses duplicates; unknown names are user errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; without `obj`, return a decorator."""
        if obj is None:
            return lambda o: self.register(name, o)  # type: ignore[return-value]
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The object registered as `name`, or a UserError listing the valid names."""
        try:
            return self._items[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))
