# Every target creates .venv and installs what it needs, so a fresh clone needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch build the project is tested with; pip finds it on the build machines' local disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-all ui bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[ui,test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/00_demo.py --out out/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m ''

ui: $(VENV)/.installed
	$(BIN)/clipforge ui

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/step_speed.py

clean:
	rm -rf $(VENV) out
