"""Running models on preprocessed images: ONNX Runtime sessions and PyTorch eager.

Shared by the ``engine`` stage (accuracy printed after each artifact) and the
benchmark workers. Every runner takes the same preprocessed (N, C, H, W)
float32 array, so all precisions see byte-identical inputs.
"""

import os

import numpy as np

from .data import paths
from .preprocess import load_batch

INPUT = "input"
OUTPUT = "logits"


def eval_arrays(dataset, spec, split="eval"):
    """Preprocess one split once: (images float32 NCHW, labels int64)."""
    samples = dataset.split(split)
    return load_batch(paths(samples), spec), np.asarray(dataset.labels(samples), dtype=np.int64)


# ONNX Runtime's QDQ propagation moves the QuantizeLinear after the stem's MaxPool above it,
# so the pool runs on uint8 in NCHW, a slow kernel followed by a Transpose, instead of fused
# into the FP32 NCHWc stem. Measured here (ONNX Runtime 1.32, 2 cores, batch 1): the CPU
# INT8 ResNet18 takes 8.6 ms with the pass and 6.7 ms without, ResNet50 15.9 and 13.8 ms.
# The logits are bit-identical either way: max-pooling commutes with a positive-scale
# quantization.
DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


def session_settings(threads=None):
    """How :func:`ort_session` configures ONNX Runtime; every report records this.

    Args:
        threads: intra-op threads (all cores if None).
    """
    return {
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "disabled_optimizers": list(DISABLED_OPTIMIZERS),
        "intra_op_threads": threads or os.cpu_count() or 1,
        "inter_op_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
    }


def ort_session(path, threads=None):
    """An ONNX Runtime CPU session configured as :func:`session_settings` says.

    Args:
        path: the ONNX model.
        threads: intra-op threads (all cores if None).
    """
    import onnxruntime as ort

    settings = session_settings(threads)
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, settings["graph_optimization_level"]
    )
    options.intra_op_num_threads = settings["intra_op_threads"]
    options.inter_op_num_threads = settings["inter_op_threads"]
    options.execution_mode = getattr(ort.ExecutionMode, settings["execution_mode"])
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=settings["disabled_optimizers"],
    )


def ort_runner(path, threads=None):
    """Return ``run(batch) -> logits`` for an ONNX model."""
    session = ort_session(path, threads)

    def run(batch):
        return session.run([OUTPUT], {INPUT: batch})[0]

    return run


def torch_runner(checkpoint, threads=None):
    """Return ``run(batch) -> logits`` for a checkpoint in PyTorch eager FP32."""
    import torch

    from .model import load_checkpoint

    torch.set_num_threads(threads or os.cpu_count() or 1)
    model = load_checkpoint(checkpoint).model.eval()

    def run(batch):
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    return run


def logits_of(run, images, batch_size=32):
    """Run ``run`` over all images in batches; return (N, classes) float32 logits."""
    out = [run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def top1(logits, labels):
    """Fraction of images whose highest logit is the label."""
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())
