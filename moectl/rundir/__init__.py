"""The run directory (`moectl train --run-dir`): its files, their typed records, and who writes.

This package is the one place that knows the layout (DESIGN.md section 4). Each module has one
job: `layout` names the files, `records` gives every record its pydantic shape, `kinds` tells
what kind of moectl folder a path is, `locate` finds a run's checkpoints, models, study and
evaluations, `reading` reads a run's config, run.json and logs, `summary` sums a run up for
`inspect`, and `writing` is the writer's lifecycle (lock, checks, start, append, truncate).
Training writes through it; analysis, the study and the CLI read through it. It imports neither
torch nor the training package, so reading a run stays cheap.
"""
