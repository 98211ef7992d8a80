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
    assert read_meta(distilled)["distillation"]["alpha"] == ALPHA
    assert read_meta(distilled)["distillation"]["teacher_views"] == list(VIEWS)
    assert read_meta(labels)["distillation"]["alpha"] == 0.0
    assert read_meta(distilled)["preprocess"] == read_meta(tiny["checkpoint"])["preprocess"]


@pytest.mark.parametrize(
    "option, value",
    [("--alpha", "1.5"), ("--alpha", "-0.1"), ("--temperature", "0"), ("--temperature", "nan")],
)
def test_out_of_range_distillation_options_are_refused_before_any_work(
    option, value, tmp_path, capsys
):
    from pipeline.cli import main

    code = main(["distill", "--data", str(tmp_path / "missing"), option, value])
    assert code == 2
    assert option in capsys.readouterr().err
