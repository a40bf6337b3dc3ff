"""What the training tests share: a collapsing run's settings, a TensorBoard log reader, and the DDP
/ single-process balancing cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# No load balancing, no noise, a high learning rate: one expert takes over within 60 steps.
COLLAPSING = [
    "moe.enabled=true",
    "moe.last_n=1",
    "moe.n_experts=4",
    "moe.lb_coef=0",
    "moe.noise_std=0",
    "train.lr=0.03",
    "train.warmup_fraction=0",
    "train.max_steps=60",
    "train.router_log_every=2",
    "train.collapse.threshold=0.5",
    "train.collapse.stop=true",
]


@dataclass
class TensorBoardLog:
    """What a folder of event files holds, read back with TensorBoard's own reader."""

    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, list[tuple[int, int, int, bytes]]] = field(default_factory=dict)
    hparams: dict[str, object] = field(default_factory=dict)
    hparam_metrics: list[str] = field(default_factory=list)
    charts: dict[str, list[str]] = field(default_factory=dict)


def read_tensorboard(folder: Path) -> TensorBoardLog:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    log = TensorBoardLog()
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags["scalars"]:
            log.scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in tags["images"]:
            log.images.setdefault(tag, []).extend(
                (e.step, e.width, e.height, e.encoded_image_string) for e in acc.Images(tag)
            )
        for tag in tags["tensors"]:
            values = [tensor_util.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)]
            if tag == "custom_scalars__config__":
                layout = layout_pb2.Layout.FromString(values[-1].item())
                for category in layout.category:
                    for chart in category.chart:
                        log.charts[chart.title] = list(chart.multiline.tag)
            else:
                log.texts.setdefault(tag, []).extend(str(v.item(), "utf-8") for v in values)
        try:
            hparams = acc.PluginTagToContent("hparams")
        except KeyError:
            continue
        start = plugin_data_pb2.HParamsPluginData.FromString(
            hparams["_hparams_/session_start_info"]
        ).session_start_info
        for key, value in start.hparams.items():
            log.hparams[key] = getattr(value, value.WhichOneof("kind"))
        experiment = plugin_data_pb2.HParamsPluginData.FromString(
            hparams["_hparams_/experiment"]
        ).experiment
        log.hparam_metrics += [info.name.tag for info in experiment.metric_infos]
    return log


def _rows(run_dir, name="metrics.jsonl", kind=None):
    rows = [json.loads(line) for line in (run_dir / name).read_text().splitlines()]
    return [r for r in rows if kind is None or r.get("kind") == kind]


DDP = [
    "moe.enabled=true",
    "moe.last_n=1",
    "moe.n_experts=4",
    "moe.top_k=2",
    "moe.noise_std=0",
    "moe.lb_coef=0.5",
    "train.max_steps=3",
    "train.log_every=1",
    "train.eval_every=3",
]


# 2 ranks x 2 micro-batches of 2 rows each is the global batch of 8 rows that one process takes
# in one forward (same blocks: the sampler draws consecutive positions of one permutation).
SPLIT = ["moe.balance=global", "train.batch_size=4", "train.grad_accum=2"]


FULL = ["moe.balance=switch", "train.batch_size=8", "train.grad_accum=1"]
