"""The router side of an evaluation: each MoE layer's controls (random gates drawn as the init
draws them, the init gate, the trained gate and selection bias), the per-document count tables of
every router recorded, and the specialization score those give (gate null, bias-corrected NMIs
and differences, the 2x2 cell, the probe)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.nmi_bias import corrected_difference, corrected_scores
from moectl.analysis.results import SpecializationScore, UnitCounts
from moectl.analysis.routing import LayerRouting

if TYPE_CHECKING:
    from moectl.analysis.controls import LayerControls
    from moectl.model.artifact import LoadedModel


def unit_tables(
    trained: LayerRouting,
    frozen: LayerRouting | None,
    init: LayerRouting | None,
    cell: LayerRouting | None,
    n_units: int,
    n_labels: int,
) -> UnitCounts:
    """The layer's per-document (U, E) count tables of every router recorded on its units."""

    def table(recorder: LayerRouting | None, first_choice: bool = False) -> list | None:
        if recorder is None:
            return None
        return recorder.block_table(n_units, n_labels, first_choice).sum(axis=1).tolist()

    return UnitCounts(
        trained=table(trained),
        first_choice=table(trained, first_choice=True),
        frozen_gate=table(frozen),
        init=table(init),
        trained_gate_on_init=table(cell),
    )


def router_scores(
    spec: SpecializationScore,
    tables: UnitCounts,
    strata: np.ndarray,
    control: LayerControls,
    options: EvaluationOptions,
) -> SpecializationScore:
    """The domain score with its router fields: the gate null, the bias-corrected NMIs and
    differences (trained - step-0, trained - frozen gate), the 2x2 cell, the probe and the
    per-document tables."""
    n_labels = control.n_labels
    corrected, baselines = corrected_scores(
        tables, strata, n_labels, options.n_bootstrap, options.seed
    )
    trained = np.asarray(tables.trained)
    frozen = np.asarray(tables.frozen_gate) if tables.frozen_gate is not None else None
    update: dict[str, Any] = {
        "gate_null": control.gate_null(trained, strata, frozen),
        "corrected": corrected,
        "probe": control.probe_score(),
        "unit_counts": tables,
    }
    if "init" in baselines:
        bias = baselines["trained"] - baselines["init"]
        update["emergent"] = corrected_difference(spec.emergent, bias)
    if "frozen_gate" in baselines:
        bias = baselines["trained"] - baselines["frozen_gate"]
        update["router_made"] = corrected_difference(spec.router_made, bias)
    if corrected.trained_gate_on_init is not None:  # its plug-in NMI, like the other cells'
        raw = corrected.trained_gate_on_init + baselines["trained_gate_on_init"]
        update["trained_gate_on_init_nmi"] = raw
    return spec.model_copy(update=update)


def layer_controls(
    model: Any,
    layers: dict[int, Any],
    init: LoadedModel | None,
    n_labels: int,
    options: EvaluationOptions,
) -> dict[int, LayerControls]:
    """Per MoE layer: random gates drawn as the init draws them (seeded per layer), the trained
    gate and learned selection bias (under a bias scheme) the gates choose with, and, with an
    init model, the layer's init gate."""
    from moectl.analysis.controls import LayerControls, draw_gates
    from moectl.model.routing import moe_layers

    init_layers = moe_layers(init.model) if init is not None else {}
    std = model.config.initializer_range
    return {
        index: LayerControls(
            layer=index,
            n_labels=n_labels,
            top_k=layer.top_k,
            random_gates=draw_gates(
                options.random_gates,
                layer.n_experts,
                layer.gate.weight.shape[1],
                std,
                options.seed + index,
                layer.granularity,
            ),
            frozen_gate=init_layers[index].gate.weight.detach().float()
            if index in init_layers
            else None,
            seed=options.seed,
            score=layer.gate.score,
            trained_gate=layer.gate.weight.detach().float(),
            selection_bias=layer.balance.selection_bias().detach().float()
            if layer.balance.selects_with_bias
            else None,
        )
        for index, layer in layers.items()
    }
