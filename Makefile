# Two commands on a fresh machine with only python3: `make run` and `make test`.
# The environment (.venv) is created from the committed uv.lock the first time either runs.
PYTHON ?= python3
UV_VERSION := 0.13.8
EXTRA ?= cpu
CONFIG ?= configs/default.yaml
UV := $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
VENV_PY := .venv/bin/python
SYNCED := .venv/.synced-$(EXTRA)

.PHONY: run test test-fast test-variants env bench-env clean

run: $(SYNCED)
	$(VENV_PY) jobs/trimpi.py --config $(CONFIG) $(ARGS)

test: $(SYNCED)
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

# The fast subset: everything but the end-to-end tests that start vLLM, Ray Train or Serve.
test-fast: $(SYNCED)
	$(VENV_PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The short whole-pipeline run of the other dataset variant (GTAPolicy) alone; `make test` runs it too.
test-variants: $(SYNCED)
	$(VENV_PY) -m pytest tests/test_gta_pipeline.py $(PYTEST_ARGS)

env: $(SYNCED)

# The default environment plus the peer frameworks the benchmarks compare against (TRL).
bench-env: $(SYNCED)
	$(UV) sync --frozen --compile-bytecode --extra $(EXTRA) --group bench

$(SYNCED): pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --frozen --compile-bytecode --extra $(EXTRA)
	touch $@

# uv is bootstrapped from the package index when the machine does not have it.
.uv/bin/uv:
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet uv==$(UV_VERSION)

clean:
	rm -rf .venv .uv runs .pytest_cache
