"""Run second-order math in float32 even under bf16/fp16 autocast."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable[..., torch.Tensor])

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def float32_math(fn: F) -> F:
    """Decorator: disable autocast, upcast half inputs to float32, cast the result back.

    Newton-Schulz and eigendecompositions are unstable in 16-bit floats; float64 inputs
    stay float64 so gradchecks see full precision.
    """

    @functools.wraps(fn)
    def wrapper(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        in_dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            if in_dtype in _LOW_PRECISION:
                x = x.float()
            out = fn(x, *args, **kwargs)
        return out.to(in_dtype) if in_dtype in _LOW_PRECISION else out

    return wrapper  # type: ignore[return-value]
