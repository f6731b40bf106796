# The two commands of the README. Each one installs what it needs (uv, then the locked
# environment in .venv) on first use; no other setup step exists.
UV := ./scripts/uv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Trust the system certificate store (machines behind a TLS-inspecting proxy need it).
export UV_SYSTEM_CERTS := 1

.PHONY: demo test test-all test-distributed lint setup bench

# Every extra (serve, dashboard, tune, mlflow, postgres): the demo and the tests use them all.
setup:
	$(UV) sync --frozen --all-extras

demo: setup
	$(UV) run --frozen mammocad demo

# Default suite: everything but @slow; real-data tests run when MAMMOCAD_MIAS_DIR is set.
test: setup
	$(UV) run --frozen pytest -m "not slow"

# The slow multi-process tests of the distributed paths: tune and MLflow on PostgreSQL, cv/ablate
# workers, torchrun across two CPU "nodes" (about 5-10 minutes on 2 cores). CI runs them after `test`.
DISTRIBUTED_TESTS := tests/experiments/test_tune_postgres.py tests/experiments/test_cv_workers.py \
	tests/training/test_torchrun.py tests/training/test_mlflow_postgres.py
test-distributed: setup
	$(UV) run --frozen pytest -m slow $(DISTRIBUTED_TESTS)

test-all: setup
	$(UV) run --frozen pytest

lint: setup
	$(UV) run --frozen ruff check src tests
	$(UV) run --frozen ruff format --check src tests

bench: setup
	$(UV) run --frozen mammocad bench preprocess
	$(UV) run --frozen mammocad bench train
	$(UV) run --frozen mammocad bench infer
	$(UV) run --frozen mammocad bench explain
	$(UV) run --frozen mammocad bench lesion
	$(UV) run --frozen mammocad bench serve
