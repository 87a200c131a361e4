"""Sweeps: a W&B-schema sweep file run locally by Optuna, one training run per trial.

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
