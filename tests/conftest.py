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
