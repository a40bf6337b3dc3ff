"""Test-only: hold one run's SLURM job at a checkpoint until the test cancels it.

tests/study/test_experiment_slurm.py cancels a job while it trains. A tiny run's last steps take
about two seconds, so a `scancel` that races them can arrive after the run has ended. With this
folder on PYTHONPATH and `MOECTL_TEST_HOLD=<run name>:<step>` in the environment the job
inherits from `sbatch`, that run's trainer, once it has saved checkpoint <step>, waits for the
SIGTERM that `scancel` sends, passes it to the trainer's own handler and returns: the trainer
then stops at this step boundary, its step-3 checkpoint already saved (the test asserts it).
"""

from __future__ import annotations

import os

HOLD = os.environ.get("MOECTL_TEST_HOLD")

if HOLD:
    import signal
    import time
    from pathlib import Path

    from moectl.training import saving

    _run, _step = HOLD.rsplit(":", 1)
    _save_checkpoint = saving.save_checkpoint

    def _held_save_checkpoint(session: saving.Session) -> None:
        _save_checkpoint(session)
        if Path(session.run_dir).name != _run or session.step != int(_step):
            return
        received: list[int] = []
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: object) -> None:
            received.append(signum)
            signal.signal(signal.SIGTERM, previous)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_term)
        while not received:
            time.sleep(0.05)

    saving.save_checkpoint = _held_save_checkpoint
