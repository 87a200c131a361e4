"""Section (e): compiled vs eager training steps, compilation time and recompilations per head.

One SGD step of the paper's ResNet-18 (B images, 3 x S x S, 1000 classes) with each head, as
variants of the same weights: eager, eager channels_last, compiled (model.compile), compiled
channels_last and, on a GPU, CUDA graphs (mode=reduce-overhead). Each compiled variant first runs
`steps` steps on its own: the first step's time is the compilation (plus one step), and TorchDynamo's
counters give the graphs captured and the recompilations after step 3. The step times are then
interleaved medians over all variants, so their ratios are measured side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from gmsop.config import OptimConfig
from gmsop.models.classifier import SecondOrderClassifier
from timing import interleaved_median_seconds, sync

WARM_STEPS = 3  # recompilations are counted after these
# Every variant of every head is compiled in this one process: room for all of their cache entries
# (the default of 8 per function would silently send later variants back to eager mode).
torch._dynamo.config.recompile_limit = 64


def variants(device: torch.device) -> dict[str, dict[str, Any]]:
    """Name -> model-config overrides, eager first (the baseline of every ratio)."""
    v: dict[str, dict[str, Any]] = {
        "eager": {},
        "channels_last": {"channels_last": True},
        "compiled": {"compile": True},
        "compiled+channels_last": {"compile": True, "channels_last": True},
    }
    if device.type == "cuda":
        v["cuda_graphs"] = {"compile": "reduce-overhead"}
    return v


def training_step(model: SecondOrderClassifier, x: torch.Tensor, y: torch.Tensor, amp: bool) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.compute_loss(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _dynamo_totals() -> tuple[int, int]:
    return counters["stats"]["unique_graphs"], sum(counters["recompiles"].values())


def compiled_vs_eager(
    head: dict, device: torch.device, batch: int, size: int, repeats: int, steps: int, amp: bool
) -> list[dict[str, Any]]:
    """One row per variant: median step ms, and for compiled variants the first step's seconds
    and the graphs/recompilations after step 3 of `steps` (differences of TorchDynamo's counters,
    taken while only that variant runs)."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    optim = {**asdict(OptimConfig()), "scheduler": "none"}
    weights = None
    rows, fns = [], []
    for name, overrides in variants(device).items():
        model = SecondOrderClassifier({"backbone": "resnet18_64", **overrides}, head, optim, 1000, 3)
        weights = weights or model.state_dict()
        model.load_state_dict(weights)
        step = training_step(model.to(device).train(), x, y, amp)
        row: dict[str, Any] = {"cfg": head, "variant": name}
        if "compile" in overrides:
            graphs_before, _ = _dynamo_totals()
            try:
                t0 = time.perf_counter()
                step()
                sync(device)
                row["first_step_s"] = time.perf_counter() - t0
                for _ in range(WARM_STEPS - 1):
                    step()
                graphs, recompiles = _dynamo_totals()
                for _ in range(steps - WARM_STEPS):
                    step()
                sync(device)
            except Exception as e:  # e.g. a mode this torch or device lacks: recorded, not fatal
                row["error"] = f"{type(e).__name__}: {e}"[:300]
                rows.append(row)
                continue
            total_graphs, total_recompiles = _dynamo_totals()
            row["graphs"] = total_graphs - graphs_before
            row["new_graphs_after_step3"] = total_graphs - graphs
            row["recompiles_after_step3"] = total_recompiles - recompiles
        rows.append(row)
        fns.append(step)
    timed = [r for r in rows if "error" not in r]
    for row, sec in zip(timed, interleaved_median_seconds(fns, device, repeats, warmup=1)):
        row["ms"] = 1e3 * sec
    eager_ms = rows[0]["ms"]
    for row in timed:
        row["vs_eager"] = row["ms"] / eager_ms
    return rows
