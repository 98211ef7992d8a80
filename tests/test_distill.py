"""Distillation: the loss, the cached teacher logits, and the student checkpoints."""

import math

import numpy as np
import pytest
import torch

from pipeline.distill import ALPHA, distill_objective, teacher_logits, train_students
from pipeline.evaluate import logits_of, torch_runner
from pipeline.model import read_meta
from pipeline.train import VIEWS, Recipe, load_split


def test_soft_term_vanishes_when_student_matches_teacher():
    teacher = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 1])
    recipe = Recipe(label_smoothing=0.0)
    views = torch.tensor([0, 0])
    only_soft = distill_objective(teacher[None], temperature=4.0, alpha=1.0, recipe=recipe)
    assert float(only_soft(teacher.clone(), torch.tensor([0, 1]), labels, views)) == (
        pytest.approx(0, abs=1e-6)
    )
    only_hard = distill_objective(teacher[None], temperature=4.0, alpha=0.0, recipe=recipe)
    ce = torch.nn.functional.cross_entropy(teacher, labels)
    assert float(only_hard(teacher.clone(), torch.tensor([0, 1]), labels, views)) == (
        pytest.approx(float(ce))
    )


def test_soft_target_is_the_teachers_logits_for_the_view_the_student_saw():
    student = torch.tensor([[1.0, -1.0]])
    # view 0 disagrees with the student, view 3 (both flips) matches it exactly
    targets = torch.tensor([[[-1.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]], [[1.0, -1.0]]])
    loss = distill_objective(targets, temperature=2.0, alpha=1.0, recipe=Recipe())
    batch, labels = torch.tensor([0]), torch.tensor([0])
    assert float(loss(student, batch, labels, torch.tensor([3]))) == pytest.approx(0, abs=1e-6)
    assert float(loss(student, batch, labels, torch.tensor([0]))) > 0.1


def test_soft_term_is_scaled_by_t_squared():
    teacher = torch.tensor([[4.0, 0.0]])
    student = torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([0])
    recipe = Recipe(label_smoothing=0.0)
    p = torch.softmax(teacher / 2.0, dim=1)[0]
    kl = float((p * (p.log() - math.log(0.5))).sum())
    got = distill_objective(teacher[None], temperature=2.0, alpha=1.0, recipe=recipe)(
        student, torch.tensor([0]), labels, torch.tensor([0])
    )
    assert float(got) == pytest.approx(4.0 * kl, rel=1e-5)


def test_teacher_logits_cached_and_students_trained(tiny, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="jetquant")
    cache = str(tmp_path / "t.npy")
    first = teacher_logits(tiny["checkpoint"], tiny["dataset"], tiny["spec"], cache)
    assert first.shape == (4, len(tiny["dataset"].split("train")), 6)
    # view 1 is the horizontal flip: the teacher run on flipped images gives the same logits
    images, _ = load_split(tiny["dataset"], "train", tiny["spec"])
    flipped = logits_of(torch_runner(tiny["checkpoint"]), images.flip(-1).numpy())
    assert np.allclose(first[1].numpy(), flipped, atol=1e-4)
    assert not np.allclose(first[0].numpy(), flipped, atol=1e-4)
    again = teacher_logits(tiny["checkpoint"], tiny["dataset"], tiny["spec"], cache)
    assert torch.equal(first, again) and "reusing teacher logits" in caplog.text
    distilled, labels = train_students(tiny["dataset"], tiny["checkpoint"], str(tmp_path), epochs=1)
    # the logits cache is named after the teacher and the data set
    assert (tmp_path / "tiny.{}.teacher-logits.npy".format(tiny["dataset"].name)).exists()
    assert read_meta(distilled)["distillation"]["alpha"] == ALPHA
    assert read_meta(distilled)["distillation"]["teacher_views"] == list(VIEWS)
    assert read_meta(labels)["distillation"]["alpha"] == 0.0
    assert read_meta(distilled)["preprocess"] == read_meta(tiny["checkpoint"])["preprocess"]


@pytest.mark.parametrize(
    "option, value",
    [
        ("--alpha", "1.5"),
        ("--alpha", "-0.1"),
        ("--temperature", "0"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--temperature", "1e6"),
    ],
)
def test_out_of_range_distillation_options_are_refused_before_any_work(
    option, value, tmp_path, capsys
):
    from pipeline.cli import main

    code = main(["distill", "--data", str(tmp_path / "missing"), option, value])
    assert code == 2
    assert option in capsys.readouterr().err


def test_cli_defaults_are_the_stage_defaults():
    from pipeline.cli import get_parser
    from pipeline.distill import TEMPERATURE

    args = get_parser().parse_args(["distill", "--data", "x"])
    assert (args.temperature, args.alpha) == (TEMPERATURE, ALPHA) == (2.0, 0.5)


def test_a_teacher_for_other_classes_is_refused_before_any_work(tiny, tmp_path):
    import csv

    from pipeline.data import load_dataset
    from pipeline.errors import JetquantError

    with open(tiny["manifest"]) as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] != "scratches"]
    manifest = tmp_path / "five.csv"
    with open(str(manifest), "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(JetquantError, match="teacher .* was trained for classes"):
        train_students(load_dataset(str(manifest)), tiny["checkpoint"], str(tmp_path), epochs=1)
    assert list(tmp_path.iterdir()) == [manifest]  # no logits cache, no student


def test_a_teacher_at_a_student_path_is_refused_not_overwritten(tiny, tmp_path):
    import shutil

    from pipeline.distill import student_paths
    from pipeline.errors import JetquantError

    distilled, _ = student_paths(str(tmp_path), tiny["dataset"], "resnet18")
    shutil.copy(tiny["checkpoint"], distilled)
    before = open(distilled, "rb").read()
    with pytest.raises(JetquantError, match="copy it to another name"):
        train_students(tiny["dataset"], distilled, str(tmp_path), epochs=1)
    assert open(distilled, "rb").read() == before


def test_unreadable_cached_logits_with_a_matching_record_are_recomputed(tiny, tmp_path, caplog):
    import json
    import logging

    from pipeline.artifacts import write_sidecar

    caplog.set_level(logging.INFO, logger="jetquant")
    cache = str(tmp_path / "t.npy")
    good = teacher_logits(tiny["checkpoint"], tiny["dataset"], tiny["spec"], cache)
    key = json.load(open(cache + ".json"))["key"]
    for bad in (b"\x93NUMPY truncated", b"", "shape", "archive"):
        if bad == "shape":  # a readable array of the wrong shape
            np.save(cache, good.numpy()[0])
        elif bad == "archive":  # an .npz under the .npy name
            with open(cache, "wb") as handle:
                np.savez(handle, logits=good.numpy())
        else:
            open(cache, "wb").write(bad)
        write_sidecar(cache, key)  # the record now vouches for the bad bytes
        again = teacher_logits(tiny["checkpoint"], tiny["dataset"], tiny["spec"], cache)
        assert torch.allclose(again, good, atol=1e-5)
    assert "unreadable" in caplog.text and "not float32" in caplog.text
    assert "an archive" in caplog.text


def test_a_non_finite_loss_stops_training_and_writes_nothing(tiny, tmp_path):
    from pipeline.errors import JetquantError
    from pipeline.train import train

    out = tmp_path / "nan.safetensors"

    def nan_loss(logits, batch, labels, views):
        return logits.sum() * float("nan")

    with pytest.raises(JetquantError, match="training loss became nan at epoch 1"):
        train(
            tiny["dataset"],
            str(out),
            arch="resnet18",
            recipe=Recipe(epochs=1, batch_size=8),
            spec=tiny["spec"],
            objective=nan_loss,
        )
    assert not out.exists()


def test_training_without_train_images_is_refused(tiny, tmp_path):
    from pipeline.data import Dataset
    from pipeline.errors import JetquantError
    from pipeline.train import train

    held_out = [s for s in tiny["dataset"].samples if s.split != "train"]
    dataset = Dataset("no-train", "no-train.csv", held_out)
    with pytest.raises(JetquantError, match="no train images.*--checkpoint"):
        train(dataset, str(tmp_path / "x.safetensors"), arch="resnet18", spec=tiny["spec"])


def test_cuda_asked_for_without_a_gpu_is_one_clear_error(monkeypatch):
    from pipeline.errors import JetquantError
    from pipeline.train import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(JetquantError, match="--device cuda: PyTorch sees no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == "cpu" and pick_device("cpu") == "cpu"
