"""Benchmark suite: forward+backward time, memory kept for backward, and ratios measured in one run.

    python benchmarks/suite.py [--only a,b,c,d,e,f] [--repeats 5] [--device cpu|cuda] [--amp] [--out FILE]
    make bench

(a) iSQRT closed-form backward / autograd          (same head, same side)
(b) iSQRT (3 iterations) / eigendecomposition (MPN-COV), and / a straightforward iSQRT (reference_isqrt.py)
(c) GM-SOP-16-8 sparse dispatch / all 16 components on every image (B=64, 128x16x16, 256->128), and
    static dispatch (fixed shapes) / sparse
(d) training images/s of the paper's ResNet-18 at 64x64 (1000 classes) with each head / with GAP
(e) compiled / eager training step (ResNet-18, 32x32 input) for GAP, iSQRT and GM-SOP-16-8; channels_last /
    contiguous; compilation time; graphs and recompilations after step 3 of 50 (see compiled.py)
(f) the data loader's training images/s (ImageNet-64 memmap, image folder) / the model's (GAP, from d)
(g) the paper's Table-1 rows trained through the real data path, recipe and each speed-up (paper_rows.py):
    images/s, TFLOP/s, share of peak, GPU memory, hours for the row's recipe
Head shapes: B=64 and C x H x W in (256, 14, 14), (256, 8, 8), (128, 16, 16). Times are
medians of --repeats runs after warm-up; on a GPU the same command gives the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compiled import compiled_vs_eager  # noqa: E402
from gmsop.heads import build_head  # noqa: E402
from gmsop.models.classifier import SecondOrderClassifier  # noqa: E402
from loader import loader_rows  # noqa: E402
from paper_rows import ROWS, VARIANTS, markdown, paper_rows  # noqa: E402
from reference_isqrt import StraightforwardISqrt  # noqa: E402
from timing import environment, interleaved_median_seconds  # noqa: E402

SHAPES = [(256, 14, 14), (256, 8, 8), (128, 16, 16)]
GMSOP_16_8 = {"name": "gmsop", "num_components": 16, "k": 8}
TRAIN_HEADS = [{"name": "gap"}, {"name": "sop"}, {"name": "isqrt"}, {"name": "mpncov"}, {"name": "gmgap"}, GMSOP_16_8]
COMPILE_HEADS = [{"name": "gap"}, {"name": "isqrt"}, GMSOP_16_8]
SECTIONS = "abcdefg"
STRAIGHTFORWARD_NAME, STRAIGHTFORWARD = "straightforward_isqrt", StraightforwardISqrt  # (b)'s plain baseline


def saved_for_backward_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of all tensors autograd keeps for the backward pass of fn() (activation memory)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


class Bench:
    def __init__(
        self, device: torch.device, repeats: int, batch: int, amp: bool = False, out: Path | None = None
    ) -> None:
        self.device, self.repeats, self.batch, self.amp, self.out = device, repeats, batch, amp, out
        self.rows: list[dict[str, Any]] = []
        self.ratios: dict[str, Any] = {}

    def save(self) -> None:
        """Write what is measured so far (after each section: a long run stopped early keeps it),
        atomically: the file is never half written."""
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        env = environment(self.device)
        record = {"env": env, "batch": self.batch, "repeats": self.repeats, "amp": self.amp}
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps({**record, "rows": self.rows, "ratios": self.ratios}, indent=2))
        os.replace(tmp, self.out)

    def heads(self, cfgs: list[dict], c: int, h: int, w: int) -> list[dict[str, Any]]:
        """Forward+backward time (interleaved) and memory of heads on one random B x C x H x W map."""
        torch.manual_seed(0)
        x = torch.randn(self.batch, c, h, w, device=self.device, requires_grad=True)
        steps, rows = [], []
        for cfg in cfgs:
            head = STRAIGHTFORWARD() if cfg["name"] == STRAIGHTFORWARD_NAME else build_head(cfg, c)
            head = head.to(self.device).train()

            def forward(head=head):
                out = head(x)
                return out.features.sum() + out.aux_loss

            def step(head=head, forward=forward) -> None:
                forward().backward()
                x.grad = None
                head.zero_grad(set_to_none=True)

            steps.append(step)
            row = {"cfg": cfg, "shape": [c, h, w], "saved_mb": saved_for_backward_bytes(forward) / 2**20}
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
                step()
                row["peak_cuda_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            rows.append(row)
        for row, sec in zip(rows, interleaved_median_seconds(steps, self.device, self.repeats)):
            row["ms"] = 1e3 * sec
        return rows

    def train_images_per_s(self, cfgs: list[dict]) -> list[float]:
        """One SGD step of the full classifier (ResNet-18 64x64, 1000 classes) on random data."""
        torch.manual_seed(0)
        x = torch.randn(self.batch, 3, 64, 64, device=self.device)
        y = torch.randint(0, 1000, (self.batch,), device=self.device)
        steps = []
        for cfg in cfgs:
            model = (
                SecondOrderClassifier(
                    {"backbone": "resnet18_64", "dropout": 0.2},
                    cfg,
                    {
                        "name": "sgd",
                        "lr": 0.1,
                        "momentum": 0.9,
                        "nesterov": False,
                        "weight_decay": 1e-4,
                        "scheduler": "none",
                    },
                    1000,
                    3,
                )
                .to(self.device)
                .train()
            )
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step(model=model, opt=opt) -> None:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    loss = model.compute_loss(x, y).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            steps.append(step)
        return [self.batch / sec for sec in interleaved_median_seconds(steps, self.device, self.repeats, warmup=1)]


def _label(cfg: dict) -> str:
    extra = ",".join(f"{k}={v}" for k, v in cfg.items() if k not in ("name", "num_components", "k"))
    name = f"gmsop-{cfg['num_components']}-{cfg['k']}" if cfg["name"] == "gmsop" and "k" in cfg else cfg["name"]
    return f"{name}({extra})" if extra else name


def run(only: set[str], bench: Bench, paper: argparse.Namespace) -> dict[str, Any]:
    ratios = bench.ratios
    print(f"{'section':<4}{'head':<34}{'C x H x W':>12}{'ms':>10}{'saved MB':>10}")

    def show(sec: str, row: dict) -> dict:
        bench.rows.append({"section": sec, **row})
        print(
            f"{sec:<4}{_label(row['cfg']):<34}{'x'.join(map(str, row['shape'])):>12}"
            f"{row['ms']:>10.1f}{row['saved_mb']:>10.1f}"
        )
        return row

    for c, h, w in SHAPES:
        key = f"{c}x{h}x{w}"
        cfgs = []
        if "a" in only:
            cfgs += [{"name": "isqrt", "backward": "closed_form"}, {"name": "isqrt", "backward": "autograd"}]
        if "b" in only:
            cfgs += [
                {"name": "isqrt"},
                {"name": "isqrt", "side": "channel"},
                {"name": "mpncov"},
                {"name": STRAIGHTFORWARD_NAME},
            ]
        if not cfgs:
            continue
        ms = {
            _label(r["cfg"]): show("a" if "backward" in r["cfg"] else "b", r)["ms"] for r in bench.heads(cfgs, c, h, w)
        }
        if "a" in only:
            ratios[f"(a) isqrt closed_form / autograd @ {key}"] = (
                ms["isqrt(backward=closed_form)"] / ms["isqrt(backward=autograd)"]
            )
        if "b" in only:
            ratios[f"(b) isqrt / mpncov @ {key}"] = ms["isqrt"] / ms["mpncov"]
            ratios[f"(b) isqrt C-side only / mpncov @ {key}"] = ms["isqrt(side=channel)"] / ms["mpncov"]
            ratios[f"(b) isqrt / straightforward isqrt @ {key}"] = ms["isqrt"] / ms[STRAIGHTFORWARD_NAME]
        bench.save()
    if "c" in only:
        dispatches = [{**GMSOP_16_8, "dispatch": d} for d in ("sparse", "dense", "static")]
        sparse, dense, static = (show("c", r) for r in bench.heads(dispatches, 128, 16, 16))
        ratios["(c) gmsop-16-8 sparse / dense"] = sparse["ms"] / dense["ms"]
        ratios["(c) gmsop-16-8 static / sparse"] = static["ms"] / sparse["ms"]
        bench.save()
    if "d" in only:
        print(f"\n(d) training images/s, paper ResNet-18 at 64x64, 1000 classes, B={bench.batch}")
        ips = dict(zip(map(_label, TRAIN_HEADS), bench.train_images_per_s(TRAIN_HEADS)))
        for cfg in TRAIN_HEADS:
            name = _label(cfg)
            bench.rows.append({"section": "d", "cfg": cfg, "images_per_s": ips[name]})
            print(f"    {name:<30}{ips[name]:>10.1f} img/s  {ips[name] / ips['gap']:.2f} x GAP")
            if name != "gap":
                ratios[f"(d) train img/s {name} / gap"] = ips[name] / ips["gap"]
        bench.save()
    if "e" in only:
        print(f"\n(e) training step, ResNet-18 at 32x32, B={bench.batch}: compiled and channels_last vs eager")
        print(f"    {'head':<16}{'variant':<24}{'ms':>9}{'x eager':>9}{'1st step s':>12}{'graphs':>8}{'new>3':>7}")
        for head in COMPILE_HEADS:
            for row in compiled_vs_eager(head, bench.device, bench.batch, 32, bench.repeats, steps=50, amp=bench.amp):
                bench.rows.append({"section": "e", **row})
                name, variant = _label(head), row["variant"]
                if "error" in row:
                    print(f"    {name:<16}{variant:<24} failed: {row['error']}")
                    continue
                extra = (
                    f"{row['first_step_s']:>12.1f}{row['graphs']:>8}{row['new_graphs_after_step3']:>7}"
                    if "first_step_s" in row
                    else ""
                )
                print(f"    {name:<16}{variant:<24}{row['ms']:>9.1f}{row['vs_eager']:>9.2f}{extra}")
                if variant != "eager":
                    ratios[f"(e) {variant} / eager step {name}"] = row["vs_eager"]
                if "first_step_s" in row:
                    ratios[f"(e) first compiled step s {name} ({variant})"] = row["first_step_s"]
                    ratios[f"(e) recompiles after step 3 {name} ({variant})"] = row["recompiles_after_step3"]
            bench.save()
    if "f" in only:
        model_ips = ips["gap"] if "d" in only else bench.train_images_per_s([{"name": "gap"}])[0]
        print(f"\n(f) loader images/s beside the model's training images/s (ResNet-18 GAP, 64x64): {model_ips:.0f}")
        for row in loader_rows(bench.device, bench.batch, batches=30):
            row["model_images_per_s"] = model_ips
            bench.rows.append({"section": "f", **row})
            ratio = row["images_per_s"] / model_ips
            print(f"    {row['path']:<36}{row['images_per_s']:>10.0f} img/s  {ratio:.1f} x the model")
            ratios[f"(f) loader / model img/s, {row['path']}"] = ratio
        bench.save()
    if "g" in only:
        run_paper_rows(bench, paper)
    print("\nratios (same run):")
    for k, v in ratios.items():
        print(f"  {k:<60} {v:.3f}")
    return ratios


def run_paper_rows(bench: Bench, args: argparse.Namespace) -> None:
    default = "recipe,bf16,channels_last,static,compile,graphs" if bench.device.type == "cuda" else "recipe,static"
    variants = (args.variants or default).split(",")
    print(f"\n(g) paper rows, {args.steps} steps after {args.warmup}, variants {','.join(variants)}")
    found = []

    def on_row(r: dict) -> None:
        found.append(r)
        bench.rows.append({"section": "g", **r})
        shown = f"{r['images_per_s']:>10.1f} img/s {r['tflops']:>8.3f} TFLOP/s" if "images_per_s" in r else r["error"]
        print(f"    {r['row']:<34}{r['variant']:<15}{shown}")
        bench.save()

    paper_rows(
        bench.device,
        variants,
        rows=args.rows.split(",") if args.rows else ROWS,
        steps=args.steps,
        warmup=args.warmup,
        batch=args.paper_batch,
        workers=args.workers,
        peak=args.peak_tflops,
        on_row=on_row,
    )
    recipe = {r["row"]: r["images_per_s"] for r in found if r["variant"] == "recipe" and "images_per_s" in r}
    for r in found:
        if r["variant"] != "recipe" and "images_per_s" in r and r["row"] in recipe:
            bench.ratios[f"(g) {r['variant']} / recipe img/s {r['row']}"] = r["images_per_s"] / recipe[r["row"]]
    print(markdown(found))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast in the training steps (d, e)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "suite.json")
    g = p.add_argument_group("(g) paper rows")
    g.add_argument(
        "--variants",
        help=f"comma-separated, cumulative, among {','.join(VARIANTS)} (default: all on a GPU, recipe,static on a CPU)",
    )
    g.add_argument("--rows", help=f"comma-separated experiment names (default: all of Table 1: {','.join(ROWS)})")
    g.add_argument("--steps", type=int, default=20, help="timed SGD steps per row and variant")
    g.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, CUDA graph capture)")
    g.add_argument("--paper-batch", type=int, help="batch size (default: each row's recipe, 256 or 150)")
    g.add_argument("--workers", type=int, help="loader processes (default: the data module's)")
    g.add_argument(
        "--peak-tflops", type=float, help="the device's peak, for the share (default: known GPUs' bf16 dense peak)"
    )
    args = p.parse_args()
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        p.error(f"--only takes sections among {','.join(SECTIONS)}; got {args.only}")
    device = torch.device(args.device)
    bench = Bench(device, args.repeats, args.batch, args.amp, args.out)
    print(f"B={args.batch}, median of {args.repeats}, amp={args.amp}, {environment(device)}")
    run(only, bench, args)
    bench.save()
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
