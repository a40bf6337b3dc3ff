"""The run directory (`moectl train --run-dir`): its files, their typed records, and who writes.

This module is the one place that knows the layout (DESIGN.md section 4): the names of
config.yaml, run.json, metrics.jsonl, routing.jsonl, checkpoints/step-N and best/, the pydantic
shape of every record in them, which checkpoint is the latest and which model a run means, what
kind of moectl folder a path is, and a run's summary. Training writes through it; analysis, the
study and the CLI read through it. It imports neither torch nor the training package, so reading
a run stays cheap.

One writer at a time: `lock_run_dir` holds an OS lock for as long as a run writes, and a second
writer is refused naming the holder's pid. Readers need no lock: config.yaml, run.json,
checkpoints and best/ are replaced atomically, and a torn last JSONL line is skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moectl.config import RunConfig, dump_yaml, flatten, read_yaml, validate
from moectl.errors import MoectlError, TrainingError
from moectl.fs import LockHeld, exclusive_lock, read_bytes, read_text, write_json, write_text
from moectl.version import __version__

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
_STEP_DIR = re.compile(r"^step-(\d+)$")

PPL_MAX_LOSS = 50.0
"""Perplexity is exp(loss) with the loss capped here (exp(50) ~ 5e21), so JSON stays finite."""


def perplexity(loss: float) -> float:
    """The one perplexity rule of every eval row, result and table."""
    return math.exp(min(loss, PPL_MAX_LOSS))


# --- records ------------------------------------------------------------------------------------


class EvalScores(BaseModel):
    """One evaluation's losses (nats/token) and perplexities, overall and per domain: the same
    structure in metrics.jsonl, model.json, TrainResult and the CLI."""

    loss: float
    ppl: float
    domain_loss: dict[str, float] = Field(default_factory=dict)
    domain_ppl: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def of(cls, loss: float, domain_loss: dict[str, float]) -> EvalScores:
        """Scores from the losses, with perplexities by `perplexity`."""
        return cls(
            loss=loss,
            ppl=perplexity(loss),
            domain_loss=domain_loss,
            domain_ppl={d: perplexity(v) for d, v in domain_loss.items()},
        )


class TrainRow(BaseModel):
    """A metrics.jsonl row for the train steps since the previous row (means over them)."""

    kind: Literal["train"] = "train"
    step: int
    tokens: int
    lr: float
    loss: float
    lm_loss: float
    lb_loss: float | None = None
    z_loss: float | None = None
    grad_norm: float
    tokens_per_s: float
    domain_loss: dict[str, float] = Field(default_factory=dict)
    time: float


class EvalRow(EvalScores):
    """A metrics.jsonl row for one evaluation of the fixed eval subset."""

    kind: Literal["eval"] = "eval"
    step: int
    lb_loss: float | None = None
    z_loss: float | None = None

    def scores(self) -> EvalScores:
        return EvalScores.model_validate(self.model_dump(include=set(EvalScores.model_fields)))


class LayerRoutingRow(BaseModel):
    """One MoE layer in a routing.jsonl row: shares of the top-k assignments (they sum to 1)."""

    fractions: list[float]
    domain_fractions: dict[str, list[float]] = Field(default_factory=dict)
    entropy: float
    domain_entropy: dict[str, float] = Field(default_factory=dict)
    max_fraction: float
    counts: list[list[int]] = Field(
        default_factory=list, description="domain x expert assignment counts (in domain order)"
    )
    nmi: float | None = Field(None, description="NMI(domain; expert) of those counts")
    balance: dict[str, float] = Field(
        default_factory=dict,
        description="the balancing scheme's state at the row's step: bias_min/bias_max (bias), "
        "f_i of the last step's global batch (global); empty for the others",
    )


class CollapseFlag(BaseModel):
    """The collapse detector's verdict on one routing row."""

    warning: bool = False
    layers: list[int] = Field(default_factory=list)
    consecutive: int = 0
    stop: bool = False


class RoutingRow(BaseModel):
    """A routing.jsonl row: per layer routing over the tokens since the previous row."""

    step: int
    layers: dict[str, LayerRoutingRow]
    collapse: CollapseFlag | None = Field(
        default_factory=CollapseFlag,
        description="None on the step-0 row: the init router, before any update, is no "
        "collapse check",
    )


class CollapseEvent(BaseModel):
    """One router-log step at which at least one layer was over the collapse threshold."""

    step: int
    layers: list[int]
    max_fraction: dict[str, float]
    consecutive: int
    stop: bool


def collapse_events(rows: list[RoutingRow]) -> list[CollapseEvent]:
    """The warnings in a routing log, one event per warning row."""
    return [
        CollapseEvent(
            step=row.step,
            layers=row.collapse.layers,
            max_fraction={
                str(k): row.layers[str(k)].max_fraction
                for k in row.collapse.layers
                if str(k) in row.layers
            },
            consecutive=row.collapse.consecutive,
            stop=row.collapse.stop,
        )
        for row in rows
        if row.collapse is not None and row.collapse.warning
    ]


class Amendment(BaseModel):
    """A setting changed on --resume (only RESUMABLE_KEYS may be), and from which step."""

    time: str
    step: int
    key: str
    old: Any
    new: Any


class Resume(BaseModel):
    time: str
    checkpoint: str


class RunInfo(BaseModel):
    """run.json: where the run's inputs came from, and every resume and amendment."""

    model_config = ConfigDict(extra="allow")

    created: str | None = None
    moectl_version: str | None = None
    data_dir: str = Field(description="absolute path of the corpus the run trains on")
    init_from: str | None = None
    domains: list[str] = Field(default_factory=list)
    resumes: list[Resume] = Field(default_factory=list)
    amendments: list[Amendment] = Field(default_factory=list)


Row = TypeVar("Row", bound=BaseModel)

# --- what a path is -----------------------------------------------------------------------------

Kind = Literal["corpus", "run", "checkpoint", "model", "export", "study"]
KIND_LABELS = {
    "study": "a quickstart study folder",
    "corpus": "a prepared corpus",
    "run": "a run directory",
    "checkpoint": "a training checkpoint",
    "model": "a model artifact",
    "export": "a transformers model directory",
}


def detect_kind(path: Path) -> Kind | None:
    """Which moectl folder `path` is (None for anything else): a corpus holds manifest.json, a
    run config.yaml beside run.json, metrics.jsonl or checkpoints/, a model model.json (a
    checkpoint also trainer_state.pt), an export (`moectl export`, or any transformers model
    directory) config.json, a study (`moectl quickstart --out`) its state file study.json."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / STUDY_STATE).is_file():
        return "study"
    if (path / MANIFEST_NAME).is_file():
        return "corpus"
    if (path / CONFIG_NAME).is_file() and (
        (path / RUN_INFO_NAME).is_file()
        or (path / METRICS_NAME).is_file()
        or (path / CHECKPOINTS).is_dir()
    ):
        return "run"
    if (path / MODEL_META).is_file():
        return "checkpoint" if (path / STATE_NAME).is_file() else "model"
    if (path / "config.json").is_file():
        return "export"
    return None


def describe_path(path: Path) -> str:
    """What is at `path`, in words, for messages that refuse to touch it."""
    path = Path(path)
    kind = detect_kind(path)
    if kind is not None:
        return KIND_LABELS[kind]
    if not path.exists():
        return "nothing"
    if not path.is_dir():
        return "a file"
    entries = sum(1 for _ in path.iterdir())
    return "an empty folder" if entries == 0 else f"a folder with {entries} entries"


# --- checkpoints and models ---------------------------------------------------------------------


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_NAME).is_file() and (child / MODEL_META).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def best_model(run_dir: Path) -> Path | None:
    """The run's best/ model artifact, if it has one yet."""
    best = Path(run_dir) / BEST_DIR
    return best if (best / MODEL_META).is_file() else None


def artifact_step(artifact: Path) -> int:
    """The training step recorded in a model artifact's model.json."""
    try:
        return int(json.loads((artifact / MODEL_META).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TrainingError(
            f"{artifact} has no readable {MODEL_META}",
            hint="resume from another checkpoint of the run",
        ) from None


def resolve_model(path: Path) -> tuple[Path, Path | None]:
    """(model artifact, run dir or None) for a run dir (best/, else its latest checkpoint) or a
    model artifact or checkpoint; a MoectlError for anything else."""
    path = Path(path)
    if not path.exists():
        raise MoectlError(
            f"{path} does not exist", hint="pass a run directory or a model artifact directory"
        )
    kind = detect_kind(path)
    if kind == "run":
        model = best_model(path) or latest_checkpoint(path)
        if model is None:
            raise MoectlError(
                f"run {path} has no saved model yet (no best/ and no checkpoints/step-N/)",
                hint="train longer than one save interval, or pass a model directory",
            )
        return model, path
    if kind in ("model", "checkpoint", "export"):
        for parent in (path.parent, path.parent.parent):
            if detect_kind(parent) == "run":
                return path, parent
        return path, None
    raise MoectlError(
        f"{path} is neither a run directory nor a model artifact (it is {describe_path(path)})",
        hint="a run dir holds config.yaml; a model artifact holds model.json (an exported "
        "transformers directory config.json)",
    )


# --- studies and evaluations -------------------------------------------------------------------
#
# A study (`moectl quickstart --out STUDY`) holds study.json, data/, runs/NAME (run dirs),
# eval/NAME.json (each run's evaluation), figures/ and report.html.


def study_runs(study: Path) -> list[Path]:
    """The run directories of a study folder, by name."""
    folder = Path(study) / STUDY_RUNS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if detect_kind(p) == "run")


def study_of(run_dir: Path) -> Path | None:
    """The study folder `run_dir` belongs to (STUDY/runs/NAME), or None for a run on its own."""
    run_dir = Path(run_dir)
    study = run_dir.parent.parent
    if run_dir.parent.name == STUDY_RUNS and detect_kind(study) == "study":
        return study
    return None


def expand_runs(paths: list[Path]) -> list[Path]:
    """`paths` with each study folder replaced by its runs: every command that takes runs
    takes a study as "all of its runs"."""
    expanded: list[Path] = []
    for path in paths:
        expanded += study_runs(path) if detect_kind(path) == "study" else [Path(path)]
    return expanded


def evaluation_files(run_dir: Path) -> list[Path]:
    """Every evaluation result file moectl wrote for the run: `moectl evaluate`'s
    RUN/eval/*.json and, for a run inside a study, the quickstart's STUDY/eval/NAME.json. The one
    answer to "where are this run's evaluations" (export's card, visualize, the study)."""
    run_dir = Path(run_dir)
    own = run_dir / EVAL_DIR
    found = sorted(own.glob("*.json")) if own.is_dir() else []
    study = study_of(run_dir)
    if study is not None:
        studied = study / STUDY_EVAL / f"{run_dir.name}.json"
        found += [studied] if studied.is_file() else []
    return found


def evaluation_folder(model_path: Path, run_dir: Path | None) -> Path:
    """Where `moectl evaluate` saves a model's results by default: <run dir or model dir>/eval
    (`evaluation_files` finds them there)."""
    return Path(run_dir or model_path) / EVAL_DIR


# --- reading ------------------------------------------------------------------------------------

DAMAGED_HINT = "the file is damaged; restore it from a copy, or train the run again"


def read_run_config(run_dir: Path) -> RunConfig:
    """The config a run trains with (config.yaml)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise TrainingError(
            f"{run_dir} has no {CONFIG_NAME}, so it is not a moectl run directory",
            hint="check --run-dir, or give --preset/--config to start a new run",
        )
    raw = read_yaml(path, hint=DAMAGED_HINT) or {}
    if not isinstance(raw, dict):
        raise TrainingError(f"{path} is not a moectl run config", hint=DAMAGED_HINT)
    return validate(RunConfig, raw, f"run configuration {path}")


def read_run_info(run_dir: Path) -> RunInfo | None:
    """run.json, or None for a run directory written without one."""
    path = Path(run_dir) / RUN_INFO_NAME
    if not path.is_file():
        return None
    text = read_text(path, hint=DAMAGED_HINT)
    try:
        return RunInfo.model_validate_json(text)
    except ValidationError as exc:
        raise TrainingError(
            f"{path} is not a moectl run.json ({exc.errors()[0]['msg']})",
            hint="pass the corpus explicitly with --data",
        ) from None


def corpus_dir(run_dir: Path) -> Path | None:
    """The corpus a run trained on (run.json's data_dir). moectl records it absolute; an older
    relative one was relative to where training ran, so it is tried from the current
    directory, then from the run dir and its parents."""
    info = read_run_info(run_dir)
    if info is None or not info.data_dir:
        return None
    path = Path(info.data_dir)
    if path.is_absolute() or path.exists():
        return path
    for base in [Path(run_dir), *Path(run_dir).resolve().parents]:
        if (base / path).exists():
            return base / path
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete rows of a JSONL file. A torn last line (a crash mid-write, or a read while
    the run writes) is skipped; a damaged line before it, or any line that is JSON but not an
    object (`[1, 2]`: no torn write makes one), is a MoectlError naming its number."""
    if not path.is_file():
        return []
    lines = read_bytes(path, hint=DAMAGED_HINT).splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if number == len(lines):
                continue
            what = "UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "a JSON row"
            raise MoectlError(f"{path} line {number} is not {what}", hint=DAMAGED_HINT) from None
        if not isinstance(row, dict):
            raise MoectlError(
                f"{path} line {number} is not a JSON object ({type(row).__name__})",
                hint=DAMAGED_HINT,
            )
        rows.append(row)
    return rows


def _validated(path: Path, model: type[Row], rows: list[dict[str, Any]]) -> list[Row]:
    """`rows` of the JSONL file `path` as `model`s; a row of another shape is a MoectlError."""
    try:
        return [model.model_validate(row) for row in rows]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MoectlError(
            f"{path} has a row that is not a moectl {model.__name__} ({where}: {first['msg']})",
            hint="the file was written by another moectl version or edited; check the run",
        ) from None


def read_metrics(run_dir: Path) -> tuple[list[TrainRow], list[EvalRow]]:
    """The train and eval rows of metrics.jsonl."""
    path = Path(run_dir) / METRICS_NAME
    rows = read_jsonl(path)
    train = _validated(path, TrainRow, [r for r in rows if r.get("kind") == "train"])
    evals = _validated(path, EvalRow, [r for r in rows if r.get("kind") == "eval"])
    return train, evals


def read_routing(run_dir: Path) -> list[RoutingRow]:
    """The rows of routing.jsonl ([] for a dense run or one that logged no routing yet)."""
    path = Path(run_dir) / ROUTING_NAME
    return _validated(path, RoutingRow, read_jsonl(path))


# --- summary ------------------------------------------------------------------------------------


class CheckpointEntry(BaseModel):
    step: int
    path: str


class RunSummary(BaseModel):
    """What `moectl inspect RUN` shows: config, progress, evals, collapse and files."""

    kind: Literal["run"] = "run"
    path: str
    name: str
    description: str
    data_dir: str | None
    init_from: str | None
    created: str | None
    model: dict[str, Any]
    moe: dict[str, Any] | None
    train: dict[str, Any]
    steps_done: int
    max_steps: int
    tokens: int
    last_train_loss: float | None
    tokens_per_s: float | None
    best_eval: EvalRow | None
    last_eval: EvalRow | None
    collapse_events: list[CollapseEvent]
    collapse_stop: bool
    checkpoints: list[CheckpointEntry]
    best_model: str | None
    amendments: list[Amendment]


def run_summary(run_dir: Path) -> RunSummary:
    """Everything `inspect` says about a run, read while it may still be training."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    info = read_run_info(run_dir)
    train_rows, eval_rows = read_metrics(run_dir)
    events = collapse_events(read_routing(run_dir))
    last_train = train_rows[-1] if train_rows else None
    best = best_model(run_dir)
    return RunSummary(
        path=str(run_dir),
        name=config.name,
        description=config.description,
        data_dir=info.data_dir if info else None,
        init_from=info.init_from if info else None,
        created=info.created if info else None,
        model=config.model.model_dump(mode="json"),
        moe=config.moe.model_dump(mode="json") if config.moe.enabled else None,
        train={
            k: getattr(config.train, k) for k in ("max_steps", "batch_size", "grad_accum", "lr")
        },
        steps_done=last_train.step if last_train else 0,
        max_steps=config.train.max_steps,
        tokens=last_train.tokens if last_train else 0,
        last_train_loss=last_train.loss if last_train else None,
        tokens_per_s=last_train.tokens_per_s if last_train else None,
        best_eval=min(eval_rows, key=lambda r: r.loss) if eval_rows else None,
        last_eval=eval_rows[-1] if eval_rows else None,
        collapse_events=events,
        collapse_stop=any(event.stop for event in events),
        checkpoints=[CheckpointEntry(step=s, path=str(p)) for s, p in list_checkpoints(run_dir)],
        best_model=str(best) if best else None,
        amendments=info.amendments if info else [],
    )


# --- writing ------------------------------------------------------------------------------------


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's writer lock (creating the folder); a held one is refused."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(run_dir / LOCK_NAME):
            yield
    except LockHeld as held:
        holder = f"pid {held.pid}" if held.pid is not None else "an unknown pid"
        raise TrainingError(
            f"run directory {run_dir} is in use by another moectl process ({holder}); "
            "wait for it to finish, or stop it first"
        ) from None


def is_moectl_run(path: Path) -> bool:
    """Whether moectl made the run directory `path`: it holds the writer lock file (created
    first thing), or config.yaml beside a readable run.json. A user's folder that merely has a
    config.yaml or metrics.jsonl is not one, so a new run never writes into it."""
    path = Path(path)
    if (path / LOCK_NAME).is_file():
        return True
    if detect_kind(path) != "run":
        return False
    try:
        return read_run_info(path) is not None
    except MoectlError:
        return False


def check_run_dir(run_dir: Path, resuming: bool) -> None:
    """Refuse, before anything is written, a --run-dir moectl must not write into: a resume
    needs a moectl run; a new run needs a new or empty folder, or a moectl run (whose
    checkpoints `resolve_resume` then protects)."""
    run_dir = Path(run_dir)
    if resuming and not run_dir.is_dir():
        raise TrainingError(
            f"run directory {run_dir} does not exist, so there is nothing to resume",
            hint="check --run-dir, or start a new run without --resume",
        )
    if not run_dir.exists() or is_moectl_run(run_dir):
        return
    found = describe_path(run_dir)
    if found == "an empty folder":
        if not resuming:
            return
        raise TrainingError(
            f"run directory {run_dir} has no checkpoint to resume from (it is an empty folder)",
            hint="check --run-dir, or start a new run without --resume",
        )
    raise TrainingError(
        f"--run-dir {run_dir} is {found}, not a moectl run directory",
        hint="choose a new --run-dir (moectl never writes into a folder it did not make)"
        if not resuming
        else "pass the --run-dir of a `moectl train` run",
    )


def resolve_resume(run_dir: Path, resume: Path | bool | None) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run (refusing to clobber checkpoints)."""
    if resume is None or resume is False:
        check_run_dir(run_dir, resuming=False)
        if list_checkpoints(run_dir):
            raise TrainingError(
                f"run directory {run_dir} already has checkpoints",
                hint=f"continue it with `moectl train --run-dir {run_dir} --resume`, "
                "or choose a new --run-dir",
            )
        return None
    check_run_dir(run_dir, resuming=True)
    if resume is True:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise TrainingError(
                f"run directory {run_dir} has no checkpoint to resume from",
                hint="start it again without --resume (checkpoints are written every "
                "train.save_every steps)",
            )
        return checkpoint
    path = Path(resume)
    if not path.is_dir():
        raise TrainingError(
            f"checkpoint {path} does not exist",
            hint=f"pick one of {run_dir}/checkpoints/step-N, or pass --resume alone for the latest",
        )
    return path


RESUMABLE_KEYS = ("train.max_steps", "train.parallel")
"""The settings a resume may change: how long the run goes on, and how its ranks hold the model
(checkpoints are full state dicts either way); everything else continues as it was."""


def resume_amendments(run_dir: Path, config: RunConfig, step: int) -> list[Amendment]:
    """Check that `config` is the run's saved config but for RESUMABLE_KEYS; each change as an
    amendment to record. Anything else differing is a TrainingError naming it. The
    data section is not compared: it is always the corpus manifest's (a run saved before that
    rule recorded its preset's, and gets the corpus's on this resume)."""
    saved = read_run_config(run_dir)
    ours, theirs = (flatten(c.model_dump(mode="json", exclude={"data"})) for c in (config, saved))
    differing = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    others = [k for k in differing if k not in RESUMABLE_KEYS]
    if others:
        raise TrainingError(
            f"a resumed run keeps its saved config, but this one differs in {', '.join(others)}",
            hint=f"resume without changes (only --set {' or '.join(RESUMABLE_KEYS)} may change), "
            "or start a new --run-dir",
        )
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [
        Amendment(time=now, step=step, key=key, old=theirs.get(key), new=ours.get(key))
        for key in RESUMABLE_KEYS
        if key in differing
    ]


def start_run(
    run_dir: Path,
    config: RunConfig,
    data_dir: Path,
    init_from: Path | None,
    domains: list[str],
    resumed_from: Path | None,
    amendments: list[Amendment] | None = None,
) -> None:
    """Write config.yaml and run.json (last, so a run dir with run.json has its config); a
    fresh start also clears logs and best/ of an earlier attempt that saved no checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resumed_from is None:
        for name in (METRICS_NAME, ROUTING_NAME):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / BEST_DIR, ignore_errors=True)
    write_text(run_dir / CONFIG_NAME, dump_yaml(config))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    previous = read_run_info(run_dir) if resumed_from is not None else None
    info = RunInfo(
        created=previous.created if previous else now,
        moectl_version=__version__,
        data_dir=str(Path(data_dir).resolve()),
        init_from=str(init_from) if init_from else (previous.init_from if previous else None),
        domains=domains,
        resumes=previous.resumes if previous else [],
        amendments=[*(previous.amendments if previous else []), *(amendments or [])],
    )
    if resumed_from is not None:
        info.resumes.append(Resume(time=now, checkpoint=str(resumed_from)))
    write_json(run_dir / RUN_INFO_NAME, info)


class JsonlWriter:
    """Appends one JSON object per line, flushed so a killed run keeps every finished row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, row: BaseModel) -> None:
        self._file.write(row.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def truncate_after(paths: list[Path], step: int) -> None:
    """Drop the rows each JSONL file in `paths` logged after `step`, so a resumed run does not
    repeat steps in the log. Every file is read before any is written: a damaged one is refused
    with all of them as they were."""
    kept = {
        path: [row for row in read_jsonl(path) if row.get("step", 0) <= step]
        for path in paths
        if path.is_file()
    }
    for path, rows in kept.items():
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
