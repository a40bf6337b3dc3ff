"""The CPU-scale reference study as one resumable command (`moectl quickstart`)."""

from moectl.study.experiment.training import StudyInterrupted
from moectl.study.pipeline import StageOutcome, StudyResult, run_study
from moectl.study.plan import PLANS, VARIANTS, StudyPlan, plan_configs

__all__ = [
    "PLANS",
    "VARIANTS",
    "StageOutcome",
    "StudyInterrupted",
    "StudyPlan",
    "StudyResult",
    "plan_configs",
    "run_study",
]
