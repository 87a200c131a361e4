"""Optuna samplers seeded per trial, so a resumed sweep draws what it would have."""

from __future__ import annotations

from collections.abc import Callable

import optuna


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
