"""Loader processes pass stop signals on to the run they were started for, and to no other.

A process can hold several runs in turn (sweeps, multiruns, a resume after a stop in the same
process); torch terminates a persistent loader process with SIGTERM when its loader is collected,
which may be while a later run goes on. These tests send the signals to real loader processes.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from torch.utils.data import TensorDataset

from gmsop.stop_signals import StopSignalSafeLoader, take_forwarded_signals


@pytest.fixture
def loader_process():
    """Start a loader's one persistent process; its pid. Shut down (even after a failure) at the end."""
    iterators = []

    def start() -> int:
        iterator = iter(StopSignalSafeLoader(TensorDataset(torch.arange(8.0)), num_workers=1, persistent_workers=True))
        next(iterator)
        iterators.append(iterator)
        return iterator._workers[0].pid

    yield start
    for iterator in iterators:
        iterator._shutdown_workers()


def _wait_for(received: list, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not received and time.monotonic() < deadline:
        time.sleep(0.02)  # (Python runs signal handlers between these)


def test_a_loader_process_forwards_to_its_own_run_and_not_to_a_later_one(loader_process):
    first_run, second_run = [], []
    stop_first = take_forwarded_signals(first_run.append)
    earlier_pid = loader_process()
    os.kill(earlier_pid, signal.SIGUSR1)  # its own run takes it
    _wait_for(first_run)
    assert first_run == [signal.SIGUSR1]
    stop_first()

    stop_second = take_forwarded_signals(second_run.append)
    try:
        later_pid = loader_process()
        os.kill(earlier_pid, signal.SIGTERM)  # as torch does to a collected loader's slow process
        _wait_for(second_run, seconds=1.0)
        assert second_run == [], "a loader process of an ended run stopped the next run"
        assert first_run == [signal.SIGUSR1]

        os.kill(later_pid, signal.SIGTERM)  # the later run's own loader process still forwards
        _wait_for(second_run)
        assert second_run == [signal.SIGTERM]
    finally:
        stop_second()


def test_a_run_that_never_stopped_taking_loses_its_loaders_to_the_next_run(loader_process):
    first_run, second_run = [], []
    stop_first = take_forwarded_signals(first_run.append)  # (not stopped before the next run takes them)
    earlier_pid = loader_process()
    stop_second = take_forwarded_signals(second_run.append)
    try:
        os.kill(earlier_pid, signal.SIGTERM)
        _wait_for(second_run, seconds=1.0)
        assert second_run == [] and first_run == []
        stop_first()  # late: it leaves the second run's handlers in place
        os.kill(loader_process(), signal.SIGINT)
        _wait_for(second_run)
        assert second_run == [signal.SIGINT]
    finally:
        stop_second()
