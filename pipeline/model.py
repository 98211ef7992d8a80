"""Architectures and checkpoints.

A checkpoint is a safetensors file: tensors plus a JSON metadata record
(architecture, classes, preprocessing, data hash, eval top-1). Loading one never
executes code from it: safetensors holds only tensors, and a user's PyTorch
``.pt``/``.pth`` file is read with ``torch.load(weights_only=True)``.
"""

import json
import os

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .artifacts import atomic_write
from .errors import JetquantError
from .preprocess import Preprocess

ARCHITECTURES = {
    "resnet50": torchvision.models.resnet50,
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
}
FORMAT = "jetquant-checkpoint-1"


def build(arch, num_classes):
    """Return an untrained torchvision model (no pretrained weights are ever fetched)."""
    if arch not in ARCHITECTURES:
        raise JetquantError(
            "unknown architecture {!r}; choose one of {}".format(
                arch, ", ".join(sorted(ARCHITECTURES))
            )
        )
    return ARCHITECTURES[arch](weights=None, num_classes=num_classes)


class Checkpoint(object):
    """A loaded model with its metadata."""

    def __init__(self, model, meta, path=None):
        self.model = model
        self.meta = meta
        self.path = path

    @property
    def arch(self):
        return self.meta["arch"]

    @property
    def classes(self):
        return list(self.meta["classes"])

    @property
    def preprocess(self):
        return Preprocess.from_dict(self.meta["preprocess"])


def save_checkpoint(path, model, meta):
    """Write model weights and metadata to a safetensors file, atomically."""
    record = dict(meta, format=FORMAT)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, save(tensors, metadata={"jetquant": json.dumps(record, sort_keys=True)}))


def read_meta(path):
    """Read only the metadata record of a jetquant checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise JetquantError(
            "{} is not a readable safetensors checkpoint ({})".format(path, exc)
        ) from None
    if "jetquant" not in meta:
        raise JetquantError(
            "{} has no jetquant metadata; pass it with --init to fine-tune from it instead".format(
                path
            )
        )
    try:
        record = json.loads(meta["jetquant"])
    except ValueError:
        record = None
    missing = [k for k in ("arch", "classes", "preprocess") if not isinstance(record, dict)
               or k not in record]
    if missing:
        raise JetquantError("{}: its jetquant metadata is damaged (missing {}); retrain it or use "
                            "the original file".format(path, ", ".join(missing)))
    return record


def load_checkpoint(path, arch=None, classes=None):
    """Load a jetquant checkpoint, refusing one of another architecture or class count.

    Args:
        path: the ``.safetensors`` file.
        arch: if given, the architecture the caller expects.
        classes: if given, the class names the caller expects (order matters).
    """
    if not os.path.isfile(str(path)):
        raise JetquantError(
            "checkpoint not found: {}; train one with `make train` or pass --checkpoint".format(
                path
            )
        )
    meta = read_meta(path)
    if arch is not None and meta.get("arch") != arch:
        raise JetquantError(
            "checkpoint {} is a {} but {} was asked for; pass a {} checkpoint or --arch {}".format(
                path, meta.get("arch"), arch, arch, meta.get("arch")
            )
        )
    if classes is not None and list(meta.get("classes", [])) != list(classes):
        raise JetquantError(
            "checkpoint {} was trained for classes {}, the data has {}; retrain on "
            "this data".format(path, meta.get("classes"), list(classes))
        )
    model = build(meta["arch"], len(meta["classes"]))
    _load_state(model, load_file(str(path)), path)
    model.eval()
    return Checkpoint(model, meta, path)


def load_init_weights(model, path):
    """Load weights to fine-tune from: a jetquant/safetensors file or a PyTorch state dict.

    The classifier head is kept from ``model`` when its shape differs (a new class
    count); every other tensor must match, so a checkpoint of another
    architecture is refused.
    """
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        import re

        lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines() or ["unreadable"]
        raise JetquantError(
            "cannot read weights from {} ({}); give a safetensors file or a PyTorch state dict "
            "of tensors only, saved with torch.save(model.state_dict())".format(path, lines[0])
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise JetquantError("{} does not hold a state dict".format(path))
    own = model.state_dict()
    head = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    head_ok = all(k.startswith(("fc.", "classifier.")) for k in head)
    if head and head_ok:
        state = {k: v for k, v in state.items() if k not in head}
        state.update({k: own[k] for k in head})
    _load_state(model, state, path)


def _load_state(model, state, path):
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        first = (missing + unexpected + wrong)[:3]
        raise JetquantError(
            "{} does not fit this architecture: {} missing, {} unexpected, {} of "
            "another shape tensors (e.g. {}); it is a checkpoint of another "
            "architecture or class count".format(
                path, len(missing), len(unexpected), len(wrong), ", ".join(first)
            )
        )
    model.load_state_dict(state)
