"""Sweeps: W&B-schema files parsed into Optuna, and a 2-trial sweep on digits that resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest

from gmsop.registry import ConfigError
from gmsop.sweeps.spec import SweepSpec
from tests.conftest import REPO


def _write(tmp_path, text: str):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_shipped_sweep_file_parses():
    spec = SweepSpec(REPO / "experiments" / "sweeps" / "gmsop_digits.yaml")
    assert (spec.name, spec.method, spec.metric, spec.direction) == (
        "sweep_gmsop_digits",
        "bayes",
        "val/top1_err",
        "minimize",
    )
    assert spec.base_overrides == ["experiment=default"]  # W&B's online mode is not forced on local runs
    assert spec.fixed == {"trainer.max_epochs": 3} and set(spec.searched) == {
        "optim.lr",
        "model.dropout",
        "head.k",
        "head.balance_weight",
    }


def test_wandb_distributions_map_to_optuna():
    spec = SweepSpec(REPO / "experiments" / "sweeps" / "gmsop_digits.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = {k: SweepSpec.suggest(k, p, trial) for k, p in spec.searched.items()}
    dists = trial.distributions
    assert isinstance(dists["optim.lr"], optuna.distributions.FloatDistribution) and dists["optim.lr"].log
    assert 0.002 <= values["optim.lr"] <= 0.05 and values["head.k"] in (2, 4, 8)
    assert isinstance(dists["model.dropout"], optuna.distributions.FloatDistribution) and not dists["model.dropout"].log


M = "metric: {name: val/top1_err}\n"


@pytest.mark.parametrize(
    "body,message",
    [
        ("method: anneal\n" + M + "parameters: {a: {values: [1]}}", "method='anneal'"),
        ("method: random\nparameters: {a: {values: [1]}}", "metric.name is required"),
        ("method: grid\n" + M + "parameters: {a: {min: 0.1, max: 1.0}}", "needs `values` for every parameter"),
        ("method: random\n" + M + "parameters: {a: {distribution: q_normal, min: 0, max: 1}}", "not supported"),
        ("method: random\n" + M + "parameters: {a: {distribution: log_uniform_values, min: 0, max: 1}}", "bad range"),
        ("method: random\n" + M + "parameters: {a: [1, 2", "is not valid YAML"),
        ("- method: random\n- metric: x\n", "the top level must be a mapping"),
        ("method: random\n" + M + "parameters: {optim.lr: 0.1}", "parameters.optim.lr=0.1; give a mapping"),
        ("method: random\n" + M + "parameters: {optim.lr: null}", "parameters.optim.lr=None; give a mapping"),
        (
            "method: random\n" + M + "parameters: {head.k: {min: 8, max: 2}}",
            r"head.k: bad range \[8, 2\] \(min > max\)",
        ),
        (
            "method: random\nmetric: {name: val/top1_error}\nparameters: {a: {values: [1]}}",
            "'val/top1_error' is not logged",
        ),
        (
            "method: random\n" + M + "objective: mean\nparameters: {a: {values: [1]}}",
            "objective='mean'; allowed: best, last",
        ),
    ],
)
def test_sweep_file_errors(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        SweepSpec(_write(tmp_path, body))


@pytest.mark.parametrize(
    "override,message",
    [("optim.lrr=0.1", "does not compose"), ("head.kk=2", "head.kk"), ("optim.lr=-1", "optim.lr=-1")],
)
def test_trial_config_errors_are_found_before_the_first_trial(tmp_path, override, message):
    from gmsop.sweeps.study import run_sweep

    sweep = _write(
        tmp_path,
        "name: s\nmethod: random\n" + M + "parameters: {optim.lr: {values: [0.01]}}\n"
        "command: [python, -m, gmsop.train, experiment=default]",
    )
    with pytest.raises(ConfigError, match=message):
        run_sweep(sweep, 1, None, tmp_path / "runs", [override])
    assert not (tmp_path / "runs").exists()  # nothing written, no trial started


@pytest.mark.parametrize(
    "parameter,message",
    [
        ("optim.lr: {values: [0.01, -1, abc]}", "parameters.optim.lr value -1: optim.lr=-1"),
        ("optim.lr: {values: [0.01, abc]}", "parameters.optim.lr value 'abc': the trial config does not compose"),
        ("head.noise: {values: [image, sometimes]}", "parameters.head.noise value 'sometimes'"),
        ("data.batch_size: {values: [16, many]}", "parameters.data.batch_size value 'many'"),
    ],
)
def test_every_value_of_every_parameter_is_checked_before_the_first_trial(tmp_path, parameter, message):
    """Not only the first value: a sweep file with a bad later value (drawn as trial 0 it ended the
    sweep with a traceback) fails before anything is written, naming the parameter and the value."""
    from gmsop.sweeps.study import run_sweep

    sweep = _write(
        tmp_path,
        "name: s\nmethod: random\n" + M + f"parameters: {{{parameter}, model.dropout: {{values: [0.0]}}}}\n"
        "command: [python, -m, gmsop.train, head=gmsop, head.num_components=16]",
    )
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_sweep(sweep, 1, None, tmp_path / "runs", [])
    assert not (tmp_path / "runs").exists()


class _FakeTrainer:
    def __init__(self, value: float, epoch: int = 0) -> None:
        import torch

        self.callback_metrics = {"val/top1_err": torch.tensor(value)}
        self.current_epoch, self.sanity_checking = epoch, False


def test_prune_callback_reports_each_epoch_and_stops_bad_trials():
    from gmsop.callbacks.prune_trial import PruneTrial

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.3))
    trial = study.ask()
    callback = PruneTrial(trial, "val/top1_err")
    callback.on_validation_end(_FakeTrainer(0.2, epoch=0), None)  # good enough: continues
    with pytest.raises(optuna.TrialPruned, match="val/top1_err at epoch 1"):
        callback.on_validation_end(_FakeTrainer(0.6, epoch=1), None)
    assert study.trials[0].intermediate_values == {0: pytest.approx(0.2), 1: pytest.approx(0.6)}
    # the trial's score: its best epoch (by the goal's direction) unless the sweep asks for the last
    assert callback.score("best", "minimize") == pytest.approx(0.2)
    assert callback.score("best", "maximize") == callback.score("last", "minimize") == pytest.approx(0.6)


def test_online_wandb_without_login_fails_before_training(tmp_path, monkeypatch):
    from gmsop.run.training import run_training
    from tests.test_config import compose_train

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = compose_train("experiment=isqrt_digits", "logger.wandb.mode=online")
    with pytest.raises(RuntimeError, match="wandb login"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_study_summary_lists_every_trial_and_plots_the_search(tmp_path):
    from gmsop.sweeps.study import write_study_summary

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    write_study_summary(study, "val/top1_err", tmp_path)  # nothing finished yet: a header, no plots
    assert (tmp_path / "trials.csv").read_text() == "trial,state,val/top1_err,run_dir\n"
    assert not (tmp_path / "sweep_history.png").exists()

    def objective(trial):
        lr = trial.suggest_float("optim.lr", 1e-3, 1e-1, log=True)
        trial.set_user_attr("run_dir", f"runs/s/trial_{trial.number:04d}")
        if trial.number == 1:
            raise optuna.TrialPruned()
        return 0.5 + lr

    study.optimize(objective, n_trials=3, callbacks=[lambda s, _t: write_study_summary(s, "val/top1_err", tmp_path)])
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [(r["trial"], r["state"], r["run_dir"]) for r in rows] == [
        ("0", "COMPLETE", "runs/s/trial_0000"),
        ("1", "PRUNED", "runs/s/trial_0001"),
        ("2", "COMPLETE", "runs/s/trial_0002"),
    ]
    for row, trial in zip(rows, study.trials):
        assert float(row["optim.lr"]) == trial.params["optim.lr"]
        assert row["val/top1_err"] == ("" if trial.value is None else str(trial.value))
    assert (tmp_path / "sweep_history.png").stat().st_size > 5000 and (
        tmp_path / "sweep_params.png"
    ).stat().st_size > 5000


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_workers_sharing_a_study_never_draw_the_same_values_and_one_seed_repeats_them(tmp_path, method):
    spec = SweepSpec(
        _write(
            tmp_path,
            f"""
method: {method}
metric: {{name: val/top1_err, goal: minimize}}
parameters:
  optim.lr: {{distribution: log_uniform_values, min: 0.001, max: 0.1}}
""",
        )
    )

    def draws(storage: str, workers: int, trials: int) -> list[float]:
        """`workers` processes' view of one study (same seed), asking in turn, as workers started together."""
        studies = [
            optuna.create_study(study_name="s", storage=storage, load_if_exists=True, sampler=spec.sampler(seed=0))
            for _ in range(workers)
        ]
        values = {}
        for i in range(trials):
            trial = studies[i % workers].ask()
            values[trial.number] = spec.suggest("optim.lr", spec.searched["optim.lr"], trial)
            studies[i % workers].tell(trial, values[trial.number])
        return [values[n] for n in sorted(values)]

    together = draws(f"sqlite:///{tmp_path / 'two.db'}", workers=2, trials=6)
    assert len(set(together)) == 6  # a sampler seeded once per worker drew each value twice
    assert draws(f"sqlite:///{tmp_path / 'one.db'}", workers=1, trials=6) == together  # per trial number


@pytest.mark.parametrize("workers", [1, 2])
def test_a_grid_runs_every_point_once(tmp_path, workers):
    """Each trial of a grid sweep takes a point no trial took: every point once, with one worker or
    with two asking in turn (a grid shuffled anew for every trial ran some points twice)."""
    spec = SweepSpec(
        _write(
            tmp_path,
            "method: grid\nmetric: {name: val/top1_err}\n"
            "parameters: {head.k: {values: [2, 4, 8]}, optim.lr: {values: [0.1, 0.01]}}\n",
        )
    )
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    studies = [
        optuna.create_study(study_name="g", storage=storage, load_if_exists=True, sampler=spec.sampler(seed=0))
        for _ in range(workers)
    ]
    points = []

    def objective(trial):
        points.append(tuple(spec.suggest(k, p, trial) for k, p in spec.searched.items()))
        if len(points) == 1:
            raise ValueError("a failed trial")
        return 0.5

    for i in range(6):  # one trial at a time, the workers in turn
        studies[i % workers].optimize(objective, n_trials=1, catch=(ValueError,))
    assert sorted(points) == sorted((k, lr) for k in (2, 4, 8) for lr in (0.1, 0.01))  # a FAIL counts as run


def _open_together(spec_path: str, runs_dir: str, barrier, errors) -> None:
    from gmsop.sweeps.study import open_study

    barrier.wait()
    try:
        open_study(SweepSpec(Path(spec_path)), None, Path(runs_dir))
    except Exception as e:  # reported to the test
        errors.put(f"{type(e).__name__}: {e}"[:200])


def test_workers_started_together_all_open_the_new_study(tmp_path):
    """Sweep workers started at the same moment on a new study all create or open it (they raced
    on creating the database's tables: all but one died)."""
    import multiprocessing as mp

    path = _write(tmp_path, "name: twin\nmetric: {name: val/top1_err}\nparameters: {optim.lr: {values: [0.1]}}\n")
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(6), ctx.Queue()
    workers = [
        ctx.Process(target=_open_together, args=(str(path), str(tmp_path / "runs"), barrier, errors)) for _ in range(6)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    found = [errors.get() for _ in range(errors.qsize())]
    assert not found and [w.exitcode for w in workers] == [0] * 6
    study = optuna.load_study(study_name="twin", storage=f"sqlite:///{tmp_path / 'runs' / 'twin' / 'optuna.db'}")
    assert len(study.user_attrs["uid"]) == 6


def test_only_interrupted_trials_with_a_checkpoint_are_continued_and_only_once(tmp_path):
    import json

    from gmsop.sweeps.study import requeue_interrupted_trials

    study = optuna.create_study()
    cases = {  # trial run folder -> (summary status or None: killed before writing one, has last.ckpt)
        "interrupted": ("interrupted", True),
        "killed": (None, True),
        "killed_before_a_checkpoint": (None, False),
        "crashed": ("failed", True),
        "finished_but_objective_failed": ("finished", True),
    }
    for name, (status, ckpt) in cases.items():
        folder = tmp_path / name
        (folder / "checkpoints").mkdir(parents=True)
        if status:
            (folder / "summary.json").write_text(json.dumps({"status": status}))
        if ckpt:
            (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1)})
        trial.set_user_attr("run_dir", str(folder))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert requeue_interrupted_trials(study) == [0, 1]
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["resume_from"] for t in waiting] == [str(tmp_path / "interrupted"), str(tmp_path / "killed")]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [study.trials[0].params, study.trials[1].params]
    assert requeue_interrupted_trials(study) == []  # already continued (by a worker started with this one)


@pytest.mark.slow
def test_a_trial_whose_values_do_not_fit_together_fails_alone(tmp_path):
    """head.k is drawn beside head.num_components: the trial with K > N is marked FAIL, naming the
    problem, and the sweep goes on (it ended the whole sweep)."""
    from tests.conftest import run_cli

    sweep = _write(
        tmp_path,
        """
name: kn
method: grid
metric: {name: val/top1_err}
parameters:
  head.k: {values: [2, 8]}
  trainer.max_epochs: {value: 1}
command: [python, -m, gmsop.train, head=gmsop, head.num_components=4,
          "head.component_dims=[16,8]", "head.gate_dims=[16,8]"]
""",
    )
    common = ["--runs-dir", str(tmp_path / "runs"), "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    proc = run_cli(
        "gmsop.sweep", str(sweep), "--trials", "2", *common, "trainer.enable_progress_bar=false", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "K must satisfy 1 <= K <= N; got K=8, N=4" in proc.stderr and "best trial" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "runs" / "kn" / "trials.csv").open()))
    assert sorted((r["head.k"], r["state"]) for r in rows) == [("2", "COMPLETE"), ("8", "FAIL")]


def test_a_damaged_study_file_is_named(tmp_path):
    """A corrupt or truncated optuna.db: a message naming the file and what to do, not SQLAlchemy's traceback."""
    from gmsop.sweeps.study import open_study

    body = "name: s\nmetric: {name: val/top1_err}\nparameters: {optim.lr: {values: [0.1]}}\n"
    spec = SweepSpec(_write(tmp_path, body))
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "optuna.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 300)
    with pytest.raises(ConfigError, match=r"runs/s/optuna.db cannot be read .*move it away to start the sweep over"):
        open_study(spec, None, tmp_path / "runs")


def test_the_private_optuna_attributes_sweeps_use_exist_in_the_installed_optuna():
    """gmsop.sweeps reaches into Optuna (written against 5.0) in two places: the grid sampler's
    random generator (seeded per trial) and the study's storage (a continued trial's grid point);
    an Optuna without them fails here, naming the attribute, not in the middle of a sweep."""
    import optuna

    study = optuna.create_study()
    trial = study.ask()
    sampler = optuna.samplers.GridSampler({"x": [1, 2]}, seed=0)
    for owner, path in ((sampler, "_rng.rng.seed"), (study, "_storage.set_trial_system_attr"), (study, "_study_id")):
        obj = owner
        for name in path.split("."):
            assert hasattr(obj, name), f"optuna {optuna.__version__}: {type(owner).__name__}.{path} is gone ({name})"
            obj = getattr(obj, name)
    assert hasattr(trial, "_trial_id"), f"optuna {optuna.__version__}: Trial._trial_id is gone"
