"""The ``distill`` stage: a small student taught by the FP32 baseline, then quantized.

Loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * cross-entropy(student, labels)

Defaults T = 2 and alpha = 0.5, chosen from the baseline's own outputs. The
baseline is trained with label smoothing, which flattens its softmax (Muller
et al., 2019): on the NEU train images its mean top probability is 0.88 at
T = 1, 0.60 at T = 2 and 0.36 at T = 4, against 0.17 for a uniform guess. At
T = 4 the targets are close to uniform; T = 2 still ranks the wrong classes
without drowning the right one (on pitted-surface images: pitted surface 0.49,
inclusion 0.19, rolled-in scale 0.09). The T^2 factor keeps the soft term's
gradients on the scale of the hard one (Hinton et al., 2015). alpha = 0.5
weighs teacher and labels equally, because the teacher is right on only 96 %
of its own train images.

The teacher teaches the view the student sees (Beyer et al., 2022, "patient
and consistent" distillation): training flips images horizontally and
vertically, so the teacher's logits are computed once for each of the four
flip views of every train image and cached, keyed by the teacher's and the
data's hashes. A label-only student of the same architecture, epochs and seed
(so the same images in the same order with the same flips) is trained too, so
the value of distillation is measured, not assumed.
"""

import io
import math
import os

import numpy as np
import torch
from torch.nn import functional

from .artifacts import atomic_write, is_fresh, sha256_file, write_sidecar
from .data import check_classes, load_dataset
from .errors import JetquantError
from .evaluate import logits_of, torch_runner
from .log import Timer, get_logger
from .model import read_meta
from .preprocess import Preprocess
from .train import VIEWS, Recipe, as_view, label_objective, load_split, train

log = get_logger("distill")

TEMPERATURE = 2.0
ALPHA = 0.5
MAX_TEMPERATURE = 100.0  # beyond this the soft targets are uniform to float precision


def teacher_logits(teacher, dataset, spec, cache_path):
    """The teacher's FP32 logits on every flip view of the train split, computed once and cached.

    Returns:
        A (len(VIEWS), train images, classes) float32 tensor; ``[v, i]`` is image ``i``
        seen as ``VIEWS[v]``.
    """
    key = {
        "teacher_sha256": sha256_file(teacher),
        "train_sha256": dataset.split_digest("train"),
        "preprocess": spec.to_dict(),
        "views": list(VIEWS),
    }
    shape = (len(VIEWS), len(dataset.split("train")), len(dataset.classes))
    if is_fresh(cache_path, key):
        cached = _load_cached(cache_path, shape)
        if cached is not None:
            log.info("reusing teacher logits %s", cache_path)
            return cached
    elif os.path.exists(cache_path):
        log.info(
            "teacher logits %s do not match their record (another teacher, data, "
            "preprocessing, or changed bytes): recomputing",
            cache_path,
        )
    images, _ = load_split(dataset, "train", spec)
    run = torch_runner(teacher)
    n = images.shape[0]
    with Timer() as timer:
        logits = np.stack(
            [logits_of(run, as_view(images, view).numpy()) for view in range(len(VIEWS))]
        )
    buffer = io.BytesIO()
    np.save(buffer, logits)
    atomic_write(cache_path, buffer.getvalue())
    write_sidecar(cache_path, key)
    log.info(
        "teacher logits on %d train images x %d flip views in %.0f s -> %s",
        n,
        len(VIEWS),
        timer.elapsed,
        cache_path,
    )
    return torch.from_numpy(logits)


def _load_cached(path, shape):
    try:
        logits = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("teacher logits %s are unreadable (%s): recomputing", path, exc)
        return None
    if not isinstance(logits, np.ndarray):
        logits.close()  # an .npz archive, not one array
        log.warning("teacher logits %s are an archive, not one array: recomputing", path)
        return None
    if logits.shape != shape or logits.dtype != np.float32:
        log.warning(
            "teacher logits %s hold %s %s, not float32 %s: recomputing",
            path,
            logits.dtype,
            logits.shape,
            shape,
        )
        return None
    return torch.from_numpy(logits)


def distill_objective(targets, temperature=TEMPERATURE, alpha=ALPHA, recipe=None):
    """The distillation loss for a batch.

    Args:
        targets: the teacher's logits, (views, train images, classes) from :func:`teacher_logits`.
        temperature: T.
        alpha: weight of the soft term; ``1 - alpha`` goes to cross-entropy on the labels.
        recipe: the training recipe (its label smoothing applies to the hard term).
    """
    hard = label_objective(recipe or Recipe())

    def objective(logits, batch, labels, views):
        teacher = targets[views, batch].to(logits.device).float()
        soft = functional.kl_div(
            functional.log_softmax(logits.float() / temperature, dim=1),
            functional.log_softmax(teacher / temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return alpha * temperature**2 * soft + (1 - alpha) * hard(logits, batch, labels, views)

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
    check_classes(dataset, meta["classes"], "teacher " + str(teacher))
    if meta.get("arch") == student:
        log.warning(
            "the teacher %s is a %s like the students: if it was trained with the same recipe "
            "and epochs, the label-only student repeats its training",
            teacher,
            student,
        )
    spec = Preprocess.from_dict(meta["preprocess"])
    distilled, labels_only = student_paths(checkpoints_dir, dataset, student)
    for path in (distilled, labels_only):
        if os.path.exists(path) and os.path.samefile(path, teacher):
            raise JetquantError(
                "teacher {} is where this run writes its {} student; copy it to another "
                "name and pass that as --checkpoint".format(
                    teacher, "distilled" if path == distilled else "label-only"
                )
            )
    recipe = Recipe(epochs=epochs, device=device)
    settings = {
        "teacher_sha256": sha256_file(teacher),
        "temperature": temperature,
        "alpha": alpha,
        "student": student,
        "epochs": epochs,
    }
    taught = dict(settings, teacher_views=list(VIEWS))
    if not _current(distilled, dataset, taught):
        cache = os.path.join(
            checkpoints_dir,
            "{}.{}.teacher-logits.npy".format(
                os.path.basename(teacher).replace(".safetensors", ""), dataset.name
            ),
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
            extra_meta={"distillation": taught},
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


def check_settings(alpha, temperature):
    """Refuse an alpha outside [0, 1] or a temperature that is not a finite number in (0, 100]."""
    if not 0.0 <= alpha <= 1.0:
        raise JetquantError(
            "--alpha {} is outside [0, 1]: it weighs the teacher's term against "
            "the labels' (0.5 = equal)".format(alpha)
        )
    if not (math.isfinite(temperature) and 0 < temperature <= MAX_TEMPERATURE):
        raise JetquantError(
            "--temperature {} must be a number above 0 and at most {:g} (1 = the teacher's "
            "plain softmax, default {:g})".format(temperature, MAX_TEMPERATURE, TEMPERATURE)
        )


def run_distill(opts, args):
    """Teacher FP32/INT8, distilled student FP32/INT8 and label-only student, in one report."""
    from .benchmark import cpu_models, measure
    from .workflow import Options, checkpoint_for, engine

    check_settings(args.alpha, args.temperature)
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
