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
import math
from pathlib import Path
from typing import Any, Callable

import lightning as L
import optuna
from omegaconf import OmegaConf

from gmsop.config import compose_train
from gmsop.paths import write_csv_atomic
from gmsop.registry import ConfigError

METHODS = {"grid", "random", "bayes"}


class SweepSpec:
    """A parsed sweep file: Optuna distributions, direction, sampler and base overrides."""

    def __init__(self, path: Path) -> None:
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        self.path = path
        self.name = str(spec.get("name") or path.stem)
        self.method = spec.get("method", "random")
        if self.method not in METHODS:
            raise ConfigError(f"{path}: method={self.method!r}; allowed: {', '.join(sorted(METHODS))}")
        metric = spec.get("metric") or {}
        if "name" not in metric:
            raise ConfigError(f"{path}: metric.name is required (e.g. val/top1_err)")
        self.metric = metric["name"]
        goal = metric.get("goal", "minimize")
        if goal not in ("minimize", "maximize"):
            raise ConfigError(f"{path}: metric.goal={goal!r}; allowed: minimize, maximize")
        self.direction = goal
        params = spec.get("parameters") or {}
        if not params:
            raise ConfigError(f"{path}: no parameters to sweep")
        self.fixed = {k: v["value"] for k, v in params.items() if "value" in v}
        self.searched = {k: v for k, v in params.items() if "value" not in v}
        # The command's key=value arguments, less W&B's mode: local trials stay offline unless
        # logger.wandb.mode=online is passed on the command line.
        self.base_overrides = [
            a for a in spec.get("command", [])
            if isinstance(a, str) and "=" in a and "${" not in a and not a.startswith("logger.wandb.mode=")
        ]
        for key, p in self.searched.items():
            self.suggest(key, p, _Probe())  # validates every parameter now, not mid-sweep

    def grid(self) -> dict[str, list]:
        for key, p in self.searched.items():
            if "values" not in p:
                raise ConfigError(f"{self.path}: method=grid needs `values` for every parameter; {key} has {sorted(p)}")
        return {k: list(p["values"]) for k, p in self.searched.items()}

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.method == "grid":
            return optuna.samplers.GridSampler(self.grid(), seed=seed)
        if self.method == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

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
    """Stands in for a trial while validating a spec."""

    def suggest_categorical(self, key, values):
        if not values:
            raise ConfigError(f"parameter {key}: `values` is empty")
        return values[0]

    def suggest_int(self, key, lo, hi):
        return lo

    def suggest_float(self, key, lo, hi, log=False):
        if lo > hi or (log and lo <= 0):
            raise ConfigError(f"parameter {key}: bad range [{lo}, {hi}]{' for a log scale' if log else ''}")
        return lo


PRUNERS = ("median", "none")


class PruneTrial(L.Callback):
    """Report the sweep metric to the Optuna trial after each validation; stop a hopeless trial.

    (What hydra-optuna-sweeper cannot do: it never sees a trial object.)
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        self.trial.report(float(trainer.callback_metrics[self.metric]), step=trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} at epoch {trainer.current_epoch} is worse than the median")


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise ConfigError(f"--pruner {name!r}; allowed: {', '.join(PRUNERS)}")
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if name == "median" else optuna.pruners.NopPruner()


def make_objective(spec: SweepSpec, runs_dir: Path, extra: list[str]) -> Callable[[optuna.Trial], float]:
    from gmsop.training import run_training

    def objective(trial: optuna.Trial) -> float:
        values = {k: SweepSpec.suggest(k, p, trial) for k, p in spec.searched.items()}
        overrides = [*spec.base_overrides, *(f"{k}={v}" for k, v in {**spec.fixed, **values}.items()),
                     f"name={spec.name}", f"runs_dir={runs_dir}", f"logger.wandb.group={spec.name}", *extra]
        cfg = compose_train(overrides)
        run_dir = runs_dir / spec.name / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("overrides", overrides)
        result = run_training(cfg, run_dir, [PruneTrial(trial, spec.metric)])
        if spec.metric not in result.metrics:
            raise KeyError(f"metric {spec.metric!r} was not logged; logged: {', '.join(sorted(result.metrics))}")
        return result.metrics[spec.metric]

    return objective


def run_sweep(
    path: Path, trials: int, storage: str | None, runs_dir: Path, extra: list[str], seed: int = 0, pruner: str = "median"
):
    """Run until the study holds `trials` finished (complete or pruned) trials, so a re-run
    resumes; return the study."""
    spec = SweepSpec(path)
    (runs_dir / spec.name).mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(runs_dir / spec.name / 'optuna.db').resolve()}"
    study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                sampler=spec.sampler(seed), pruner=_pruner(pruner), load_if_exists=True)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len([t for t in study.trials if t.state in finished])
    remaining = max(0, trials - done)
    print(f"sweep {spec.name}: {done} trials finished, running {remaining} more ({spec.method}, {spec.direction} {spec.metric})")
    if remaining:
        study.optimize(make_objective(spec, runs_dir, extra), n_trials=remaining, catch=(FloatingPointError,),
                       callbacks=[lambda study, _trial: write_study_summary(study, spec.metric, runs_dir / spec.name)])
    return study


def write_study_summary(study: optuna.Study, metric: str, folder: Path) -> None:
    """trials.csv, one row per trial (number, state, value, parameters, run folder), and the
    search's plots (value per trial with the best so far; value against each parameter)."""
    from gmsop.plots import study_figures

    names = sorted({name for t in study.trials for name in t.params})
    rows = [[t.number, t.state.name, "" if t.value is None else t.value, *(t.params.get(n, "") for n in names),
             t.user_attrs.get("run_dir", "")] for t in study.trials]
    write_csv_atomic(folder / "trials.csv", ["trial", "state", metric, *names, "run_dir"], rows)
    study_figures(study, metric, folder / "sweep_history.png", folder / "sweep_params.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="sweep file in W&B's schema")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite in runs/<sweep>/)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pruner", default="median", choices=PRUNERS,
                   help="median: stop a trial whose validation metric is worse than the median of earlier trials")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every trial")
    args = p.parse_intermixed_args()
    if not args.file.is_file():
        p.error(f"sweep file {args.file} does not exist")
    study = run_sweep(args.file, args.trials, args.storage, args.runs_dir, args.overrides, args.seed, args.pruner)
    best = study.best_trial
    print(f"best trial #{best.number}: {best.value:.4f} with {best.params}; run folder {best.user_attrs['run_dir']}")


if __name__ == "__main__":
    main()
