"""What an export writes: the transformers class, why, and the hf_code/ files that ship with it.

Every family's `Family.export` returns one with the model it builds; `moectl export` copies its
code files, the config.json provenance records its base config, and the model card states its
reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

HF_CODE = Path(__file__).parent / "hf_code"
DENSE_REASON = "a dense model is its base transformers class"


@dataclass(frozen=True)
class ExportPlan:
    """The class an export writes, why, and the hf_code/ files it ships: none for a transformers
    class (`native`), the configuration and modeling files of moectl's custom code otherwise."""

    architecture: str
    reason: str
    code_files: tuple[str, ...] = ()
    logits_difference: float | None = None  # measured against moectl by the export's self-check
    base_config: dict[str, Any] | None = None  # a Llama-family MoE's dense base, for reading back

    @property
    def native(self) -> bool:
        return not self.code_files
