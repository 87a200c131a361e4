"""A sweep file in W&B's schema: its method, metric, parameters and command, validated."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gmsop.models.classifier import EPOCH_METRIC_PREFIXES, EPOCH_METRICS
from gmsop.registry import ConfigError
from gmsop.sweeps.samplers import GridTrialSeeded, TrialSeeded

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
