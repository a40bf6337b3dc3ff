"""Collapse detection (DESIGN.md section 2): one expert taking most of a layer's assignments.

The detector sees one routing row at a time; a warning is any layer whose busiest expert holds
more than `threshold` of the assignments, and `patience` consecutive warnings make a collapse.
Its state travels in the trainer checkpoint so a resumed run counts on where it stopped.
"""

from __future__ import annotations

from typing import Any

from moectl.config import CollapseConfig
from moectl.rundir.records import CollapseEvent, CollapseFlag


class CollapseDetector:
    """Counts consecutive over-threshold router-log steps and decides when to stop."""

    def __init__(self, config: CollapseConfig) -> None:
        self.config = config
        self.consecutive = 0
        self.events: list[CollapseEvent] = []

    def update(self, step: int, max_fractions: dict[int, float]) -> CollapseFlag:
        """Judge one routing row: `max_fractions` maps layer -> busiest expert's share."""
        threshold = self.config.threshold
        over = sorted(layer for layer, share in max_fractions.items() if share > threshold)
        if not over:
            self.consecutive = 0
            return CollapseFlag()
        self.consecutive += 1
        stop = self.config.stop and self.consecutive >= self.config.patience
        self.events.append(
            CollapseEvent(
                step=step,
                layers=over,
                max_fraction={str(layer): max_fractions[layer] for layer in over},
                consecutive=self.consecutive,
                stop=stop,
            )
        )
        return CollapseFlag(warning=True, layers=over, consecutive=self.consecutive, stop=stop)

    def state_dict(self) -> dict[str, Any]:
        return {
            "consecutive": self.consecutive,
            "events": [event.model_dump() for event in self.events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive = int(state["consecutive"])
        self.events = [CollapseEvent.model_validate(event) for event in state["events"]]
