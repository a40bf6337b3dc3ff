"""The names of the files and folders moectl writes (DESIGN.md section 4): a run directory's
config.yaml, run.json, logs, checkpoints/step-N and best/, a model's model.json, a corpus's
manifest.json, a study's study.json, runs/ and eval/, and an experiment's experiment.json,
report.md and report.json (`moectl experiment`). Every other module names them through here."""

from __future__ import annotations

CONFIG_NAME = "config.yaml"
RUN_INFO_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
ROUTING_NAME = "routing.jsonl"
BEST_DIR = "best"
CHECKPOINTS = "checkpoints"
STATE_NAME = "trainer_state.pt"
MODEL_META = "model.json"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".moectl.lock"
EVAL_DIR = "eval"
STUDY_STATE = "study.json"
STUDY_RUNS = "runs"
STUDY_EVAL = "eval"
EXPERIMENT_STATE = "experiment.json"
EXPERIMENT_REPORT_MD = "report.md"
EXPERIMENT_REPORT_JSON = "report.json"
