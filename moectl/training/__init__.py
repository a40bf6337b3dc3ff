"""Training loop, checkpoints and exact resume, metric sinks, collapse detection, DDP."""
