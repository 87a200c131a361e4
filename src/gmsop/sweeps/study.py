"""The Optuna study of a sweep: opened or continued, its trials run, pruned, requeued and summed up."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import optuna
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sqlalchemy.exc import SQLAlchemyError

from gmsop.callbacks.prune_trial import PruneTrial
from gmsop.data import DATA
from gmsop.heads import HEADS
from gmsop.models.optimisation import validate_optim
from gmsop.paths import held_lock, run_uid, write_csv_atomic
from gmsop.redact import redact_passwords
from gmsop.registry import ConfigError
from gmsop.run.compose import compose_train
from gmsop.run.training import RunInterrupted, run_training
from gmsop.run_folder import LOCK_FILE, checkpoint_files, is_locked, read_curves, read_summary
from gmsop.sweeps.spec import SweepSpec

PRUNERS = ("median", "none")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
HEARTBEAT_S, GRACE_S = 30, 90  # a RUNNING trial silent for GRACE_S is failed by Optuna
INTERRUPTED_BY = "interrupted_by"  # a trial's user attr: the signal that stopped its training


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise ConfigError(f"--pruner {name!r}; allowed: {', '.join(PRUNERS)}")
    return (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if name == "median"
        else optuna.pruners.NopPruner()
    )


def check_trial_config(spec: SweepSpec, extra: list[str]) -> None:
    """Compose and validate trial configs now, with every value of every searched parameter
    (SweepSpec.values_to_check), so a misspelled key or a bad value fails before trial 0 runs.
    (Values that are each fine but do not fit together, e.g. K > N, fail their trial alone.)"""
    for what, values in spec.values_to_check():
        try:
            cfg = compose_train([*spec.trial_overrides(values), f"name={spec.name}", *extra])
            container = OmegaConf.to_container(cfg, resolve=True)
            HEADS.validate(container["head"], path="head")
            DATA.validate(container["data"], path="data")
            validate_optim(container["optim"])
        except (OmegaConfBaseException, HydraException) as e:  # unknown keys, values of the wrong type
            raise ConfigError(f"{spec.path}: {what}: the trial config does not compose: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{spec.path}: {what}: {e}") from None


def make_objective(
    spec: SweepSpec, runs_dir: Path, extra: list[str], study_uid: str
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        values = {k: SweepSpec.suggest(k, p, trial) for k, p in spec.searched.items()}
        overrides = [
            *spec.trial_overrides(values),
            f"name={spec.name}",
            f"runs_dir={runs_dir}",
            f"logger.wandb.group={spec.name}",
            "trainer.test=false",  # trials choose on val; the chosen configuration is tested once, after the sweep
            *extra,
        ]
        resume_from = trial.user_attrs.get("resume_from")  # an interrupted trial's run folder
        if resume_from:
            overrides.append(f"trainer.resume={resume_from}")
        cfg = compose_train(overrides)
        run_dir = runs_dir / spec.name / f"trial_{trial.number:04d}_{study_uid}"  # unique to this study
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("overrides", overrides)
        pruning = PruneTrial(trial, spec.metric, read_curves(Path(resume_from)) if resume_from else {})
        try:
            run_training(cfg, run_dir, [pruning])
        except RunInterrupted as e:  # FAIL for Optuna; continued by the next run of the sweep
            trial.set_user_attr(INTERRUPTED_BY, e.reason)
            raise
        if not pruning.values:
            raise KeyError(f"metric {spec.metric!r} was not logged at any validation")
        return pruning.score(spec.objective, spec.direction)

    return objective


def grid_points_left(study: optuna.Study, size: int) -> int:
    """The points of a grid of `size` that no trial has taken (finished, failed or running; as
    Optuna's GridSampler counts them), plus the waiting continuations of interrupted trials."""
    taken_states = (*FINISHED, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False)
    taken = {t.system_attrs["grid_id"] for t in trials if t.state in taken_states and "grid_id" in t.system_attrs}
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING and "continues" in t.user_attrs]
    return size - len(taken) + len(waiting)


def fail_abandoned_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark FAIL every RUNNING trial whose run folder shows no live process (its run lock is free):
    a trial killed with kill -9. Trials on other machines are left to Optuna's heartbeat."""
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run_dir = Path(t.user_attrs.get("run_dir", ""))
        if t.user_attrs.get("run_dir") and (run_dir / LOCK_FILE).is_file() and not is_locked(run_dir):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            try:
                storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker of this study, started at the same time, marked it first
            failed.append(t.number)
    return failed


def requeue_interrupted_trials(study: optuna.Study) -> list[int]:
    """Queue a continuation of every FAIL trial that was interrupted (SIGTERM, Ctrl-C, kill -9)
    after saving a checkpoint: the same parameters, resumed from its run folder (the trial's
    user attr `resume_from`), so a preempted sweep loses no finished step. Only interrupted
    runs (summary status "interrupted", or none: killed) are continued; trials whose training
    crashed ("failed", e.g. a non-finite loss) or finished, and trials already continued, are not."""
    continued = {t.user_attrs.get("resume_from") for t in study.get_trials(deepcopy=False)}
    requeued = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_dir = t.user_attrs.get("run_dir")
        if (
            not run_dir
            or run_dir in continued
            or (read_summary(Path(run_dir)) or {}).get("status") not in (None, "interrupted")
        ):
            continue
        if checkpoint_files(Path(run_dir), resumable_only=True):
            study.enqueue_trial(
                t.params, user_attrs={"resume_from": run_dir, "continues": t.number}, skip_if_exists=False
            )
            requeued.append(t.number)
    return requeued


def open_study(spec: SweepSpec, storage: str | None, runs_dir: Path) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The sweep's study (created on first use) in `storage` or runs/<sweep>/optuna.db.

    Workers started together raced to create the database's tables ("table studies already
    exists" killed all but one), so this runs one process at a time, and the study's uid (in
    its trial folders' names) is set once."""
    (runs_dir / spec.name).mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(runs_dir / spec.name / 'optuna.db').resolve()}"
    with held_lock(runs_dir / spec.name / ".optuna.lock"):
        try:
            rdb = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            study = optuna.create_study(
                study_name=spec.name, storage=rdb, direction=spec.direction, load_if_exists=True
            )
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
            where = redact_passwords(url.removeprefix("sqlite:///"))
            raise ConfigError(
                f"the sweep's study storage {where} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]}). "
                "A damaged file: move it away to start the sweep over (trial folders are kept), or restore it"
            ) from None
        if "uid" not in study.user_attrs:
            study.set_user_attr("uid", run_uid())
    return study, rdb


def run_sweep(
    path: Path,
    trials: int,
    storage: str | None,
    runs_dir: Path,
    extra: list[str],
    seed: int = 0,
    pruner: str = "median",
):
    """Run until the study holds `trials` finished (complete or pruned) trials, so a re-run
    resumes; return the study.

    On a re-run, trials left RUNNING by a killed sweep are marked FAIL (and do not count); the
    sampler is seeded per trial number (TrialSeeded), so it does not repeat the parameters it
    drew before. Several workers may share one study (the same command, or --storage): each
    stops once the study holds `trials` finished trials (trials still running then finish too).
    """
    spec = SweepSpec(path)
    trial_pruner = _pruner(pruner)
    check_trial_config(spec, extra)
    study, rdb = open_study(spec, storage, runs_dir)
    with held_lock(runs_dir / spec.name / ".optuna.lock"):  # workers started together requeue once
        abandoned = fail_abandoned_trials(study, rdb)
        optuna.storages.fail_stale_trials(study)
        requeued = requeue_interrupted_trials(study)
    if abandoned:
        print(f"sweep {spec.name}: trial(s) {', '.join(map(str, abandoned))} were killed while running; marked FAIL")
    if requeued:
        print(f"sweep {spec.name}: trial(s) {', '.join(map(str, requeued))} will continue from their checkpoints")
    study.sampler = spec.sampler(seed)
    study.pruner = trial_pruner
    done = len([t for t in study.trials if t.state in FINISHED])
    remaining = max(0, trials - done)
    if spec.method == "grid":
        size = math.prod(len(v) for v in spec.grid().values())
        left = grid_points_left(study, size)
        if left < remaining:
            print(f"sweep {spec.name}: the grid has {size} points and {left} left to run; running those only")
            remaining = left
    print(
        f"sweep {spec.name}: {done} trials finished, running {remaining} more "
        f"({spec.method}, {spec.direction} {spec.metric})"
    )
    if remaining:
        objective = make_objective(spec, runs_dir, extra, study.user_attrs["uid"])
        try:
            study.optimize(
                objective,
                n_trials=remaining,
                # a diverged trial (non-finite loss), or one whose drawn values do not fit together
                # (e.g. head.k > head.num_components), fails alone: marked FAIL, the sweep goes on
                catch=(FloatingPointError, ConfigError),
                callbacks=[
                    lambda study, _trial: write_study_summary(study, spec.metric, runs_dir / spec.name),
                    # other workers on the same study count too: stop once it holds `trials` finished
                    optuna.study.MaxTrialsCallback(trials, states=FINISHED),
                ],
            )
        except RunInterrupted:  # (Optuna runs no callback after a trial that raised)
            write_study_summary(study, spec.metric, runs_dir / spec.name)
            raise
    return study


def write_study_summary(study: optuna.Study, metric: str, folder: Path) -> None:
    """trials.csv, one row per trial (number, state, value, parameters, run folder; a trial stopped
    by a signal is INTERRUPTED, and continued by a later trial with its parameters), and the
    search's plots (value per trial with the best so far; value against each parameter)."""
    from gmsop.plots import study_figures

    names = sorted({name for t in study.trials for name in t.params})
    rows = [
        [
            t.number,
            "INTERRUPTED"
            if t.state == optuna.trial.TrialState.FAIL and INTERRUPTED_BY in t.user_attrs
            else t.state.name,
            "" if t.value is None else t.value,
            *(t.params.get(n, "") for n in names),
            t.user_attrs.get("run_dir", ""),
        ]
        for t in study.trials
    ]
    write_csv_atomic(folder / "trials.csv", ["trial", "state", metric, *names, "run_dir"], rows)
    study_figures(study, metric, folder / "sweep_history.png", folder / "sweep_params.png")


def _state_name(trial: optuna.trial.FrozenTrial) -> str:
    """Optuna's state, or INTERRUPTED for a trial a signal stopped (FAIL for Optuna)."""
    interrupted = trial.state == optuna.trial.TrialState.FAIL and INTERRUPTED_BY in trial.user_attrs
    return "INTERRUPTED" if interrupted else trial.state.name
