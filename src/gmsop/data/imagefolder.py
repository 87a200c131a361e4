"""Any folder of class sub-folders (torchvision's ImageFolder layout)."""

from __future__ import annotations

from pathlib import Path

from sklearn.model_selection import train_test_split
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from gmsop.data.base import DATA
from gmsop.data.errors import MissingDataError
from gmsop.data.image_files import Crop, ImageFilesDataModule, Sample


@DATA.register("imagefolder")
class ImageFolderDataModule(ImageFilesDataModule):
    """root/CLASS/*.jpg; or root/train/CLASS and root/val/CLASS when both exist.

    Without train/ and val/ sub-folders, a seeded stratified `val_fraction` split is used.
    Images are decoded per read: resized to image_size x image_size, or with crop=fine_grained
    random resized crops in training and centre crops in evaluation (see gmsop.data.image_files).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        image_size: int = 64,
        num_workers: int = 2,
        flip: bool = True,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        grayscale: bool = False,
        stats_sample: int = 2000,
        verify_images: bool = True,
        crop: Crop = Crop.resize,
    ) -> None:
        super().__init__(
            batch_size, image_size, num_workers, flip, eval_batch_size, grayscale, stats_sample, verify_images, crop
        )
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingDataError(
                f"image folder data.root={self.root} does not exist. Expected one sub-folder per class "
                "(root/CLASS/img.jpg), or root/train/CLASS/... and root/val/CLASS/...; "
                "set data.root to such a folder."
            )
        split_dirs = (self.root / "train", self.root / "val")
        self.presplit = all(d.is_dir() for d in split_dirs)
        class_root = split_dirs[0] if self.presplit else self.root
        if not any(p.is_dir() for p in class_root.iterdir()):
            raise MissingDataError(f"no class sub-folders in {class_root}; expected {class_root}/CLASS/img.jpg")
        self.class_names, self.class_to_idx = find_classes(str(class_root))
        if len(self.class_names) < 2:
            raise MissingDataError(
                f"{class_root} has {len(self.class_names)} class folder(s) "
                f"({', '.join(self.class_names)}); a classifier needs at least 2"
            )
        self.num_classes = len(self.class_names)
        self.val_fraction, self.split_seed = val_fraction, split_seed

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
        if self.presplit:
            return self._samples(self.root / "train"), self._samples(self.root / "val")
        samples = self._samples(self.root)
        labels = [s[1] for s in samples]
        few = [self.class_names[c] for c in range(self.num_classes) if labels.count(c) < 2]
        if few:
            raise MissingDataError(
                f"class folder(s) {', '.join(str(self.root / c) for c in few)} hold one image: the stratified "
                f"hold-out (data.val_fraction={self.val_fraction}) needs at least 2 per class. Add images, or "
                f"give {self.root}/train/CLASS and {self.root}/val/CLASS folders"
            )
        try:
            return tuple(
                train_test_split(samples, test_size=self.val_fraction, random_state=self.split_seed, stratify=labels)
            )
        except ValueError as e:  # e.g. fewer held-out images than classes
            raise MissingDataError(
                f"cannot hold out data.val_fraction={self.val_fraction} of the {len(samples)} images in {self.root} "
                f"stratified by its {self.num_classes} classes: {e}. Change data.val_fraction, add images, or "
                f"give {self.root}/train/CLASS and {self.root}/val/CLASS folders"
            ) from None
