"""Evaluation and routing analysis: per-domain loss, routing fractions, specialization."""
