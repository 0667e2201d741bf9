"""Per-layer statistics of records, streamed aggregates over folders, and record comparisons.

Each builds a typed result of activation_eval/schema/stats.py (the --file, --directory and --compare
results); every statistic is float64.

Public names:
    tensor_stats(tensor) -> TensorStats          mean, std, min, max, per-position and total L2 norm,
                                                 quartiles of the per-position norms
    describe_record(record, path=None) -> FileResult   metadata + per-layer stats of one record
    analyze_file(path, layers=None) -> FileResult      describe_record of a file
    analyze_directory(directory, limit=None, layers=None, progress=True) -> DirectoryResult
                                                 streamed per-layer aggregates + per-file summary
    compare_records(record_a, record_b, layers=None) -> CompareResult
    compare_files(path_a, path_b, layers=None) -> CompareResult   cosine / L2 distance per layer, 3 alignments
    STAT_KEYS                                    the statistics' names, in table order
    NORM_SAMPLE_CAP                              directory quartiles: exact up to this many positions
                                                 per layer, then from a seeded uniform sample of them

Example:
    >>> stats = analyze_file("results/run1/activations/geo-001.safetensors")
    >>> stats.layers["layer_3"].position_norm_mean         # the tiny model's small activations
    0.278
    >>> a, b = "runs/r1/activations/geo-001.pkl", "results/run1/activations/geo-001.safetensors"   # one record, 2 formats
    >>> compare_files(a, b).layers["layer_3"].last_prompt_token.cosine
    1.0
"""
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..schema.stats import (
    CompareLayer,
    CompareResult,
    DirectoryFile,
    DirectoryLayer,
    DirectoryResult,
    FileResult,
    Similarity,
    SkippedFile,
    TensorStats,
)
from ..store.run_folder import is_run_folder, iter_record_files
from ..store.run_reader import RunReader
from .arrays import as_2d, load_record, record_meta
from .steered import record_steering_notes

STAT_KEYS = ("mean", "std", "min", "max", "position_norm_mean", "position_norm_std", "l2_norm")

PROGRESS_MIN_FILES = 20    # show a progress bar from this many files on
NORM_SAMPLE_CAP = 200_000  # per layer: norms kept for the directory quartiles (reservoir beyond this)


def _norm_quartiles(norms: np.ndarray) -> dict[str, float | None]:
    """The quartiles of per-position norms as the contracts' position_norm_q25 / _median / _q75."""
    keys = ("position_norm_q25", "position_norm_median", "position_norm_q75")
    if len(norms) == 0:
        return dict.fromkeys(keys)
    return dict(zip(keys, (float(v) for v in np.percentile(norms, [25, 50, 75]))))


def tensor_stats(tensor: Any) -> TensorStats:
    """Float64 statistics of one activation tensor (positions, hidden).

    std is the population std (ddof=0); position_norm_* are over the L2 norms of the rows;
    l2_norm is the norm of the whole tensor.
    >>> import torch
    >>> tensor_stats(torch.ones(3, 4)).position_norm_mean   # each row's L2 norm: sqrt(4)
    2.0
    """
    a = as_2d(tensor)
    if a.size == 0:
        return TensorStats(shape=list(a.shape), mean=None, std=None, min=None, max=None, position_norm_mean=None,
                           position_norm_std=None, l2_norm=None, **_norm_quartiles(np.empty(0)))
    norms = np.linalg.norm(a, axis=1)
    return TensorStats(shape=list(a.shape), mean=float(a.mean()), std=float(a.std()), min=float(a.min()),
                       max=float(a.max()), position_norm_mean=float(norms.mean()), position_norm_std=float(norms.std()),
                       l2_norm=float(np.linalg.norm(a)), **_norm_quartiles(norms))


def describe_record(record: dict[str, Any], path: str | os.PathLike[str] | None = None) -> FileResult:
    """Metadata and per-layer statistics of one record (layers in the record's order)."""
    m = record_meta(record)
    return FileResult(file=None if path is None else os.fspath(path),
                      model=record.get("model"), prompt=record.get("prompt"),
                      response=record.get("response"), timestamp=record.get("timestamp"),
                      num_prompt_tokens=m["num_prompt_tokens"], num_generated_tokens=m["num_generated_tokens"],
                      num_positions=len(m["positions"]), dtype=m["dtype"],
                      model_info=record.get("model_info"), grading=_grading(record.get("grading")),
                      layers={name: tensor_stats(t) for name, t in record["activations"].items()})


def _grading(grading: Any) -> dict[str, Any] | None:
    """A record's grading entry (a dict written with its row), or None for anything else."""
    return grading if isinstance(grading, dict) and grading else None


def analyze_file(path: str | os.PathLike[str], layers: list[str] | None = None) -> FileResult:
    """`describe_record` of the record stored at `path` (only `layers` when given)."""
    return describe_record(load_record(path, layers), path)


def _layer_partial(tensor):
    """(elements, mean, M2, min, max, rows, norm sum, norm square sum, the rows' norms) of one
    tensor, or None when it is empty: what _LayerAccumulator.merge adds."""
    a = as_2d(tensor)
    if a.size == 0:
        return None
    mean = float(a.mean())
    norms = np.linalg.norm(a, axis=1)
    return (a.size, mean, float(((a - mean) ** 2).sum()), float(a.min()), float(a.max()),
            len(norms), float(norms.sum()), float((norms ** 2).sum()), norms)


class _LayerAccumulator:
    """Streaming float64 stats of one layer over many tensors (Chan et al. merge of mean / M2)."""

    def __init__(self):
        self.files = self.rows = self.count = 0
        self.mean = self.m2 = self.norm_sum = self.norm_sq = 0.0
        self.min, self.max = math.inf, -math.inf
        self.norms = np.empty(0)                        # every norm, or a reservoir sample of them
        self.rng = np.random.default_rng(0)

    def _keep_norms(self, norms):
        """Algorithm R: the first NORM_SAMPLE_CAP norms, then each later one replaces a uniform slot
        with probability cap / (its index + 1), so `self.norms` stays a uniform sample."""
        room = NORM_SAMPLE_CAP - len(self.norms)
        if room > 0:
            self.norms = np.concatenate([self.norms, norms[:room]])
            norms = norms[room:]
        if len(norms):
            seen = self.rows - len(norms) + np.arange(len(norms))    # 0-based index of each new norm
            slots = self.rng.integers(0, seen + 1)
            keep = slots < NORM_SAMPLE_CAP
            self.norms[slots[keep]] = norms[keep]                  # in order: a later norm wins a slot

    def add(self, tensor):
        self.merge(_layer_partial(tensor))

    def merge(self, partial):
        """Add one file's _layer_partial (None: an empty tensor)."""
        self.files += 1
        if partial is None:
            return
        n, mean, m2, lo, hi, rows, norm_sum, norm_sq, norms = partial
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.rows += rows
        self.norm_sum += norm_sum
        self.norm_sq += norm_sq
        self._keep_norms(norms)

    def result(self) -> DirectoryLayer:
        if not self.count:
            return DirectoryLayer(files=self.files, positions=0, mean=None, std=None, min=None, max=None,
                                  position_norm_mean=None, position_norm_std=None, norm_quantiles_from=0,
                                  **_norm_quartiles(np.empty(0)))
        pn_mean = self.norm_sum / self.rows
        return DirectoryLayer(files=self.files, positions=self.rows, mean=self.mean,
                              std=math.sqrt(max(self.m2 / self.count, 0.0)), min=self.min, max=self.max,
                              position_norm_mean=pn_mean,
                              position_norm_std=math.sqrt(max(self.norm_sq / self.rows - pn_mean ** 2, 0.0)),
                              norm_quantiles_from=len(self.norms), **_norm_quartiles(self.norms))


def analyze_directory(directory: str | os.PathLike[str], limit: int | None = None, layers: list[str] | None = None,
                      progress: bool = True) -> DirectoryResult:
    """Stream every record of a folder (or run folder): per-layer aggregates + a per-file summary.

    One record is in memory at a time. A file that cannot be read or analysed (corrupt,
    hostile, not a regular file, odd tensors) is skipped, whole: it is listed under `errors`
    and counted in `skipped`, and the scan goes on; it is an error when none can be read.
    >>> agg = analyze_directory("results/run1", limit=100, progress=False); agg.layers["layer_0"].std
    0.0222
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        if os.path.exists(directory):       # /dev/zero, a file: it exists, it is not a folder
            raise NotADirectoryError(f"not a folder: {directory} (--directory reads a folder of records or a run folder)")
        raise FileNotFoundError(f"no such directory: {directory}")
    sources = _record_sources(directory, layers)
    found = len(sources)
    if limit is not None:
        sources = sources[:limit]
    if not sources:
        raise ValueError(f"no activation record files (.pkl, .safetensors) or shards in {directory}")
    from tqdm import tqdm
    accs: dict[str, _LayerAccumulator] = {}
    summaries: list[DirectoryFile] = []
    errors: list[SkippedFile] = []
    bar = tqdm(total=len(sources), desc="records", unit="record", file=sys.stderr,
               disable=not progress or len(sources) < PROGRESS_MIN_FILES)
    for rel, correct, record in _read_sources(directory, sources, layers):
        bar.update(1)
        try:
            if isinstance(record, Exception):
                raise record
            m = record_meta(record)
            # every layer's statistics first, so that a file failing half-way adds nothing
            partials = {name: _layer_partial(t) for name, t in record["activations"].items()}
            summary = DirectoryFile(file=rel, model=record.get("model"), prompt_tokens=m["num_prompt_tokens"],
                                    generated_tokens=m["num_generated_tokens"], positions=len(m["positions"]),
                                    layers=len(m["layer_names"]), correct=correct)
        except Exception as e:  # noqa: BLE001 - one unreadable file must not end a long scan
            errors.append(SkippedFile(file=rel, error=" ".join(str(e).split()) or type(e).__name__))
            continue
        finally:
            record = None
        for name, partial in partials.items():
            accs.setdefault(name, _LayerAccumulator()).merge(partial)
        summaries.append(summary)
    bar.close()
    if not summaries:
        raise ValueError(f"none of the {len(sources)} records in {directory} could be read; "
                         f"first error: {errors[0].file}: {errors[0].error}")
    return DirectoryResult(directory=directory, is_run=is_run_folder(directory), files_found=found,
                           files_read=len(summaries), skipped=len(errors), errors=errors,
                           layers={name: acc.result() for name, acc in accs.items()}, files=summaries)


def _record_sources(directory, layers):
    """[(label, source)] of a folder of record files ((label, path)) or of a run folder (either
    store, via store.run_reader: (label, (row, Location)), a shard's records labelled
    "<shard>#<row>"; a row whose record cannot be located is a source holding its error)."""
    if is_run_folder(directory):
        reader = RunReader(directory)
        pairs, bad = reader.located(errors="collect")
        sources = [(location.label(directory), (row, location)) for row, location in pairs]
        return sources + [(f"row {row.get('id')!r}", (row, exc)) for row, exc in bad]
    return [(os.path.relpath(path, directory), path) for path in iter_record_files(directory)]


def _read_sources(directory: str, sources: list[tuple[str, Any]],
                  layers: list[str] | None) -> Iterator[tuple[str, Any, Any]]:
    """(label, correct, record or the exception that reading it raised), each shard opened once;
    one shard's records in memory at a time. `correct` is the run's row's (None outside a run)."""
    pairs = [(label, source) for label, source in sources if isinstance(source, tuple)
             and not isinstance(source[1], Exception)]
    for label, source in sources:
        if not isinstance(source, tuple):
            try:
                record = load_record(source, layers)
                yield label, (record.get("grading") or {}).get("correct"), record
            except Exception as e:  # noqa: BLE001 - reported per record by the caller
                yield label, None, e
        elif isinstance(source[1], Exception):
            yield label, source[0].get("correct"), source[1]
    if pairs:
        labels = {id(row): label for label, (row, _) in pairs}
        reader = RunReader(directory)
        for row, record in reader.records(layers, errors="yield", pairs=[source for _, source in pairs]):
            read: Any = record
            if not isinstance(record, Exception) and layers is not None:
                missing = [n for n in layers if n not in record.get("activations", {})]
                if missing:
                    read = ValueError(f"no layer(s) {', '.join(missing)} in this record")
            yield labels[id(row)], row.get("correct"), read


def _cos_dist(u: np.ndarray, v: np.ndarray) -> Similarity:
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    cos = float(np.dot(u, v) / (nu * nv)) if nu > 0 and nv > 0 else None
    return Similarity(cosine=cos, l2_distance=float(np.linalg.norm(u - v)), positions=None)


def compare_records(record_a: dict[str, Any], record_b: dict[str, Any], layers: list[str] | None = None,
                    files: list[str] | None = None) -> CompareResult:
    """Per-layer cosine similarity and L2 distance of two records, three ways:

    last_prompt_token: the row at position num_prompt_tokens-1 of each record;
    prompt_mean: the mean over each record's kept prompt positions;
    common_prefix: positions inside the token prefix both sequences share (as fed: prompt + generated),
    kept in both; cosine and distance are averaged over those positions. "notes" states what was
    compared when the lengths differ. `files`: the records' files, for the result to name.
    """
    ma, mb = record_meta(record_a), record_meta(record_b)
    names = [n for n in ma["layer_names"] if n in mb["layer_names"] and (layers is None or n in layers)]
    if not names:
        raise ValueError("the two records share no layer names")
    notes = record_steering_notes(record_a, record_b)       # steered and unsteered records: said first
    only = sorted(set(ma["layer_names"]) ^ set(mb["layer_names"]))
    if only:
        notes.append(f"layers present in only one record (skipped): {', '.join(only)}")
    pa, pb = ma["num_prompt_tokens"], mb["num_prompt_tokens"]
    last_a = ma["positions"].index(pa - 1) if pa - 1 in ma["positions"] else None
    last_b = mb["positions"].index(pb - 1) if pb - 1 in mb["positions"] else None
    if last_a is None or last_b is None:
        notes.append("last prompt token: not kept in both records, not compared")
    if pa != pb:
        notes.append(f"prompt lengths differ ({pa} vs {pb} tokens): last_prompt_token compares position "
                     f"{pa - 1} of A with position {pb - 1} of B; prompt_mean averages each record's own "
                     f"prompt positions")
    prompt_a = [i for i, p in enumerate(ma["positions"]) if p < pa]
    prompt_b = [i for i, p in enumerate(mb["positions"]) if p < pb]
    if not prompt_a or not prompt_b:
        notes.append("prompt positions: none kept in at least one record, prompt_mean not compared")
    k = 0
    for ta, tb in zip(ma["tokens"], mb["tokens"]):
        if ta != tb:
            break
        k += 1
    index_b = {p: i for i, p in enumerate(mb["positions"])}
    pairs = [(i, index_b[p]) for i, p in enumerate(ma["positions"]) if p < k and p in index_b]
    if k == 0:
        notes.append("the token sequences share no common prefix: common_prefix not compared")
    else:
        notes.append(f"common token prefix: {k} tokens (positions 0-{k - 1}); {len(pairs)} of them kept in "
                     f"both records" + ("" if len(ma["tokens"]) == len(mb["tokens"]) else
                                        f"; sequence lengths {len(ma['tokens'])} vs {len(mb['tokens'])}"))
    out = {name: _compare_layer(record_a["activations"][name], record_b["activations"][name], name,
                                (last_a, last_b), (prompt_a, prompt_b), pairs) for name in names}
    return CompareResult(files=files, num_prompt_tokens=[pa, pb], num_tokens=[len(ma["tokens"]), len(mb["tokens"])],
                         common_prefix_tokens=k, notes=notes, layers=out)


def _compare_layer(a: Any, b: Any, name: str, last: tuple[int | None, int | None], prompt: tuple[list[int], list[int]],
                   pairs: list[tuple[int, int]]) -> CompareLayer:
    """One layer of two records in the three alignments (row indices of each record; None: not comparable)."""
    xa, xb = as_2d(a), as_2d(b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"layer {name!r}: hidden sizes differ ({xa.shape[1]} vs {xb.shape[1]})")
    last_a, last_b = last
    prompt_a, prompt_b = prompt
    common = None
    if pairs:
        each = [_cos_dist(xa[i], xb[j]) for i, j in pairs]
        coss = [e.cosine for e in each if e.cosine is not None]
        common = Similarity(cosine=float(np.mean(coss)) if coss else None,
                            l2_distance=float(np.mean([e.l2_distance for e in each])), positions=len(pairs))
    return CompareLayer(
        last_prompt_token=_cos_dist(xa[last_a], xb[last_b]) if last_a is not None and last_b is not None else None,
        prompt_mean=_cos_dist(xa[prompt_a].mean(0), xb[prompt_b].mean(0)) if prompt_a and prompt_b else None,
        common_prefix=common)


def compare_files(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str],
                  layers: list[str] | None = None) -> CompareResult:
    """`compare_records` of two record files."""
    return compare_records(load_record(path_a, layers), load_record(path_b, layers), layers,
                           files=[os.fspath(path_a), os.fspath(path_b)])
