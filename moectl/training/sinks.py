"""Where metrics go besides the run directory's JSONL files (`moectl.rundir`): TensorBoard and
W&B when asked for.

The JSONL files are the contract other commands read; these sinks mirror them: every scalar,
the collapse warnings as text, the routing heatmap as an image at every router-log step, and
the run's config (TensorBoard hparams and text, W&B config). TensorBoard also gets a
custom-scalar layout with one chart per MoE layer holding all its expert shares. Asking for a
sink whose package is missing is a TrainingError before training starts.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from moectl.config import RunConfig, dump_yaml, flatten
from moectl.errors import TrainingError
from moectl.fs import write_text


class MetricSink(Protocol):
    """A mirror of the logged metrics (TensorBoard, W&B): scalars, text events and images."""

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def event(self, step: int, tag: str, text: str) -> None: ...

    def image(self, step: int, tag: str, pixels: np.ndarray) -> None: ...

    def close(self) -> None: ...


HEATMAP_TAG = "routing/heatmap"
CONFIG_TAG = "config"
_EXPERT_TAG = re.compile(r"^routing/layer_(\d+)/expert_\d+$")


class TensorBoardSink:
    """Scalars, text and images into `log_dir` for `tensorboard --logdir`.

    A new run starts with its config, as hparams (the HPARAMS tab, tied to eval/loss and
    train/loss) and as YAML text. A resumed run (`resume_step`) purges the events logged after
    its checkpoint, so the curves have no doubled steps from the try that was cut off.
    """

    def __init__(self, log_dir: Path, config: RunConfig, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)
        self._layers: set[int] = set()
        if resume_step is None:
            self._write_config(config)

    def _write_config(self, config: RunConfig) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Only the metric names matter: the HPARAMS tab shows those tags' logged scalars.
        for summary in hparams(config_hparams(config), {"eval/loss": 0.0, "train/loss": 0.0}):
            self._writer.file_writer.add_summary(summary)
        self._writer.add_text(CONFIG_TAG, f"```yaml\n{dump_yaml(config)}```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)
        layers = {int(m.group(1)) for key in values if (m := _EXPERT_TAG.match(key))}
        if not layers <= self._layers:
            self._layers |= layers
            self._writer.add_custom_scalars(expert_layout(sorted(self._layers)))
        self._writer.flush()

    def event(self, step: int, tag: str, text: str) -> None:
        self._writer.add_text(tag, text, step)

    def image(self, step: int, tag: str, pixels: np.ndarray) -> None:
        self._writer.add_image(tag, pixels, step, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """A Weights & Biases run configured by `train.wandb`, named after the run config, with the
    config as `wandb.config` and the heatmaps as `wandb.Image`.

    With an `id_file` (a training run's `run_dir/wandb.json`) the W&B run id is kept there, so
    a resumed run continues the same W&B run and a fresh start in the same directory begins a
    new one. Text events go to a `collapse/events` table that grows with each event.
    """

    def __init__(
        self,
        folder: Path,
        config: RunConfig,
        resume_step: int | None = None,
        id_file: Path | None = None,
    ) -> None:
        import wandb

        settings = config.train.wandb
        run_id = None
        if resume_step is not None and id_file is not None and id_file.is_file():
            run_id = json.loads(id_file.read_text(encoding="utf-8")).get("id")
        self._wandb = wandb
        self._run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            tags=settings.tags or None,
            mode=settings.mode,
            name=config.name,
            dir=str(folder),
            config=config.model_dump(mode="json"),
            id=run_id,
            resume="allow" if run_id else None,
        )
        if run_id is None and id_file is not None:
            write_text(id_file, json.dumps({"id": self._run.id}) + "\n")
        self._events: list[list[Any]] = []

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def event(self, step: int, tag: str, text: str) -> None:
        self._events.append([step, text])
        table = self._wandb.Table(columns=["step", "event"], data=self._events)
        self._run.log({f"{tag}/events": table}, step=step)

    def image(self, step: int, tag: str, pixels: np.ndarray) -> None:
        self._run.log({tag: self._wandb.Image(pixels)}, step=step)

    def close(self) -> None:
        self._run.finish()
        # finish() may return before W&B's service has written the run file; teardown waits
        self._wandb.teardown()


TENSORBOARD_DIR = "tensorboard"
WANDB_ID_FILE = "wandb.json"
TRACKING_INSTALL = 'pip install "moectl[tracking]"'
_SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_sinks(names: list[str], requested_by: str = "train.sinks") -> None:
    """A TrainingError with the install command for any requested sink that is not installed;
    `requested_by` names where the user asked for it (train.sinks, or `moectl log --to`)."""
    missing = [name for name in names if importlib.util.find_spec(_SINK_PACKAGES[name]) is None]
    if missing:
        raise TrainingError(
            f"metric sink(s) {', '.join(missing)} requested by {requested_by} but not installed",
            hint=f"install them with: {TRACKING_INSTALL} (or drop them from {requested_by})",
        )


def build_sinks(
    config: RunConfig, run_dir: Path, resume_step: int | None = None
) -> list[MetricSink]:
    """The optional sinks the config asks for (call `check_sinks` first); `resume_step` is the
    checkpoint step a resumed run continues from."""
    return [
        TensorBoardSink(run_dir / TENSORBOARD_DIR, config, resume_step)
        if name == "tensorboard"
        else WandbSink(run_dir, config, resume_step, id_file=run_dir / WANDB_ID_FILE)
        for name in config.train.sinks
    ]


def log_row(sinks: list[MetricSink], kind: str, row: dict[str, Any]) -> None:
    """Mirror one metrics.jsonl (`train`/`eval`) or routing.jsonl (`routing`) row to the sinks;
    a routing row also becomes the heatmap image of that step (drawn once for all sinks)."""
    if not sinks:
        return
    scalars = sink_scalars(kind, row)
    text = collapse_text(row) if kind == "routing" else None
    has_domains = kind == "routing" and any(s["domain_fractions"] for s in row["layers"].values())
    pixels = routing_heatmap(row) if has_domains else None
    for sink in sinks:
        sink.log(row["step"], scalars)
        if text is not None:
            sink.event(row["step"], "collapse", text)
        if pixels is not None:
            sink.image(row["step"], HEATMAP_TAG, pixels)


def routing_heatmap(row: dict[str, Any]) -> np.ndarray:
    """The domain x expert heatmaps of one routing row as an (H, W, 3) image."""
    from moectl.viz.figures import figure_pixels, routing_row_heatmaps

    title = f"step {row['step']}: which experts each domain's tokens go to"
    return figure_pixels(routing_row_heatmaps(row, title))


def expert_layout(layers: list[int]) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard's custom-scalar layout: one chart per MoE layer with all its expert shares,
    and one per layer with its NMI(domain; expert)."""
    return {
        "routing": {
            f"layer {layer} expert shares": ["Multiline", [rf"routing/layer_{layer}/expert_\d+$"]]
            for layer in layers
        }
        | {"NMI(domain; expert)": ["Multiline", [r"routing/layer_\d+/nmi$"]]}
    }


def config_hparams(config: RunConfig) -> dict[str, bool | int | float | str]:
    """The run config as TensorBoard hparams: dotted keys; lists and unset values as text."""
    return {
        key: value if isinstance(value, bool | int | float | str) else json.dumps(value)
        for key, value in flatten(config.model_dump(mode="json")).items()
    }


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


def run_log_rows(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """A run's logged rows (metrics.jsonl, routing.jsonl) as (kind, row), in step order, as
    training would have sent them; read whole first, so a damaged file is refused before any
    tracker is written. For `moectl log`: runs trained without a sink reach a tracker later."""
    from moectl.analysis.runs import load_run

    run = load_run(run_dir)
    rows = [("train", row) for row in run.train] + [("eval", row) for row in run.eval]
    rows += [("routing", row) for row in run.routing or []]
    rows.sort(key=lambda item: item[1]["step"])  # W&B takes steps in order only
    return rows


def send_rows(rows: list[tuple[str, dict[str, Any]]], sinks: list[MetricSink]) -> int:
    """Send `run_log_rows` to `sinks`; returns how many rows went."""
    for kind, row in rows:
        log_row(sinks, kind, row)
    return len(rows)
