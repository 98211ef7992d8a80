"""The device-side TensorRT route imports neither torch nor onnx (a Jetson image has neither).

A fresh interpreter gets an import hook that refuses torch, torchvision, onnx and
onnxruntime, imports every device-side module (and the modules the TensorRT ones
import lazily), and reports which of the refused packages reached sys.modules.
"""

import os
import subprocess
import sys

from conftest import IMPORT_BLOCKER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = 'BLOCKED = ("torch", "torchvision", "onnx", "onnxruntime")\n' + IMPORT_BLOCKER + r'''
import pipeline.trt_adapter
import pipeline.trt_build
import pipeline.trt_calibrator
import pipeline.trt_runtime
import pipeline.data
import pipeline.preprocess
import pipeline.artifacts
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("attempts=%s loaded=%s" % (attempts, loaded))
'''


def test_device_route_imports_no_torch_or_onnx():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "attempts=[] loaded=[]"


def test_the_probe_would_notice_torch():
    probe = PROBE.replace("import pipeline.trt_adapter\n", "import pipeline.trt_adapter\n"
                          "try:\n    import torch\nexcept ImportError:\n    pass\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "attempts=['torch'] loaded=[]"
