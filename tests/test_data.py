"""Data sets: folders, manifests, ELPV, and every kind of bad input."""

import os
import shutil

import pytest
from conftest import write_image

from pipeline.data import load_dataset, split_deterministic
from pipeline.errors import JetquantError


def test_neu_manifest_splits(neu_root):
    dataset = load_dataset(neu_root, check_images=False)
    assert len(dataset.classes) == 6
    assert [len(dataset.split(s)) for s in ("train", "calib", "eval")] == [1000, 200, 600]
    assert set(dataset.counts("eval").values()) == {100}


def test_folder_split_is_deterministic_and_balanced(class_folders):
    a = load_dataset(str(class_folders))
    b = load_dataset(str(class_folders))
    assert [s.rel for s in a.samples] == [s.rel for s in b.samples]
    assert a.digest() == b.digest()
    assert a.counts("eval") == {"bad": 4, "good": 4}


def test_identical_files_share_a_split(tmp_path):
    files = {"x": []}
    for i in range(9):
        path = write_image(str(tmp_path / "x" / "{}.png".format(i)), seed=i)
        files["x"].append((path, os.path.basename(path)))
    shutil.copy(files["x"][0][0], str(tmp_path / "x" / "dup.png"))
    files["x"].append((str(tmp_path / "x" / "dup.png"), "dup.png"))
    samples = split_deterministic(files, calib_size=2)
    split_of = {s.rel: s.split for s in samples}
    assert split_of["dup.png"] == split_of["0.png"]


def test_corrupt_jpeg_is_named(class_folders):
    bad = class_folders / "bad" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(JetquantError, match="corrupt.jpg"):
        load_dataset(str(class_folders))


def test_non_image_file_is_named(class_folders):
    (class_folders / "good" / "notes.txt").write_text("hello")
    with pytest.raises(JetquantError, match="notes.txt"):
        load_dataset(str(class_folders))


def test_empty_class_folder(class_folders):
    (class_folders / "empty").mkdir()
    with pytest.raises(JetquantError, match="empty"):
        load_dataset(str(class_folders))


def test_empty_root(tmp_path):
    with pytest.raises(JetquantError, match="no class folders"):
        load_dataset(str(tmp_path))


def test_missing_source():
    with pytest.raises(JetquantError, match="not found"):
        load_dataset("/nonexistent/data")


def test_leakage_across_splits(tmp_path):
    img = write_image(str(tmp_path / "a.png"), seed=1)
    other = write_image(str(tmp_path / "b.png"), seed=2)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.png,x,train\na.png,x,eval\nb.png,x,calib\n")
    with pytest.raises(JetquantError, match="leakage"):
        load_dataset(str(manifest))
    assert load_dataset(str(manifest), allow_leakage=True).split("eval")
    assert img and other


def test_same_image_two_labels(tmp_path):
    write_image(str(tmp_path / "a.png"), seed=1)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.png,x,train\na.png,y,train\n")
    with pytest.raises(JetquantError, match="labelled"):
        load_dataset(str(manifest))


def test_manifest_errors_name_the_line(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,x\n")
    with pytest.raises(JetquantError, match="split"):
        load_dataset(str(manifest))
    manifest.write_text("path,label,split\nmissing.png,x,train\n")
    with pytest.raises(JetquantError, match="line 2"):
        load_dataset(str(manifest))
    manifest.write_text("path,label,split\nmissing.png,x,test\n")
    with pytest.raises(JetquantError, match="line 2"):
        load_dataset(str(manifest))


def test_grayscale_and_rgba_images_are_accepted(class_folders):
    write_image(str(class_folders / "bad" / "gray.png"), mode="L", seed=77)
    dataset = load_dataset(str(class_folders))
    assert any(s.rel.endswith("gray.png") for s in dataset.samples)


def test_elpv_default_is_real_and_split():
    pytest.importorskip("elpv_dataset")
    dataset = load_dataset("elpv", check_images=False)
    assert dataset.classes == ["defective", "functional"]
    assert len(dataset.split("calib")) == 200
    assert dataset.counts("calib") == {"defective": 100, "functional": 100}
    assert len(dataset.samples) == 2624


def test_nested_folder_in_class_folder_is_reported(class_folders, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="jetquant")
    write_image(str(class_folders / "bad" / "more" / "x.png"), seed=999)
    dataset = load_dataset(str(class_folders))
    assert "not used" in caplog.text and "more" in caplog.text
    assert not any("more" in s.rel for s in dataset.samples)


def test_a_data_set_without_eval_images_is_refused(tmp_path):
    write_image(str(tmp_path / "a.png"), seed=1)
    write_image(str(tmp_path / "b.png"), seed=2)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.png,x,train\nb.png,x,calib\n")
    with pytest.raises(JetquantError, match="no eval images.*split=eval"):
        load_dataset(str(manifest))
