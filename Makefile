# The two set-up commands (see README.md):
#   make demo   create .venv and run the main job on the embedded default
#   make test   create .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/f2f: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/f2f
	$(BIN)/f2f config show
	$(BIN)/f2f edit f2f/data/sample.png "make the sun set behind the hills" --out out/demo

test: $(BIN)/f2f
	$(BIN)/python -m pytest

lint: $(BIN)/f2f
	$(BIN)/ruff check f2f tests
	$(BIN)/ruff format --check f2f tests

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache
