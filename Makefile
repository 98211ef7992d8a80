# jetquant: `make engine` builds the INT8 model (and TensorRT engines where TensorRT is
# installed); `make test` runs the checks. Every target bootstraps its own virtual environment.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jetquant-installed
DATA ?=
CHECKPOINT ?=
REPORT_DIR ?= reports
ARGS ?=
RECALIBRATE ?=
RETRAIN ?=

data_arg = $(if $(DATA),--data $(DATA))
stage_args = $(data_arg) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
	$(if $(RECALIBRATE),--recalibrate) $(if $(RETRAIN),--retrain) $(ARGS)

.PHONY: help venv engine train export calibrate benchmark distill test lint clean

help:
	@echo "make engine    [DATA=...] train (first run), export, calibrate, build INT8 (+ TensorRT)"
	@echo "make benchmark [DATA=...] latency + accuracy of every precision, reports in $(REPORT_DIR)/"
	@echo "make distill   [DATA=...] ResNet18 student taught by the baseline, quantized, compared"
	@echo "make test                 lint + tests"
	@echo "make docker / docker-engine / device-check   on a Jetson or GPU machine"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(if $(wildcard /etc/nv_tegra_release),--system-site-packages) $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

# On a Jetson (L4T present) `make engine` is the device route: TensorRT engines from the
# artifacts a host's `make engine` wrote into engines/ (JetPack's Python has no torch).
# HOST=1 runs the host chain there too (JetPack 6: Python 3.10 can build the venv).
TEGRA_RELEASE ?= /etc/nv_tegra_release
HOST ?=
ifeq ($(if $(HOST),,$(wildcard $(TEGRA_RELEASE))),)
engine: $(STAMP)
	$(PY) -m pipeline engine $(stage_args)
else
engine: device-engine
endif

train: $(STAMP)
	$(PY) -m pipeline train $(data_arg) $(ARGS)

calibrate export: $(STAMP)
	$(PY) -m pipeline $@ $(stage_args)

benchmark: $(STAMP)
	$(PY) -m pipeline benchmark $(stage_args) --report-dir $(REPORT_DIR)

# Modules the device side imports: they must parse on Python 3.6 (Jetson Nano, JetPack 4.6).
DEVICE_MODULES := pipeline/__init__.py pipeline/errors.py pipeline/log.py pipeline/artifacts.py \
	pipeline/preprocess.py pipeline/data.py pipeline/stats.py pipeline/device.py \
	pipeline/compare.py pipeline/gates.py pipeline/report.py pipeline/device_route.py pipeline/timing.py \
	pipeline/trt_adapter.py pipeline/trt_calibrator.py pipeline/trt_build.py pipeline/trt_runtime.py
TRT_BINDINGS := .cache/trt-bindings

$(TRT_BINDINGS)/.installed: .ci/install-trt-bindings.sh $(STAMP)
	PYTHON=$(PY) bash .ci/install-trt-bindings.sh $(TRT_BINDINGS)
	touch $@

distill: $(STAMP)
	$(PY) -m pipeline distill $(stage_args) --report-dir $(REPORT_DIR)/distill

lint: $(STAMP)
	$(PY) -m ruff check pipeline tests
	$(VENV)/bin/vermin -t=3.6- --no-tips --violations $(DEVICE_MODULES)
	$(VENV)/bin/hadolint --no-color docker/Dockerfile.*

test: $(STAMP) $(TRT_BINDINGS)/.installed lint
	HADOLINT=$(CURDIR)/$(VENV)/bin/hadolint $(PY) -m pytest -q

clean:
	rm -rf $(REPORT_DIR) .pytest_cache .ruff_cache

-include docker/docker.mk
-include docker/device.mk
