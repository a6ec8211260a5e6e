# Developer and CI entry points; .ci/run runs `make demo` (in CI, from a fresh state), then
# `make test`. Every recipe line is echoed, so a CI log shows exactly what ran. All targets are
# safe to repeat.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
# pip reinstalls only when pyproject.toml is newer than this stamp (or the venv is gone).
VENV_STAMP := $(VENV)/.sarchive-installed
SERVICES := infra/services
LINT_PATHS := producer consumers schemas runtime query web tests infra bench testkit

.PHONY: setup venv services-up services-down demo test test-unit test-integration lint images dist rpm

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@echo "==> installing the project and its dev tools into $(VENV) (pyproject.toml changed)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

setup: venv
	@echo "==> installing service prerequisites (Debian slurm/munge, prometheus and gridengine packages, Kafka jars)"
	$(SERVICES) install
	$(SERVICES) install prometheus gridengine

services-up: setup
	@echo "==> starting local services (no-op for those already up)"
	$(SERVICES) up
	$(SERVICES) status

services-down:
	@echo "==> stopping local services (data in \$${SARCHIVE_RUN_DIR:-.run} is kept)"
	$(SERVICES) down

# podman, runc and podman-compose where missing, a debootstrap base, every image of
# docker-compose.yml (docs/containers.md); the compose stack test runs it too. Layers are cached.
images:
	@echo "==> container images of docker-compose.yml, built with podman (no registry)"
	infra/images build

demo: services-up
	@echo "==> demo: three sbatch jobs through producer and Kafka into the archive and Elasticsearch"
	$(VENV)/bin/python -m infra.demo

test-unit: venv
	@echo "==> unit tests"
	$(VENV)/bin/pytest tests/unit -q

test-integration: services-up
	@echo "==> integration tests against the local services"
	$(VENV)/bin/pytest tests/integration -q

test: services-up
	@echo "==> unit and integration tests"
	$(VENV)/bin/pytest tests -q
	@$(MAKE) --no-print-directory lint

# tests/ has no __init__.py (pytest imports it in importlib mode): --explicit-package-bases
# names its modules by their path from the root, so its several conftest.py do not clash.
lint: venv
	@echo "==> lint: ruff, mypy and the layering contracts (import-linter)"
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy --strict infra bench testkit
	$(VENV)/bin/mypy --explicit-package-bases tests

# Packages (docs/install.md), into dist/: the sdist and the wheel (PyPA's build, in a private
# environment under build/packages/, never the development one), and the EL9 RPM built from
# them with rpmbuild (Debian's `rpm` package, installed when missing). Both need PyPI.
dist:
	@echo "==> sdist and wheel into dist/"
	$(PYTHON) -m infra.packages dist

rpm:
	@echo "==> sdist, wheel and the EL9 RPM into dist/"
	$(PYTHON) -m infra.packages rpm

.PHONY: bench bench-smoke

# The full suite takes a quarter of an hour and is no CI gate; the first run also builds the
# Rust sarchive it compares against (its Debian build packages with infra/apt.py, then cargo,
# into ~/.cache/sarchive-bench: bench/prior_art.py). docs/performance.md
bench: setup services-up
	@echo "==> benchmark suite against the local services: table below, bench/results/latest.json"
	$(VENV)/bin/python bench/run.py

bench-smoke: services-up
	@echo "==> benchmark smoke run (tiny sizes, one run): proves the suite works"
	$(VENV)/bin/python bench/run.py --smoke
