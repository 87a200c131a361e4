"""Known messages that say nothing about a run, silenced when a run (or another command that drives
Lightning) starts, never on import."""

from __future__ import annotations

import logging
import warnings


class _QuietLightning(logging.Filter):
    """Drops Lightning start-up lines that say nothing about the run: its advertisement
    ("💡 Tip: ... litlogger") and the note that our model summary replaces its default one."""

    NOISE = ("💡 Tip", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


# Known messages that say nothing about a run, each with why; installed when a run (or another
# command that drives Lightning) starts, not on import.
KNOWN_NOISE = (
    # Lightning 2.6 with torch >= 2.10, once per run; not ours to fix
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    # A resume continues in its own checkpoints folder (fresh runs refuse a used folder, run_folder/lock.py)
    r"Checkpoint directory .* exists and is not empty",
    # The data module restores the data position itself (data/sampling.py; tests/test_exact_resume.py),
    # which Lightning cannot see: its warning that a mid-epoch resume is unreliable would be false
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # Checkpoints made before the curves were read from the CSV log hold a removed callback's state
    r".*Please add the following callbacks: \['LearningCurves'\]",
    # ThroughputMonitor would also log FLOPs/s given a model's flops_per_batch (`gmsop.cost` counts them)
    r"When using the `ThroughputMonitor`, you need to define a `flops_per_batch`",
)


_quiet = _QuietLightning()


def quiet_known_noise() -> None:
    """Silence KNOWN_NOISE and Lightning's start-up noise for this process (idempotent)."""
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _quiet not in rank_zero_logger.filters:
        rank_zero_logger.addFilter(_quiet)
    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)
