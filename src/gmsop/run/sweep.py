"""Run a W&B-schema sweep file locally with Optuna: `python -m gmsop.sweep FILE --trials N`.

The file is W&B's sweep schema (method grid/random/bayes, metric, parameters, command),
so `wandb sweep FILE` works unchanged for users who are online. Locally each trial is a
training run composed from the command's `key=value` overrides plus the trial's values,
logged as a W&B run in the sweep's group and written to runs/<sweep>/trial_NNNN. The
Optuna study lives in SQLite (runs/<sweep>/optuna.db) by default, so re-running the same
command resumes after a crash; any SQLAlchemy URL (--storage postgresql://...) lets
several machines share one study. With --pruner median (the default) a trial whose
validation metric falls behind the median of earlier trials at the same epoch is stopped.
After every trial runs/<sweep>/ gets trials.csv (state, value, parameters, run folder of
each trial) and plots of the search: sweep_history.png and sweep_params.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import yaml
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sqlalchemy.exc import SQLAlchemyError

from gmsop.errors import exit_on_user_error
from gmsop.models.classifier import EPOCH_METRIC_PREFIXES, EPOCH_METRICS
from gmsop.paths import held_lock, run_uid, write_csv_atomic
from gmsop.registry import ConfigError
from gmsop.run.compose import compose_train
from gmsop.run.curves import Curves, read_curves
from gmsop.run.folder import LOCK_FILE, SUMMARY, checkpoint_files, is_locked
from gmsop.run.training import RunInterrupted

METHODS = {"grid", "random", "bayes"}


OBJECTIVES = ("best", "last")


class SweepSpec:
    """A parsed sweep file: Optuna distributions, direction, sampler and base overrides.

    Every error in the file is found here, before the first trial, and names the key.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        spec = self._load(path)
        self.name = str(spec.get("name") or path.stem)
        self.method = spec.get("method", "random")
        if self.method not in METHODS:
            raise ConfigError(f"{path}: method={self.method!r}; allowed: {', '.join(sorted(METHODS))}")
        metric = spec.get("metric") or {}
        if not isinstance(metric, dict) or "name" not in metric:
            raise ConfigError(f"{path}: metric.name is required (e.g. val/top1_err)")
        self.metric = metric["name"]
        if self.metric not in EPOCH_METRICS and not str(self.metric).startswith(EPOCH_METRIC_PREFIXES):
            raise ConfigError(
                f"{path}: metric.name={self.metric!r} is not logged by training; allowed: "
                f"{', '.join(EPOCH_METRICS)}, or {'/'.join(EPOCH_METRIC_PREFIXES)}... keys"
            )
        goal = metric.get("goal", "minimize")
        if goal not in ("minimize", "maximize"):
            raise ConfigError(f"{path}: metric.goal={goal!r}; allowed: minimize, maximize")
        self.direction = goal
        self.objective = spec.get("objective", "best")
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"{path}: objective={self.objective!r}; allowed: {', '.join(OBJECTIVES)} "
                "(a trial's score: its best epoch, or its last)"
            )
        params = spec.get("parameters") or {}
        if not isinstance(params, dict) or not params:
            raise ConfigError(f"{path}: no parameters to sweep (`parameters:` must map keys to specs)")
        for key, p in params.items():
            if not isinstance(p, dict):
                raise ConfigError(
                    f"{path}: parameters.{key}={p!r}; give a mapping: {{value: X}}, {{values: [...]}} "
                    "or {min: A, max: B}"
                )
        self.fixed = {k: v["value"] for k, v in params.items() if "value" in v}
        self.searched = {k: v for k, v in params.items() if "value" not in v}
        command = spec.get("command", [])
        if not isinstance(command, list):
            raise ConfigError(f"{path}: command={command!r}; give a list of arguments")
        # The command's key=value arguments, less W&B's mode: local trials stay offline unless
        # logger.wandb.mode=online is passed on the command line.
        self.base_overrides = [
            a
            for a in command
            if isinstance(a, str) and "=" in a and "${" not in a and not a.startswith("logger.wandb.mode=")
        ]
        for key, p in self.searched.items():
            try:
                self.suggest(key, p, _Probe())  # validates every parameter now, not mid-sweep
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
        if self.method == "grid":
            self.grid()

    @staticmethod
    def _load(path: Path) -> dict:
        try:
            spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except (yaml.YAMLError, OmegaConfBaseException) as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping (name, method, metric, parameters, command), "
                f"not a {type(spec).__name__}"
            )
        return spec

    def values_to_check(self) -> list[tuple[str, dict[str, Any]]]:
        """Trial values that together hold every value of every searched parameter (both ends of a
        range), each with the others at their first value: (what is checked, the values)."""
        probe = _Probe()
        first = {k: self.suggest(k, p, probe) for k, p in self.searched.items()}
        checks = [("the first value of every parameter", first)]
        for key, values in probe.candidates.items():
            checks += [(f"parameters.{key} value {v!r}", {**first, key: v}) for v in values[1:]]
        return checks

    def trial_overrides(self, values: dict[str, Any]) -> list[str]:
        """The command's overrides, the fixed values and these searched values, as key=value."""
        return [*self.base_overrides, *(f"{k}={v}" for k, v in {**self.fixed, **values}.items())]

    def grid(self) -> dict[str, list]:
        for key, p in self.searched.items():
            if "values" not in p:
                raise ConfigError(f"{self.path}: method=grid needs `values` for every parameter; {key} has {sorted(p)}")
        return {k: list(p["values"]) for k, p in self.searched.items()}

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The method's Optuna sampler, seeded per trial (TrialSeeded)."""
        if self.method == "grid":
            grid = self.grid()

            def grid_sampler(trial_seed: int) -> optuna.samplers.GridSampler:
                # The grid in one order for the whole sweep (Optuna shuffles it with the seed, and a
                # trial records its point by position: a grid shuffled per trial repeated some points
                # and never ran others); the choice among the points not yet run is the trial's.
                sampler = optuna.samplers.GridSampler(grid, seed=seed)
                sampler._rng.rng.seed(trial_seed)  # (private in optuna 5.0, which is pinned)
                return sampler

            return GridTrialSeeded(grid_sampler, seed)
        if self.method == "random":
            return TrialSeeded(lambda s: optuna.samplers.RandomSampler(seed=s), seed)
        return TrialSeeded(lambda s: optuna.samplers.TPESampler(seed=s), seed)

    @staticmethod
    def suggest(key: str, p: dict, trial) -> Any:
        """W&B parameter spec -> an Optuna suggestion."""
        if "values" in p:
            return trial.suggest_categorical(key, list(p["values"]))
        dist = p.get("distribution")
        if "min" not in p or "max" not in p:
            raise ConfigError(f"parameter {key}: give `values`, `value`, or `min` and `max`")
        lo, hi = p["min"], p["max"]
        if dist in (None, "int_uniform") and isinstance(lo, int) and isinstance(hi, int):
            return trial.suggest_int(key, lo, hi)
        if dist in (None, "uniform"):
            return trial.suggest_float(key, float(lo), float(hi))
        if dist == "log_uniform_values":
            return trial.suggest_float(key, float(lo), float(hi), log=True)
        if dist == "log_uniform":  # W&B: min/max are natural logs of the bounds
            return trial.suggest_float(key, math.exp(lo), math.exp(hi), log=True)
        raise ConfigError(
            f"parameter {key}: distribution={dist!r} is not supported locally; use values, uniform, int_uniform, "
            "log_uniform_values or log_uniform"
        )


class _Probe:
    """Stands in for a trial while validating a spec: suggests the first value, and keeps every
    value a parameter can take that must be checked (`candidates`: all values, or a range's ends)."""

    def __init__(self) -> None:
        self.candidates: dict[str, list] = {}

    def suggest_categorical(self, key, values):
        if not values:
            raise ConfigError(f"parameter {key}: `values` is empty")
        self.candidates[key] = list(values)
        return values[0]

    def suggest_int(self, key, lo, hi):
        if lo > hi:
            raise ConfigError(f"parameter {key}: bad range [{lo}, {hi}] (min > max)")
        self.candidates[key] = [lo, hi]
        return lo

    def suggest_float(self, key, lo, hi, log=False):
        if lo > hi or (log and lo <= 0):
            raise ConfigError(f"parameter {key}: bad range [{lo}, {hi}]{' for a log scale' if log else ''}")
        self.candidates[key] = [lo, hi]
        return lo


PRUNERS = ("median", "none")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
INTERRUPTED_BY = "interrupted_by"  # a trial's user attr: the signal that stopped its training


class PruneTrial(L.Callback):
    """Report the sweep metric to the Optuna trial after each validation; stop a hopeless trial.

    (What hydra-optuna-sweeper cannot do: it never sees a trial object.)
    """

    def __init__(self, trial: optuna.Trial, metric: str, earlier: Curves | None = None) -> None:
        """`earlier`: the curves of the run this trial continues; its epochs count toward the score."""
        self.trial, self.metric = trial, metric
        self.values: dict[int, float] = {}  # epoch -> the metric
        for epoch, row in sorted((earlier or {}).items()):
            if not math.isnan(row.get(metric, math.nan)):
                self.values[epoch] = row[metric]
                trial.report(row[metric], step=epoch)

    def score(self, objective: str, direction: str) -> float:
        """The trial's value: its best epoch's (min or max by direction) or its last epoch's."""
        if not self.values:
            raise KeyError(f"metric {self.metric!r} was never logged at a validation")
        if objective == "last":
            return self.values[max(self.values)]
        return (min if direction == "minimize" else max)(self.values.values())

    def on_validation_end(self, trainer, pl_module) -> None:
        """(Not on_validation_epoch_end: callbacks run before the model's hook that logs this
        epoch's error, so the metric there would still be the previous epoch's.)"""
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        self.values[trainer.current_epoch] = value = float(trainer.callback_metrics[self.metric])
        self.trial.report(value, step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} at epoch {trainer.current_epoch} is worse than the median")


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
    from gmsop.data import DATA
    from gmsop.heads import HEADS
    from gmsop.models.optimisation import validate_optim

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
    from gmsop.run.training import run_training

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


class TrialSeeded(optuna.samplers.BaseSampler):
    """A sampler seeded with seed + trial number before each trial (a fresh one from `make`).

    Trial numbers are handed out by the study's storage, so a sweep re-run after a crash, and
    several workers sharing one study (started at the same moment, with the same seed), never
    draw the same values for two trials, while one seed still gives the same draws per trial."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study, trial) -> None:
        self._inner = self._make(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)


class GridTrialSeeded(TrialSeeded):
    """TrialSeeded for a grid: a trial that continues an interrupted one (its user attr `continues`)
    takes that trial's grid point, as Optuna's GridSampler records it. Without it the
    continuation had no point: Optuna's `after_trial` failed on it (KeyError 'grid_id'), and the
    point counted as not run, so the sweep could train it again."""

    def before_trial(self, study, trial) -> None:
        continued = trial.user_attrs.get("continues")
        if continued is not None:
            earlier = study._storage.get_trial_system_attrs(  # private in optuna 5.0, which is pinned
                study._storage.get_trial_id_from_study_id_trial_number(study._study_id, continued)
            )
            for key in ("grid_id", "search_space"):
                if key in earlier:
                    study._storage.set_trial_system_attr(trial._trial_id, key, earlier[key])
        super().before_trial(study, trial)


def grid_points_left(study: optuna.Study, size: int) -> int:
    """The points of a grid of `size` that no trial has taken (finished, failed or running; as
    Optuna's GridSampler counts them), plus the waiting continuations of interrupted trials."""
    taken_states = (*FINISHED, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False)
    taken = {t.system_attrs["grid_id"] for t in trials if t.state in taken_states and "grid_id" in t.system_attrs}
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING and "continues" in t.user_attrs]
    return size - len(taken) + len(waiting)


HEARTBEAT_S, GRACE_S = 30, 90  # a RUNNING trial silent for GRACE_S is failed by Optuna


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
        if not run_dir or run_dir in continued or _run_status(Path(run_dir)) not in (None, "interrupted"):
            continue
        if checkpoint_files(Path(run_dir), resumable_only=True):
            study.enqueue_trial(
                t.params, user_attrs={"resume_from": run_dir, "continues": t.number}, skip_if_exists=False
            )
            requeued.append(t.number)
    return requeued


def _run_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / SUMMARY).read_text()).get("status")
    except (OSError, ValueError):
        return None  # killed before its summary, or an unreadable one


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
            where = url.removeprefix("sqlite:///")
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


@exit_on_user_error
def main() -> None:
    from gmsop.run.training import own_wandb_service

    own_wandb_service()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="sweep file in W&B's schema")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite in runs/<sweep>/)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pruner",
        default="median",
        choices=PRUNERS,
        help="median: stop a trial whose validation metric is worse than the median of earlier trials",
    )
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every trial")
    args = p.parse_intermixed_args()
    if not args.file.is_file():
        p.error(f"sweep file {args.file} does not exist")
    try:
        study = run_sweep(args.file, args.trials, args.storage, args.runs_dir, args.overrides, args.seed, args.pruner)
    except RunInterrupted as e:  # the trial is marked FAIL; re-running the command continues it
        print(f"\n{e}; re-run the sweep command to continue the sweep (and this trial)", file=sys.stderr)
        sys.exit(e.exit_code)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        print(f"no trial completed; see {args.runs_dir / study.study_name / 'trials.csv'}", file=sys.stderr)
        sys.exit(1)
    best = study.best_trial
    print(f"best trial #{best.number}: {best.value:.4f} with {best.params}; run folder {best.user_attrs['run_dir']}")


if __name__ == "__main__":
    main()
