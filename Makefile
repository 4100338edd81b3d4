# Two entry points for a fresh machine: `make demo` and `make test`; `make check-paper-env` (CI) checks saro in
# the paper environment (requirements.paper.txt: the versions vLLM 0.31 forces) in its own .venv-paper.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo demo-quick test test-slow lint format check-paper-env

setup:
	./scripts/setup.sh

demo: setup
	OMP_NUM_THREADS=2 $(VENV)/bin/saro demo

demo-quick: setup
	OMP_NUM_THREADS=2 $(VENV)/bin/saro demo --quick

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

check-paper-env:
	./scripts/paper_env.sh

test-slow: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check src tests bench && $(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src/saro

format: setup
	$(VENV)/bin/ruff format src tests bench && $(VENV)/bin/ruff check --fix src tests bench
