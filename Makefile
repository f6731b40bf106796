# The two commands of the README. Each one installs what it needs (uv, then the locked
# environment in .venv) on first use; no other setup step exists.
UV := ./scripts/uv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Trust the system certificate store (machines behind a TLS-inspecting proxy need it).
export UV_SYSTEM_CERTS := 1

.PHONY: demo test test-all lint setup bench

setup:
	$(UV) sync --frozen

demo: setup
	$(UV) run --frozen mammocad demo

# Default suite: everything but @slow; real-data tests run when MAMMOCAD_MIAS_DIR is set.
test: setup
	$(UV) run --frozen pytest -m "not slow"

test-all: setup
	$(UV) run --frozen pytest

lint: setup
	$(UV) run --frozen ruff check src tests
	$(UV) run --frozen ruff format --check src tests

bench: setup
	$(UV) run --frozen mammocad bench preprocess
	$(UV) run --frozen mammocad bench train
	$(UV) run --frozen mammocad bench explain
	$(UV) run --frozen mammocad bench lesion
	$(UV) run --frozen mammocad bench serve
