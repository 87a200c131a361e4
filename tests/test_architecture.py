"""The layering: heads and ops compute and know nothing of training, logging or entry points."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gmsop"
# What the numerical layers may import from the package: themselves and the registry they register in.
ALLOWED_INSIDE = ("gmsop.heads", "gmsop.ops", "gmsop.registry", "gmsop.errors")
FORBIDDEN_OUTSIDE = ("lightning", "wandb", "hydra", "optuna", "torchmetrics")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from gmsop import ops` imports gmsop.ops
            found |= {f"gmsop.{a.name}" for a in node.names} if node.module == "gmsop" else {node.module}
    return found


@pytest.mark.parametrize(
    "path",
    sorted(p for room in ("heads", "ops") for p in (SRC / room).glob("*.py")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_heads_and_ops_import_no_training_code(path):
    imports = _imports(path)
    ours = {m for m in imports if m == "gmsop" or m.startswith("gmsop.")}
    bad = {m for m in ours if not m.startswith(ALLOWED_INSIDE)}
    bad |= {m for m in imports if m.split(".")[0] in FORBIDDEN_OUTSIDE}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


# Rooms from the bottom up; a module imports only from its own room or rooms below it.
ROOMS = [
    ("gmsop.errors", "gmsop.paths", "gmsop.stop_signals", "gmsop.redact"),
    ("gmsop.registry", "gmsop.plots"),
    ("gmsop.config",),
    ("gmsop.ops",),
    ("gmsop.heads",),
    ("gmsop.run_folder",),  # the run folder's format: names, lock, reading checkpoints, logs, summary
    ("gmsop.callbacks",),  # Lightning callbacks, the CSV logger, checkpoint IO; Lightning's internals
    ("gmsop.models", "gmsop.data"),  # (a model adds its own callbacks: the fine-tuning warm-up)
    ("gmsop.run",),  # building a run and fitting it: loggers, resume plan, test stage
    ("gmsop.sweeps", "gmsop.analysis"),  # many runs: Optuna studies; reading finished runs
    (
        "gmsop.train",
        "gmsop.eval",
        "gmsop.sweep",
        "gmsop.report",
        "gmsop.cost",
        "gmsop.export",
        "gmsop.lr_find",
    ),  # entry points
]


def _room(module: str) -> int:
    for level, prefixes in enumerate(ROOMS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no room; add it to ROOMS")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_each_room_imports_only_from_rooms_below(path):
    here = _module_name(path)
    if here == "gmsop":
        return
    above = sorted(m for m in _imports(path) if m.startswith("gmsop.") and _room(m) > _room(here))
    assert not above, f"{here} (room {_room(here)}) imports from higher rooms: {above}"


def test_the_checks_see_imports_and_rooms():
    """The checker itself (else the tests above could never fail)."""
    assert {"lightning", "gmsop.callbacks.checkpoints"} <= _imports(SRC / "run" / "training.py")
    assert _room("gmsop.run.training") > _room("gmsop.models.classifier") > _room("gmsop.heads.base")


# The training loop: what evaluation, export and reading runs must not need
TRAINING_LOOP = (
    "gmsop.run.training",
    "gmsop.run.resume",
    "gmsop.run.loggers",
    "gmsop.run.test_stage",
    "gmsop.callbacks",
)


@pytest.mark.parametrize(
    "module",
    ["eval.py", "run/evaluate.py", "export.py", "analysis/export.py", "report.py", "analysis/report.py", "run_folder"],
)
def test_evaluation_export_and_reports_read_run_folders_without_the_training_loop(module):
    paths = sorted((SRC / module).glob("*.py")) if (SRC / module).is_dir() else [SRC / module]
    for path in paths:
        loop = sorted(m for m in _imports(path) if m.startswith(TRAINING_LOOP))
        assert not loop, f"{path.relative_to(SRC)} imports the training loop: {loop}"


def test_importing_the_run_layer_changes_no_warning_or_log_filter():
    """Filters are installed when a run starts (quiet_known_noise), not as a side effect of an import."""
    import subprocess
    import sys

    code = (
        "import logging, warnings\n"
        "import gmsop.run.training, gmsop.sweeps.study, gmsop.train\n"
        "import gmsop.run.noise as t\n"
        "patterns = [f[1].pattern for f in warnings.filters if f[1] is not None]\n"
        "assert not any(p in patterns for p in t.KNOWN_NOISE), patterns\n"
        "assert not logging.getLogger('lightning.pytorch.utilities.rank_zero').filters\n"
        "t.quiet_known_noise(); t.quiet_known_noise()\n"
        "patterns = [f[1].pattern for f in warnings.filters if f[1] is not None]\n"
        "assert all(patterns.count(p) == 1 for p in t.KNOWN_NOISE), patterns\n"
        "assert len(logging.getLogger('lightning.pytorch.utilities.rank_zero').filters) == 1\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


ENTRY_POINTS = ("train", "eval", "export", "lr_find", "sweep", "report", "cost")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_have_one_shape_and_hand_the_work_to_a_room(name):
    """Each is `main` (parse or compose, build, hand over) and `cli` (the command), nothing else public."""
    tree = ast.parse((SRC / f"{name}.py").read_text())
    defined = (n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    public = {name for name in defined if not name.startswith("_")}
    assert public == {"main", "cli"}, f"gmsop.{name} defines {sorted(public)}; move the work into a room"
    scripts = (SRC.parents[1] / "pyproject.toml").read_text()
    assert f'= "gmsop.{name}:cli"' in scripts
    assert f"{name}.py" in (SRC.parents[1] / "README.md").read_text()
