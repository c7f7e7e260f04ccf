# The two set-up commands (see README.md):
#   make demo   create .venv and run the main job on the embedded default
#   make test   create .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint clean

# The venv: CPU torch, diffusers, transformers, vLLM's CPU build (see tools/setup-venv.sh).
$(BIN)/f2f: pyproject.toml tools/setup-venv.sh tools/patch_torchvision.py
	PYTHON=$(PYTHON) tools/setup-venv.sh $(VENV)
	touch $@

# A real end-to-end edit on the tiny profile (random weights: the output is noise).
demo: $(BIN)/f2f
	$(BIN)/f2f edit f2f/data/sample.png "make the sun set behind the hills" --profile tiny --seed 0 --out out/demo

test: $(BIN)/f2f
	$(BIN)/python -m pytest

lint: $(BIN)/f2f
	$(BIN)/ruff check f2f tests bench tools
	$(BIN)/ruff format --check f2f tests bench tools

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
