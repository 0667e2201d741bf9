"""Columnar benchmark sources (parquet, folders written by datasets' save_to_disk, loaded datasets) ->
raw row dicts, bounded: metadata is checked before anything is decoded (row counts, parquet's
uncompressed sizes and each page header's, what compressed Arrow buffers decompress to), every record batch is validated
in full (offsets, dictionary indices: a corrupt offset would make Python's conversion read out of
bounds and crash the process) and measured (bytes per row and field) before it becomes Python.

Public names:
    read_parquet(name, budget, wanted) -> ([(where, row dict)], column names)
    read_saved_dataset(name, split, budget, wanted) -> same, from a save_to_disk folder (a Dataset or a
                                 DatasetDict), read with pyarrow: datasets' loader is not involved
    read_loaded_dataset(data, name, split, budget, wanted) -> same, from a datasets Dataset / DatasetDict
`budget` is a benchmark_limits.Budget; `wanted(column names) -> [the columns to read]` (None: all).
Every failure is a BenchmarkError naming the file and, where known, the row and field.

Example:
    >>> from activation_eval.eval.benchmark_limits import Budget
    >>> rows, columns = read_parquet("mmlu.parquet", Budget("mmlu.parquet", None), None)  # doctest: +SKIP
    >>> rows[0]                                                                            # doctest: +SKIP
    ('row 1', {'question': 'What is 1 + 1?', 'choices': ['1', '2', '3', '4'], 'answer': 1})
"""
import json
import os
import stat
import struct

import numpy as np

from .errors import BenchmarkError
from .parquet_pages import PageHeaderError, chunk_uncompressed

__all__ = ["read_parquet", "read_saved_dataset", "read_loaded_dataset"]

BATCH_ROWS = 1024                 # rows decoded at once from parquet and converted at once
_MAX_STATE_BYTES = 16 << 20       # state.json / dataset_dict.json of a save_to_disk folder


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _regular(path, name):
    """BenchmarkError unless `path` is a regular file (a FIFO would block, /dev/zero never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise BenchmarkError(f"{name}: cannot read {path} ({e.strerror or e})") from None
    except ValueError as e:                             # a NUL or a lone surrogate in a name from state.json
        raise BenchmarkError(f"{name}: cannot read {path!r} ({e})") from None
    if not stat.S_ISREG(mode):
        raise BenchmarkError(f"{name}: {path} is not a regular file")


# ----------------------------------------------------------------------------- record batches -> rows

def _row_bytes(arr):
    """numpy int64 array: the bytes each row of a pyarrow Array becomes (strings: UTF-8 bytes; other
    scalars their width; lists and structs the sum of their parts; a dictionary value counted at every
    row that uses it), computed from lengths and offsets without building any value."""
    import pyarrow as pa
    import pyarrow.compute as pc
    n, t = len(arr), arr.type
    if n == 0:
        return np.zeros(0, np.int64)
    if pa.types.is_dictionary(t):
        sizes = _row_bytes(arr.dictionary)
        indices = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return sizes[indices] if len(sizes) else np.zeros(n, np.int64)
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t) \
            or pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        return pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        cum = np.concatenate([[0], np.cumsum(_row_bytes(arr.values))])
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        return cum[offsets[1:]] - cum[offsets[:-1]]
    if pa.types.is_fixed_size_list(t):
        width = t.list_size
        child = _row_bytes(arr.values.slice(arr.offset * width, n * width))
        return child.reshape(n, width).sum(axis=1) if width else np.zeros(n, np.int64)
    if pa.types.is_struct(t):
        total = np.zeros(n, np.int64)
        for child in arr.flatten():
            total += _row_bytes(child)
        return total + 8 * t.num_fields
    if pa.types.is_null(t):
        return np.zeros(n, np.int64)
    try:
        width = max(1, t.bit_width // 8)
    except ValueError:                                  # other types (unions, decimals of odd widths, ...)
        width = max(8, -(-arr.nbytes // n))
    return np.full(n, width, np.int64)


def _batch_rows(batch, budget, first_row, columns, kept):
    """[(where, row dict)] of one validated pyarrow RecordBatch, after the limits are checked."""
    import pyarrow as pa
    try:
        batch.validate(full=True)
    except (pa.ArrowException, ValueError) as e:
        raise BenchmarkError(f"{budget.name}: rows {first_row}-{first_row + batch.num_rows - 1}: corrupt Arrow "
                             f"data ({_first_line(e)}); write the file again") from None
    budget.rows(batch.num_rows, f"row {first_row + batch.num_rows - 1}")
    batch = batch.select(kept) if kept != columns else batch
    sizes = {field: _row_bytes(batch.column(i)) for i, field in enumerate(batch.schema.names)}
    for field, per_row in sizes.items():
        worst = int(per_row.argmax()) if len(per_row) else 0
        if len(per_row) and per_row[worst] > budget.limits.cell_bytes:
            budget.cell(field, int(per_row[worst]), f"row {first_row + worst}")
    if sizes and batch.num_rows:
        cumulative = np.cumsum(sum(sizes.values()))
        over = np.flatnonzero(cumulative + budget.cell_total > budget.limits.total_bytes)
        if len(over):                                   # refused at the first row past the limit
            budget.total(int(cumulative[over[0]]), f"row {first_row + int(over[0])}")
        budget.total(int(cumulative[-1]), f"row {first_row + batch.num_rows - 1}")
    try:
        rows = batch.to_pylist()
    except (pa.ArrowException, ValueError, OverflowError) as e:
        raise BenchmarkError(f"{budget.name}: rows {first_row}-{first_row + batch.num_rows - 1}: cannot convert "
                             f"({_first_line(e)})") from None
    return [(f"row {first_row + i}", row) for i, row in enumerate(rows)]


def _kept(columns, wanted):
    if wanted is None:
        return list(columns)
    keep = set(wanted(list(columns)))
    return [c for c in columns if c in keep]


def _batches_rows(batches, budget, columns, wanted):
    """[(where, row dict)] of an iterable of RecordBatches (row numbers from 1)."""
    kept, records, first = _kept(columns, wanted), [], 1
    for batch in batches:
        records += _batch_rows(batch, budget, first, columns, kept)
        first += batch.num_rows
    return records


# ----------------------------------------------------------------------------- parquet

def read_parquet(name, budget, wanted):
    """Rows of a parquet file, read by record batches of BATCH_ROWS rows, string columns kept
    dictionary-encoded until measured; the footer's row count and uncompressed sizes checked first."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    _regular(name, name)
    try:
        pf = pq.ParquetFile(name)
        meta, schema = pf.metadata, pf.schema
        columns = list(pf.schema_arrow.names)
        kept = _kept(columns, wanted)
        leaves = [i for i in range(meta.num_columns) if schema.column(i).path.split(".")[0] in kept]
        budget.rows(meta.num_rows, f"the file's metadata ({meta.num_rows:,} rows)")
        budget.row_count -= meta.num_rows                 # counted again, batch by batch
        _check_declared_sizes(name, meta, schema, leaves, budget)
        strings = [schema.column(i).path for i in leaves if schema.column(i).physical_type == "BYTE_ARRAY"]
        dictionary = pq.ParquetFile(name, read_dictionary=strings)
        records = []
        for g in range(meta.num_row_groups):                # one row group at a time: each has its dictionaries
            mark = len(records), budget.row_count, budget.cell_total
            try:
                records += _row_group_rows(dictionary, g, budget, kept, len(records) + 1)
            except pa.ArrowNotImplementedError:               # nested columns whose dictionary changes mid-group
                del records[mark[0]:]
                budget.row_count, budget.cell_total = mark[1], mark[2]
                plain = pq.ParquetFile(name, read_dictionary=[path for path in strings if "." not in path])
                records += _row_group_rows(plain, g, budget, kept, len(records) + 1)
        return records, columns
    except BenchmarkError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError, OverflowError) as e:
        raise BenchmarkError(f"{name}: cannot read as parquet ({_first_line(e)})") from None


def _check_declared_sizes(name, meta, schema, leaves, budget):
    """Each column chunk read: the larger of what the footer and what its page headers say it
    decompresses to, checked against the rows it holds and the total before any page is decompressed
    (a reader allocates each page at its header's size: a footer can understate it)."""
    max_header = 2 * budget.limits.cell_bytes + (1 << 20)     # page statistics hold at most a few values
    with open(name, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for i in leaves:
                where, footer = f"row group {g + 1}, column {schema.column(i).path!r}", \
                    max(0, group.column(i).total_uncompressed_size)
                try:
                    pages = chunk_uncompressed(f, file_size, group.column(i), max_header)
                except PageHeaderError as e:
                    raise BenchmarkError(f"{name}: {where}: corrupt page header ({e}); write the file again") from None
                said = "its page headers" if pages > footer else ""
                budget.rows_hold(max(footer, pages), max(0, group.num_rows), 1, f"{where} ({said})" if said else where)
                budget.decoded(max(footer, pages), f"row group {g + 1} ({said or 'the metadata'}: uncompressed size)")


def _row_group_rows(pf, group, budget, kept, first_row):
    records = []
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=kept, use_threads=False):
        records += _batch_rows(batch, budget, first_row, kept, kept)
        first_row += batch.num_rows
    return records


# ----------------------------------------------------------------------------- save_to_disk folders

def _read_json(path, name):
    _regular(path, name)
    if os.path.getsize(path) > _MAX_STATE_BYTES:
        raise BenchmarkError(f"{name}: {path} is larger than {_MAX_STATE_BYTES >> 20} MiB: not a datasets folder")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, RecursionError, OSError) as e:
        raise BenchmarkError(f"{name}: {path} is not valid JSON ({_first_line(e)})") from None


def _data_files(folder, name):
    """The .arrow files of one Dataset folder, in order (state.json's _data_files), confined to it."""
    state = _read_json(os.path.join(folder, "state.json"), name)
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not files:
        raise BenchmarkError(f"{name}: {folder}/state.json lists no _data_files; save the dataset again")
    paths = []
    for entry in files:
        filename = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(filename, str) or not filename or os.path.basename(filename) != filename \
                or filename in (".", ".."):
            raise BenchmarkError(f"{name}: {folder}/state.json names a data file outside the folder: "
                                 f"{str(filename)[:100]!r}")
        paths.append(os.path.join(folder, filename))
    return paths


def read_saved_dataset(name, split, budget, wanted):
    """Rows of a save_to_disk folder: one Dataset, or a DatasetDict (one split: chosen, or the only one)."""
    dict_file = os.path.join(name, "dataset_dict.json")
    if os.path.lexists(dict_file):
        splits = _read_json(dict_file, name)
        splits = splits.get("splits") if isinstance(splits, dict) else None
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise BenchmarkError(f"{name}: dataset_dict.json has no list of splits; save the dataset again")
        split = _choose_split(splits, split, name)
        if os.path.basename(split) != split or split in (".", ".."):
            raise BenchmarkError(f"{name}: the split name {split[:100]!r} is not a folder name")
        folder = os.path.join(name, split)
    else:
        folder = name
    records, columns, first = [], None, 1
    for path in _data_files(folder, name):
        got, file_columns, first = _read_arrow_stream(path, name, budget, wanted, first)
        if columns is not None and file_columns != columns:
            raise BenchmarkError(f"{name}: {path} has other columns than the folder's first data file")
        records, columns = records + got, file_columns
    return records, columns


def _choose_split(splits, split, name):
    if split is None:
        if len(splits) != 1:
            raise BenchmarkError(f"{name} has the splits {', '.join(splits)}; pass --split NAME")
        return splits[0]
    if split not in splits:
        raise BenchmarkError(f"{name} has no split {split!r}; its splits: {', '.join(splits)}")
    return split


def _read_arrow_stream(path, name, budget, wanted, first_row):
    """(rows, columns, next row number) of one Arrow IPC stream file (as datasets writes them)."""
    import pyarrow as pa
    _regular(path, name)
    label = f"{name}: {os.path.basename(path)}"
    try:
        with pa.memory_map(path) as source:
            _check_messages(source, budget, path)          # sizes first, nothing decompressed yet
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            columns = list(reader.schema.names)
            kept = _kept(columns, wanted)
            records = []
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                records += _batch_rows(batch, budget, first_row, columns, kept)
                first_row += batch.num_rows
            return records, columns, first_row
    except BenchmarkError:
        raise
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, KeyError, OverflowError) as e:
        raise BenchmarkError(f"{label}: cannot read as an Arrow stream ({_first_line(e)}); save the dataset "
                             "again") from None


def _check_messages(source, budget, path):
    """Every message of an Arrow stream, read without decoding: the rows each record batch announces,
    and for compressed buffers the size they decompress to (the 8 bytes before each), counted
    before any decompression."""
    import pyarrow as pa
    fields = len(pa.ipc.open_stream(source).schema)       # the schema message only
    source.seek(0)
    reader = pa.ipc.MessageReader.open_stream(source)
    index = 0
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return
        index += 1
        where = f"{os.path.basename(path)} message {index}"
        meta = _flat_record_batch(message.metadata.to_pybytes(), where, budget.name)
        if meta is None:
            continue
        rows, is_dictionary, buffers, compressed = meta
        if not is_dictionary:
            budget.rows(rows, f"{where} ({rows:,} rows announced)")
            budget.row_count -= rows                    # counted again, batch by batch
        if compressed:
            body = message.body
            size = 0
            for offset, length in buffers:
                if length >= 8 and 0 <= offset and offset + 8 <= body.size:
                    declared = struct.unpack_from("<q", body, offset)[0]
                    size += length - 8 if declared == -1 else max(0, declared)
            budget.rows_hold(size, rows, fields, f"{where} (compressed)")
            budget.decoded(size, f"{where} (compressed buffers)")


def _flat_record_batch(meta, where, name):
    """(length, is a dictionary batch, [(offset, length)] of the buffers, compressed) from the flatbuffer
    of an Arrow IPC Message holding a RecordBatch or DictionaryBatch; None for other messages."""
    def bad():
        return BenchmarkError(f"{name}: {where}: corrupt Arrow message metadata; save the dataset again")

    def u32(pos):
        if not 0 <= pos <= len(meta) - 4:
            raise bad()
        return struct.unpack_from("<I", meta, pos)[0]

    def field(table, i):                                # position of field i of the table at `table`, or None
        if not 0 <= table <= len(meta) - 4:
            raise bad()
        vtable = table - struct.unpack_from("<i", meta, table)[0]
        if not 0 <= vtable <= len(meta) - 4:
            raise bad()
        vsize = struct.unpack_from("<H", meta, vtable)[0]
        if 4 + 2 * i + 2 > vsize or vtable + 4 + 2 * i + 2 > len(meta):
            return None
        at = struct.unpack_from("<H", meta, vtable + 4 + 2 * i)[0]
        return table + at if at else None

    def ref(table, i):
        at = field(table, i)
        return None if at is None else at + u32(at)

    root = u32(0)
    kind_at = field(root, 1)
    kind = meta[kind_at] if kind_at is not None and kind_at < len(meta) else 0
    if kind not in (2, 3):                              # 2 DictionaryBatch, 3 RecordBatch
        return None
    header = ref(root, 2)
    if header is None:
        raise bad()
    batch = ref(header, 1) if kind == 2 else header
    if batch is None:
        raise bad()
    at = field(batch, 0)
    if at is not None and at + 8 > len(meta):
        raise bad()
    length = struct.unpack_from("<q", meta, at)[0] if at is not None else 0
    buffers = []
    vec = ref(batch, 2)
    if vec is not None:
        count = u32(vec)
        if vec + 4 + 16 * count > len(meta):
            raise bad()
        buffers = [struct.unpack_from("<qq", meta, vec + 4 + 16 * k) for k in range(count)]
    return max(0, length), kind == 2, buffers, ref(batch, 3) is not None


# ----------------------------------------------------------------------------- loaded datasets (hf:NAME)

def read_loaded_dataset(data, name, split, budget, wanted):
    """Rows of a datasets Dataset, or of one split of a DatasetDict, converted batch by batch."""
    if isinstance(data, dict):                                  # a DatasetDict: one dataset per split
        data = data[_choose_split(list(data.keys()), split, name)]
    table = data.with_format("arrow")[:] if getattr(data, "_indices", None) is not None else data.data.table
    columns = list(table.schema.names)
    return _batches_rows(table.to_batches(max_chunksize=BATCH_ROWS), budget, columns, wanted), columns
