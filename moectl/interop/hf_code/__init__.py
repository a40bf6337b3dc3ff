"""Standalone transformers code copied next to exported MoE weights (no moectl imports)."""
