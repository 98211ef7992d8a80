"""Run a TensorRT engine: load it, feed batches, time copy-in / compute / copy-out.

CUDA is reached through one small wrapper (:class:`Cuda`, :class:`DeviceBuffer`)
over cuda-python's runtime API, or PyCUDA where cuda-python is absent (JetPack
4.6 images often have only PyCUDA). The TensorRT IO API differences (binding
indices on 8.2, tensor names from 8.5) live in :mod:`pipeline.trt_adapter`.

This module stays Python 3.6 compatible and imports neither torch nor onnx.
"""

import os

import numpy as np

from . import trt_adapter as adapter
from .errors import JetquantError
from .log import get_logger

log = get_logger("runtime")


class _CudaPython(object):
    """cuda-python runtime API (``cuda.bindings.runtime``, formerly ``cuda.cudart``)."""

    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.rt = cudart

    def _call(self, result, what):
        err = result[0]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise JetquantError("CUDA {} failed: {}; check the GPU with nvidia-smi / tegrastats"
                                .format(what, err))
        return result[1] if len(result) == 2 else result[1:]

    def malloc(self, nbytes):
        return int(self._call(self.rt.cudaMalloc(int(nbytes)), "cudaMalloc"))

    def free(self, ptr):
        self._call(self.rt.cudaFree(ptr), "cudaFree")

    def to_device(self, ptr, array, stream):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, stream),
                   "copy to device")

    def to_host(self, array, ptr, stream):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, stream),
                   "copy to host")

    def stream(self):
        return self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def handle(self, stream):
        return int(stream)

    def sync(self, stream):
        self._call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def event(self):
        return self._call(self.rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, event, stream):
        self._call(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start, end):
        return float(self._call(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def device_name(self):
        props = self._call(self.rt.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = props.name
        return name.split(b"\x00")[0].decode() if isinstance(name, bytes) else str(name)


class _PyCuda(object):
    """PyCUDA (``pycuda.driver``) with a context from ``pycuda.autoinit``."""

    name = "pycuda"

    def __init__(self):
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context)
        import pycuda.driver as driver
        self.drv = driver
        self._allocations = {}

    def malloc(self, nbytes):
        allocation = self.drv.mem_alloc(int(nbytes))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr):
        self._allocations.pop(ptr).free()

    def to_device(self, ptr, array, stream):
        self.drv.memcpy_htod_async(ptr, array, stream)

    def to_host(self, array, ptr, stream):
        self.drv.memcpy_dtoh_async(array, ptr, stream)

    def stream(self):
        return self.drv.Stream()

    def handle(self, stream):
        return stream.handle

    def sync(self, stream):
        stream.synchronize()

    def event(self):
        return self.drv.Event()

    def record(self, event, stream):
        event.record(stream)

    def elapsed_ms(self, start, end):
        end.synchronize()
        return float(end.time_since(start))

    def device_name(self):
        return self.drv.Device(0).name()


def open_cuda():
    """Return a CUDA wrapper: cuda-python if importable, else PyCUDA."""
    errors = []
    for backend in (_CudaPython, _PyCuda):
        try:
            return backend()
        except ImportError as exc:
            errors.append("{}: {}".format(backend.name, exc))
    raise JetquantError("no CUDA Python binding found ({}); pip install cuda-python (or "
                        "pycuda on JetPack 4.6)".format("; ".join(errors)))


class DeviceBuffer(object):
    """One device allocation: ``ptr`` is the int address TensorRT wants."""

    def __init__(self, cuda, nbytes):
        self.cuda = cuda
        self.nbytes = int(nbytes)
        self.ptr = cuda.malloc(self.nbytes)
        self._stream = None

    def upload(self, array, stream=None):
        """Copy a host array in (waits for the copy when no stream is given)."""
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise JetquantError("batch of {} bytes does not fit a {}-byte device buffer"
                                .format(array.nbytes, self.nbytes))
        if stream is None:
            if self._stream is None:
                self._stream = self.cuda.stream()
            self.cuda.to_device(self.ptr, array, self._stream)
            self.cuda.sync(self._stream)
        else:
            self.cuda.to_device(self.ptr, array, stream)

    def free(self):
        """Release the allocation (idempotent)."""
        if self.ptr is not None:
            self.cuda.free(self.ptr)
            self.ptr = None


def read_engine_bytes(path):
    """Read an engine file; a missing or empty one is refused with the fix."""
    path = str(path)
    if not os.path.isfile(path):
        raise JetquantError("engine not found: {}; build it first (make engine)".format(path))
    with open(path, "rb") as handle:
        data = handle.read()
    if not data:
        raise JetquantError("engine {} is empty (an interrupted build?); delete it and rebuild "
                            "(make engine)".format(path))
    return data


class Timings(object):
    """Latency of one batch, split into its three steps (milliseconds)."""

    def __init__(self, copy_in_ms, compute_ms, copy_out_ms):
        self.copy_in_ms = copy_in_ms
        self.compute_ms = compute_ms
        self.copy_out_ms = copy_out_ms

    @property
    def total_ms(self):
        """End-to-end latency: copy in + compute + copy out."""
        return self.copy_in_ms + self.compute_ms + self.copy_out_ms

    def to_dict(self):
        """JSON-friendly form for reports."""
        return {"copy_in_ms": self.copy_in_ms, "compute_ms": self.compute_ms,
                "copy_out_ms": self.copy_out_ms, "total_ms": self.total_ms}


class EngineRunner(object):
    """A deserialized engine with device buffers sized for ``max_batch``.

    Args:
        path: the ``.engine`` file.
        max_batch: largest batch :meth:`run` will be given (within the engine's profile).
        trt: the tensorrt module (imported when None).
        cuda: a CUDA wrapper (see :func:`open_cuda`; a stand-in in tests).
        verbose: TensorRT's own log at VERBOSE.
    """

    def __init__(self, path, max_batch=1, trt=None, cuda=None, verbose=False):
        self.trt = trt or adapter.import_tensorrt()
        self.cuda = cuda or open_cuda()
        self.path = str(path)
        self.logger = adapter.make_logger(self.trt, verbose)
        self.runtime, self.engine = adapter.deserialize(self.trt, self.logger,
                                                        read_engine_bytes(path), self.path)
        self.context = self.engine.create_execution_context()
        self.tensors = adapter.engine_io(self.trt, self.engine)
        self.inputs = [t for t in self.tensors if t.is_input]
        self.outputs = [t for t in self.tensors if not t.is_input]
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise JetquantError("engine {} has {} inputs and {} outputs; jetquant runs "
                                "classifiers with one input and one output (logits)".format(
                                    self.path, len(self.inputs), len(self.outputs)))
        self.max_batch = int(max_batch)
        self.stream = self.cuda.stream()
        self.events = [self.cuda.event() for _ in range(4)]
        self.buffers = {t.name: DeviceBuffer(self.cuda, self._nbytes(t, self.max_batch))
                        for t in self.tensors}

    def _nbytes(self, io, batch):
        return int(np.prod(self._shape(io, batch))) * np.dtype(io.dtype).itemsize

    def _shape(self, io, batch):
        shape = list(io.shape)
        if shape and shape[0] == -1:
            shape[0] = batch
        if any(d < 0 for d in shape[1:]):
            raise JetquantError("engine {} tensor {} has dynamic non-batch axes {}; export "
                                "with a fixed image size".format(self.path, io.name, shape))
        return tuple(shape)

    def run(self, batch):
        """Run one batch (N, C, H, W) float32; return (logits numpy array, :class:`Timings`)."""
        batch = np.ascontiguousarray(batch, dtype=self.inputs[0].dtype)
        count = batch.shape[0]
        if count < 1 or count > self.max_batch:
            raise JetquantError("batch of {} images: this runner was opened for 1..{} "
                                "(max_batch)".format(count, self.max_batch))
        adapter.set_input_shape(self.trt, self.context, self.inputs[0], batch.shape)
        logits = np.empty(self._shape(self.outputs[0], count), dtype=self.outputs[0].dtype)
        pointers = {name: buf.ptr for name, buf in self.buffers.items()}
        cuda, stream, ev = self.cuda, self.stream, self.events
        cuda.record(ev[0], stream)
        cuda.to_device(pointers[self.inputs[0].name], batch, stream)
        cuda.record(ev[1], stream)
        adapter.execute(self.trt, self.context, self.tensors, pointers, cuda.handle(stream))
        cuda.record(ev[2], stream)
        cuda.to_host(logits, pointers[self.outputs[0].name], stream)
        cuda.record(ev[3], stream)
        cuda.sync(stream)
        times = [cuda.elapsed_ms(ev[i], ev[i + 1]) for i in range(3)]
        return logits, Timings(*times)

    def close(self):
        """Free the device buffers."""
        for buf in self.buffers.values():
            buf.free()
