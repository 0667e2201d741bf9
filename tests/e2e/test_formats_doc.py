"""docs/formats.md is generated from the contracts in activation_eval/schema/ and must be current."""
import os

from activation_eval.schema import formats
from helpers import REPO_ROOT


def test_formats_doc_is_current():
    path = os.path.join(REPO_ROOT, "docs", "formats.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == formats.render(), "run: python -m activation_eval.schema.formats"


def test_every_contract_field_has_a_meaning():
    for name in formats.MODULES:
        for line in formats.render().split(f"## {name}\n", 1)[1].split("\n## ", 1)[0].splitlines():
            if line.startswith("| `"):
                assert not line.rstrip().endswith("|  |"), line
