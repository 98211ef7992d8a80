"""Checkpoints: safetensors with metadata, refused when they do not fit."""

import pytest
import torch

from pipeline.errors import JetquantError
from pipeline.model import build, load_checkpoint, load_init_weights, read_meta, save_checkpoint

META = {"arch": "resnet18", "classes": ["a", "b"], "preprocess": {"resize": 64, "crop": 64,
        "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}}


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = build("resnet18", 2)
    path = str(tmp_path / "m.safetensors")
    save_checkpoint(path, model, META)
    ckpt = load_checkpoint(path)
    assert ckpt.classes == ["a", "b"] and ckpt.arch == "resnet18"
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt.model.state_dict()[key])


def test_other_architecture_is_refused(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_checkpoint(path, build("resnet18", 2), META)
    with pytest.raises(JetquantError, match="is a resnet18"):
        load_checkpoint(path, arch="resnet50")
    with pytest.raises(JetquantError, match="classes"):
        load_checkpoint(path, classes=["a", "b", "c"])


def test_mislabelled_architecture_is_refused(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_checkpoint(path, build("resnet34", 2), META)  # metadata claims resnet18
    with pytest.raises(JetquantError, match="another architecture"):
        load_checkpoint(path)


def test_pickle_checkpoint_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, str(path))
    with pytest.raises(JetquantError, match="cannot read weights"):
        load_init_weights(build("resnet18", 2), str(path))
    assert not (tmp_path / "pwned").exists()


def test_fine_tune_from_state_dict_with_new_head(tmp_path):
    source = build("resnet18", 5)
    path = str(tmp_path / "sd.pt")
    torch.save(source.state_dict(), path)
    target = build("resnet18", 2)
    load_init_weights(target, path)
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    with pytest.raises(JetquantError, match="another architecture"):
        load_init_weights(build("resnet34", 2), path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"junk")
    with pytest.raises(JetquantError, match="not a readable"):
        read_meta(str(path))
    with pytest.raises(JetquantError, match="not found"):
        load_checkpoint(str(tmp_path / "none.safetensors"))
