"""Hydra glue: the config store (the schemas of `gmsop.config` and every registered head's,
gate's and data module's constructor defaults), the run-folder resolvers, and composing the
training config without running it."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gmsop.config import EvalConfig, TrainConfig, run_name
from gmsop.data import DATA
from gmsop.errors import exit_on_user_error
from gmsop.heads import HEADS
from gmsop.heads.gating import GATES
from gmsop.registry import ConfigError

HIDDEN_GROUPS = ("experiment/sweeps",)  # sweep files (python -m gmsop.sweep FILE) live there; not experiments
DEFAULTS_SUFFIX = "_defaults"  # the constructor defaults every option of a group starts from; not options


def tidy_help(text: str) -> str:
    """Hydra's --help less what no one picks: in its "Configuration groups" section, the groups in
    HIDDEN_GROUPS and the *_defaults options."""
    lines, in_groups = [], False
    for line in text.splitlines():
        if line.startswith("== "):
            in_groups = line.startswith("== Configuration groups")
        group, sep, options = line.partition(": ")
        if in_groups and sep:
            if group in HIDDEN_GROUPS:
                continue
            line = f"{group}: {', '.join(o for o in options.split(', ') if not o.endswith(DEFAULTS_SUFFIX))}"
        lines.append(line)
    return "\n".join(lines)


def check_slurm_environment(args: Sequence[str], environ: Mapping[str, str]) -> None:
    """trainer=slurm names the run folder after $SLURM_JOB_ID: outside a SLURM job, say so before
    Hydra fails on the missing variable with a traceback."""
    if "trainer=slurm" in args and "SLURM_JOB_ID" not in environ:
        raise ConfigError(
            "trainer=slurm names the run folder after $SLURM_JOB_ID, which is not set: run the command "
            "inside a SLURM job (sbatch/srun), or leave trainer=slurm out (trainer.resume=auto keeps any "
            "run folder resumable)"
        )


def check_output_folder(args: Sequence[str]) -> None:
    """Hydra creates the run folder before any gmsop code runs, and fails with its own traceback
    when it cannot (a read-only runs_dir): say which folder, why, and which key sets it. Checked
    on the nearest folder that exists (nothing is created here)."""
    given = dict(a.lstrip("+").split("=", 1) for a in args if "=" in a and not a.startswith("~"))
    key = next((k for k in ("hydra.run.dir", "hydra.sweep.dir", "runs_dir") if k in given), "runs_dir")
    folder = Path(given.get(key, TrainConfig.runs_dir)).expanduser()
    if "${" in str(folder):
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} cannot be written (read-only, or not yours)"
    if problem:
        raise ConfigError(
            f"cannot create run folders in {key}={folder}: {problem}. Set {key} to a folder you can write"
        )


def run_entry_point(main: Callable[[], object]) -> None:
    """Run a Hydra entry point: first the checks Hydra would fail with a traceback
    (check_slurm_environment, check_output_folder); with --help, its help through tidy_help."""
    exit_on_user_error(check_slurm_environment)(sys.argv[1:], os.environ)
    exit_on_user_error(check_output_folder)(sys.argv[1:])
    if not {"--help", "-h"} & set(sys.argv[1:]):
        main()
        return
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            main()
        except SystemExit:
            pass
    print(tidy_help(text.getvalue()))


def register_resolvers() -> None:
    """${run_name:NAME} (validated experiment name) and ${run_uid:} (random, fixed per process) for run folders."""
    from gmsop.paths import run_uid

    if not OmegaConf.has_resolver("run_uid"):
        OmegaConf.register_new_resolver("run_uid", run_uid)
        OmegaConf.register_new_resolver("run_name", run_name)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (train.yaml/eval.yaml extend them), and the run-folder resolvers."""
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    _store_constructor_defaults(cs)


def _store_constructor_defaults(cs: ConfigStore) -> None:
    """head/NAME_defaults, head/gate/NAME_defaults and data/NAME_defaults: each registered
    head's, gate's and data module's constructor defaults, the one place they are written. A
    YAML option of the group starts from them (`defaults: [NAME_defaults, _self_]`) and sets only
    what it changes, and every key exists for command-line overrides (`data.num_workers=8`)."""
    for group, registry in (("head", HEADS), ("head/gate", GATES), ("data", DATA)):
        for name in registry.names():
            cs.store(group=group, name=f"{name}{DEFAULTS_SUFFIX}", node=registry.defaults(name))


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """The training config that `python -m gmsop.train OVERRIDES...` would run, without running it."""
    from hydra import compose, initialize_config_dir

    from gmsop.paths import CONFIG_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
