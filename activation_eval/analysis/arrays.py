"""An activation record as the analysis reads it: float64 arrays, token ids, and metadata with
the seed-record defaults filled in; plus the layer names and graded labels of a run folder.

Used by stats.py, probe.py and plots.py; reading files is
store.records' job, this module only gives their contents the shape analysis wants.

Public names:
    as_2d(x) -> np.ndarray                float64 (positions, hidden); drops a leading batch dim of 1
    token_ids(x) -> list[int]             a tensor / array / list of ids, flattened ([] for None)
    record_meta(record) -> dict           positions, num_prompt_tokens, num_generated_tokens,
                                          tokens (prompt + generated), layer_names, dtype
    load_record(path, layers=None)        store.records.load_record_file, with a clear error for a
                                          requested layer the file lacks
    run_layers(run_dir) -> list[str]      layer names of a run folder, from its first record
    correct_labels(rows, run_dir)         int array of the rows' boolean "correct" (1 / 0)

Example:
    >>> rec = load_record("results/run1/activations/geo-001.safetensors", ["layer_3"])
    >>> m = record_meta(rec); m["num_prompt_tokens"], m["positions"][:3]
    (38, [0, 1, 2])
    >>> as_2d(rec["activations"]["layer_3"]).shape        # 38 prompt + 4 generated - 1 positions
    (41, 64)
    >>> from activation_eval.store.run_reader import read_run_rows
    >>> labels = correct_labels(read_run_rows("results/mc"), "results/mc")     # 1 = correct, per question
    >>> run_layers("results/run1")[-2:], labels.shape, set(labels.tolist()) <= {0, 1}
    (['layer_28', 'layer_29'], (12,), True)
"""
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..store.records import load_record_file
from ..store.run_folder import is_run_folder, iter_record_files
from ..store.run_reader import RunReader


def as_2d(x: Any) -> np.ndarray:
    """Tensor/array -> float64 numpy array (positions, hidden). A leading batch dim of 1 is dropped."""
    a = x.detach().to(torch.float64).cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        a = a.reshape(-1, a.shape[-1])
    return a


def token_ids(x: Any) -> list[int]:
    """Token ids (tensor, array or list, any shape) -> a flat list of ints; None -> []."""
    if x is None:
        return []
    return [int(v) for v in (x.reshape(-1).tolist() if torch.is_tensor(x) else np.asarray(x).reshape(-1).tolist())]


def record_meta(record: Any) -> dict[str, Any]:
    """The fields analysis needs, with the seed-record defaults filled in."""
    acts = record.get("activations") if isinstance(record, dict) else None
    if not isinstance(acts, dict):
        raise ValueError("record has no 'activations' dict")
    input_ids, output_ids = token_ids(record.get("input_ids")), token_ids(record.get("output_ids"))
    rows = {name: _shape(t)[0] for name, t in acts.items()}
    n_rows = max(rows.values(), default=0)
    positions = record.get("positions_kept")
    positions = list(range(n_rows)) if positions is None else token_ids(positions)
    for name, n in rows.items():
        if n != len(positions):
            raise ValueError(f"layer {name!r} has {n} rows but the record keeps {len(positions)} positions")
    n_prompt = record.get("num_prompt_tokens")
    n_prompt = len(input_ids) if n_prompt is None else int(n_prompt)
    n_gen = record.get("num_generated_tokens")
    first = next(iter(acts.values()), None)
    dtype = record.get("dtype") or (str(first.dtype).replace("torch.", "") if first is not None else None)
    return {"positions": positions, "num_prompt_tokens": n_prompt,
            "num_generated_tokens": len(output_ids) if n_gen is None else int(n_gen),
            "tokens": input_ids + output_ids, "layer_names": list(acts), "dtype": dtype}


def _shape(t: Any) -> list[int]:
    """Shape of `t` as rows first: a leading batch dim of 1 dropped, a 1-D tensor one row."""
    s = list(t.shape)
    return s[1:] if len(s) == 3 and s[0] == 1 else ([1] + s if len(s) == 1 else s)


def load_record(path: str | os.PathLike[str], layers: Sequence[str] | None = None) -> dict[str, Any]:
    """load_record_file(path, layers); a requested layer the record lacks is a ValueError."""
    record = load_record_file(path, layers=layers)
    if layers is not None:
        missing = [name for name in layers if name not in record.get("activations", {})]
        if missing:
            raise ValueError(f"{path}: no layer(s) {', '.join(missing)} in this file")
    return record


def run_layers(run_dir: str | os.PathLike[str]) -> list[str]:
    """Layer names (record order) of a run folder (either store: store.run_reader), or of a
    folder of record files (its first file)."""
    if is_run_folder(run_dir):
        return RunReader(run_dir).layer_names()
    files = list(iter_record_files(run_dir))
    if files:
        return list(load_record_file(files[0])["activations"])
    raise ValueError(f"no activation record files in {run_dir}")


def correct_labels(rows: Sequence[Mapping[str, Any]], run_dir: str | os.PathLike[str]) -> np.ndarray:
    """The rows' "correct" as an int array (1 / 0); a row without a boolean one is a ValueError."""
    bad = [r.get("id") for r in rows if not isinstance(r.get("correct"), bool)]
    if bad:
        raise ValueError(f"{run_dir}: {len(bad)} result row(s) have no boolean 'correct' (e.g. id {bad[0]!r})")
    return np.array([int(r["correct"]) for r in rows])
