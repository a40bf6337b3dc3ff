"""The classes a plug-in package's modules define (balancing schemes, architecture families), for
the tests that check each one registers itself."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType


def defined_subclasses(package: ModuleType, base: type) -> list[type]:
    """Every subclass of `base` that a module of `package` defines (not merely imports)."""
    defined = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        defined += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, base)
            and obj is not base
            and obj.__module__ == module.__name__
        ]
    return defined
