"""The interop wing: a moectl model as a standard transformers directory, and back.

`export` (what `moectl export` runs) and `model_card` (its README.md) sit on top; each family's
export is its module in `families/` (`gpt2`: custom code; `llama`: a native transformers MoE
class where exact, else custom code), registered with `exporters.exporter` and found without a
list, returning a `plan.ExportPlan`;
`hf_format` reads an exported or save_pretrained directory back; `hf_code/` is the standalone
configuration and modeling code copied beside exported MoE weights.
"""
