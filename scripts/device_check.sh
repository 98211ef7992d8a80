#!/usr/bin/env bash
# make device-check: the whole jetquant route on this NVIDIA GPU machine (desktop or Jetson),
# in one go, on the default data (or DATA), writing $DEVICE_REPORT_DIR/report.json.
#
#   0. preflight, before anything is installed: a GPU (nvidia-smi, or a Jetson's L4T release
#      file) and a Python with TensorRT's bindings, numpy, pillow, packaging and a CUDA binding;
#      otherwise one line says what is missing and the script exits 2 at once;
#   1. the host part (venv, then `make engine`: train with $EPOCHS epochs on the GPU, export,
#      calibrate) where this Python can run it (3.10+), else the artifacts already in engines/;
#   2. the device route (python -m pipeline.device_route) with the Python that has TensorRT;
#   3. a check that report.json names the route taken and that the engine inspector verified
#      every engine's pinned layers.
# Each step prints its elapsed time. Exit status: 0 when the route ran and every engine's pins
# were verified (the QA gates' verdict is printed; `make device-engine` exits 1 on a failed
# gate), 2 when something this machine lacks stops it, else the failing step's status.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
MAKE=${MAKE:-make}
DATA=${DATA:-}
ARCH=${ARCH:-resnet50}
ENGINES_DIR=${ENGINES_DIR:-engines}
DEVICE_REPORT_DIR=${DEVICE_REPORT_DIR:-reports/device}
EPOCHS=${EPOCHS:-6}
ARGS=${ARGS:-}
DEVICE_ARGS=${DEVICE_ARGS:-}
HOST_PART=${HOST_PART:-auto}
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
TEGRA_RELEASE=${TEGRA_RELEASE:-/etc/nv_tegra_release}
TRT_PY=${TRT_PY:-}
BUDGET_S=${BUDGET_S:-600}

started=$(date +%s)

say() { echo "device-check: $*"; }
stop() { echo "device-check needs $*" >&2; exit 2; }

step() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  say "step $name: $*"
  "$@"
  say "step $name done in $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - started )) s)"
}

find_gpu() {
  if [ -f "$TEGRA_RELEASE" ]; then
    echo "Jetson, $(head -n 1 "$TEGRA_RELEASE" | cut -c 1-60)"
  elif ! command -v "$NVIDIA_SMI" >/dev/null 2>&1; then
    return 1
  else
    "$NVIDIA_SMI" -L 2>/dev/null | grep -m 1 '^GPU ' || return 2
  fi
}

find_trt_python() {
  local candidates=() py
  if [ -n "$TRT_PY" ]; then
    candidates=("$TRT_PY")
  else
    [ -x "$VENV/bin/python" ] && candidates+=("$VENV/bin/python")
    candidates+=(python3)
  fi
  for py in "${candidates[@]}"; do
    if "$py" -c "import tensorrt" >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
  echo "${candidates[*]}"
  return 1
}

preflight() {
  local needs=() gpu_rc=0 tried
  gpu=$(find_gpu) || gpu_rc=$?
  case $gpu_rc in
    1) needs+=("an NVIDIA GPU (nvidia-smi not found, and $TEGRA_RELEASE is missing: not a Jetson)") ;;
    2) needs+=("an NVIDIA GPU (nvidia-smi found none)") ;;
  esac
  if ! trt_python=$(find_trt_python); then
    tried=$trt_python
    needs+=("TensorRT's Python bindings (import tensorrt failed in ${tried// /, }; on a Jetson \
they come with JetPack: sudo apt install python3-libnvinfer; on a PC: make venv, then \
$VENV/bin/pip install tensorrt cuda-python; or give TRT_PY=/path/to/python)")
  fi
  if [ ${#needs[@]} -eq 2 ]; then
    stop "${needs[0]} and ${needs[1]}"
  elif [ ${#needs[@]} -eq 1 ]; then
    stop "${needs[0]}"
  fi
  local missing
  missing=$("$trt_python" - <<'EOF'
import importlib
missing = []
for module in ("numpy", "PIL", "packaging.version"):
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(module.split(".")[0])
found = False
for module in ("cuda.bindings.runtime", "cuda.cudart", "pycuda.driver"):
    try:
        importlib.import_module(module)
        found = True
        break
    except ImportError:
        pass
if not found:
    missing.append("cuda-python (or pycuda)")
print(", ".join(missing))
EOF
)
  if [ -n "$missing" ]; then
    stop "$missing in $trt_python, next to TensorRT; install them with $trt_python -m pip install"
  fi
  trt_version=$("$trt_python" -c "import tensorrt; print(tensorrt.__version__)")
  say "GPU: $gpu; TensorRT $trt_version in $trt_python"
}

data_stem() {
  "$1" - "$DATA" "$ARCH" <<'EOF'
import logging, sys
logging.disable(logging.CRITICAL)
from pipeline.data import load_dataset
from pipeline.errors import JetquantError
try:
    dataset = load_dataset(sys.argv[1] or None, check_images=False)
except JetquantError as exc:
    sys.exit("device-check: " + str(exc))
print("{}-{}".format(dataset.name, sys.argv[2]))
EOF
}

choose_host_part() {
  stem=$(data_stem "$trt_python")
  [ "$HOST_PART" = auto ] || return 0
  if [ -f "$TEGRA_RELEASE" ] && [ -f "$ENGINES_DIR/$stem.fp32.onnx" ]; then
    HOST_PART=0
    say "Jetson with the host artifacts $ENGINES_DIR/$stem.* in place: device route only (HOST_PART=1 redoes the host part here)"
  elif "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    HOST_PART=1
  else
    HOST_PART=0
    say "$PYTHON is older than 3.10, which the host part (train, export, calibrate) needs: using the artifacts in $ENGINES_DIR"
  fi
}

host_part() {
  choose_host_part
  if [ "$HOST_PART" != 1 ]; then
    [ -f "$ENGINES_DIR/$stem.fp32.onnx" ] || stop "the host artifacts $ENGINES_DIR/$stem.* here: run \`make engine\` on a host first and copy engines/ here (or HOST_PART=1 where Python 3.10+ exists)"
    return 0
  fi
  step venv "$MAKE" --no-print-directory venv VENV="$VENV" PYTHON="$PYTHON"
  if [ ! -f "checkpoints/$stem.safetensors" ] && \
     ! "$VENV/bin/python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    stop "a CUDA build of torch in $VENV to train the $ARCH baseline within 10 minutes (torch.cuda.is_available() is False there and checkpoints/$stem.safetensors does not exist); install one, or run \`make engine\` on another host and copy checkpoints/ and engines/ here"
  fi
  step host "$MAKE" --no-print-directory engine VENV="$VENV" DATA="$DATA" \
    ARGS="--epochs $EPOCHS --trt-target $trt_version $ARGS"
}

device_route() {
  local status=0
  # shellcheck disable=SC2086  # DEVICE_ARGS holds several options on purpose
  "$trt_python" -m pipeline.device_route --engines "$ENGINES_DIR" --stem "$stem" \
    ${DATA:+--data "$DATA"} --report-dir "$DEVICE_REPORT_DIR" $DEVICE_ARGS || status=$?
  if [ "$status" -gt 1 ]; then
    say "the device route failed (status $status)"
    return "$status"
  fi
}

check_report() {
  "$trt_python" - "$DEVICE_REPORT_DIR/report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
problems = []
if report.get("stand_in"):
    problems.append("made with a TensorRT stand-in: " + report["stand_in"])
choice = report.get("precision_choice") or {}
if report.get("route"):
    print("device-check: route taken: {} ({})".format(report["route"], report["backend"]))
else:
    print("device-check: no INT8 engine: {}".format(choice.get("reason") or choice))
for result in report["results"]:
    check = result.get("verification") or {}
    if check.get("passed"):
        print("device-check: {} pins verified by the engine inspector: {} in FP16, {} "
              "convolution(s) in INT8".format(result["name"], ", ".join(check.get("pinned_fp16")
                                                                         or ["none"]),
                                             check.get("quantized_int8")))
    else:
        problems.append("{}: {}".format(result["name"], "; ".join(check.get("problems") or
                                                                  ["not verified"])))
failed = [g for g in report["gates"] if not g["passed"] and g["name"] != "pins_verified"]
print("device-check: QA gates {}{}".format("PASS" if not failed else "FAIL: ", "; ".join(
    "{} {} = {} (limit {})".format(g.get("model"), g["name"], g["value"], g["limit"])
    for g in failed)))
for problem in problems:
    print("device-check: " + problem, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
}

preflight
host_part
step device device_route
step check check_report
total=$(( $(date +%s) - started ))
say "report: $DEVICE_REPORT_DIR/report.json (and report.md); total $total s"
if [ "$total" -gt "$BUDGET_S" ]; then
  say "took $total s, over the $BUDGET_S s budget: the venv install or the training dominated (rerun: both are reused)"
fi
