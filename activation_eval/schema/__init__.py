"""The typed contracts of everything the tool produces, and the names every room shares.

A leaf package: it imports nothing of the project, so capture, eval, store, run, the harnesses and
analysis may all import it. Each contract has a format version and builders that are the only way
to make it; readers use its fields, never `.get` guesses. docs/formats.md is generated from here
(schema/formats.py).

Modules:
    rows       the results row (one line of results.jsonl): keys, ResultRow, answered_row, error_row
    names      layer names, capture position modes, analysis reductions
    estimates  an estimate with its interval (the building block of the analysis results)
    probe      the probe result (ProbeResult)
    transfer   the probe's transfer matrix (TransferResult)
    causal     the steering / ablation check of a layer's direction (CausalResult)
    lens       the logit lens result (LensResult)
    stratify   correct-vs-incorrect differences within strata (Difference)
    stats      --file, --directory and --compare results
    outputs    --export_hf and --report results

The results row's names are the package's own (the contract every producer and reader touches):

    >>> from activation_eval import schema
    >>> schema.ID, schema.row_key({"id": "q1", "sample": 2})
    ('id', ('q1', 2))
"""
from .rows import *  # noqa: F403  (the results row is the package's front: schema.ID, schema.answered_row, ...)
from .rows import __all__  # noqa: F401
