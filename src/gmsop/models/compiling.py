"""`model.compile`: torch.compile the model's parts in place, from a config value."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import torch
from torch import nn

from gmsop.registry import ConfigError

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIONS = tuple(p for p in inspect.signature(torch.compile).parameters if p != "model")


def compile_options(value: Any) -> Optional[dict[str, Any]]:
    """torch.compile's keyword arguments for a `model.compile` value, or None for no compilation.

    false/null: eager; true: torch.compile's defaults; a string: a mode; a mapping: the arguments."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    options = {"mode": value} if isinstance(value, str) else dict(value) if isinstance(value, Mapping) else None
    if options is None:
        raise ConfigError(f"model.compile={value!r}; allowed: false, true, a mode ({', '.join(MODES)}) or a mapping")
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"model.compile has unknown key(s) {sorted(unknown)}; allowed: {', '.join(OPTIONS)}")
    if options.get("mode") not in (None, *MODES):
        raise ConfigError(f"model.compile mode={options['mode']!r}; allowed: {', '.join(MODES)}")
    return options


def compile_in_place(modules: Iterable[nn.Module], options: Mapping[str, Any]) -> None:
    """Compile each module's forward in place (nn.Module.compile): parameter names and state dicts
    stay those of the eager model (no `_orig_mod.` prefix), so checkpoints load either way.
    Done before `fit`, as Lightning recommends; the first steps pay the compilation."""
    for module in modules:
        module.compile(**options)
