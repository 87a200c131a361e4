"""A run interrupted and resumed, any number of times and at any point, ends with the weights of
the same run left alone: bit for bit on CPU, the same batches at the same steps, the same
validation results per epoch.

Interruptions are done in-process (fast, and at exact points): "kill" raises from a callback
right after the checkpoints of that point are written (what kill -9 leaves behind: the newest
checkpoint and nothing after it); "term" sends the process a real SIGTERM, which Lightning turns
into a save at the next batch boundary. `tests/test_faults.py` kills real CLI processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from gmsop.run.training import RunInterrupted, run_training
from gmsop.run_folder import read_curves
from tests.conftest import logged_rows
from tests.test_config import compose_train

STEPS_PER_EPOCH, EPOCHS = 8, 3


class Killed(BaseException):
    """Stands in for kill -9 (a BaseException, like SystemExit: nothing in the run catches it)."""


class InterruptAt(L.Callback):
    """At global step `step`: before the next training batch ("train") or during validation
    ("val"), either raise Killed (`how="kill"`) or send this process SIGTERM (`how="term"`)."""

    def __init__(self, step: int, where: str, how: str) -> None:
        self.step, self.where, self.how = step, where, how

    def _maybe(self, trainer: L.Trainer, where: str) -> None:
        if where == self.where and trainer.global_step == self.step and not trainer.sanity_checking:
            self.step = -1  # once
            if self.how == "kill":
                raise Killed
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._maybe(trainer, "train")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._maybe(trainer, "val")


class BatchLog(L.Callback):
    """step -> (epoch, batch index, digest of the labels), kept in a file across the resumes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        log = json.loads(self.path.read_text()) if self.path.exists() else {}
        log[str(trainer.global_step)] = [
            trainer.current_epoch,
            batch_idx,
            hashlib.sha1(batch[1].numpy().tobytes()).hexdigest(),
        ]
        self.path.write_text(json.dumps(log))


GMSOP = ("head=gmsop", "head.num_components=4", "head.k=2", "head.component_dims=[32,16]", "head.gate_dims=[32,16]")


def _train(folder: Path, interruptions, every_n_steps, *overrides: str, model: tuple[str, ...] = GMSOP) -> dict:
    """Train with the interruptions (resuming after each), then to the end; what the run left."""
    cfg = compose_train(
        *model,
        "data.image_size=16",
        "data.flip=true",  # random flips, drawn in the training process
        f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "trainer.limit_val_batches=2",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.enable_progress_bar=false",
        "trainer.resume=auto",
        f"trainer.checkpoint_every_n_steps={every_n_steps}",
        f"runs_dir={folder / 'runs'}",
        *overrides,
    )
    run_dir, batches = folder / "run", BatchLog(folder / "batches.json")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)}
    for step, where, how in interruptions:
        with pytest.raises(Killed if how == "kill" else RunInterrupted):
            run_training(cfg, run_dir, [batches, InterruptAt(step, where, how)])
    run_training(cfg, run_dir, [batches])
    # every run leaves the process's signal handlers as it found them (Lightning's SIGTERM handler
    # stayed installed, bound to a finished trainer: a later SIGTERM did nothing)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    val = [(e, c["val/loss"], c["val/top1_err"]) for e, c in sorted(read_curves(run_dir).items())]
    return {
        "logged": logged_rows(run_dir),
        "step": ckpt["global_step"],
        "weights": ckpt["state_dict"],
        "val": val,
        "batches": json.loads(batches.path.read_text()),
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("uninterrupted"), [], "null")


# (A single kill mid-epoch or during validation is part of the repeated-kill cases below.)
CASES = {
    "kill after an epoch's last batch": ([(8, "train", "kill")], 1),
    "kill during validation, epoch checkpoints only": ([(8, "val", "kill"), (13, "train", "kill")], "null"),
    "kill before, during and after the end of an epoch": (
        [(7, "train", "kill"), (8, "val", "kill"), (9, "train", "kill")],
        1,
    ),
    "SIGTERM mid-epoch and at an epoch's start": ([(3, "train", "term"), (8, "train", "term")], "null"),
    "SIGTERM during validation, then kills": ([(8, "val", "term"), (9, "train", "kill"), (20, "train", "kill")], 1),
    "kill mid-epoch with 2 loader processes": ([(5, "train", "kill")], 1, "data.num_workers=2"),
    "kills mid-epoch with 2 loader processes": ([(5, "train", "kill"), (11, "train", "kill")], 1, "data.num_workers=2"),
    # a SIGTERM during an epoch's last batch saves after its validation, between two epochs: the
    # resumed run started an epoch late once loader processes fetched ahead (they shuffle at once)
    "SIGTERM mid-epoch and during an epoch's last batch, 2 loader processes": (
        [(3, "train", "term"), (7, "train", "term"), (16, "val", "term")],
        "null",
        "data.num_workers=2",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(tmp_path, uninterrupted, case):
    resumed = _train(tmp_path, *CASES[case])
    assert resumed["step"] == uninterrupted["step"] == EPOCHS * STEPS_PER_EPOCH
    assert resumed["batches"] == uninterrupted["batches"]  # each step trained on the same batch, none twice
    assert resumed["val"] == uninterrupted["val"]  # every epoch validated, with the same results
    assert resumed["logged"] == uninterrupted["logged"]  # the CSV log: every row once, none lost
    for name, value in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """40 small JPEG-free PNG images in 2 class folders, of random sizes (so random resized crops differ)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = torch.Generator().manual_seed(0)
    for i in range(40):
        h, w = (int(v) for v in torch.randint(20, 40, (2,), generator=rng))
        pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=rng).numpy()
        (root / f"class{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / f"class{i % 2}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_random_crops_decoded_in_loader_processes_resume_exactly(tmp_path, image_folder):
    """Fine-grained data: random resized crops are drawn in the data loader's processes, per image;
    a run killed mid-epoch and resumed still sees the same crops, and ends with the same weights."""
    data = (
        "data=imagefolder",
        f"data.root={image_folder}",
        "data.crop=fine_grained",
        "data.batch_size=4",
        "data.num_workers=2",
        "data.verify_images=false",
    )
    model = ("head=gap", "model.bn=false")
    uninterrupted = _train(tmp_path / "whole", [], "null", *data, model=model)
    resumed = _train(tmp_path / "resumed", [(5, "train", "kill"), (11, "train", "kill")], 1, *data, model=model)
    assert resumed["batches"] == uninterrupted["batches"]
    assert resumed["logged"] == uninterrupted["logged"]
    for name, value in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name


@pytest.mark.slow
def test_fine_tuning_warm_up_resumed_mid_epoch_keeps_the_backbone_held(tmp_path):
    """model.freeze_backbone_epochs: a run resumed inside a warm-up epoch holds the backbone for the
    rest of it (Lightning calls no on_train_epoch_start for a resumed epoch: the backbone trained)."""
    model = ("head=gap", "model.freeze_backbone_epochs=2")
    uninterrupted = _train(tmp_path / "whole", [], "null", model=model)
    resumed = _train(tmp_path / "resumed", [(5, "train", "kill"), (11, "train", "kill")], 1, model=model)
    assert resumed["logged"] == uninterrupted["logged"]
    for name, value in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name


@pytest.mark.slow
def test_sigterm_in_the_middle_of_a_gradient_accumulation_waits_for_its_step(tmp_path):
    """trainer.accumulate_grad_batches=2: SIGTERM during the first batch of a pair is acted on after
    the pair's optimizer step (a save between the two lost the first batch's gradients)."""
    model = ("head=gap",)
    accumulate = "trainer.accumulate_grad_batches=2"
    uninterrupted = _train(tmp_path / "whole", [], "null", accumulate, model=model)
    resumed = _train(
        tmp_path / "resumed", [(1, "train", "term"), (5, "train", "term")], "null", accumulate, model=model
    )
    assert resumed["step"] == uninterrupted["step"] == EPOCHS * STEPS_PER_EPOCH // 2
    assert resumed["logged"] == uninterrupted["logged"]
    for name, value in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name


@pytest.mark.slow
def test_interrupted_mid_epoch_validations_resume_exactly(tmp_path):
    """trainer.val_check_interval=4 (a validation every 4 batches), 2 loader processes:
    - killed during a mid-epoch validation, the run resumes before it and runs it (a step save just
      before it was resumed past the validation, which was then never run);
    - SIGTERM during one is acted on after the next training batch (a save right after the
      validation resumed with the logged step numbers one ahead);
    - resuming in the same process works (the loader processes, still alive after the exception,
      held the run folder's lock: "in use")."""
    model, every_4 = ("head=gap",), ("trainer.val_check_interval=4", "data.num_workers=2")
    uninterrupted = _train(tmp_path / "whole", [], "null", *every_4, model=model)
    resumed = _train(tmp_path / "resumed", [(4, "val", "kill"), (12, "val", "term")], 1, *every_4, model=model)
    assert resumed["logged"] == uninterrupted["logged"]  # every validation's row, once, at its step
    for name, value in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name


@pytest.mark.slow
def test_learning_rate_warm_up_resumes_exactly(tmp_path):
    """optim.warmup_epochs=1.5 (12 steps, past the first epoch's end) multiplies into the step schedule;
    runs killed inside the warm-up (mid-epoch, and after the first epoch) resume it where it was."""
    model = ("head=gap",)
    warm = ("optim.warmup_epochs=1.5", "optim.milestones=[2]")
    uninterrupted = _train(tmp_path / "whole", [], "null", *warm, model=model)
    resumed = _train(tmp_path / "resumed", [(5, "train", "kill"), (10, "train", "kill")], 1, *warm, model=model)
    rows = sorted(
        (int(r["step"]), float(r["lr-SGD/backbone"]))
        for r in map(dict, uninterrupted["logged"])
        if "lr-SGD/backbone" in r
    )
    rates = [rate for _, rate in rows]
    rate = 0.1 * 64 / 256  # digits' batch 64; logged at each epoch's start: steps 0, 8 (warming up) and 16
    assert rates == pytest.approx([rate * 0.1, rate * (0.1 + 0.9 * 8 / 12), rate * 0.1], rel=1e-9)
    assert resumed["logged"] == uninterrupted["logged"]
    for name, value in uninterrupted["weights"].items():
        assert torch.equal(resumed["weights"][name], value), name
