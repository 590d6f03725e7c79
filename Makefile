# Taskfleet developer and CI entry points. `make test` is what CI runs (.ci/run); `make help` lists the targets.
#
# Every tool runs from .venv so a fresh clone needs only python3, make and (for integration tests) Debian's apt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip runs only when pyproject.toml is newer than this stamp, so a second `make test` skips the install.
STAMP := $(VENV)/.installed-stamp
# Extra pytest arguments, e.g. `make unit PYTEST_ARGS='-k retry -x'`.
PYTEST_ARGS ?=
PYTEST := $(BIN)/pytest -q -p no:cacheprovider

.DEFAULT_GOAL := help
.PHONY: help venv servers testbin lint test unit bench demo clean wheel

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## Create .venv and install taskfleet[dev] (no-op when up to date)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: recreating the venv removes the stamp anyway, and touching python must not
# force a reinstall.
# `-P` (safe path) keeps the repo root off sys.path: its top-level `operator/` folder would shadow the stdlib
# `operator` module and break `python -m pip` / `python -m build` in a fresh venv.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -P -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

servers: ## Install the broker server binaries integration tests need (starts none)
	bash scripts/ensure-servers.sh

# Cached outside the repo, keyed by version (~/.cache/taskfleet/k8sbin/...): ~15-20 min cold, a no-op afterwards.
testbin: ## Build or reuse the cached etcd/kube-apiserver/kubectl/helm for e2e tests
	bash tests/k8s/build-testbin.sh

# mypy and import-linter read packages from disk, not through setuptools' editable import hook, so they check
# build/lint-tree: symlinks laid out as the installed `taskfleet` package (scripts/lint-tree.sh; mypy_path in
# pyproject.toml points there).
lint: venv ## ruff check, mypy (strict) and the import-linter layering contracts
	$(BIN)/ruff check .
	bash scripts/lint-tree.sh
	$(BIN)/mypy
	PYTHONPATH=build/lint-tree $(BIN)/lint-imports

test: venv servers testbin lint ## Lint, then unit, integration and e2e tests (what CI runs)
	$(PYTEST) --durations=10 $(PYTEST_ARGS) tests/unit tests/integration tests/e2e

unit: venv ## Unit tests only (stub broker, no servers)
	$(PYTEST) $(PYTEST_ARGS) tests/unit

bench: venv servers ## Drain benchmark (bench/drain.py)
	$(BIN)/python bench/drain.py

demo: venv servers ## Run the end-to-end demo (examples/demo.py)
	$(BIN)/python -m examples.demo

wheel: venv ## Build the wheel into dist/
	$(BIN)/python -P -m build --wheel --outdir dist .

clean: ## Remove .venv, build artefacts and caches
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
