"""A callback that slows training down without changing it, for tests that signal a run mid-epoch
(`+callbacks.pace._target_=tests.pace.Pace`): a run on digits is otherwise done before a signal lands."""

from __future__ import annotations

import time

import lightning as L


class Pace(L.Callback):
    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)
