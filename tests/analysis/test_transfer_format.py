"""Saved transfer results of older formats read in today's keys (schema/transfer.py upgrade_transfer_json), alone
and inside a saved --json probe result (schema/probe.py upgrade_probe_json).

FORMAT_2 is a real document: the "transfer" of the --json probe result that the code of commit ddb8913^ (transfer
format 2, before the group bounds of issue 29) wrote for the rows and activations of `_data()`:
    probe_features({"layer_0": X}, rows, n_bootstrap=1000, transfer="category", seed=0)
Today's code computes the same figures on the same data (nothing is merged at 3 groups of 30 rows); the fields
that format 3 added must describe what format 2 did: every value its own group, labelled by its whole text, every
row scored, no bounds.
"""
import copy

import numpy as np
import pytest

from activation_eval.analysis.jsonio import from_json, to_json
from activation_eval.analysis.probe import probe_features
from activation_eval.schema.probe import ProbeResult, upgrade_probe_json
from activation_eval.schema.transfer import TransferResult, upgrade_transfer_json

FORMAT_2 = {
    "format_version": 2, "by": "category", "layer": "layer_0", "groups": ["arithmetic", "geography", "science"],
    "n": {"arithmetic": 30, "geography": 30, "science": 30}, "level": 0.95,
    "auroc": [[0.9422222222222222, 0.96, 0.9777777777777777], [0.9377777777777778, 0.9155555555555556, 0.9644444444444444],
              [0.9866666666666667, 0.9733333333333334, 0.8488888888888889]],
    "auroc_ci": [[[0.8325002658160554, 1.0], [0.8703703703703703, 1.0], [0.918552036199095, 1.0]],
                 [[0.8399821428571429, 1.0], [0.7703349282296651, 1.0], [0.895, 1.0]],
                 [[0.9444444444444444, 1.0], [0.9090488215488216, 1.0], [0.6922991071428571, 0.9642857142857143]]],
    "notes": [], "shared": [[0, 0, 0], [0, 0, 0], [0, 0, 0]], "in_sample": False}


def _data():
    rng = np.random.default_rng(0)
    n = 90
    cats = np.array(["geography", "arithmetic", "science"])[np.arange(n) % 3]
    y = (np.arange(n) // 3) % 2 == 0
    X = rng.normal(size=(n, 6))
    X[:, 0] += 1.5 * (2 * y - 1)
    rows = [{"id": f"q{i:03d}", "category": str(c), "correct": bool(v), "question": f"Question {i}?",
             "num_prompt_tokens": 8 + i % 5, "num_generated_tokens": 3 + i % 4} for i, (c, v) in enumerate(zip(cats, y))]
    return {"layer_0": X.astype(np.float32)}, rows


@pytest.fixture(scope="module")
def today():
    """Today's --json probe result on the same data: probe format 2 (unchanged since), transfer format 3."""
    return to_json(probe_features(*_data(), n_bootstrap=1000, transfer="category", seed=0))


def test_a_format_2_transfer_reads_with_the_fields_that_describe_it(today):
    saved = copy.deepcopy(FORMAT_2)
    with pytest.raises(ValueError, match="missing field 'n_values'"):
        from_json(TransferResult, saved)
    new = upgrade_transfer_json(saved)
    assert saved == FORMAT_2 and new is not saved                    # the saved document is left as it was
    t = from_json(TransferResult, new)
    assert (t.n_values, t.merged, t.skipped_rows, t.shortened) == (3, 0, 0, 0)   # every value its own group
    assert (t.max_groups, t.min_rows, t.max_tested) == (None, 0, None)           # ... with no bound on them
    assert t.max_label == len("arithmetic") and t.n_tested == t.n                 # whole texts, every row scored
    now = today["transfer"]
    assert now["format_version"] == 3 and {k: new[k] for k in FORMAT_2 if k != "format_version"} == \
        {k: now[k] for k in FORMAT_2 if k != "format_version"}      # today's code: the same figures
    for key in ("n_values", "merged", "skipped_rows", "shortened", "n_tested"):
        assert new[key] == now[key], key                             # ... and the same counts (none merged)
    assert (now["max_groups"], now["min_rows"], now["max_label"], now["max_tested"]) == (20, 10, 40, 2000)
    assert upgrade_transfer_json(now) is now and from_json(TransferResult, now).max_groups == 20


def test_a_saved_probe_result_holding_a_format_2_transfer_reads_after_its_upgrade(today):
    saved = dict(copy.deepcopy(today), transfer=copy.deepcopy(FORMAT_2))   # as --json wrote it before issue 29
    with pytest.raises(ValueError, match=r"ProbeResult.transfer.*missing field 'n_values'"):
        from_json(ProbeResult, saved)
    res = from_json(ProbeResult, upgrade_probe_json(saved))
    assert res.transfer == from_json(TransferResult, upgrade_transfer_json(FORMAT_2))
    assert res.layers == from_json(ProbeResult, today).layers and saved["transfer"] == FORMAT_2
    assert upgrade_probe_json(today) is today                        # today's document: nothing to do


def test_a_format_1_transfer_says_shared_rows_were_not_looked_for():
    saved = {k: v for k, v in copy.deepcopy(FORMAT_2).items() if k not in ("shared", "in_sample")}
    saved["format_version"] = 1
    t = from_json(TransferResult, upgrade_transfer_json(saved))
    assert t.shared == [[0] * 3] * 3 and t.in_sample and t.auroc == FORMAT_2["auroc"]
    assert "saved in format 1" in t.notes[-1] and "partly in-sample" in t.notes[-1]
