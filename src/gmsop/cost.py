"""Entry point: `python -m gmsop.cost` (what it does: gmsop.analysis.cost)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmsop.analysis import cost as room
from gmsop.analysis.cost import PAPER_DIR, describe, experiment_cost, markdown_table, measured_rates
from gmsop.errors import exit_on_user_error
from gmsop.run.compose import compose_train
from gmsop.stop_signals import stop_signals_end


@exit_on_user_error
@stop_signals_end("the cost estimate")
def main() -> None:
    p = argparse.ArgumentParser(description=room.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=paper/imagenet64_resnet18_gap")
    p.add_argument("--paper", action="store_true", help="every experiments/paper/ row, as a Markdown table")
    p.add_argument("--classes", type=int, default=None, help="number of classes when the data is not here")
    p.add_argument("--channels", type=int, default=None, help="input channels when the data is not here")
    p.add_argument("--train-images", type=int, default=None, help="training-set size, for the total")
    p.add_argument("--tflops", type=float, default=50.0, help="sustained TFLOP/s assumed for GPU-hours")
    p.add_argument(
        "--throughput",
        type=Path,
        default=None,
        help="a benchmark results file (benchmarks/suite.py, section d) whose measured training rates "
        "give GPU-hours beside the FLOP estimate, for the rows it measured",
    )
    args = p.parse_args()
    if args.paper == bool(args.overrides):
        p.error("give Hydra overrides (e.g. experiment=...) or --paper, not both or neither")
    if args.paper:
        names = sorted(f.stem for f in PAPER_DIR.glob("*.yaml"))
        costs = [experiment_cost(compose_train([f"experiment=paper/{n}"])) for n in names]
        print(markdown_table(costs, args.tflops, measured_rates(args.throughput) if args.throughput else None), end="")
        return
    cost = experiment_cost(compose_train(args.overrides), args.classes, args.channels, args.train_images)
    print(describe(cost, args.tflops))


def cli() -> None:
    """`python -m gmsop.cost` and the `gmsop-cost` command."""
    main()


if __name__ == "__main__":
    cli()
