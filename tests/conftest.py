"""Shared test helpers: SPD matrices with a known spectrum, and running the real CLI."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# `make test` runs the suite in one process per core (pytest-xdist): each, and every CLI it
# starts, then gets its share of the cores instead of all of them (oversubscribed, they were slower)
if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def random_spd(batch: int, c: int, lo: float, hi: float, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """B x C x C symmetric matrices with eigenvalues drawn uniformly from [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, c, c, generator=g, dtype=dtype))
    lam = lo + (hi - lo) * torch.rand(batch, c, generator=g, dtype=dtype)
    return (q * lam[:, None, :]) @ q.transpose(1, 2)


# ThroughputMonitor's columns: timings, and counts that restart with each process
THROUGHPUT = re.compile(r"train/(time|batches|samples|(device/)?\w+_per_sec)")


def logged_rows(run_dir: Path) -> list[tuple]:
    """The rows of a run's csv/metrics.csv, sorted, less the throughput columns (and the rows that
    hold nothing else)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if v and not THROUGHPUT.fullmatch(k)} for row in csv.DictReader(f)]
    return sorted(tuple(sorted(row.items())) for row in rows if set(row) - {"epoch", "step"})


def tiny_lr_sweep(folder: Path, name: str, *train_args: str) -> tuple[Path, list[str]]:
    """A 1-epoch random sweep over optim.lr on digits (W&B's schema), and the sweep CLI's common
    arguments (runs under folder/runs, 3 training and 2 validation batches per trial)."""
    path = folder / "sweep.yaml"
    path.write_text(f"""
name: {name}
method: random
metric: {{name: val/top1_err, goal: minimize}}
parameters:
  optim.lr: {{distribution: log_uniform_values, min: 0.005, max: 0.02}}
  trainer.max_epochs: {{value: 1}}
command: [python, -m, gmsop.train, {", ".join(train_args)}]
""")
    return path, [
        "--runs-dir",
        str(folder / "runs"),
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
    ]


CLI_ENV = {"WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}


def run_cli(
    module: str, *args: str, cwd: Path, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m MODULE args...` as a user would; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, **CLI_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(module: str, *args: str, cwd: Path, env: dict | None = None, session: bool = False) -> subprocess.Popen:
    """Start `python -m MODULE args...` in the background (to signal or kill it); output goes to
    cwd/MODULE-RANDOM.log (proc.log). `session`: in a process group of its own, with the processes
    it starts (DDP ranks), to signal them all at once as a cluster scheduler does."""
    log = open(cwd / f"{module}-{os.urandom(3).hex()}.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, **CLI_ENV, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,
        start_new_session=session,
    )
    proc.log = log  # read it back with proc.log.seek(0); proc.log.read()
    proc.group = session
    _STARTED.append(proc)
    return proc


_STARTED: list[subprocess.Popen] = []


def _default_sigint() -> None:
    """Background jobs of a non-interactive shell inherit SIGINT ignored; a user's process does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.group:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # with what it started
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def cli(tmp_path):
    """Run a gmsop entry point with runs written under tmp_path and quiet progress output."""

    def _run(module: str, *args: str, timeout: int = 300):
        return run_cli(module, *args, f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path, timeout=timeout)

    return _run
