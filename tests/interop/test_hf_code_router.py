"""The exported modeling files (one per family) each carry moectl's routing (an export must
stand alone), so the copies are checked here: their router code is the same text."""

from __future__ import annotations

import ast

import pytest

from moectl.interop.plan import HF_CODE

# Every family's modeling file (a new family's too), each compared with GPT-2's.
FILES = sorted(path.name for path in HF_CODE.glob("modeling_*.py"))
# Everything that decides which experts a token goes to and with what weight, and the LB loss.
ROUTER_CODE = (
    "router_scores",
    "MoectlRouter.forward",
    "MoectlSparseMoeBlock.forward:routing",
    "load_balancing_loss",
)


def definitions(name: str) -> dict[str, str]:
    """Source text of each top-level function and class method of an hf_code file, and the
    routing lines of the MoE block's forward (up to the experts' call)."""
    source = (HF_CODE / name).read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = ast.get_source_segment(source, node)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = ast.get_source_segment(source, item)
    forward = found["MoectlSparseMoeBlock.forward"]
    found["MoectlSparseMoeBlock.forward:routing"] = forward[: forward.index("self.experts(")]
    return found


@pytest.mark.parametrize("file", [name for name in FILES if "gpt2" not in name])
@pytest.mark.parametrize("name", ROUTER_CODE)
def test_every_modeling_file_routes_with_gpt2s_code(file: str, name: str) -> None:
    gpt2 = definitions("modeling_moectl_gpt2_moe.py")
    assert len(FILES) >= 2 and definitions(file)[name] == gpt2[name]
    assert "logits" in gpt2[name]  # the definition that was compared is the routing one
