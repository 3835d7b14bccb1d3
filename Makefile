# Every target creates .venv and installs what it needs, so a fresh clone needs nothing else.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build the project is tested with; pip finds it on the build machines' local disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-all ui bench browser clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[all]'
	touch $@

# The studio's browser test drives Debian's chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install chromium"; fi; }

demo: $(VENV)/.installed
	$(BIN)/python examples/00_demo.py --out out/demo

test: $(VENV)/.installed browser
	$(BIN)/python -m pytest -q

test-all: $(VENV)/.installed browser
	$(BIN)/python -m pytest -q -m ''

ui: $(VENV)/.installed
	$(BIN)/clipforge ui

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/step_speed.py

clean:
	rm -rf $(VENV) out
