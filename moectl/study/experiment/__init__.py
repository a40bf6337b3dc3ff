"""A controlled comparison of arms over seeds from one file (`moectl experiment FILE.yaml`):
spec (the file), configs (the runs it resolves to), layout (the folder, its checks and each
run's status), evaluation, table (the report) and run (the local launcher)."""

from moectl.study.experiment.configs import ExperimentPlan, PlannedRun, plan_experiment, run_name
from moectl.study.experiment.layout import ExperimentLayout, RunStatus
from moectl.study.experiment.run import ExperimentResult, RunOutcome, run_experiment
from moectl.study.experiment.spec import ExperimentSpec, load_experiment
from moectl.study.experiment.table import ExperimentTable, markdown

__all__ = [
    "ExperimentLayout",
    "ExperimentPlan",
    "ExperimentResult",
    "ExperimentSpec",
    "ExperimentTable",
    "PlannedRun",
    "RunOutcome",
    "RunStatus",
    "load_experiment",
    "markdown",
    "plan_experiment",
    "run_experiment",
    "run_name",
]
