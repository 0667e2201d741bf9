"""Shared pytest fixtures (the helpers themselves live in helpers.py), and the test tiers.

Every test gets exactly one tier, as a marker, when it is collected; nobody writes it by hand:
    unit    in-process, no model and no process: pure functions, files the test writes (all of them: ~30 s)
    model   in-process work of seconds: tiny random models (helpers.tiny_model, run_main, the llama / tiny_dir
            fixtures below), and the analysis room's probes, reports and figures (tests/analysis/, build_report)
    slow    processes (subprocess, torchrun, console scripts, the fuzzers' workers), whole lm-eval / Inspect
            evaluations, the real default model, Monte Carlo; and every test marked @pytest.mark.slow
A test's tier is the highest that anything it uses announces:
  - the code of the test, of every fixture it uses (directly or through other fixtures), and of every function
    or class of tests/ that these reach (helpers.py, hostile.py, a module's own helpers), read from the compiled
    code when the test is collected: a helper announces its tier with @helpers.needs("model" | "slow")
    (tiny_model, run_main, ...), and so do the names in NAME_TIERS and CALLABLE_TIERS (`subprocess`, `Popen`,
    `multiprocessing`, `simple_evaluate`, Inspect's `eval` -> slow; `from_config`, `from_pretrained`,
    `load_model`, `build_report` -> model);
  - its folder (FOLDER_TIERS: tests/analysis/ is at least model);
  - a marker: @pytest.mark.slow (or .model) raises the tier, never lowers it (the Monte Carlo tests carry it).
So a new test that calls tiny_model, uses `tiny_dir` or starts a process is tiered without anyone remembering.

The tiers cannot rot: while a unit test sets up and runs, building a transformers model or starting a process
fails it; while a model test does, starting a process or building a model larger than a tiny one (the real
default model) fails it, even where the code under test catches the error. The message says what to do. A unit
test that passes but takes over UNIT_BUDGET_S is listed at the end of the run (mark it slow if it stays so).

Make targets:
    make test-unit   pytest -m unit, in one process (two xdist workers would each import everything first):
                     the loop while editing pure code, under a minute
    make test-fast   pytest -n 2 -m "not slow": unit + model, about two minutes
    make test        lint, then every test of every tier and the modules' doctests, in one pytest -n 2 run
                     (slow_modules_first orders them)
`-m "not slow"` keeps its old meaning (everything but the slow tier); `pytest -m model`, `-m slow` pick one tier.
Every test process runs torch with one intra-op thread (OMP_NUM_THREADS, below).
"""
import os
import sys
import types

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (set before transformers loads)
# one intra-op thread per process (set before torch loads; inherited by the processes tests start): the models
# are tiny, and each xdist worker already has its core. Two threads per worker on a busy machine made tiny-model
# tests 5 to 70 times slower (OpenMP threads waiting on each other): test_confidence.py 106 s -> 13 s here.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from helpers import TESTS_DIR, make_tokenizer, tiny_model  # noqa: E402

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    return make_tokenizer(chat_template=True)


@pytest.fixture(scope="session")
def llama(tokenizer):
    return tiny_model("llama", tokenizer)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny llama with a chat template, saved as an ordinary model folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer(chat_template=True)
    model, _ = tiny_model("llama", tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


# ----------------------------------------------------------------------------- tiers

TIERS = ("unit", "model", "slow")
# a name in the code of a test, a fixture or a tests/ helper that announces a tier (the module or the call)
NAME_TIERS = {
    "subprocess": "slow", "Popen": "slow", "multiprocessing": "slow", "check_output": "slow",
    "AutoModelForCausalLM": "model", "from_config": "model", "from_pretrained": "model", "load_model": "model",
    "simple_evaluate": "slow",      # a whole lm-eval evaluation: its TaskManager indexes thousands of task files
    "build_report": "model",        # the HTML report: a probe (cross-validated, bootstrapped) and a dozen figures
}
# a folder whose every test is at least in this tier: the analysis room fits probes (cross-validation, thousands
# of bootstrap resamples) and draws figures, seconds per test with no model in sight
FOLDER_TIERS = {"analysis": "model"}
# a callable that announces a tier wherever a test reaches it, by its module and qualified name
CALLABLE_TIERS = {"inspect_ai._eval.eval.eval": "slow"}     # a whole Inspect evaluation (imported under any name)
# compute-heavy tests in folders whose files this conftest's owner may not edit (issue 26): Monte Carlo and
# bootstrap-heavy probes with no model and no process. The marker belongs in their files; until then, here.
UNIT_BUDGET_S = 2.0         # a unit test over this (setup + call) is listed at the end of the run
TINY_HIDDEN_MAX = 256       # a model test may build models up to this hidden size (the tiny ones have 64)


def _rank(tier):
    return TIERS.index(tier)


def _ours(code):
    return code.co_filename.startswith(TESTS_DIR + os.sep)


def _codes(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


class _Reader:
    """The tier that a function's code announces, through the names it mentions and the tests/ code it
    reaches (memoized per code object; a cycle counts as unit while it is being read)."""

    def __init__(self):
        self.seen = {}

    def tier(self, obj):
        announced = getattr(obj, "test_tier", None)
        if announced in TIERS:
            return announced
        if isinstance(obj, type):
            return max((self.tier(v) for v in vars(obj).values() if callable(v) or isinstance(v, (staticmethod, classmethod))),
                       key=_rank, default="unit")
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        code = getattr(getattr(obj, "__wrapped__", obj), "__code__", None)
        if code is None or not _ours(code):
            return "unit"
        if code in self.seen:
            return self.seen[code]
        self.seen[code] = "unit"
        found = self._read(code, getattr(obj, "__globals__", {}))
        self.seen[code] = found
        return found

    def _read(self, code, scope):
        found = "unit"
        for each in _codes(code):
            for name in each.co_names:
                found = max(found, NAME_TIERS.get(name, "unit"), self._global(scope, name, each.co_names), key=_rank)
                if found == "slow":
                    return found
        return found

    def _global(self, scope, name, names):
        value = scope.get(name)
        if value is None:
            return "unit"
        if isinstance(value, types.ModuleType):       # helpers.tiny_model, hostile.write_run: what it names of it
            if NAME_TIERS.get(value.__name__) or not (getattr(value, "__file__", "") or "").startswith(TESTS_DIR):
                return NAME_TIERS.get(value.__name__, "unit")
            return max((self.tier(getattr(value, n)) for n in names if hasattr(value, n)), key=_rank, default="unit")
        if callable(value) and hasattr(value, "__qualname__"):
            announced = CALLABLE_TIERS.get(f"{getattr(value, '__module__', '')}.{value.__qualname__}")
            if announced:
                return announced
        return self.tier(value)


_READER = _Reader()


def tier_of(item):
    """The tier of a collected test (see the module docstring)."""
    found = "unit"
    for marker in item.iter_markers():
        if marker.name in TIERS:
            found = max(found, marker.name, key=_rank)
    folder = os.path.relpath(str(item.path), TESTS_DIR).split(os.sep)[0]
    found = max(found, FOLDER_TIERS.get(folder, "unit"), key=_rank)
    if isinstance(item, pytest.DoctestItem):      # activation_eval's docstrings (their setup builds tiny models)
        return max(found, "model", key=_rank)
    candidates = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in (info.name2fixturedefs.get(name, ()) if info else ()):
            candidates.append(fixturedef.func)
    callspec = getattr(item, "callspec", None)
    if callspec:                                  # a helper passed as a parameter
        candidates += [v for v in callspec.params.values() if callable(v)]
    for candidate in candidates:
        if candidate is not None:
            found = max(found, _READER.tier(candidate), key=_rank)
    return found


TIER_KEY = pytest.StashKey[str]()
BROKEN_KEY = pytest.StashKey[list]()


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = tier_of(item)
        item.stash[TIER_KEY] = tier
        if not any(item.iter_markers(tier)):
            item.add_marker(tier)
    items[:] = slow_modules_first(items)


def slow_modules_first(items):
    """The doctests (make test collects them first: one chunk of xdist's first hand-out, so one worker makes their
    run folders), then every module that holds a slow test, then the others; each module's tests stay together and
    in order (its module fixtures are made once per worker). Minutes-long modules started last left one worker
    running them alone at the end of `make test`; now the end is seconds-long tests."""
    slow = {item.path for item in items if item.stash.get(TIER_KEY, None) == "slow"}

    def rank(item):
        return 0 if isinstance(item, pytest.DoctestItem) else 1 if item.path in slow else 2
    return sorted(items, key=rank)                # stable: collection order within each rank


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    """tests/' own modules hold no doctests (tests/hostile.py's example names a tmp_path): with --doctest-modules
    (make test: `pytest --doctest-modules activation_eval tests`) only the package's docstrings are doctests."""
    collected = yield
    return [c for c in collected or () if type(c).__name__ != "DoctestModule"]     # (no public name for it)


class TierError(Exception):
    """A test did what its tier forbids (raised where it happened; the test fails even if it is caught)."""


def _refuse(item, what, advice):
    tier = item.stash.get(TIER_KEY, "unit")
    message = (f"{item.nodeid} is in the {tier} tier but {what}. {advice} "
               f"(tests/conftest.py explains the tiers)")
    item.stash.setdefault(BROKEN_KEY, []).append(message)
    raise TierError(message)


PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn")
ADVICE_PROCESS = ("A process puts a test in the slow tier: start it where the tier reader sees it (`subprocess` in the "
                  "test, its fixture or a tests/ helper) or mark the test @pytest.mark.slow.")
ADVICE_MODEL = ("Build it where the tier reader sees it (the llama / tiny_dir fixtures, helpers.tiny_model, run_main, "
                "a helper marked @needs(\"model\")) or mark the test @pytest.mark.model.")
ADVICE_LARGE = "The real default model belongs in the slow tier: mark the test @pytest.mark.slow."
_GUARDED = []                   # the unit or model test now setting up or running (at most one per process)


def _audit(event, args):
    """An audit hook (sys.addaudithook, for the whole session): refuses a process to a unit or model test."""
    if _GUARDED and event in PROCESS_EVENTS:
        _GUARDED[-1].refuse_process(event)


class _Guard:
    """Active while a unit or model test sets up and runs: what its tier forbids fails it. Processes are caught
    by the audit hook and multiprocessing's Process.start, models by nn.Module.__init__ (a transformers model:
    refused to a unit test; larger than TINY_HIDDEN_MAX, refused to a model test)."""

    def __init__(self, item):
        self.item, self.tier, self.saved = item, item.stash.get(TIER_KEY, "slow"), []

    def refuse_process(self, what):
        _refuse(self.item, f"starts a process ({what})", ADVICE_PROCESS)

    def _patch(self, owner, name, replacement):
        self.saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)

    def __enter__(self):
        if self.tier == "slow":
            return self
        import multiprocessing.process

        import torch
        guard, start, init = self, multiprocessing.process.BaseProcess.start, torch.nn.Module.__init__

        def no_process_start(process):
            guard.refuse_process("multiprocessing")
            return start(process)

        def no_model(module, *args, **kwargs):
            if any(c.__name__ == "PreTrainedModel" for c in type(module).__mro__):
                if guard.tier == "unit":
                    _refuse(guard.item, f"builds a model ({type(module).__name__})", ADVICE_MODEL)
                config = sys._getframe(1).f_locals.get("config")      # PreTrainedModel.__init__'s argument
                hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 0
                if hidden > TINY_HIDDEN_MAX:
                    _refuse(guard.item, f"builds a model larger than a tiny one ({type(module).__name__}, hidden size "
                                        f"{hidden})", ADVICE_LARGE)
            return init(module, *args, **kwargs)
        self._patch(multiprocessing.process.BaseProcess, "start", no_process_start)
        self._patch(torch.nn.Module, "__init__", no_model)
        _GUARDED.append(self)
        return self

    def __exit__(self, *exc):
        if self in _GUARDED:
            _GUARDED.remove(self)
        for owner, name, original in reversed(self.saved):
            setattr(owner, name, original)


sys.addaudithook(_audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _Guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _Guard(item):
        return (yield)


_OVER_BUDGET = []
SETUP_KEY = pytest.StashKey[float]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    broken = item.stash.get(BROKEN_KEY, [])
    if broken and call.when in ("setup", "call") and report.passed:
        report.outcome = "failed"                 # even where the code under test caught the TierError
        report.longrepr = "\n".join(broken)
    if call.when == "setup":
        item.stash[SETUP_KEY] = call.duration
    elif call.when == "call" and item.stash.get(TIER_KEY, None) == "unit" and report.passed:
        spent = call.duration + item.stash.get(SETUP_KEY, 0.0)
        if spent > UNIT_BUDGET_S:               # (a report property: it reaches the xdist controller)
            report.user_properties.append(("unit_over_budget_s", round(spent, 1)))
    return report


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == "unit_over_budget_s":
            _OVER_BUDGET.append((value, report.nodeid))


def pytest_terminal_summary(terminalreporter):
    if _OVER_BUDGET:
        terminalreporter.write_sep("-", f"unit tests over {UNIT_BUDGET_S:g} s: mark them slow if they stay so")
        for spent, nodeid in sorted(_OVER_BUDGET, reverse=True):
            terminalreporter.write_line(f"{spent:6.1f}s {nodeid}")
