"""Export a run as a Hugging Face `datasets` Arrow folder: one row per question, one column per layer.

Public names:
    export_hf(run_dir, out_dir, layers=None, reduce="last_prompt") -> ExportResult (schema/outputs.py)

Example:
    >>> export_hf("results/mc", "exports/mc", layers=["layer_5", "layer_10"])
    ExportResult(path='exports/mc', rows=12, columns=['id', 'correct', 'category', 'layer_5', 'layer_10'], reduce='last_prompt')
    >>> import datasets
    >>> ds = datasets.load_from_disk("exports/mc").with_format("numpy")
    >>> ds.num_rows, ds[:3]["layer_5"].shape, ds[:3]["correct"].dtype       # (rows, hidden), their grades
    (12, (3, 64), dtype('bool'))

Columns: id (string), correct (bool; null for an ungraded row), category (string, str() of any
other JSON value; null when the benchmark has none), and per layer a fixed-length float32 list (the layer reduced per question by
`reduce`, as load_run_layer does). Rows follow results.jsonl (benchmark order). Works on runs of
either store. All requested layers are held in memory once (n x hidden float32 each); the folder
is written beside `out_dir` and renamed into place, so a failed export leaves nothing behind.
"""
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..schema.outputs import ExportResult
from .arrays import run_layers
from .dataset import load_run_layer, resolve_reduce


def _text(value: Any) -> str:
    """A row's id or category as Arrow string text: str() of any JSON value (a list category, an int
    id), lone surrogates (valid in JSON) escaped, so that no row's value makes Arrow fail."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def export_hf(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], layers: Sequence[str] | None = None,
              reduce: str | int = "last_prompt") -> ExportResult:
    """Write the run's questions with their reduced `layers` (default: all) to `out_dir` as a
    `datasets` folder (datasets.load_from_disk reads it)."""
    import datasets
    import pyarrow as pa

    run, out = os.fspath(run_dir), os.fspath(out_dir)
    concrete = resolve_reduce(run, reduce)[0]          # "auto" made concrete: the export names what it holds
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"--export_hf: {out} exists and is not an empty folder; choose another")
    names = list(layers) if layers else run_layers(run)
    columns: dict[str, Any] = {}
    ids: list[str] | None = None
    for name in names:
        X, rows = load_run_layer(run, name, reduce=concrete)
        if ids is None:
            ids = [_text(r["id"]) for r in rows]
            columns["id"] = pa.array(ids, pa.string())
            columns["correct"] = pa.array([r.get("correct") if isinstance(r.get("correct"), bool) else None
                                           for r in rows], pa.bool_())
            columns["category"] = pa.array([None if r.get("category") is None else _text(r["category"])
                                            for r in rows], pa.string())
        X = np.ascontiguousarray(X, dtype=np.float32)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])
    table = pa.table(columns)
    dataset = datasets.Dataset(datasets.table.InMemoryTable(table))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=parent)
    try:
        dataset.save_to_disk(tmp)
        if os.path.isdir(out):
            os.rmdir(out)               # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(path=out, rows=len(ids or []), columns=list(columns), reduce=concrete)
