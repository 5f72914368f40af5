# The two quick-start commands: `make demo` and `make test`.  Each creates
# .venv and installs what it needs on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

demo: $(VENV)/.installed
	$(BIN)/lab demo

test: $(VENV)/.installed-test
	@tools/system_packages.sh
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py

# seeking in a 1e9-instruction trace, and the memory recording it takes (minutes)
bench-seek: $(VENV)/.installed
	$(BIN)/python benchmarks/run.py seek-scale

# every bundled patch under the models that promise consistency (kgraft, klp, upstream), 2,000 schedules each;
# exit 1 with a reproducer (and the failing run's trace) on the first violation
explore: $(VENV)/.installed
	$(BIN)/lab explore $(addprefix --patch ,$(wildcard patches/*.o)) --model kgraft --model klp --model upstream \
		--schedules 2000 --junit explore.xml --trace-dir explore-traces

# the referee's long fuzz run: 10,000 patch mutants, 300 damaged traces, every bad command line
fuzz: $(VENV)/.installed
	$(BIN)/python -m lab.fuzz --patches 10000 --traces 300 --cmdlines 1000

# the kernel, then every module built against its headers (all are committed)
firmware:
	$(MAKE) -C firmware
	$(MAKE) -C patches
	$(MAKE) -C patches/test_modules
	$(MAKE) -C patches/samples
	$(MAKE) -C patches/bad

# re-executes every notebook in notebooks/ in place, outputs included
notebooks: $(VENV)/.installed-test
	$(BIN)/python notebooks/run_all.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) firmware/build

.PHONY: demo test bench bench-seek fuzz explore firmware notebooks clean
