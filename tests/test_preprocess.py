"""One image must give the same network input through every path."""

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import JetquantError
from pipeline.preprocess import Preprocess, load_array, load_batch, open_rgb, to_array


def test_same_array_through_every_path(tiny):
    """Training, calibration, evaluation and the export check all preprocess identically."""
    from pipeline.evaluate import eval_arrays
    from pipeline.train import load_split

    dataset, spec = tiny["dataset"], tiny["spec"]
    sample = dataset.split("eval")[0]
    reference = load_array(sample.path, spec)
    train_x, _ = load_split(dataset, "eval", spec)               # training / per-epoch eval
    eval_x, _ = eval_arrays(dataset, spec)                       # benchmark and accuracy
    calib_x = load_batch([sample.path], spec)                    # calibration batches
    stored = Preprocess.from_dict(tiny["export"]["preprocess"])  # what the device side reads
    device_x = load_array(sample.path, stored)
    for other in (train_x[0].numpy(), eval_x[0], calib_x[0], device_x):
        assert other.dtype == np.float32
        assert other.tobytes() == reference.tobytes()


def test_normalisation_range_matches_imagenet(tmp_path):
    white = tmp_path / "w.png"
    Image.new("RGB", (30, 20), (255, 255, 255)).save(white)
    arr = load_array(str(white), Preprocess(32, 32))
    assert arr.shape == (3, 32, 32)
    assert arr.max() == pytest.approx((1 - 0.406) / 0.225, abs=1e-5)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_modes_are_converted_deliberately(tmp_path, mode):
    path = str(tmp_path / ("img." + ("tiff" if mode == "CMYK" else "png")))
    if mode == "I;16":
        arr = np.full((8, 8), 65535, dtype=np.uint16)
        Image.fromarray(arr).save(path)
    else:
        Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode).save(path)
    img = open_rgb(path)
    assert img.mode == "RGB"
    if mode == "I;16":
        assert np.asarray(img).max() == 255  # scaled by 1/257, not clipped from 65535


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = str(tmp_path / "g16.png")
    Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16)).save(path)
    assert np.asarray(open_rgb(path))[0, 0, 0] == 100


def test_alpha_composited_on_black(tmp_path):
    path = str(tmp_path / "a.png")
    Image.new("RGBA", (4, 4), (255, 255, 255, 0)).save(path)
    assert np.asarray(open_rgb(path)).max() == 0


def test_corrupt_and_non_images_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    good = tmp_path / "ok.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    bad.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path in (bad, text):
        with pytest.raises(JetquantError, match=str(path)):
            open_rgb(str(path))


def test_resize_then_centre_crop():
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 50, 100))  # white left quarter is cropped away
    arr = to_array(img, Preprocess(64, 64))
    assert arr.shape == (3, 64, 64)
    assert arr.max() < 0  # only black remains


def test_from_dict_refuses_incomplete_records():
    with pytest.raises(JetquantError):
        Preprocess.from_dict({"resize": 10})
    spec = Preprocess(256, 224, "bicubic")
    assert Preprocess.from_dict(spec.to_dict()) == spec
    assert spec.digest() != Preprocess().digest()
