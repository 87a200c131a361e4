"""Entry point: `python -m gmsop.lr_find experiment=NAME key=value ... [--steps 100]` suggests optim.lr.

What it runs and how it suggests: gmsop.run.lr_find.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gmsop.errors import exit_on_user_error
from gmsop.run import lr_find as room
from gmsop.run.lr_find import find_lr
from gmsop.stop_signals import stop_signals_end


@exit_on_user_error
@stop_signals_end("the learning-rate finder")
def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0] + "\n\n" + room.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for gmsop.train (e.g. head=sop data=digits)")
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--max-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path("lr_find"))
    args = p.parse_args()
    result = find_lr(args.overrides, args.out, args.min_lr, args.max_lr, args.steps)
    print(f"curve: {args.out / 'lr_find.png'} (numbers: {args.out / 'lr_find.json'})")
    if result["suggestion"] is None:
        print("no suggestion: the loss never fell steadily; widen --min-lr/--max-lr or take more --steps")
    else:
        print(
            f"suggested learning rate: {result['suggestion']:.3g} at global batch {result['global_batch']}  ->  "
            f"optim.lr={result['base_lr']:.3g} (the base rate for optim.lr_reference_batch="
            f"{result['lr_reference_batch']}, optim.lr_scaling={result['lr_scaling']})"
        )


def cli() -> None:
    """`python -m gmsop.lr_find` and the `gmsop-lr-find` command."""
    main()


if __name__ == "__main__":
    cli()
