"""The report's causal section, from the CausalResult files that `--causal RUN` saved for this run.

Public names:
    saved_results(run_dir, causal_dir) -> [CausalResult]   <causal_dir>/*/causal.json whose run is run_dir
    causal_section(run_dir, causal_dir) -> str the report's section (a note when no check was run)
    RESULT_FILE                                "causal.json": where --causal saves its result

Example:
    >>> page = causal_section("results/run1", "causal")
    >>> page[:40]
    '<h2>Causal check: does steering along th'

A saved result is a file like any other: read bounded (store/run_folder's JSON reader), rebuilt
through jsonio.from_json (a missing field, an unknown key or a newer format is an error shown in
the section's place), and every text escaped.
"""
import glob
import os

from ...schema.causal import CausalResult
from ...store.bounded_json import loads
from ...store.files import read_regular_bytes
from ..html import esc, failed
from ..jsonio import from_json
from .html import causal_html

__all__ = ["saved_results", "causal_section", "RESULT_FILE"]

RESULT_FILE = "causal.json"
MAX_RESULT_BYTES = 16 << 20
MAX_RESULTS = 20                  # checks shown per run (the newest first)
TITLE = "<h2>Causal check: does steering along the probe's direction change the answers?</h2>"


def saved_results(run_dir, causal_dir):
    """The checks of `run_dir` saved under `causal_dir` (newest first, at most MAX_RESULTS)."""
    target = os.path.realpath(run_dir)
    paths = sorted(glob.glob(os.path.join(glob.escape(causal_dir), "*", RESULT_FILE)), key=os.path.getmtime,
                   reverse=True)
    found = []
    for path in paths:
        data = loads(read_regular_bytes(path, MAX_RESULT_BYTES, what="a saved causal check"))
        if isinstance(data, dict) and isinstance(data.get("run"), str) and os.path.realpath(data["run"]) == target:
            data.pop("plots", None)
            found.append(from_json(CausalResult, data))
        if len(found) == MAX_RESULTS:
            break
    return found


def causal_section(run_dir, causal_dir):
    """Every saved check of the run, or a note saying how to run one."""
    try:
        results = saved_results(run_dir, causal_dir)
    except Exception as exc:  # noqa: BLE001 - the report still shows everything else
        return TITLE + failed("The saved causal check", exc)
    if not results:
        return (TITLE + f'<p class="note">No causal check of this run under {esc(causal_dir)}/: run '
                f"<code>analyze_activations.py --causal {esc(run_dir)}</code> (it answers the questions again "
                f"under steering, ablation and random directions).</p>")
    return "".join(causal_html(r) for r in results)
