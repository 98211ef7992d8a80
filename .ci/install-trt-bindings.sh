#!/usr/bin/env bash
# Install the TensorRT Python bindings of every TensorRT version jetquant claims, each into
# its own folder under $1, for tests/test_trt_api_names.py. These wheels carry only the compiled
# module (tensorrt_bindings/tensorrt.so, about 1 MB each), not libnvinfer, so they install on any
# x86-64 Linux with Python 3.11; the test imports each against generated stub libraries.
#
# TensorRT 8.2 (JetPack 4.6) and 8.5 (JetPack 5) have no wheel on PyPI: wheels before 8.5 went to
# NVIDIA's own index, and PyPI serves tensorrt 8.6.1 as its oldest release. 8.6.1 stands in for
# the 8.x line; what is specific to 8.2 is covered as the test module's docstring says.
# Download: about 3.4 MB in all; install time: a few seconds.
set -euo pipefail
dest=${1:?usage: $0 DEST_DIR}
# The wheels are per Python version: install with the interpreter that runs the tests.
python=${PYTHON:-.venv/bin/python}
# version folder -> pip requirement (exact pins: the test's expectations are per release)
specs=(
  "8.6.1 tensorrt-bindings==8.6.1"
  "10.3.0 tensorrt-cu12-bindings==10.3.0"
  "11.4.0.106 tensorrt-cu12-bindings==11.4.0.106"
)
for spec in "${specs[@]}"; do
  version=${spec%% *}
  requirement=${spec#* }
  if [ -f "$dest/$version/tensorrt_bindings/tensorrt.so" ]; then
    echo "TensorRT $version bindings already in $dest/$version"
    continue
  fi
  "$python" -m pip install --quiet --no-deps --no-compile --only-binary=:all: --target "$dest/$version" "$requirement"
  echo "TensorRT $version bindings installed in $dest/$version"
done
