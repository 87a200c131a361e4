"""Lightning's private attributes: each one used is listed, exists in the installed Lightning, and
is used only inside gmsop/callbacks (an upgrade then shows at once what broke, and where)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gmsop.callbacks.lightning_internals import PRIVATE, Private, missing

SRC = Path(__file__).resolve().parents[1] / "src" / "gmsop"
DOOR = SRC / "callbacks"


@pytest.mark.parametrize("private", PRIVATE, ids=lambda p: f"{p.owner.rsplit(':', 1)[-1]}.{p.name}")
def test_every_private_attribute_used_exists_in_the_installed_lightning(private):
    import lightning

    assert not missing(private), (
        f"{private.owner} has no {private.name} in lightning {lightning.__version__} (written against "
        f"{private.version}; used by {private.use}): see gmsop/callbacks/lightning_internals.py"
    )


def test_the_check_finds_a_missing_attribute_owner_or_module():
    """(Else the test above could never fail.)"""
    assert missing(Private("lightning.pytorch.loops.fit_loop:_FitLoop", "_no_such_attribute", "test"))
    assert missing(Private("lightning.pytorch.loops.fit_loop:_NoSuchLoop", "_data_fetcher", "test"))
    assert missing(Private("lightning.no_such_module", "_anything", "test"))
    assert not missing(Private("lightning.pytorch.loops.fit_loop:_FitLoop", "_data_fetcher", "test"))  # set in __init__


def _private_uses(path: Path, names: set[str]) -> list[str]:
    """`x._name` for a listed private name, and `from lightning... import _name`, with line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning"):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
    return found


PRIVATE_NAMES = {p.name for p in PRIVATE if p.name.startswith("_")}


@pytest.mark.parametrize(
    "path",
    sorted(p for p in SRC.rglob("*.py") if DOOR not in p.parents),
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_no_private_lightning_attribute_is_used_outside_the_callbacks_folder(path):
    uses = _private_uses(path, PRIVATE_NAMES)
    assert not uses, f"{path.relative_to(SRC)} uses Lightning's private attributes: {uses}; go through gmsop.callbacks"


def test_the_scan_sees_private_uses(tmp_path):
    """(Else the test above could never fail.)"""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table\n"
        "flag = trainer.fit_loop.epoch_loop._results\n"
    )
    assert len(_private_uses(sample, PRIVATE_NAMES)) == 2
    assert _private_uses(DOOR / "lightning_internals.py", PRIVATE_NAMES)  # the door itself has them
