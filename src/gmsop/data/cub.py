"""CUB-200-2011 (Caltech-UCSD Birds) in its published folder format.

data.root holds images.txt ("<id> <relative path>"), image_class_labels.txt ("<id> <class,
from 1>"), train_test_split.txt ("<id> <1 = train, 0 = test>"), classes.txt ("<class>
<name>", optional: names only) and images/; bounding_boxes.txt and parts/ are ignored. The test
list is the test split (the fine-grained literature reports on it); val is a seeded stratified
hold-out of the training list (data.val_fraction, default a tenth: about 3 images per class).
Defaults are the fine-tuning recipe's: 448 px, random resized crops and flips in training, centre crops in evaluation.
"""

from __future__ import annotations

from pathlib import Path

from gmsop.data.base import DATA
from gmsop.data.errors import MissingDataError
from gmsop.data.image_files import Crop, ImageFilesDataModule, Sample

LISTS = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
HOW_TO_GET = (
    "Download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ , "
    "extract it, and set data.root to the CUB_200_2011 folder (the one holding images.txt)."
)


def _read_table(path: Path, columns: int) -> dict[int, list[str]]:
    """'<id> <value> ...' lines -> {id: [values]}; names the file and line of a malformed one."""
    rows: dict[int, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns or not parts[0].isdigit():
            raise MissingDataError(f"{path}, line {number}: expected '<id> <value>', got {line!r}")
        rows[int(parts[0])] = parts[1:]
    return rows


@DATA.register("cub")
class CUBDataModule(ImageFilesDataModule):
    """CUB-200-2011: 200 bird species, 5,994 training and 5,794 test images."""

    option_defaults = {"batch_size": 10, "image_size": 448, "num_workers": 4, "flip": True, "crop": Crop.fine_grained}

    def __init__(self, root: str = "data/CUB_200_2011", **options) -> None:
        super().__init__(**self.with_defaults(options))
        self.root = Path(root).expanduser()
        missing = [name for name in LISTS if not (self.root / name).is_file()]
        if missing:
            raise MissingDataError(
                f"CUB-200-2011 not found in data.root={self.root}: missing {', '.join(missing)}. {HOW_TO_GET}"
            )
        images = _read_table(self.root / "images.txt", 2)
        labels = _read_table(self.root / "image_class_labels.txt", 2)
        is_train = _read_table(self.root / "train_test_split.txt", 2)
        unlisted = sorted(set(images) ^ set(labels) | set(images) ^ set(is_train))
        if unlisted:
            raise MissingDataError(
                f"the lists in {self.root} disagree on image ids {unlisted[:10]}: each id needs a line in "
                f"{', '.join(LISTS)}"
            )
        class_ids = sorted({int(v[0]) for v in labels.values()})
        names = _read_table(self.root / "classes.txt", 2) if (self.root / "classes.txt").is_file() else {}
        self.class_names = [names.get(c, [str(c)])[0] for c in class_ids]
        self.num_classes = len(class_ids)
        index = {c: i for i, c in enumerate(class_ids)}
        self._split: dict[bool, list[Sample]] = {True: [], False: []}
        for image_id, (path,) in sorted(images.items()):
            sample = (str(self.root / "images" / path), index[int(labels[image_id][0])])
            self._split[is_train[image_id][0] == "1"].append(sample)
        if not self._split[True] or not self._split[False]:
            raise MissingDataError(f"{self.root / 'train_test_split.txt'} lists no training or no test images")
        absent = [p for p, _ in self._split[True] + self._split[False] if not Path(p).is_file()]
        if absent:
            raise MissingDataError(
                f"{len(absent)} image(s) listed in {self.root / 'images.txt'} are missing, "
                f"e.g. {absent[0]}. {HOW_TO_GET}"
            )

    def samples(self) -> tuple[list[Sample], list[Sample]]:
        return self._split[True], self._split[False]
