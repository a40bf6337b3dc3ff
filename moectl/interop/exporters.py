"""The registry of each architecture family's export, by the family's name.

A family's interop module (moectl.interop.families.<name>) marks the function that turns a
moectl model of that family into the transformers model `moectl export` saves with
`@exporter(<family name>)`. The model layer knows nothing of exports: `moectl.interop.families`
imports every family's interop module, and `moectl.interop.export` looks the function up in its
`EXPORTERS` by the model's family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moectl.config import MoEConfig
from moectl.interop.plan import ExportPlan
from moectl.model.arch import FAMILIES

# (model, its MoE settings or None, its MoE layers) -> (the model to save, the plan that chose it)
Exporter = Callable[[Any, "MoEConfig | None", list[int]], tuple[Any, ExportPlan]]
# Every registered exporter by its family's name; `exporter` fills it (families.EXPORTERS).
REGISTERED: dict[str, Exporter] = {}


def exporter(family_name: str) -> Callable[[Exporter], Exporter]:
    """Function decorator: the export of the family named `family_name` (a key of FAMILIES)."""
    if family_name not in FAMILIES:
        raise TypeError(f"no architecture family is named '{family_name}'")

    def mark(function: Exporter) -> Exporter:
        if REGISTERED.get(family_name, function) is not function:
            raise TypeError(f"two exporters for the '{family_name}' family")
        REGISTERED[family_name] = function
        return function

    return mark
