"""The ``distill`` stage: a small student taught by the FP32 baseline, then quantized.

Loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * cross-entropy(student, labels)

Defaults T = 4 and alpha = 0.7. T = 4 softens a six-class softmax enough to
expose which wrong classes the teacher finds close (crazing vs rolled-in
scale, say), without flattening it into noise; the T^2 factor keeps the soft
term's gradients on the scale of the hard one (Hinton et al., 2015). alpha =
0.7 leans on the teacher, which carries more information per image than a
label, while the label term corrects the few images the teacher gets wrong.

The teacher's logits on the (unflipped) train images are computed once and
cached, keyed by the teacher's and the data's hashes; the student sees
flipped images during training, and defect classes are flip-invariant, so the
cached targets still apply. A label-only student of the same architecture,
epochs and seed is trained too, so the value of distillation is measured, not
assumed.
"""

import io
import os

import numpy as np
import torch
from torch.nn import functional

from .artifacts import atomic_write, is_fresh, sha256_file, write_sidecar
from .data import load_dataset
from .evaluate import logits_of, torch_runner
from .log import Timer, get_logger
from .model import read_meta
from .preprocess import Preprocess
from .train import Recipe, label_objective, load_split, train

log = get_logger("distill")

STUDENTS = ("resnet18", "resnet34", "mobilenet_v3_large")
TEMPERATURE = 4.0
ALPHA = 0.7


def teacher_logits(teacher, dataset, spec, cache_path):
    """The teacher's FP32 logits on the train split, computed once and cached."""
    key = {
        "teacher_sha256": sha256_file(teacher),
        "train_sha256": dataset.split_digest("train"),
        "preprocess": spec.to_dict(),
    }
    if is_fresh(cache_path, key):
        log.info("reusing teacher logits %s", cache_path)
        return torch.from_numpy(np.load(cache_path))
    images, _ = load_split(dataset, "train", spec)
    with Timer() as timer:
        logits = logits_of(torch_runner(teacher), images.numpy())
    buffer = io.BytesIO()
    np.save(buffer, logits)
    atomic_write(cache_path, buffer.getvalue())
    write_sidecar(cache_path, key)
    log.info(
        "teacher logits on %d train images in %.0f s -> %s", len(logits), timer.elapsed, cache_path
    )
    return torch.from_numpy(logits)


def distill_objective(targets, temperature=TEMPERATURE, alpha=ALPHA, recipe=None):
    """The distillation loss for a batch, given the teacher's logits for every train image."""
    hard = label_objective(recipe or Recipe())

    def objective(logits, batch, labels):
        teacher = targets[batch].to(logits.device).float()
        soft = functional.kl_div(
            functional.log_softmax(logits.float() / temperature, dim=1),
            functional.log_softmax(teacher / temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return alpha * temperature**2 * soft + (1 - alpha) * hard(logits, batch, labels)

    return objective


def student_paths(checkpoints_dir, dataset, student):
    """Checkpoint paths of the distilled and the label-only student."""
    base = os.path.join(checkpoints_dir, "{}-{}".format(dataset.name, student))
    return base + "-distilled.safetensors", base + "-labels.safetensors"


def train_students(
    dataset,
    teacher,
    checkpoints_dir,
    student="resnet18",
    epochs=12,
    temperature=TEMPERATURE,
    alpha=ALPHA,
    device="auto",
):
    """Train (first run only) the distilled student and the label-only student.

    Returns:
        (distilled checkpoint path, label-only checkpoint path).
    """
    meta = read_meta(teacher)
    spec = Preprocess.from_dict(meta["preprocess"])
    distilled, labels_only = student_paths(checkpoints_dir, dataset, student)
    recipe = Recipe(epochs=epochs, device=device)
    settings = {
        "teacher_sha256": sha256_file(teacher),
        "temperature": temperature,
        "alpha": alpha,
        "student": student,
        "epochs": epochs,
    }
    if not _current(distilled, dataset, settings):
        cache = os.path.join(
            checkpoints_dir,
            "{}.teacher-logits.npy".format(os.path.basename(teacher).replace(".safetensors", "")),
        )
        targets = teacher_logits(teacher, dataset, spec, cache)
        log.info(
            "distilling %s into %s (T=%g, alpha=%g, %d epochs)",
            teacher,
            student,
            temperature,
            alpha,
            epochs,
        )
        train(
            dataset,
            distilled,
            arch=student,
            recipe=recipe,
            spec=spec,
            objective=distill_objective(targets, temperature, alpha, recipe),
            extra_meta={"distillation": settings},
        )
    plain = dict(settings, temperature=None, alpha=0.0, teacher_sha256=None)
    if not _current(labels_only, dataset, plain):
        log.info("training the label-only %s for comparison (%d epochs)", student, epochs)
        train(
            dataset,
            labels_only,
            arch=student,
            recipe=recipe,
            spec=spec,
            extra_meta={"distillation": plain},
        )
    return distilled, labels_only


def _current(path, dataset, settings):
    if not os.path.isfile(path):
        return False
    meta = read_meta(path)
    return (
        meta.get("distillation") == settings
        and meta.get("data", {}).get("sha256") == dataset.digest()
    )


def run_distill(opts, args):
    """Teacher FP32/INT8, distilled student FP32/INT8 and label-only student, in one report."""
    from .benchmark import cpu_models, measure
    from .workflow import Options, checkpoint_for, engine

    dataset = load_dataset(opts.data, allow_leakage=opts.allow_leakage)
    teacher = checkpoint_for(opts, dataset)
    distilled, labels_only = train_students(
        dataset,
        teacher,
        opts.checkpoints_dir,
        args.student,
        opts.epochs,
        args.temperature,
        args.alpha,
        opts.device,
    )
    built = {}
    for role, checkpoint in (("teacher", teacher), ("student", distilled), ("labels", labels_only)):
        values = dict(vars(opts), checkpoint=checkpoint, arch=None, init=None, retrain=False)
        built[role] = engine(Options(**values))
    models = (
        cpu_models(
            built["teacher"]["artifacts"],
            None,
            "teacher-",
            {"int8-cpu": "reference", "int8-qdq": None},
        )
        + cpu_models(
            built["student"]["artifacts"],
            None,
            "student-",
            {"fp32-ort": "reference", "int8-qdq": None},
        )
        + cpu_models(
            built["labels"]["artifacts"],
            None,
            "labels-",
            {"fp32-ort": "reference", "int8-cpu": "reference", "int8-qdq": None},
        )
    )
    models = [m for m in models if m[2] is not None]
    comparisons = [
        ("distillation gain (FP32)", "student-fp32-ort", "labels-fp32-ort"),
        ("distillation gain (INT8)", "student-int8-cpu", "labels-int8-cpu"),
        ("student INT8 vs teacher INT8", "student-int8-cpu", "teacher-int8-cpu"),
        ("student INT8 vs teacher FP32", "student-int8-cpu", "teacher-fp32-ort"),
    ]
    if args.max_top1_drop is None:
        args.max_top1_drop = 2.0  # the student's budget against the teacher's FP32
    return measure(
        models,
        dataset,
        built["teacher"]["artifacts"]["fp32"],
        built["student"]["pinned"],
        args,
        comparisons,
        distill_gates,
    )


def distill_gates(report):
    """Gates of the distillation itself: not worse than labels alone, and worth its speed."""
    by = {c["label"]: c for c in report["comparisons"]}
    gain = by["distillation gain (INT8)"]
    speed = by["student INT8 vs teacher INT8"]["speedup_p50"]
    return [
        {
            "name": "distilled_not_worse_than_labels",
            "limit": 0.0,
            "value": round(100 * gain["top1_diff"], 6),
            "passed": gain["top1_diff"] >= 0,
            "model": gain["a"],
            "detail": "{} top-1 {:.2f} % vs {} {:.2f} % (points)".format(
                gain["a"], 100 * gain["top1_a"], gain["b"], 100 * gain["top1_b"]
            ),
        },
        {
            "name": "min_student_speedup_vs_teacher_int8",
            "limit": 2.0,
            "value": None if speed is None else round(speed, 6),
            "passed": speed is not None and speed >= 2.0,
            "model": "student-int8-cpu",
            "detail": "p50 batch-1 latency ratio teacher-int8-cpu / student-int8-cpu",
        },
    ]
