"""Name -> builder registries (timm style), so tools can list what exists by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class Registry(dict):
    """A named collection of builders with one uniform signature."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, fn: F) -> F:
        self[fn.__name__] = fn
        return fn

    def get_builder(self, name: str) -> Callable:
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self))}")
        return self[name]


BACKBONES = Registry("backbone")
HEADS = Registry("head")
