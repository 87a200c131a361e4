"""What a checkpoint carries besides Lightning's state: the run's record (config, folder, W&B id)
and the random generators, so a resumed run knows what it continues and draws as it would have."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch

from gmsop.run_folder.checkpoints import RECORD_KEY


class RunRecord(L.Callback):
    """Writes the run's config, folder and W&B run id into every checkpoint (key `gmsop`)."""

    def __init__(self, run_dir: Path, wandb_id: Optional[str], config: Mapping[str, Any]) -> None:
        self.record = {"run_dir": str(run_dir), "wandb_id": wandb_id, "config": dict(config)}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RECORD_KEY] = self.record


class RandomState(L.Callback):
    """Carries the random generators (torch CPU and CUDA, NumPy, Python) through checkpoints,
    so a resumed run draws the same noise, dropout and flips as an uninterrupted one.

    The saved states are applied when training starts (after the sanity check and the data
    loaders are set up), right where the interrupted run stood.
    """

    def __init__(self) -> None:
        self._loaded: Optional[dict[str, Any]] = None

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()  # as tensors and numbers: weights_only-loadable
        numpy = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
        state = {"torch": torch.get_rng_state(), "numpy": numpy, "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._loaded = self._loaded, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
