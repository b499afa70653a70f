"""A package's top-level names imported when first used (PEP 562's module ``__getattr__``): the
``etem`` command and ``import etem.simulate`` start at once, torch, pandas and abTEM loading only
for the names that need them."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_names(package: str, where: Mapping[str, str], namespace: dict[str, Any],
               computed: Mapping[str, Callable[[], Any]] | None = None) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: each name of ``where`` is taken from the
    submodule it maps to (``".api"``), each of ``computed`` from its function, when first asked
    for, and kept in the package's ``namespace`` (its ``globals()``)."""
    computed = dict(computed or {})

    def __getattr__(name: str) -> Any:
        if name in computed:
            value = computed[name]()
        elif name in where:
            value = getattr(importlib.import_module(where[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where) | set(computed))

    return __getattr__, __dir__
