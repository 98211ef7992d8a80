"""Labelled image sets: a folder of class folders, a CSV manifest, or the ELPV default.

A data set is a list of samples (file, label, split) with the splits
``train`` (FP32 baseline only), ``calib`` (the INT8 calibration set) and
``eval`` (every accuracy figure). Sources:

* a CSV manifest with the header ``path,label,split`` (paths relative to the
  CSV's folder);
* a folder of class folders; if it holds ``manifest.csv`` or
  ``splits_suggested.csv`` that manifest is used, else the files are split
  deterministically (by content hash, so identical files share a split);
* ``elpv``: the ELPV solar-cell set shipped by the ``elpv-dataset`` package
  (defect probability >= 0.5 counts as defective), split the same way.

This module stays Python 3.6 compatible: the device-side route imports it.
"""

import csv
import hashlib
import os
from typing import NamedTuple

from .artifacts import sha256_file
from .errors import JetquantError
from .log import get_logger
from .preprocess import open_rgb

log = get_logger("data")

SPLITS = ("train", "calib", "eval")
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
)
MANIFEST_NAMES = ("manifest.csv", "splits_suggested.csv")
CALIB_SIZE = 200
EVAL_FRACTION = 1.0 / 3.0
SHARED_NEU = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "neu-det"
)


class Sample(NamedTuple):
    """One labelled image: absolute path, path as written in the source, label, split."""

    path: str
    rel: str
    label: str
    split: str


class Dataset(object):
    """A labelled image set with fixed splits.

    Attributes:
        name: short name for reports (folder or manifest name, or ``elpv``).
        source: where it was read from.
        samples: every sample, in a stable order.
        classes: sorted class names; the class index is the position here.
    """

    def __init__(self, name, source, samples):
        self.name = name
        self.source = source
        self.samples = sorted(samples, key=lambda s: (s.split, s.label, s.rel))
        self.classes = sorted(set(s.label for s in samples))
        self._digest = None

    def split(self, name):
        """Return the samples of one split."""
        return [s for s in self.samples if s.split == name]

    def labels(self, samples):
        """Return class indices for samples."""
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[s.label] for s in samples]

    def counts(self, split):
        """Return {class: count} for one split."""
        out = {c: 0 for c in self.classes}
        for s in self.split(split):
            out[s.label] += 1
        return out

    def split_digest(self, name):
        """Content hash of one split (see :func:`samples_digest`)."""
        return samples_digest(self.split(name))

    def digest(self):
        """Content hash of the whole set: every file's bytes, label and split."""
        if self._digest is None:
            self._digest = samples_digest(self.samples)
        return self._digest


def samples_digest(samples):
    """Hash a list of samples by file content, label and split (order-independent)."""
    digest = hashlib.sha256()
    for line in sorted("{}|{}|{}".format(sha256_file(s.path), s.label, s.split) for s in samples):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def default_source():
    """The data used when none is named: the shared NEU set if present, else ELPV."""
    return os.path.normpath(SHARED_NEU) if os.path.isdir(SHARED_NEU) else "elpv"


def load_dataset(source=None, check_images=True, allow_leakage=False):
    """Read, split and validate a data set.

    Args:
        source: a folder, a CSV manifest, ``elpv``, or None for :func:`default_source`.
        check_images: decode every image once, so a corrupt file fails now, by name.
        allow_leakage: downgrade "same image in two splits" from an error to a warning.

    Raises:
        JetquantError: the source is missing or malformed, a class is empty, an
            image is corrupt, or the same image appears in two splits.
    """
    source = source or default_source()
    if source == "elpv":
        dataset = _load_elpv()
    elif os.path.isfile(source):
        dataset = _load_manifest(source)
    elif os.path.isdir(source):
        manifest = [
            os.path.join(source, n)
            for n in MANIFEST_NAMES
            if os.path.isfile(os.path.join(source, n))
        ]
        dataset = _load_manifest(manifest[0]) if manifest else _load_folder(source)
    else:
        raise JetquantError(
            "data set not found: {} (give a folder of class folders, a CSV "
            "manifest path,label,split, or 'elpv')".format(source)
        )
    _validate(dataset, check_images, allow_leakage)
    log.info(
        "data %s: %d images, %d classes, train/calib/eval = %d/%d/%d (%s)",
        dataset.name,
        len(dataset.samples),
        len(dataset.classes),
        len(dataset.split("train")),
        len(dataset.split("calib")),
        len(dataset.split("eval")),
        dataset.source,
    )
    return dataset


def _load_manifest(path):
    root = os.path.dirname(os.path.abspath(path))
    try:
        return _read_manifest(path, root)
    except UnicodeDecodeError:
        raise JetquantError("manifest {} is not UTF-8 text; save it as CSV (UTF-8)".format(path)) \
            from None


def _read_manifest(path, root):
    with open(path, "r", newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise JetquantError(
                "manifest {} lacks the column(s) {}; its header must be path,label,split".format(
                    path, ", ".join(sorted(missing))
                )
            )
        samples = []
        for line, row in enumerate(reader, start=2):
            rel, label, split = ((row.get(k) or "").strip() for k in ("path", "label", "split"))
            if not rel or not label or split not in SPLITS:
                raise JetquantError(
                    "manifest {} line {}: need a path, a label and a split in {}, got {!r}".format(
                        path, line, "/".join(SPLITS), row
                    )
                )
            full = os.path.normpath(os.path.join(root, rel))
            if not os.path.isfile(full):
                raise JetquantError(
                    "manifest {} line {}: file not found: {}".format(path, line, full)
                )
            samples.append(Sample(full, rel, label, split))
    if not samples:
        raise JetquantError("manifest {} lists no images".format(path))
    name = os.path.basename(root) if os.path.basename(path) in MANIFEST_NAMES else path
    return Dataset(os.path.basename(os.path.normpath(name)), path, samples)


def _load_folder(root):
    classes = sorted(
        d
        for d in os.listdir(root)
        if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")
    )
    if not classes:
        raise JetquantError(
            "{} has no class folders; put each class's images in a folder named "
            "after the class".format(root)
        )
    by_class = {}
    for label in classes:
        folder = os.path.join(root, label)
        files = []
        for name in sorted(os.listdir(folder)):
            full = os.path.join(folder, name)
            if os.path.isdir(full) and not name.startswith("."):
                log.warning("%s is a folder inside class folder %s: its images are not used "
                            "(class folders are read one level deep)", full, label)
            if name.startswith(".") or not os.path.isfile(full):
                continue
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                raise JetquantError(
                    "{} is not an image file (extension not in {}); remove it from "
                    "the class folder".format(full, " ".join(IMAGE_EXTENSIONS))
                )
            files.append((full, os.path.join(label, name)))
        if not files:
            raise JetquantError(
                "class folder {} is empty; add images or remove the folder".format(folder)
            )
        by_class[label] = files
    samples = split_deterministic(by_class)
    return Dataset(os.path.basename(os.path.normpath(root)), root, samples)


def _load_elpv():
    try:
        import elpv_dataset
    except ImportError:
        raise JetquantError(
            "the default data set needs the elpv-dataset package: "
            "pip install elpv-dataset (or give DATA=/--data)"
        ) from None
    root = os.path.join(os.path.dirname(elpv_dataset.__file__), "data")
    by_class = {"defective": [], "functional": []}
    with open(os.path.join(root, "labels.csv"), "r") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) < 2:
                continue
            label = "defective" if float(fields[1]) >= 0.5 else "functional"
            by_class[label].append((os.path.join(root, fields[0]), fields[0]))
    samples = split_deterministic(by_class)
    return Dataset("elpv", "elpv-dataset " + root, samples)


def split_deterministic(by_class, calib_size=CALIB_SIZE, eval_fraction=EVAL_FRACTION):
    """Split {class: [(path, rel)]} into train/calib/eval, the same way every time.

    Within a class, files are grouped by content hash and the groups ordered by
    that hash; the first third goes to eval, then the class's share of the
    balanced calibration set (at most half of what is left), the rest to train.
    Identical files therefore always land in the same split.
    """
    classes = sorted(by_class)
    share = [
        calib_size // len(classes) + (1 if i < calib_size % len(classes) else 0)
        for i in range(len(classes))
    ]
    samples = []
    for label, calib_n in zip(classes, share):
        groups = {}
        for path, rel in by_class[label]:
            groups.setdefault(sha256_file(path), []).append((path, rel))
        total = len(by_class[label])
        eval_n = int(round(total * eval_fraction))
        calib_n = min(calib_n, (total - eval_n) // 2)
        if eval_n < 1 or calib_n < 1:
            raise JetquantError(
                "class {} has {} image(s); a split into train, calib and eval "
                "needs at least 4".format(label, total)
            )
        taken = 0
        for key in sorted(groups):
            split = "eval" if taken < eval_n else "calib" if taken < eval_n + calib_n else "train"
            for path, rel in groups[key]:
                samples.append(Sample(path, rel, label, split))
            taken += len(groups[key])
    return samples


def _validate(dataset, check_images, allow_leakage):
    for split in ("train", "eval"):
        absent = [c for c, n in dataset.counts(split).items() if n == 0]
        if absent and dataset.split(split):
            log.warning("split %s has no image of class(es) %s", split, ", ".join(absent))
    if check_images:
        for sample in dataset.samples:
            open_rgb(sample.path)
    seen = {}
    for sample in dataset.samples:
        seen.setdefault(sha256_file(sample.path), []).append(sample)
    for group in seen.values():
        labels = set(s.label for s in group)
        splits = set(s.split for s in group)
        names = ", ".join(s.rel for s in group)
        if len(labels) > 1:
            raise JetquantError(
                "the same image is labelled {}: {}; keep one copy with the right label".format(
                    " and ".join(sorted(labels)), names
                )
            )
        if len(splits) > 1:
            message = (
                "the same image is in splits {}: {} (leakage: eval figures would be "
                "optimistic); keep it in one split".format("/".join(sorted(splits)), names)
            )
            if not allow_leakage:
                raise JetquantError(message + ", or pass --allow-leakage")
            log.warning(message)
    if not dataset.split("eval"):
        raise JetquantError(
            "data set {} has no eval images: every stage reports accuracy on the eval split; "
            "give the manifest rows with split=eval".format(dataset.source)
        )


def check_classes(dataset, classes, what):
    """Refuse a data set whose class names differ from a model's."""
    if list(classes) != list(dataset.classes):
        raise JetquantError(
            "{} was trained for classes {} but data set {} has {}; use the model "
            "trained on this data or retrain".format(
                what, list(classes), dataset.name, dataset.classes
            )
        )


def paths(samples):
    """Return the file paths of samples."""
    return [s.path for s in samples]

