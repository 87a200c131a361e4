"""Train / val / test: the validation set is a seeded, stratified hold-out of the training data.

Every data module yields three disjoint splits. Test is the data set's own evaluation split
(Fashion-MNIST's t10k, CIFAR's test batch, ImageNet-64's val_data, CUB's test list, an image
folder's test/ or val/ folder); it is looked at once, after training. Val, which every choice
reads (best.ckpt, early stopping, lr_find, sweeps and their pruning, a report's best epoch), is
held out of the training files: stratified by class, reproducible from `data.split_seed`.
`data.select_on_test=true` gives the published protocol instead (no hold-out: val is the test
split); such runs say "selected on test" in summary.json and in reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
from sklearn.model_selection import train_test_split

from gmsop.data.errors import MissingDataError

SELECTED_ON_VAL = "val"
SELECTED_ON_TEST = "test"


def check_hold_out(fraction: float, size: Optional[int]) -> None:
    """Refuse, naming the key, a hold-out that cannot be made."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction={fraction}; allowed: in (0, 1)")
    if size is not None and size < 1:
        raise ValueError(f"data.val_size={size}; allowed: >= 1, or null to hold out data.val_fraction")


def stratified_hold_out(
    labels: Sequence[int] | np.ndarray,
    *,
    fraction: float,
    size: Optional[int],
    seed: int,
    key: str = "data.val_fraction",
    where: str = "",
    class_names: Optional[Sequence[str]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) sorted indices into `labels`: `size` items (or `fraction` of them, but at least
    one per class) held out, stratified by label, the same for the same seed. A class needs two
    items to be split."""
    labels = np.asarray(labels)
    n = len(labels)
    amount = size if size is not None else max(math.ceil(fraction * n), len(np.unique(labels)))
    asked = f"{key}={fraction}" if size is None else f"data.val_size={size}"
    classes, counts = np.unique(labels, return_counts=True)
    lonely = [class_names[c] if class_names else str(c) for c in classes[counts < 2].tolist()]
    if lonely:
        raise MissingDataError(
            f"class(es) {', '.join(lonely[:10])} of {where or 'the training data'} hold one image: "
            f"the stratified hold-out ({asked}) needs at least 2 per class"
        )
    try:
        kept, held = train_test_split(np.arange(n), test_size=amount, random_state=seed, stratify=labels)
    except ValueError as e:  # e.g. fewer held-out images than classes, or more than there are
        raise MissingDataError(
            f"cannot hold out {asked} of the {n} images{f' in {where}' if where else ''} stratified by its "
            f"{len(classes)} classes: {e}. Hold out at least one image per class and leave one to train on "
            f"(change {key if size is None else 'data.val_size'}), or add images"
        ) from None
    return np.sort(kept), np.sort(held)
