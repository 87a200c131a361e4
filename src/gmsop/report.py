"""Entry point: `python -m gmsop.report` (what it does: gmsop.analysis.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gmsop.analysis import report as room
from gmsop.analysis.report import report
from gmsop.errors import exit_on_user_error
from gmsop.stop_signals import stop_signals_end


@exit_on_user_error
@stop_signals_end("the report")
def main() -> None:
    p = argparse.ArgumentParser(description=room.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="an ablation/multirun folder or a single run folder")
    p.add_argument("--out", type=Path, default=None, help="where to write (default FOLDER/report)")
    p.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="compare two configurations (their labels in the table) image by image; repeatable",
    )
    args = p.parse_args()
    if not args.folder.is_dir():
        p.error(f"{args.folder} is not a folder")
    out = report(args.folder, args.out, [tuple(pair) for pair in args.compare])
    print((out / "report.md").read_text())
    print(f"written to {out}")


def cli() -> None:
    """`python -m gmsop.report` and the `gmsop-report` command."""
    main()


if __name__ == "__main__":
    cli()
