# neurodiff: two commands on a fresh clone.
#   make demo   create .venv, install, run the main job on the embedded default
#   make test   create .venv if needed, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch comes first and pinned: a bare `torch` requirement would pull several GB of CUDA packages.
TORCH  ?= torch==2.13.0
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for the CPU build off this project's machines
TORCH_PIP_ARGS ?=
STAMP  := $(VENV)/.neurodiff-installed
# The preprocessing tests use pycortex's subject S1 (a real head with skull, shipped in its sdist);
# only its data is needed, so it is installed without its many dependencies.
PYCORTEX ?= pycortex==1.4.0
TEST_STAMP := $(VENV)/.neurodiff-test-data

.PHONY: install demo demo-screenshot test test-slow bench bench-preprocess bench-demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/neurodiff demo --out demo-output

# Render demo-output/report.html in headless Chromium (needs Debian's chromium package).
demo-screenshot:
	$(PY) benchmarks/screenshot_report.py demo-output/report.html --png demo-output/report.png

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-deps "$(PYCORTEX)"
	@touch $(TEST_STAMP)

# Two pytest workers (pytest-xdist), one test file each at a time: the suite is mostly single-threaded.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-slow: $(TEST_STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/engine_speed.py --out benchmarks/results/engine_speed

# `make demo` on a fresh clone, timed (install included), with its peak memory.
bench-demo:
	$(PYTHON) benchmarks/demo_fresh_clone.py --out benchmarks/results/demo

bench-preprocess: $(TEST_STAMP)
	$(PY) benchmarks/preprocess_speed.py --out benchmarks/results/preprocess_speed

clean:
	rm -rf $(VENV) demo-output build src/*.egg-info .pytest_cache
