# Device checks, included by the top-level Makefile (which defines PYTHON, VENV, PY, DATA,
# REPORT_DIR and ARGS); every variable has a default, so `make -f docker/device.mk` works too.
#
#   make device-check  [DATA=...] [EPOCHS=6]  the whole route on this NVIDIA GPU machine
#                      (desktop or Jetson) in one script: host part in the venv where it can run
#                      (train on the GPU with EPOCHS epochs, export, calibrate), then the device
#                      route; writes $(DEVICE_REPORT_DIR)/report.json with the route taken and the
#                      pins verified by the engine inspector. Without a GPU or TensorRT it stops
#                      at once, before any install, with one line saying what it needs.
#   make device-engine [DATA=...]              the device route only, with $(DEVICE_PY) (on a
#                      Jetson: the system python3, whose site-packages hold TensorRT), from the
#                      host artifacts in $(ENGINES_DIR)/ (`make engine` on a host, copied here).
#
# Options: DEVICE_ARGS="--precision fp16 --route explicit --iterations 500 ..." go to the device
# route; ARGS to `make engine`; HOST_PART=0 skips the host part; TRT_PY picks the Python with
# TensorRT for device-check.

PYTHON ?= python3
VENV ?= .venv
PY ?= $(VENV)/bin/python
DATA ?=
ARGS ?=
REPORT_DIR ?= reports
DEVICE_REPORT_DIR ?= $(REPORT_DIR)/device
ENGINES_DIR ?= engines
DEVICE_ARGS ?=
EPOCHS ?= 6
HOST_PART ?= auto
TRT_PY ?=
NVIDIA_SMI ?= nvidia-smi
TEGRA_RELEASE ?= /etc/nv_tegra_release
# Same rule as docker/docker.mk: the venv's python where it exists, else the system python3.
DEVICE_PY ?= $(if $(wildcard $(PY)),$(PY),python3)

.PHONY: device-check device-engine

# No prerequisites on purpose: the preflight must run before the venv is installed.
device-check:
	@PYTHON="$(PYTHON)" VENV="$(VENV)" MAKE="$(MAKE)" DATA="$(DATA)" ARGS="$(ARGS)" \
	  DEVICE_REPORT_DIR="$(DEVICE_REPORT_DIR)" ENGINES_DIR="$(ENGINES_DIR)" \
	  DEVICE_ARGS="$(DEVICE_ARGS)" EPOCHS="$(EPOCHS)" HOST_PART="$(HOST_PART)" \
	  TRT_PY="$(TRT_PY)" NVIDIA_SMI="$(NVIDIA_SMI)" TEGRA_RELEASE="$(TEGRA_RELEASE)" \
	  bash scripts/device_check.sh

device-engine:
	$(DEVICE_PY) -m pipeline.device_route --engines $(ENGINES_DIR) $(if $(DATA),--data $(DATA)) \
	  --report-dir $(DEVICE_REPORT_DIR) $(DEVICE_ARGS)
