"""Each architecture family's export: one module per family, named as the family.

A module here marks the function that turns a moectl model of its family into the transformers
model `moectl export` saves with `@exporter("<family name>")` (moectl.interop.exporters):
`gpt2` custom code; `llama` a native transformers MoE class where exact, else custom code. Every
module of this package is imported when it is, so a new family's export is its module here and
nothing else: no import line to add.
"""

from __future__ import annotations

import importlib
import pkgutil

from moectl.interop.exporters import REGISTERED, Exporter


def _exporters() -> dict[str, Exporter]:
    """Every module of this package imported, so each registers its family's exporter."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(REGISTERED)


EXPORTERS = _exporters()
