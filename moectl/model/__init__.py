"""Routed experts for GPT-2: router, MoE layer, upcycling, model factory and artifacts."""
