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


@pytest.mark.parametrize("path", sorted(p for room in ("heads", "ops") for p in (SRC / room).glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_heads_and_ops_import_no_training_code(path):
    imports = _imports(path)
    ours = {m for m in imports if m == "gmsop" or m.startswith("gmsop.")}
    bad = {m for m in ours if not m.startswith(ALLOWED_INSIDE)}
    bad |= {m for m in imports if m.split(".")[0] in FORBIDDEN_OUTSIDE}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_the_check_sees_imports():
    """The checker itself: it must find both import forms (else the test above could never fail)."""
    tree = SRC.parent / "gmsop" / "training.py"
    assert {"lightning", "gmsop.callbacks"} <= _imports(tree)
