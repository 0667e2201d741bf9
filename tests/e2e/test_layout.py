"""The package's dependency rule (DESIGN.md "Dependencies point one way"), the root's entry points, and an
importable, installed package. Nothing here pins an internal module's file name, size or import path: a module
may move or split within its room freely; only the direction of imports between rooms is checked."""
import ast
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

ROOT = REPO_ROOT
PACKAGE = os.path.join(ROOT, "activation_eval")
# The rooms and whom each may import besides itself (DESIGN.md): entry points -> run, harness -> eval -> capture
# -> models; run, harness -> store <- analysis; store imports only the leaves; analysis never imports capture or
# run. Any other top-level module or package of activation_eval is a leaf (schema/, dtypes, architecture, ...):
# every room may import it, and it imports no room. A new room goes into this table.
ROOMS = {
    "models": set(),
    "capture": {"models"},
    "eval": {"capture", "models"},
    "store": set(),
    "run": {"eval", "capture", "models", "store"},
    "harness": {"eval", "capture", "models", "store"},  # lm-eval; only its console script imports it
    "analysis": {"store", "models"},
    # answers a run's questions again under interventions, then analyses them (--causal): run's and analysis' client
    "experiments": {"analysis", "run", "capture", "store", "models"},
    # the package's faces: the notebook API, the package's lazy public names, Inspect's entry point (pyproject:
    # the provider, imported when used), the doctests' setup (pytest only: the eval CLI through tests/helpers.py,
    # the benchmark rows and a record its examples use)
    "api": {"eval", "capture", "models", "store"},
    "__init__": {"api", "analysis", "capture"},
    "inspect_registry": {"harness"},
    "conftest": {"capture", "eval", "store"},
}


def project_imports(path):
    """The top-level subpackages of activation_eval that the module at `path` imports."""
    rel = os.path.relpath(path, PACKAGE).split(os.sep)
    here = rel[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts[0]] if parts else [a.name for a in node.names]
            elif node.module and node.module.startswith("activation_eval"):
                parts = node.module.split(".")[1:]
                names = [parts[0]] if parts else [a.name for a in node.names]
            else:
                continue
            found.update(n.removesuffix(".py") for n in names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("activation_eval.") and "." in a.name)
    return found


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


@pytest.mark.parametrize("path", sorted(modules()), ids=lambda p: os.path.relpath(p, PACKAGE))
def test_dependencies_point_one_way(path):
    rel = os.path.relpath(path, PACKAGE).split(os.sep)
    owner = rel[0].removesuffix(".py")
    imported = project_imports(path) - {owner}
    rooms = imported & set(ROOMS)
    if owner in ROOMS:
        assert rooms <= ROOMS[owner], f"{'/'.join(rel)} imports {sorted(rooms - ROOMS[owner])}"
    else:
        assert not rooms, (f"{'/'.join(rel)} is a leaf ({owner} is no room of ROOMS) but imports {sorted(rooms)}: a "
                           f"leaf imports no room; if {owner} is a new room, add it to ROOMS with whom it may import")


def test_the_root_holds_only_the_cards_entry_points():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.fail("git ls-files listed nothing: the tests run inside the project's git checkout")
    root_py = sorted(p for p in tracked if "/" not in p and p.endswith(".py"))
    assert root_py == ["analyze_activations.py", "example_activation_capture.py", "main.py",
                       "test_activation_capture.py", "utils.py"]


def test_the_package_imports_from_any_directory(tmp_path):
    code = ("import activation_eval as ae; "
            "from activation_eval import generate_inference_with_activations, load_activations, load_model, "
            "answer_and_grade_benchmark_question; print(ae.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert os.path.dirname(done.stdout.strip()).endswith("activation_eval")


@pytest.mark.slow
@pytest.mark.parametrize("script, entry", [("activation-eval", "main.py"),
                                           ("activation-eval-analyze", "analyze_activations.py")])
def test_console_scripts_take_the_entry_points_flags(script, entry, monkeypatch, capsys):
    """The installed console script, as its own process, against the entry point file's main() run here (the file
    itself, loaded from the repository root; `python main.py` as a process is run by test_distributed.py and
    test_cli_newcomer.py): a second process per script cost 10-20 s of imports."""
    import importlib.util
    exe = os.path.join(os.path.dirname(sys.executable), script)
    assert os.path.exists(exe), f"{script} is not installed: run make setup"
    width = {"COLUMNS": "200"}                              # both wrap the help alike (no terminal in either)
    ours = subprocess.run([exe, "--help"], capture_output=True, text=True, env={**os.environ, **width})
    monkeypatch.setenv("COLUMNS", width["COLUMNS"])
    spec = importlib.util.spec_from_file_location(f"entry_{entry[:-3]}", os.path.join(ROOT, entry))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        code = module.main(["--help"])                      # analyze_activations' main returns argparse's exit code
    except SystemExit as exit_:                              # main.py's main lets argparse exit
        code = exit_.code
    theirs_stdout = capsys.readouterr().out
    assert ours.returncode == code == 0
    assert ours.stdout.startswith(f"usage: {script} ") and theirs_stdout.startswith(f"usage: {entry} ")
    # the same flags and help; only the program's name (and the usage lines' indent) differs
    assert " ".join(ours.stdout.replace(script, entry).split()) == " ".join(theirs_stdout.split())


def test_one_module_spells_the_results_file_name():
    """The run folder's file names have one owner (DESIGN.md: one module writes the folder, one reader reads it):
    exactly one module of the package has "results.jsonl" as a string in its code (docstrings may mention it);
    the others use its name for it."""
    holders = [os.path.relpath(p, ROOT) for p in modules()
               if any(isinstance(n, ast.Constant) and n.value == "results.jsonl" for n in ast.walk(ast.parse(open(p).read())))]
    assert len(holders) == 1, holders
