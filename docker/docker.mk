# Device image targets, included by the top-level Makefile (which defines PY and DATA).
#
#   make docker                  build the jetquant image for the Jetson this runs on
#   make docker-engine DATA=dir  run `make engine` inside it, on the GPU
#
# The image tag, Dockerfile and build arguments come from pipeline/device.py, whose table
# maps the host's L4T release (/etc/nv_tegra_release) to a JetPack line.
# On a machine without L4T or a docker engine, both targets stop with one line that says
# what they need.

PY ?= python3
DOCKER ?= docker
TEGRA_RELEASE ?= /etc/nv_tegra_release
DOCKER_RUN_ARGS ?=
# pipeline.device needs only the standard library and packaging, so the Jetson's own python3
# serves when the virtual environment (Python 3.10+ only) cannot be made there.
DEVICE_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
JQ_DEVICE = $(DEVICE_PY) -m pipeline.device --tegra-release $(TEGRA_RELEASE)
JQ_CONTEXT = pipeline Makefile pyproject.toml docker

# Each check expands to nothing when met and stops make with one line when not. They run
# in this order, so a machine without L4T never reaches the docker engine.
jq_need_l4t = $(if $(wildcard $(TEGRA_RELEASE)),,$(error $@ needs a Jetson: \
  $(TEGRA_RELEASE) is missing here; run `make $@` on the Jetson itself))
jq_need_python = $(if $(shell $(DEVICE_PY) -c "import packaging.version" 2>/dev/null \
  && echo ok),,$(error $@ needs $(DEVICE_PY) with the packaging module; install it with \
  `sudo apt-get install python3-packaging`))
jq_need_cli = $(if $(shell command -v $(DOCKER) 2>/dev/null),,$(error $@ needs the docker \
  CLI ($(DOCKER) not found); install docker and nvidia-container-toolkit on the Jetson))
jq_need_engine = $(if $(shell $(DOCKER) info >/dev/null 2>&1 && echo up),,$(error $@ needs \
  a running docker engine ($(DOCKER) info failed); start it with `sudo systemctl start \
  docker` and make sure your user is in the docker group))
jq_need_data = $(if $(DATA),,$(error $@ needs DATA=<folder with the data set>, e.g. \
  `make $@ DATA=/path/to/defects`))
jq_need_context = $(foreach f,$(JQ_CONTEXT),$(if $(wildcard $(f)),,$(error $@ needs $(f) \
  in the build context; run make from the repository root)))
jq_need_docker = $(jq_need_l4t)$(jq_need_python)$(jq_need_cli)$(jq_need_engine)

.PHONY: docker docker-engine

docker:
	$(jq_need_docker)$(jq_need_context)
	@set -e; \
	image=$$($(JQ_DEVICE) image); \
	dockerfile=$$($(JQ_DEVICE) dockerfile); \
	build_args=$$($(JQ_DEVICE) build-args); \
	echo "building $$image from $$dockerfile (base $$($(JQ_DEVICE) base))"; \
	tar -cf - --exclude=__pycache__ $(JQ_CONTEXT) \
	  | $(DOCKER) build -f "$$dockerfile" $$build_args -t "$$image" -

docker-engine:
	$(jq_need_docker)$(jq_need_data)
	@set -e; \
	image=$$($(JQ_DEVICE) image); \
	mkdir -p engines; \
	$(DOCKER) run --rm --runtime nvidia \
	  --user "$$(id -u):$$(id -g)" --group-add video -e HOME=/tmp \
	  -v "$(abspath $(DATA))":/data:ro \
	  -v "$(CURDIR)/engines":/opt/jetquant/engines \
	  $(DOCKER_RUN_ARGS) "$$image" make engine PY=python3 STAMP= DATA=/data
