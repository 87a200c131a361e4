"""Any folder of class sub-folders (torchvision's ImageFolder layout)."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from gmsop.data.base import DATA
from gmsop.data.errors import MissingDataError
from gmsop.data.image_files import ImageFilesDataModule, Sample
from gmsop.data.splits import stratified_hold_out

TEST_SEED = 0  # an unsplit folder's test split is the same for every run and split_seed


@DATA.register("imagefolder")
class ImageFolderDataModule(ImageFilesDataModule):
    """root/CLASS/*.jpg; or root/train/CLASS with root/test/CLASS (or root/val/CLASS) as the test split.

    An unsplit folder's test split is a fixed stratified `test_fraction` of its images. Val is a
    seeded stratified hold-out (data.val_fraction) of the training images either way.
    Images are decoded per read: resized to image_size x image_size, or with crop=fine_grained
    random resized crops in training and centre crops in evaluation (see gmsop.data.image_files).
    """

    option_defaults = {"image_size": 64, "num_workers": 2, "flip": True}

    def __init__(self, root: str, test_fraction: float = 0.1, grayscale: bool = False, **options) -> None:
        super().__init__(grayscale, **self.with_defaults(options))
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingDataError(
                f"image folder data.root={self.root} does not exist. Expected one sub-folder per class "
                "(root/CLASS/img.jpg), or root/train/CLASS/... and root/test/CLASS/... (or root/val/CLASS/...); "
                "set data.root to such a folder."
            )
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction={test_fraction}; allowed: in (0, 1)")
        self.test_fraction = test_fraction
        test_dir = next((self.root / n for n in ("test", "val") if (self.root / n).is_dir()), None)
        self.test_dir = test_dir if (self.root / "train").is_dir() else None
        class_root = self.root / "train" if self.test_dir else self.root
        if not any(p.is_dir() for p in class_root.iterdir()):
            raise MissingDataError(f"no class sub-folders in {class_root}; expected {class_root}/CLASS/img.jpg")
        self.class_names, self.class_to_idx = find_classes(str(class_root))
        if len(self.class_names) < 2:
            raise MissingDataError(
                f"{class_root} has {len(self.class_names)} class folder(s) "
                f"({', '.join(self.class_names)}); a classifier needs at least 2"
            )
        self.num_classes = len(self.class_names)

    @property
    def presplit(self) -> bool:
        """Whether the folder has its own test split (root/train and root/test or root/val)."""
        return self.test_dir is not None

    def _samples(self, folder: Path) -> list[Sample]:
        samples = make_dataset(str(folder), self.class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not samples:
            raise MissingDataError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {folder}")
        empty = sorted(set(self.class_names) - {self.class_names[label] for _, label in samples})
        if empty:
            raise MissingDataError(
                f"class folder(s) {', '.join(str(folder / c) for c in empty)} hold no images "
                f"({', '.join(IMG_EXTENSIONS)}); add images or remove the folder(s), or each becomes a class never seen"
            )
        return samples

    def samples(self) -> tuple[list[Sample], list[Sample]]:
        if self.test_dir is not None:
            return self._samples(self.root / "train"), self._samples(self.test_dir)
        samples = self._samples(self.root)
        advice = (
            f"Add images, or give {self.root}/train/CLASS and {self.root}/test/CLASS folders "
            "(images per class: at least 3, for a test, a val and a training image)"
        )
        try:
            kept, test = stratified_hold_out(
                [label for _, label in samples],
                fraction=self.test_fraction,
                size=None,
                seed=TEST_SEED,
                key="data.test_fraction",
                where=str(self.root),
                class_names=self.class_names,
            )
        except MissingDataError as e:
            raise MissingDataError(f"{e}. {advice}") from None
        return [samples[i] for i in kept], [samples[i] for i in test]

    def where(self) -> str:
        return str(self.root / "train" if self.test_dir else self.root)
