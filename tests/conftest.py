"""Shared fixtures: the NEU reference set (from ../shared) and small synthetic data sets."""

import os

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEU = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "neu-det"))


@pytest.fixture(scope="session")
def neu_root():
    """The NEU steel-defect set; tests that need it skip where ../shared is absent."""
    if not os.path.isdir(NEU):
        pytest.skip("../shared/data/neu-det is not present")
    return NEU


def write_image(path, value=None, size=(40, 40), mode="RGB", seed=0):
    """Write a small random (or constant) image file."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8) \
        if value is None else np.full((size[1], size[0], channels), value, dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)
    return path


@pytest.fixture
def class_folders(tmp_path):
    """A folder of two class folders with 12 distinct random images each."""
    root = tmp_path / "data"
    for c, label in enumerate(("bad", "good")):
        for i in range(12):
            write_image(str(root / label / "{}_{}.png".format(label, i)), seed=100 * c + i)
    return root


def neu_subset(root, out_csv, per_split):
    """Write a manifest with the first images of each class and split of NEU."""
    import csv

    rows = list(csv.DictReader(open(os.path.join(root, "splits_suggested.csv"))))
    seen, keep = {}, []
    for row in rows:
        key = (row["label"], row["split"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= per_split[row["split"]]:
            keep.append(dict(row, path=os.path.join(root, row["path"])))
    with open(out_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(keep)
    return out_csv


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, neu_root):
    """A ResNet18 at 64x64 trained for one epoch on a NEU subset, and its ONNX export.

    Accuracy is not the point: the tests check wiring, formats and agreement.
    """
    from pipeline.data import load_dataset
    from pipeline.export import export
    from pipeline.preprocess import Preprocess
    from pipeline.train import Recipe, train

    work = tmp_path_factory.mktemp("tiny")
    manifest = neu_subset(neu_root, str(work / "manifest.csv"), {"train": 4, "calib": 4, "eval": 3})
    dataset = load_dataset(manifest)
    spec = Preprocess(64, 64)
    ckpt = str(work / "tiny.safetensors")
    train(dataset, ckpt, arch="resnet18", recipe=Recipe(epochs=1, batch_size=8), spec=spec)
    onnx_path = str(work / "tiny.fp32.onnx")
    record = export(ckpt, onnx_path, dataset)
    return {"work": work, "manifest": manifest, "dataset": dataset, "spec": spec,
            "checkpoint": ckpt, "onnx": onnx_path, "export": record}


# Prepended to a probe script run in a fresh interpreter: any import of a package named in
# BLOCKED (which the probe defines first) fails and is recorded in ``attempts``.
IMPORT_BLOCKER = r'''
import sys

attempts = []


class Refuse(object):
    """Meta-path finder: an import of a blocked package fails and is recorded."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ImportError("blocked on the device route: " + name)
        return None


sys.meta_path.insert(0, Refuse())
'''
