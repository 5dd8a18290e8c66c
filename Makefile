# The README's commands. `make demo` and `make test` create the virtual environment on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch torchvision
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mobilenets demo --out runs/demo

test: $(STAMP)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q --durations=20
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/eager.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/segment.py
	$(BIN)/python benchmarks/detect.py
	$(BIN)/python benchmarks/mcu.py
	$(BIN)/python benchmarks/web.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
