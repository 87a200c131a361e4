"""Per-image test predictions: what a paired comparison of two models on the same images needs.

Each run's test stage keeps, for every test image, its index in the test split, its label, the
model's five most probable classes (most probable first) and the probability it gave the true
label. Stored compressed (`predictions.npz`: about 60 KB for 10,000 images), so run folders
with their predictions can be committed, and `gmsop.report` can test two configurations on
the same images (McNemar, paired bootstrap) long after the checkpoints are gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gmsop.paths import replace_atomically

PREDICTIONS_FILE = "predictions.npz"


class Predictions(NamedTuple):
    index: np.ndarray  # int64 N: the image's index in the test split (sorted, unique)
    label: np.ndarray  # int64 N
    top5: np.ndarray  # int64 N x k (k = min(5, classes)): most probable first
    p_true: np.ndarray  # float32 N: the probability given to the true label

    @classmethod
    def from_logits(cls, index: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> Predictions:
        """One batch's predictions."""
        probs = logits.detach().float().softmax(-1)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1).indices
        p_true = probs.gather(1, labels[:, None].long())[:, 0]
        return cls(*(t.cpu().numpy() for t in (index.long(), labels.long(), top.long(), p_true)))

    @classmethod
    def concatenate(cls, parts: list[Predictions]) -> Predictions:
        """Batches (or processes) joined; an image seen twice (the padding a distributed sampler adds
        to even out the processes) kept once; sorted by index."""
        if not parts:
            return cls(
                np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 1), np.int64), np.zeros(0, np.float32)
            )
        joined = cls(*(np.concatenate(field) for field in zip(*parts)))
        _, first = np.unique(joined.index, return_index=True)
        return cls(*(field[first] for field in joined))

    @property
    def correct(self) -> np.ndarray:
        """bool N: top-1 prediction right."""
        return self.top5[:, 0] == self.label

    def errors(self) -> dict[str, float]:
        """Top-1 and top-5 error (fractions), computed from the kept predictions."""
        in_top5 = (self.top5 == self.label[:, None]).any(1)
        return {"top1_err": float(1.0 - self.correct.mean()), "top5_err": float(1.0 - in_top5.mean())}

    def save(self, path: Path) -> None:
        """Written whole or not at all (compressed npz, compact dtypes)."""
        classes = int(max(self.label.max(initial=0), self.top5.max(initial=0))) + 1
        small = np.int16 if classes < 2**15 else np.int32

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    index=self.index.astype(np.int32),
                    label=self.label.astype(small),
                    top5=self.top5.astype(small),
                    p_true=self.p_true.astype(np.float32),
                )

        replace_atomically(Path(path), write)

    @classmethod
    def load(cls, path: Path) -> Predictions:
        with np.load(path, allow_pickle=False) as f:
            return cls(
                f["index"].astype(np.int64),
                f["label"].astype(np.int64),
                f["top5"].astype(np.int64),
                f["p_true"].astype(np.float32),
            )
