"""Entry point: `python -m gmsop.sweep FILE --trials N [key=value ...]` (see gmsop.sweeps)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from gmsop import sweeps
from gmsop.errors import exit_on_user_error
from gmsop.run.loggers import own_wandb_service
from gmsop.run.training import RunInterrupted
from gmsop.stop_signals import stop_signals_end
from gmsop.sweeps.study import PRUNERS, run_sweep


@exit_on_user_error
@stop_signals_end("the sweep", "its finished trials are kept; run the command again to continue")
def main() -> None:
    own_wandb_service()
    p = argparse.ArgumentParser(description=sweeps.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="sweep file in W&B's schema")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite in runs/<sweep>/)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pruner",
        default="median",
        choices=PRUNERS,
        help="median: stop a trial whose validation metric is worse than the median of earlier trials",
    )
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every trial")
    args = p.parse_intermixed_args()
    if not args.file.is_file():
        p.error(f"sweep file {args.file} does not exist")
    try:
        study = run_sweep(args.file, args.trials, args.storage, args.runs_dir, args.overrides, args.seed, args.pruner)
    except RunInterrupted as e:  # the trial is marked FAIL; re-running the command continues it
        print(f"\n{e}; re-run the sweep command to continue the sweep (and this trial)", file=sys.stderr)
        sys.exit(e.exit_code)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        print(f"no trial completed; see {args.runs_dir / study.study_name / 'trials.csv'}", file=sys.stderr)
        sys.exit(1)
    best = study.best_trial
    print(f"best trial #{best.number}: {best.value:.4f} with {best.params}; run folder {best.user_attrs['run_dir']}")


def cli() -> None:
    """`python -m gmsop.sweep` and the `gmsop-sweep` command."""
    main()


if __name__ == "__main__":
    cli()
