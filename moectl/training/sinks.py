"""Where metrics go besides the run directory's JSONL files (`moectl.rundir`): TensorBoard and
W&B when asked for.

The JSONL files are the contract other commands read; these sinks only mirror the scalar
metrics. Asking for a sink whose package is missing is a TrainingError before training starts.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Protocol

from moectl.config import RunConfig
from moectl.errors import TrainingError
from moectl.fs import write_text


class MetricSink(Protocol):
    """A mirror of the logged metrics (TensorBoard, W&B): scalars, plus text events."""

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def event(self, step: int, tag: str, text: str) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Scalars and text into `run_dir/tensorboard` for `tensorboard --logdir RUN_DIR`.

    A resumed run purges the events logged after its checkpoint, so the curves have no doubled
    steps from the try that was cut off.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self._writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=purge)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def event(self, step: int, tag: str, text: str) -> None:
        self._writer.add_text(tag, text, step)

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """A Weights & Biases run configured by `train.wandb`, named after the run config.

    Its id is kept in `run_dir/wandb.json`, so a resumed run continues the same W&B run and a
    fresh start in the same directory begins a new one. Text events go to a `collapse/events`
    table that grows with each event.
    """

    def __init__(self, run_dir: Path, config: RunConfig, resume_step: int | None = None) -> None:
        import wandb

        settings = config.train.wandb
        id_file = run_dir / WANDB_ID_FILE
        run_id = None
        if resume_step is not None and id_file.is_file():
            run_id = json.loads(id_file.read_text(encoding="utf-8")).get("id")
        self._wandb = wandb
        self._run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            tags=settings.tags or None,
            mode=settings.mode,
            name=config.name,
            dir=str(run_dir),
            config=config.model_dump(mode="json"),
            id=run_id,
            resume="allow" if run_id else None,
        )
        if run_id is None:
            write_text(id_file, json.dumps({"id": self._run.id}) + "\n")
        self._events: list[list[Any]] = []

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def event(self, step: int, tag: str, text: str) -> None:
        self._events.append([step, text])
        table = self._wandb.Table(columns=["step", "event"], data=self._events)
        self._run.log({f"{tag}/events": table}, step=step)

    def close(self) -> None:
        self._run.finish()


TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb.json"
TRACKING_INSTALL = 'pip install "moectl[tracking]"'
_SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_sinks(names: list[str]) -> None:
    """A TrainingError with the install command for any requested sink that is not installed."""
    missing = [name for name in names if importlib.util.find_spec(_SINK_PACKAGES[name]) is None]
    if missing:
        raise TrainingError(
            f"metric sink(s) {', '.join(missing)} requested in train.sinks but not installed",
            hint=f"install them with: {TRACKING_INSTALL} (or drop them from train.sinks)",
        )


def build_sinks(
    config: RunConfig, run_dir: Path, resume_step: int | None = None
) -> list[MetricSink]:
    """The optional sinks the config asks for (call `check_sinks` first); `resume_step` is the
    checkpoint step a resumed run continues from."""
    return [
        TensorBoardSink(run_dir, resume_step)
        if name == "tensorboard"
        else WandbSink(run_dir, config, resume_step)
        for name in config.train.sinks
    ]


def log_row(sink: MetricSink, kind: str, row: dict[str, Any]) -> None:
    """Mirror one metrics.jsonl (`train`/`eval`) or routing.jsonl (`routing`) row to a sink."""
    sink.log(row["step"], sink_scalars(kind, row))
    text = collapse_text(row) if kind == "routing" else None
    if text is not None:
        sink.event(row["step"], "collapse", text)


def sink_scalars(kind: str, row: dict[str, Any]) -> dict[str, float]:
    """A row's numbers under stable names.

    train/eval rows: `<kind>/<field>` and `<kind>/domain_loss/<domain>` (also domain_ppl).
    routing rows, per MoE layer L: `routing/layer_L/entropy`, `routing/layer_L/max_fraction`
    (the busiest expert's share), `routing/layer_L/nmi` (NMI(domain; expert) of the row's
    counts; the step-0 row is the init router), `routing/layer_L/expert_E` (share of the top-k
    assignments),
    `routing/layer_L/<domain>/expert_E` and `routing/layer_L/<domain>/entropy`,
    `routing/layer_L/balance/<key>` (the balancing scheme's state: bias_min, bias_max, f_i); and
    `collapse/warning`, `collapse/consecutive`, `collapse/stop` (0/1 markers and the count).
    """
    if kind != "routing":
        return {f"{kind}/{key}": value for key, value in _flat_numbers(row).items()}
    flat: dict[str, float] = {}
    for layer, stats in row["layers"].items():
        prefix = f"routing/layer_{layer}"
        flat[f"{prefix}/entropy"] = float(stats["entropy"])
        flat[f"{prefix}/max_fraction"] = float(stats["max_fraction"])
        if stats.get("nmi") is not None:
            flat[f"{prefix}/nmi"] = float(stats["nmi"])
        flat.update(_experts(prefix, stats["fractions"]))
        for domain, fractions in stats["domain_fractions"].items():
            flat.update(_experts(f"{prefix}/{domain}", fractions))
        for domain, entropy in stats["domain_entropy"].items():
            flat[f"{prefix}/{domain}/entropy"] = float(entropy)
        for key, value in stats.get("balance", {}).items():
            flat[f"{prefix}/balance/{key}"] = float(value)
    collapse = row.get("collapse") or {}
    for key in ("warning", "consecutive", "stop"):
        if key in collapse:
            flat[f"collapse/{key}"] = float(collapse[key])
    return flat


def collapse_text(row: dict[str, Any]) -> str | None:
    """One sentence for a routing row that carries a collapse warning, else None."""
    collapse = row.get("collapse") or {}
    if not collapse.get("warning"):
        return None
    shares = ", ".join(
        f"layer {layer} {row['layers'][str(layer)]['max_fraction']:.0%}"
        for layer in collapse["layers"]
    )
    stop = "; the run stops" if collapse.get("stop") else ""
    return (
        f"step {row['step']}: collapse warning, busiest expert {shares} "
        f"({collapse['consecutive']} consecutive){stop}"
    )


def _experts(prefix: str, fractions: list[float]) -> dict[str, float]:
    return {f"{prefix}/expert_{e}": float(share) for e, share in enumerate(fractions)}


def _flat_numbers(row: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics row, flattened (domain_loss.code -> domain_loss/code)."""
    flat: dict[str, float] = {}
    for key, value in row.items():
        if key in ("kind", "step", "time"):
            continue
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": float(v) for k, v in value.items() if v is not None})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat
