# fairshare: `make demo` runs the main job on generated demo data, `make test` runs the checks.
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
DEMO_DIR ?= demo-out

.PHONY: demo test lint typecheck unit bench sync clean

sync:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --locked

demo: sync
	$(UV) run fairshare demo --out $(DEMO_DIR)

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .

typecheck: sync
	$(UV) run mypy

unit: sync
	$(UV) run pytest -q

test: lint typecheck unit

bench: sync
	$(UV) run python bench/run_all.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
