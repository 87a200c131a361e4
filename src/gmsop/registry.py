"""One registry type for heads and data modules: a name is the public contract.

Each entry's configuration schema is derived from its constructor's signature, so an
unknown key or a wrongly typed value fails before any work starts, naming the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gmsop.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A configuration value is unknown, missing or of the wrong type."""


def complete(schema: type, cfg: Mapping[str, Any], path: str, what: str, extra_keys: tuple[str, ...] = ()) -> dict:
    """cfg checked against a dataclass schema, with the schema's defaults filled in (the one place
    those defaults live); an unknown key, a wrong type or a missing value fails naming `path.key`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(cfg))
    except OmegaConfBaseException as err:
        key = getattr(err, "key", None)
        reason = str(getattr(err, "msg", err)).splitlines()[0]
        allowed = ", ".join([*extra_keys, *(f.name for f in dataclasses.fields(schema))])
        raise ConfigError(f"{path}.{key}: {reason} (allowed keys for {what}: {allowed})") from None
    missing = OmegaConf.missing_keys(merged)
    if missing:
        raise ConfigError(f"{path} (for {what}) is missing required key(s): {', '.join(sorted(missing))}")
    return OmegaConf.to_container(merged)


def option_defaults(cls: type) -> dict[str, Any]:
    """The defaults a class gives options it inherits: its `option_defaults` over its bases' (a
    data set's batch size, image size, ...). Its constructor applies them (`options | ...`); the
    registry's schema shows them."""
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("option_defaults", {}))
    return merged


class Registry(Generic[T]):
    """Maps names to constructors; `build(cfg, *fixed)` validates cfg (with its `name`) first."""

    def __init__(self, kind: str, fixed_args: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.fixed_args = fixed_args  # supplied by the caller (e.g. in_channels), not by config
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(ctor: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = ctor
            return ctor

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def schema(self, name: str) -> type:
        """A dataclass of the constructor's configurable parameters (types and defaults).

        A class constructor that forwards `**options` also gets the keyword-only parameters
        of its base classes' __init__ (up the chain while each forwards `**options` too), so
        shared options are declared once, on the base; a class changes the defaults of options
        it inherits in `option_defaults` (see `option_defaults`), never by restating them.
        """
        ctor = self.get(name)
        target = ctor.__init__ if inspect.isclass(ctor) else ctor
        params = [(p, typing.get_type_hints(target)) for p in inspect.signature(target).parameters.values()]
        forwards = inspect.isclass(ctor) and any(p.kind == p.VAR_KEYWORD for p, _ in params)
        for base in ctor.__mro__[1:] if forwards else ():
            if "__init__" not in vars(base):
                continue
            hints, base_params = typing.get_type_hints(base.__init__), inspect.signature(base.__init__).parameters
            params += [(p, hints) for p in base_params.values() if p.kind == p.KEYWORD_ONLY]
            if not any(p.kind == p.VAR_KEYWORD for p in base_params.values()):
                break
        changed = option_defaults(ctor) if inspect.isclass(ctor) else {}
        fields, seen = [], set()
        for param, hints in params:
            if param.name in ("self", *self.fixed_args, *seen) or param.kind in (
                param.VAR_POSITIONAL,
                param.VAR_KEYWORD,
            ):
                continue
            seen.add(param.name)
            ftype = hints.get(param.name, Any)
            default = changed.get(param.name, param.default)
            if default is inspect.Parameter.empty:
                fields.append((param.name, ftype))
            elif isinstance(default, (list, dict)):
                fields.append((param.name, ftype, dataclasses.field(default_factory=lambda d=default: type(d)(d))))
            else:
                fields.append((param.name, ftype, dataclasses.field(default=default)))
        return dataclasses.make_dataclass(f"{name}_{self.kind}_config", fields)

    def defaults(self, name: str) -> dict[str, Any]:
        """The entry's config with every default filled in (what Hydra's config group starts from)."""
        return {"name": name, **OmegaConf.to_container(OmegaConf.structured(self.schema(name)), enum_to_str=True)}

    def validate(self, cfg: Mapping[str, Any] | DictConfig, path: str | None = None) -> dict[str, Any]:
        """Check `cfg` (with a `name` key) against the entry's schema; return the full kwargs."""
        path = path or self.kind
        cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        if "name" not in cfg:
            raise ConfigError(f"{path}.name is missing; known {self.kind}s: {', '.join(self.names())}")
        name = cfg.pop("name")
        return {"name": name, **complete(self.schema(name), cfg, path, f"{self.kind} '{name}'", extra_keys=("name",))}

    def build(self, cfg: Mapping[str, Any] | DictConfig, *fixed: Any, path: str | None = None) -> T:
        """Validate cfg and construct the entry, passing `fixed` positional args first."""
        return self.construct(self.validate(cfg, path), *fixed, path=path)

    def construct(self, validated: Mapping[str, Any], *fixed: Any, path: str | None = None) -> T:
        """Construct from a config `validate` returned (so one config is validated once, even when
        many objects are built from it). A value the constructor refuses (its ValueError, e.g.
        K > N) becomes a ConfigError naming `path`, reported without a traceback."""
        kwargs = dict(validated)
        name = kwargs.pop("name")
        try:
            return self.get(name)(*fixed, **kwargs)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{path or self.kind}: {e} ({self.kind} '{name}')") from None
