"""Distillation: the loss, the cached teacher logits, and the student checkpoints."""

import math

import pytest
import torch

from pipeline.distill import distill_objective, teacher_logits, train_students
from pipeline.model import read_meta
from pipeline.train import Recipe


def test_soft_term_vanishes_when_student_matches_teacher():
    teacher = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 1])
    recipe = Recipe(label_smoothing=0.0)
    only_soft = distill_objective(teacher, temperature=4.0, alpha=1.0, recipe=recipe)
    assert float(only_soft(teacher.clone(), torch.tensor([0, 1]), labels)) == pytest.approx(
        0, abs=1e-6
    )
    only_hard = distill_objective(teacher, temperature=4.0, alpha=0.0, recipe=recipe)
    ce = torch.nn.functional.cross_entropy(teacher, labels)
    assert float(only_hard(teacher.clone(), torch.tensor([0, 1]), labels)) == pytest.approx(
        float(ce)
    )


def test_soft_term_is_scaled_by_t_squared():
    teacher = torch.tensor([[4.0, 0.0]])
    student = torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([0])
    recipe = Recipe(label_smoothing=0.0)
    p = torch.softmax(teacher / 2.0, dim=1)[0]
    kl = float((p * (p.log() - math.log(0.5))).sum())
    got = distill_objective(teacher, temperature=2.0, alpha=1.0, recipe=recipe)(
        student, torch.tensor([0]), labels
    )
    assert float(got) == pytest.approx(4.0 * kl, rel=1e-5)


def test_teacher_logits_cached_and_students_trained(tiny, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="jetquant")
    cache = str(tmp_path / "t.npy")
    first = teacher_logits(tiny["checkpoint"], tiny["dataset"], tiny["spec"], cache)
    assert first.shape == (len(tiny["dataset"].split("train")), 6)
    again = teacher_logits(tiny["checkpoint"], tiny["dataset"], tiny["spec"], cache)
    assert torch.equal(first, again) and "reusing teacher logits" in caplog.text
    distilled, labels = train_students(tiny["dataset"], tiny["checkpoint"], str(tmp_path), epochs=1)
    assert read_meta(distilled)["distillation"]["alpha"] == 0.7
    assert read_meta(labels)["distillation"]["alpha"] == 0.0
    assert read_meta(distilled)["preprocess"] == read_meta(tiny["checkpoint"])["preprocess"]
