"""The ``train`` stage: the FP32 baseline, trained from scratch or fine-tuned.

Recipe: AdamW with a one-cycle learning-rate schedule, random horizontal and
vertical flips (defects have no preferred orientation), bf16 autocast on CPUs
that support it, seeded. Images go through the shared preprocessing once and
are kept in memory; the flips are applied to those arrays, so training sees
exactly what calibration and inference see, flipped.
"""

import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from . import __version__
from .data import paths
from .errors import JetquantError
from .log import Timer, get_logger
from .model import build, load_init_weights, save_checkpoint
from .preprocess import Preprocess, load_batch

log = get_logger("train")


class Recipe(object):
    """Training hyper-parameters (defaults reach >= 95 % eval top-1 on NEU from scratch)."""

    def __init__(
        self,
        epochs=12,
        batch_size=32,
        lr=2e-3,
        weight_decay=0.05,
        seed=0,
        label_smoothing=0.1,
        bf16="auto",
        device="auto",
    ):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.label_smoothing = label_smoothing
        self.bf16 = bf16
        self.device = device

    def to_dict(self):
        return dict(vars(self))


def cpu_has_bf16():
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", "r") as handle:
            flags = handle.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def load_split(dataset, split, spec):
    """Preprocess one split into (N, C, H, W) float32 and int64 label tensors."""
    samples = dataset.split(split)
    images = torch.from_numpy(load_batch(paths(samples), spec))
    labels = torch.tensor(dataset.labels(samples), dtype=torch.int64)
    return images, labels


VIEWS = ("none", "hflip", "vflip", "hflip+vflip")


def random_flips(images, generator):
    """Flip each image horizontally and/or vertically with probability 1/2 each.

    Returns:
        (flipped images, view index per image: 0 none, 1 hflip, 2 vflip, 3 both; see VIEWS).
    """
    n = images.shape[0]
    hflip = torch.rand(n, generator=generator) < 0.5
    vflip = torch.rand(n, generator=generator) < 0.5
    return flip_view(images, hflip, vflip), hflip.long() + 2 * vflip.long()


def as_view(images, view):
    """A copy of ``images``, every one seen as ``VIEWS[view]``."""
    n = images.shape[0]
    hflip = torch.full((n,), bool(view & 1), dtype=torch.bool)
    vflip = torch.full((n,), bool(view & 2), dtype=torch.bool)
    return flip_view(images, hflip, vflip)


def flip_view(images, hflip, vflip):
    """A copy of ``images`` with the images selected by the boolean masks flipped."""
    images = images.clone()
    images[hflip] = images[hflip].flip(-1)
    images[vflip] = images[vflip].flip(-2)
    return images


def pick_device(name="auto"):
    """``cuda`` when asked for, or when available under ``auto``; else ``cpu``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise JetquantError(
            "--device cuda: PyTorch sees no CUDA device here; use --device auto or cpu"
        )
    return name


def evaluate(model, images, labels, batch_size=64, bf16=False, device="cpu"):
    """Return top-1 accuracy of ``model`` on preprocessed images."""
    model.eval()
    correct = 0
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size].to(device))
            truth = labels[start : start + batch_size].to(device)
            correct += int((logits.argmax(1) == truth).sum())
    return correct / max(1, images.shape[0])


def label_objective(recipe):
    """Cross-entropy on the labels (with the recipe's label smoothing)."""
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    def objective(logits, batch, labels, views):
        return loss_fn(logits, labels)

    return objective


def train(
    dataset,
    out_path,
    arch="resnet50",
    recipe=None,
    init=None,
    spec=None,
    objective=None,
    extra_meta=None,
):
    """Train the FP32 baseline on the train split and write its checkpoint.

    Args:
        dataset: a :class:`pipeline.data.Dataset`.
        out_path: the checkpoint to write (atomically, at the end).
        arch: torchvision architecture name.
        recipe: a :class:`Recipe`; defaults if None.
        init: optional weights to fine-tune from (safetensors or PyTorch state dict).
        spec: the :class:`Preprocess` to train with (stored in the checkpoint).
        objective: ``f(logits, batch_indices, labels, views) -> loss``, ``views`` being
            each image's flip (an index into ``VIEWS``); cross-entropy if None
            (:mod:`pipeline.distill` passes the distillation loss).
        extra_meta: more metadata to store in the checkpoint.

    Returns:
        The metadata record written with the checkpoint.
    """
    recipe = recipe or Recipe()
    spec = spec or Preprocess()
    if not dataset.split("train"):
        raise JetquantError(
            "data set {} has no train images to train on; give the manifest rows with "
            "split=train, or pass --checkpoint".format(dataset.source)
        )
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    device = pick_device(recipe.device)
    native_bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_bf16()
    bf16 = native_bf16 if recipe.bf16 == "auto" else bool(recipe.bf16)
    log.info(
        "training %s on %s (%s): %d epochs, batch %d, lr %g, bf16 autocast %s, init %s",
        arch,
        dataset.name,
        device,
        recipe.epochs,
        recipe.batch_size,
        recipe.lr,
        "on" if bf16 else "off",
        init or "none (from scratch)",
    )

    with Timer() as prep:
        train_x, train_y = load_split(dataset, "train", spec)
        eval_x, eval_y = load_split(dataset, "eval", spec)
    log.info(
        "preprocessed %d train + %d eval images in %.1f s", len(train_y), len(eval_y), prep.elapsed
    )

    model = build(arch, len(dataset.classes))
    if init:
        load_init_weights(model, init)
    model.to(device)
    objective = objective or label_objective(recipe)
    eval_top1, seconds = _fit(
        model, recipe, bf16, device, objective, train_x, train_y, eval_x, eval_y
    )
    model.to("cpu")
    eval_top1 = evaluate(model, eval_x, eval_y)
    log.info("final eval top-1 in FP32: %.2f %%", 100 * eval_top1)

    meta = {
        "arch": arch,
        "classes": dataset.classes,
        "preprocess": spec.to_dict(),
        "data": {
            "name": dataset.name,
            "sha256": dataset.digest(),
            "train_images": len(train_y),
            "eval_images": len(eval_y),
        },
        "eval_top1": eval_top1,
        "recipe": recipe.to_dict(),
        "bf16": bf16,
        "init": init,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "jetquant": __version__,
    }
    meta.update(extra_meta or {})
    save_checkpoint(out_path, model, meta)
    log.info("saved %s (eval top-1 %.2f %%, %.1f min)", out_path, 100 * eval_top1, seconds / 60)
    return meta


def _fit(model, recipe, bf16, device, objective, train_x, train_y, eval_x, eval_y):
    generator = torch.Generator().manual_seed(recipe.seed)
    steps = math.ceil(len(train_y) / recipe.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps
    )
    start = time.perf_counter()
    eval_top1 = 0.0
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(len(train_y), generator=generator)
        model.train()
        total, seen = 0.0, 0
        for batch in _progress(order.split(recipe.batch_size), steps, epoch, recipe.epochs):
            images, views = random_flips(train_x[batch], generator)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = objective(model(images.to(device)), batch, train_y[batch].to(device), views)
            if not torch.isfinite(loss):
                raise JetquantError(
                    "training loss became {} at epoch {}; nothing was saved. Lower the "
                    "learning rate, or for distillation pick a smaller --temperature".format(
                        float(loss.detach()), epoch
                    )
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        eval_top1 = evaluate(model, eval_x, eval_y, bf16=bf16, device=device)
        log.info(
            "epoch %d/%d: train loss %.4f, eval top-1 %.2f %%, %.0f s elapsed",
            epoch,
            recipe.epochs,
            total / seen,
            100 * eval_top1,
            time.perf_counter() - start,
        )
    model.eval()
    return eval_top1, time.perf_counter() - start


def _progress(batches, steps, epoch, epochs):
    """A tqdm bar on a terminal; "batch i/n" log lines otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(batches, total=steps, desc="epoch {}/{}".format(epoch, epochs), leave=False)
    return _logged(batches, steps, epoch, epochs)


def _logged(batches, steps, epoch, epochs):
    every = max(1, steps // 4)
    for i, batch in enumerate(batches, start=1):
        if i % every == 0 or i == steps:
            log.info("epoch %d/%d batch %d/%d", epoch, epochs, i, steps)
        yield batch
