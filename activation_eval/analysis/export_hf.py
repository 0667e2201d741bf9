"""Export a run as a Hugging Face `datasets` Arrow folder: one row per question, one column per layer.

Public names:
    export_hf(run_dir, out_dir, layers=None, reduce="last_prompt") -> dict   (path, rows, columns)

Example:
    >>> export_hf("results/mc", "exports/mc", layers=["layer_5", "layer_10"])
    {'path': 'exports/mc', 'rows': 12, 'columns': ['id', 'correct', 'category', 'layer_5', 'layer_10'], 'reduce': 'last_prompt'}
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

import numpy as np

from .arrays import run_layers
from .dataset import load_run_layer, resolve_reduce


def _text(value):
    """A row's id or category as Arrow string text: str() of any JSON value (a list category, an int
    id), lone surrogates (valid in JSON) escaped, so that no row's value makes Arrow fail."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def export_hf(run_dir, out_dir, layers=None, reduce="last_prompt"):
    """Write the run's questions with their reduced `layers` (default: all) to `out_dir` as a
    `datasets` folder (datasets.load_from_disk reads it); returns {"path", "rows", "columns"}."""
    import datasets
    import pyarrow as pa

    run_dir, out_dir = os.fspath(run_dir), os.fspath(out_dir)
    reduce = resolve_reduce(run_dir, reduce)[0]          # "auto" made concrete: the export names what it holds
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"--export_hf: {out_dir} exists and is not an empty folder; choose another")
    names = list(layers) if layers else run_layers(run_dir)
    columns, ids = {}, None
    for name in names:
        X, rows = load_run_layer(run_dir, name, reduce=reduce)
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
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".tmp", dir=parent)
    try:
        dataset.save_to_disk(tmp)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)               # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": out_dir, "rows": len(ids), "columns": list(columns), "reduce": reduce}
