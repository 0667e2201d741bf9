"""The field's habits (issue 19, item 6): a cheap `import activation_eval`, one version source, lint, doctests."""
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib

import pytest

import activation_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "transformers", "numpy", "scipy", "sklearn", "matplotlib", "datasets", "pyarrow")


def run_python(code, cwd=ROOT):
    """Runs `code` in a fresh interpreter (sys.modules here already holds torch) and returns its JSON output."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_package_imports_no_heavy_library(tmp_path):
    loaded = run_python("import json, sys, activation_eval, activation_eval.store, activation_eval.capture, "
                        "activation_eval.eval, activation_eval.run, activation_eval.analysis; "
                        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))", cwd=tmp_path)
    assert loaded == []


def test_every_public_name_resolves_to_its_defining_module(tmp_path):
    names = run_python("import json, activation_eval as ae; "
                       "print(json.dumps({n: getattr(getattr(ae, n), '__module__', None) for n in ae.__all__}))",
                       cwd=tmp_path)
    assert set(names) == set(activation_eval.__all__)
    assert names["load_run_layer"] == "activation_eval.analysis.dataset"
    assert names["generate_inference_with_activations"] == "activation_eval.api"
    from activation_eval import api
    for name in api.__all__:  # the package exposes the whole notebook API, as the same objects
        assert getattr(activation_eval, name) is getattr(api, name)


def test_star_import_and_dir_list_the_public_names(tmp_path):
    found = run_python("import json; from activation_eval import *; import activation_eval as ae; "
                       "print(json.dumps([sorted(n for n in ae.__all__ if n not in globals()), dir(ae)]))",
                       cwd=tmp_path)
    missing, listed = found
    assert missing == []
    assert set(activation_eval.__all__) <= set(listed)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        activation_eval.nope  # noqa: B018
    assert not hasattr(activation_eval, "nope")


def test_utils_still_reexports_the_notebook_api(tmp_path):
    names = run_python("import json, utils; from activation_eval import api; "
                       "print(json.dumps([n for n in api.__all__ if getattr(utils, n) is not getattr(api, n)]))")
    assert names == []


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
