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

# The service end to end on the tiny profile (random weights: the output is noise): start `f2f serve`,
# submit the sample image over HTTP, follow its progress, write out/demo/, stop.
demo: $(BIN)/f2f
	tools/demo-service.sh out/demo

test: $(BIN)/f2f
	$(BIN)/python -m pytest

lint: $(BIN)/f2f
	$(BIN)/ruff check f2f tests bench tools
	$(BIN)/ruff format --check f2f tests bench tools

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
