# Two commands matter: `make serve` (set up + start the service on the shipped models) and
# `make test` (set up + run every test). Everything installs into .venv from this project's files.
# The interpreter .venv is built from: PYTHON=/path/to/python3, or by default the fastest build of python3's
# version on this machine (a distribution's optimised build over a plain source build: tools/fastest_python.py).
PYTHON ?=
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve check test models bench bench-peers java-runtime load-generator container-runtime browser clean

$(BIN)/python:
	@python="$(PYTHON)"; [ -n "$$python" ] || python=$$(python3 tools/fastest_python.py) && "$$python" -m venv $(VENV)

# A .venv made before uploads moved to multipart still holds python-multipart, whose `multipart` shim
# would shadow it: removed first (nothing when it is not there).
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip uninstall -qq --yes python-multipart
	$(BIN)/pip install --quiet -e '.[serve]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip uninstall -qq --yes python-multipart
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.serve

serve: $(VENV)/.serve
	$(BIN)/cnn-serve

# The container test builds the image and runs docker-compose.yml with podman. Machines here have no
# Docker engine: when podman is missing and the shared setup script is beside the checkout, use it.
container-runtime:
	@if ! command -v podman >/dev/null && [ -x ../shared/containers/podman-setup ]; then \
	  ../shared/containers/podman-setup || echo "podman setup failed: the container test will be skipped"; fi

# Debian packages the tests and the benchmark use, installed as root or through sudo when missing:
# $(call apt_install,PACKAGE,what happens without it).
apt_install = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $(1) >/dev/null; \
  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends $(1) >/dev/null; \
  else echo "$(1) is missing and there is no root: $(2)"; fi

# The page tests drive Debian's chromium (Playwright never downloads its own browser here).
browser:
	@command -v chromium >/dev/null || { $(call apt_install,chromium,the page tests will be skipped); }

# The fast lane (under a minute): lint, types, and every test not marked slow or container.
check: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow and not container"

# Everything: the fast lane first, then the slow one (whole test splits, servers under load and under
# attack, the browser, training, the container).
test: check container-runtime browser
	$(BIN)/python -m pytest -m "slow or container"

# Re-train and re-export every shipped model and its int8 version into models/ (two models at a time, one
# thread each: 41 minutes in its last run on 2 cores with Intel AMX, most recipes in bfloat16, half of them
# channels-last; 54 on a 2-core AMD EPYC, bfloat16 by its AVX-512 BF16, and 74 there all in float32). The
# printed-digit glyphs ship in training/assets; only `training fonts` (re-rendering them) needs Debian's fonts.
models: $(VENV)/.dev
	$(BIN)/training zoo --jobs 2

# Service vs raw ONNX Runtime, the HTTP ceiling and a naive torch server (a few minutes; quiet machine).
# Load comes from wrk (Debian's package), a C load generator that leaves the cores to the server.
load-generator:
	@command -v wrk >/dev/null || { $(call apt_install,wrk,the benchmark cannot run); }

bench: $(VENV)/.dev load-generator
	$(BIN)/python -m bench

# cnn-serve against mosec, TorchServe, PyTriton, BentoML and LitServe, interleaved, and the bare stack
# (about 15 minutes from a fresh clone, installs included; each peer installs into .bench-peers/ from its own
# package on the first run; TorchServe needs Debian's Java 17 runtime).
java-runtime:
	@command -v java >/dev/null || { $(call apt_install,openjdk-17-jre-headless,TorchServe cannot run); }

bench-peers: $(VENV)/.dev load-generator java-runtime
	$(BIN)/python -m bench.peers

clean:
	rm -rf $(VENV) runs .pytest_cache
