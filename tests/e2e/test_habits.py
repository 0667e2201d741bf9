"""The field's habits (issue 19, item 6): a cheap `import activation_eval`, one version source, lint, doctests."""
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib

import pytest

import activation_eval
from helpers import REPO_ROOT

ROOT = REPO_ROOT
HEAVY = ("torch", "transformers", "numpy", "scipy", "sklearn", "matplotlib", "datasets", "pyarrow")


def run_python(code, cwd=ROOT):
    """Runs `code` in a fresh interpreter (sys.modules here already holds torch) and returns its JSON output."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# run in a fresh interpreter: importing the package, then each public name, then a star import
FRESH_IMPORT = f"""
import json, sys
import activation_eval, activation_eval.store, activation_eval.capture, activation_eval.eval, activation_eval.run
import activation_eval.analysis
heavy_after_import = [m for m in {HEAVY!r} if m in sys.modules]
modules = {{n: getattr(getattr(activation_eval, n), "__module__", None) for n in activation_eval.__all__}}
star = {{}}
exec("from activation_eval import *", star)
print(json.dumps({{"heavy_after_import": heavy_after_import, "modules": modules, "dir": dir(activation_eval),
                  "star_missing": sorted(n for n in activation_eval.__all__ if n not in star)}}))
"""


def test_importing_the_package_imports_no_heavy_library_and_every_public_name_resolves(tmp_path):
    found = run_python(FRESH_IMPORT, cwd=tmp_path)
    assert found["heavy_after_import"] == []
    assert set(found["modules"]) == set(activation_eval.__all__)
    assert found["star_missing"] == []
    assert set(activation_eval.__all__) <= set(found["dir"])


def test_the_package_exposes_the_whole_notebook_api_as_the_same_objects():
    """utils.py (the card's notebook API) and the package offer the same objects, whichever module defines them."""
    import utils
    assert set(utils.__all__) <= set(activation_eval.__all__)
    for name in utils.__all__:
        assert getattr(activation_eval, name) is getattr(utils, name), name


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        activation_eval.nope  # noqa: B018
    assert not hasattr(activation_eval, "nope")


def test_the_version_comes_from_the_package_metadata():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert activation_eval.__version__ == importlib.metadata.version("activation-eval") == declared
    from activation_eval.capture.generation import versions
    assert versions()["activation_capture"] == activation_eval.__version__


def test_no_other_version_string_in_the_package():
    version = activation_eval.__version__
    for folder, _, files in os.walk(os.path.join(ROOT, "activation_eval")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    assert f'"{version}"' not in f.read(), f"{name} spells the version; use activation_eval.__version__"
