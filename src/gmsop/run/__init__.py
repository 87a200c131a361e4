"""The run loop and what keeps runs safe: one training run (training), its checkpoints
(checkpointing), what it resumes from (resume), its folder and lock (folder), its callbacks
and learning curves (callbacks, curves), and sweeps of many runs (sweep)."""
