"""The ``export`` stage: FP32 checkpoint -> ONNX, checked against PyTorch.

The graph has one input ``input`` (N, 3, H, W) float32 with a dynamic batch
axis and one output ``logits``. Opset 13 is the newest that TensorRT 8.2
(JetPack 4.6, the oldest release we support) parses, per the ONNX-TensorRT
operator matrix of that release, and the oldest with per-axis
QuantizeLinear/DequantizeLinear, which the Q/DQ graph needs.
"""

import io
import json
import warnings

import numpy as np
import onnx
import torch

from .artifacts import (
    atomic_write,
    describe,
    is_fresh,
    read_json,
    sha256_file,
    sidecar_path,
    write_sidecar,
)
from .data import check_classes, paths
from .errors import JetquantError
from .evaluate import INPUT, OUTPUT, ort_session
from .log import Timer, get_logger
from .model import load_checkpoint
from .preprocess import load_batch

log = get_logger("export")

OPSET = 13


def export(checkpoint, out_path, dataset, opset=OPSET, batch_size=32):
    """Export a checkpoint to ONNX and check ONNX Runtime against PyTorch on the eval split.

    Args:
        checkpoint: path of the FP32 baseline checkpoint.
        out_path: the ONNX file to write.
        dataset: the data set whose eval split the check runs on.
        opset: ONNX opset (13 by default; TensorRT 8.2 parses up to 13).
        batch_size: images per inference batch in the check.

    Returns:
        The sidecar record, with ``check`` = {max_abs_diff, agreement, images}.

    Raises:
        JetquantError: the checkpoint does not fit the data, or ONNX Runtime
            disagrees with PyTorch on any eval image's top-1.
    """
    key = {
        "checkpoint_sha256": sha256_file(checkpoint),
        "opset": opset,
        "torch": torch.__version__,
        "eval_sha256": dataset.split_digest("eval"),
    }
    if is_fresh(out_path, key):
        record = read_json(sidecar_path(out_path), "export sidecar")
        log.info("reusing %s (checkpoint unchanged)", describe(out_path))
        _log_check(record["check"], reused=True)
        return record

    ckpt = load_checkpoint(checkpoint)
    check_classes(dataset, ckpt.classes, "checkpoint " + str(checkpoint))
    with Timer() as timer:
        model_bytes = _to_onnx(ckpt, opset)
    atomic_write(out_path, model_bytes)
    log.info("exported %s in %.1f s (opset %d)", describe(out_path), timer.elapsed, opset)

    check = compare(ckpt.model, out_path, dataset, ckpt.preprocess, batch_size)
    _log_check(check, reused=False)
    if not check["finite"]:
        raise JetquantError("the model gives NaN or infinite logits on the eval images; check the "
                            "checkpoint's preprocessing (std must be > 0) and its weights")
    if check["agreement"] < 1.0:
        raise JetquantError(
            "ONNX Runtime disagrees with PyTorch on {} of {} eval images "
            "(max |logit diff| {:.2e}); the export is wrong: report it with the "
            "checkpoint".format(check["disagreements"], check["images"], check["max_abs_diff"])
        )
    extra = {
        "classes": ckpt.classes,
        "preprocess": ckpt.meta["preprocess"],
        "arch": ckpt.arch,
        "check": check,
        "checkpoint_eval_top1": ckpt.meta.get("eval_top1"),
        "inputs": [INPUT],
        "outputs": [OUTPUT],
        "opset": opset,
    }
    return dict(write_sidecar(out_path, key, extra), **extra)


def _to_onnx(ckpt, opset):
    spec = ckpt.preprocess
    dummy = torch.zeros(1, 3, spec.crop, spec.crop)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ckpt.model,
            (dummy,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            do_constant_folding=True,
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    meta = {"arch": ckpt.arch, "classes": ckpt.classes, "preprocess": ckpt.meta["preprocess"]}
    entry = model.metadata_props.add()
    entry.key, entry.value = "jetquant", json.dumps(meta, sort_keys=True)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def compare(model, onnx_path, dataset, spec, batch_size=32):
    """Run PyTorch (FP32) and ONNX Runtime on the eval split; return the agreement figures."""
    samples = dataset.split("eval")
    session = ort_session(onnx_path)
    diffs, agree, right_ref, right_got, finite = [], 0, 0, 0, True
    labels = dataset.labels(samples)
    model.eval()
    with Timer() as timer, torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            batch = load_batch(paths(samples[start : start + batch_size]), spec)
            ref = model(torch.from_numpy(batch)).numpy()
            got = session.run([OUTPUT], {INPUT: batch})[0]
            finite = finite and bool(np.isfinite(ref).all() and np.isfinite(got).all())
            diffs.append(float(np.abs(ref - got).max()))
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            truth = labels[start : start + batch_size]
            right_ref += int((ref.argmax(1) == truth).sum())
            right_got += int((got.argmax(1) == truth).sum())
    return {
        "images": len(samples),
        "finite": finite,
        "max_abs_diff": max(diffs) if diffs else 0.0,
        "agreement": agree / max(1, len(samples)),
        "disagreements": len(samples) - agree,
        "top1_torch": right_ref / max(1, len(samples)),
        "top1_onnx": right_got / max(1, len(samples)),
        "seconds": round(timer.elapsed, 1),
    }


def _log_check(check, reused):
    log.info(
        "ONNX check%s: ONNX Runtime vs PyTorch on %d eval images: max |logit diff| %.2e, "
        "top-1 agreement %.2f %%; eval top-1 FP32 PyTorch %.2f %%, ONNX Runtime %.2f %%",
        " (recorded at export)" if reused else "",
        check["images"],
        check["max_abs_diff"],
        100 * check["agreement"],
        100 * check["top1_torch"],
        100 * check["top1_onnx"],
    )
