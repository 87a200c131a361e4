"""Section (g): the paper's Table-1 rows trained as users train them, and what each speed-up buys.

Each row's model is built from its experiment file (experiments/paper/imagenet64_*.yaml) and
trained for a fixed number of SGD steps on ImageNet-64-shaped data fed through the real data
path: the memory-mapped cache built from synthetic batch files in the published format, the
data module's loader and its on-device transform (mean subtraction, flip). Variants add one
switch at a time, each a config key a run can set:

    recipe            the experiment file as written (float32, eager, sparse dispatch)
    bf16              + trainer.precision=bf16-mixed (autocast; second-order math stays float32)
    channels_last     + model.channels_last=true
    static            + head.dispatch=static (mixture rows: every shape fixed by B and K)
    compile           + model.compile=true (Inductor)
    graphs            + model.compile=reduce-overhead (CUDA graphs; needs static dispatch)

Per row and variant: training images/s, achieved TFLOP/s (gmsop.cost's matmul/conv count of
one training step times images/s), its share of the device's peak (--peak-tflops), peak GPU
memory, and the hours the row's recipe (epochs x 1,281,167 images) takes at that rate.
`python benchmarks/paper_rows.py FILE` prints the Markdown table of a results file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from gmsop.analysis.cost import experiment_cost
from gmsop.analysis.published import PAPER_DATA
from gmsop.run.build import build_run
from gmsop.run.compose import compose_train
from loader import _imagenet64_files  # the same writer as section (f)
from timing import sync

ROWS = [
    "imagenet64_resnet18_gap",
    "imagenet64_resnet18_srsop",
    "imagenet64_resnet18_gmgap_16_8",
    "imagenet64_resnet18_gmsop_16_8",
    "imagenet64_wrn36_2_gmgap_16_8",
    "imagenet64_wrn36_2_gmsop_16_8",
]
# Each variant adds its overrides to the one before it (the order above).
VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "bf16": ["trainer.precision=bf16-mixed"],
    "channels_last": ["model.channels_last=true"],
    "static": ["head.dispatch=static"],
    "compile": ["model.compile=true"],
    "graphs": ["model.compile=reduce-overhead"],
}
MIXTURE_ONLY = {"static"}  # rows without a mixture skip these (nothing changes)
NEEDS_CUDA = {"graphs"}
# Dense bf16 tensor-core peak, TFLOP/s, by device name (the vendors' data sheets, SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
TRAIN_IMAGES = PAPER_DATA["ImageNet-64"].train_images


def variant_overrides(variants: Sequence[str], upto: str) -> list[str]:
    """The overrides of every variant up to and including `upto`; a later compile value wins."""
    out: list[str] = []
    for name in variants:
        out = [o for o in out if o.split("=")[0] not in {v.split("=")[0] for v in VARIANTS[name]}] + VARIANTS[name]
        if name == upto:
            return out
    raise ValueError(f"variant {upto!r} is not among {list(variants)}")


def synthetic_imagenet64(root: Path, images: int, seed: int = 0) -> None:
    """Training and val batch files as published, `images` training images in all."""
    _imagenet64_files(root, per_file=max(1, images // 10 + 1), rng=np.random.default_rng(seed))


def peak_tflops(device: torch.device, given: Optional[float]) -> Optional[float]:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def measure(
    row: str,
    overrides: list[str],
    root: Path,
    device: torch.device,
    steps: int,
    warmup: int,
    batch: Optional[int],
    workers: Optional[int],
) -> dict[str, Any]:
    """Train `row` with `overrides` for warmup + steps SGD steps through the real data path;
    images/s over the timed steps."""
    extra = [f"data.root={root}", "data.select_on_test=true", "logger=no_wandb"]
    extra += [f"data.batch_size={batch}"] if batch else []
    extra += [f"data.num_workers={workers}"] if workers is not None else []
    cfg = compose_train([f"experiment=paper/{row}", *extra, *overrides])
    _, datamodule, model = build_run(cfg)
    model.to(device).train()
    optim = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=optim.momentum, weight_decay=optim.weight_decay)
    amp = str(cfg.trainer.precision).startswith("bf16")
    graphs = str(cfg.model.compile) == "reduce-overhead"
    batches = iter(datamodule.train_dataloader())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> int:
        images, labels = next(batches)
        x = datamodule.transform(images.to(device, non_blocking=True), training=True)
        y = labels.to(device, non_blocking=True)
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model.compute_loss(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return x.shape[0]

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    first_s = time.perf_counter() - t0
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        n += step()
    sync(device)
    seconds = time.perf_counter() - t0
    result = {
        "row": row,
        "overrides": overrides,
        "batch": int(cfg.data.batch_size),
        "steps": steps,
        "images_per_s": n / seconds,
        "warmup_s": first_s,
        "epochs": int(cfg.trainer.max_epochs),
    }
    if device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def paper_rows(
    device: torch.device,
    variants: Sequence[str],
    rows: Sequence[str] = ROWS,
    steps: int = 20,
    warmup: int = 5,
    batch: Optional[int] = None,
    workers: Optional[int] = None,
    peak: Optional[float] = None,
    on_row=None,
) -> list[dict[str, Any]]:
    """Measure every row in every variant (one row at a time; `on_row(result)` after each)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; allowed: {', '.join(VARIANTS)}")
    peak = peak_tflops(device, peak)
    results = []
    with tempfile.TemporaryDirectory(prefix="gmsop-paper-rows-") as tmp:
        synthetic_imagenet64(Path(tmp), (batch or 256) * (steps + warmup + 1))
        for row in rows:
            mixture = "_gm" in row
            applies = [
                v
                for v in variants
                if not (v in MIXTURE_ONLY and not mixture) and not (v in NEEDS_CUDA and device.type != "cuda")
            ]
            if not applies:
                continue
            gflop = experiment_cost(compose_train([f"experiment=paper/{row}"])).gflop_per_image
            for variant in applies:
                try:
                    r = measure(
                        row, variant_overrides(variants, variant), Path(tmp), device, steps, warmup, batch, workers
                    )
                except Exception as err:  # a variant that fails is a finding, not the end of the run
                    r = {"row": row, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
                r |= {"variant": variant, "gflop_per_image": gflop, "peak_tflops": peak}
                if "images_per_s" in r:
                    r["tflops"] = gflop * r["images_per_s"] / 1e3
                    r["share_of_peak"] = r["tflops"] / peak if peak else None
                    r["recipe_hours"] = r["epochs"] * TRAIN_IMAGES / r["images_per_s"] / 3600
                results.append(r)
                if on_row:
                    on_row(r)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    """Per row and variant: images/s, x the recipe, TFLOP/s, share of peak, memory, recipe hours;
    then Table 1's total hours at each row's fastest variant."""
    lines = [
        "| row | variant | batch | img/s | x recipe | TFLOP/s | % of peak | GPU GB | hours for the recipe |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    recipe = {r["row"]: r["images_per_s"] for r in results if r["variant"] == "recipe" and "images_per_s" in r}
    fastest: dict[str, dict] = {}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['variant']} | | failed: {r['error'][:80]} | | | | | |")
            continue
        if r["images_per_s"] > fastest.get(r["row"], {}).get("images_per_s", 0):
            fastest[r["row"]] = r
        ratio = f"{r['images_per_s'] / recipe[r['row']]:.2f}" if r["row"] in recipe else ""
        share = f"{100 * r['share_of_peak']:.2f}" if r.get("share_of_peak") else ""
        mem = f"{r['peak_gpu_gb']:.1f}" if "peak_gpu_gb" in r else ""
        lines.append(
            f"| {r['row']} | {r['variant']} | {r['batch']} | {r['images_per_s']:.1f} | {ratio} "
            f"| {r['tflops']:.3f} | {share} | {mem} | {r['recipe_hours']:.1f} |"
        )
    total = sum(r["recipe_hours"] for r in fastest.values())
    chosen = ", ".join(f"{row.removeprefix('imagenet64_')}: {r['variant']}" for row, r in fastest.items())
    lines += ["", f"Table 1 ({len(fastest)} rows), each at its fastest variant: {total:.1f} hours ({chosen})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description="Print the Markdown table of a paper-rows results file.")
    p.add_argument("file", type=Path, help="a suite.json with section (g) rows")
    found = json.loads(p.parse_args().file.read_text())
    print(markdown([r for r in found["rows"] if r.get("section") == "g"]), end="")


if __name__ == "__main__":
    main()
