# Set-up and entry points. `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,deploy,photos,serve,edge]'
	# BI-DiffSR's XNOR kernel (C++, gcc + ninja); without them, one warning and the float path
	$(BIN)/python -c "from fastdiffsr.nn.xnor_kernel import kernel; kernel()"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m fastdiffsr.demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs

clean:
	rm -rf $(VENV) build src/*.egg-info
