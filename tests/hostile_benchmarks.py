"""Crafted benchmark files (issue 20, item 1): valid seeds of every benchmark format and the hostile
files the second review found. Used by tests/eval/test_hostile_benchmarks.py, the benchmark fuzzer
(tests/fuzz_benchmarks.py) and perf/benchmark_bombs.py (the before/after measurements).

Public names:
    QUESTIONS                    the rows of the valid seeds
    valid_files(folder) -> {name: path}    one valid benchmark per format: jsonl, json, csv, tsv,
                                 parquet, a save_to_disk folder (Dataset) and one with two splits
    corrupt_offsets_folder(path) a save_to_disk folder whose question column has one middle string
                                 offset out of bounds (the first and last valid): datasets' to_list()
                                 reads out of bounds (SIGSEGV / SIGBUS)
    rle_bomb_parquet(path, rows) `rows` identical rows, dictionary + RLE encoded (30M: ~0.3 MB)
    big_cell_parquet(path, nbytes)  one question of nbytes bytes, zstd (20 MB: ~2.5 KB)
    lying_footer_parquet(path, nbytes, claimed)  big_cell_parquet whose footer claims the question column
                                 is `claimed` bytes uncompressed (its page header tells the truth)
    zstd_arrow_folder(path, nbytes) a save_to_disk folder whose Arrow stream is zstd-compressed and
                                 holds one nbytes-long question (256 MB: ~9 KB)
    deep_jsonl(path, depth), deep_json(path, depth)   a row nested `depth` levels deep

Example:
    >>> paths = valid_files(tmp_path)                       # doctest: +SKIP
    >>> corrupt_offsets_folder(tmp_path / "seg")            # doctest: +SKIP
"""
import csv
import json
import os
import struct

QUESTIONS = [
    {"id": "q1", "question": "What is 1 + 1?", "choices": ["1", "2", "3", "4"], "answer": ["B"], "category": "math"},
    {"id": "q2", "question": "Capital of Peru?", "choices": None, "answer": ["Lima", "Lima, Peru"], "category": "geo"},
    {"id": "q3", "question": "Largest planet?", "choices": ["Mars", "Jupiter"], "answer": ["B"], "category": "astro"},
    {"id": "q4", "question": "6 x 7 = ?", "choices": None, "answer": ["42"], "category": "math"},
]


def _table_rows():
    return [{k: json.dumps(v) if isinstance(v, list) else v or "" for k, v in row.items()} for row in QUESTIONS]


def valid_files(folder):
    """{name: path} of one valid benchmark per format, written under `folder`."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, name) for name in
             ("seed.jsonl", "seed.json", "seed.csv", "seed.tsv", "seed.parquet", "seed_dataset", "seed_splits")}
    with open(paths["seed.jsonl"], "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in QUESTIONS)
    with open(paths["seed.json"], "w", encoding="utf-8") as f:
        json.dump({"questions": QUESTIONS}, f, indent=1)
    for name, delimiter in (("seed.csv", ","), ("seed.tsv", "\t")):
        with open(paths[name], "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, ["id", "question", "choices", "answer", "category"], delimiter=delimiter)
            writer.writeheader()
            writer.writerows(_table_rows())
    table = pa.Table.from_pylist(QUESTIONS)
    pq.write_table(table, paths["seed.parquet"], row_group_size=2)
    datasets.Dataset(table).save_to_disk(paths["seed_dataset"])
    datasets.DatasetDict({"train": datasets.Dataset(table.slice(0, 1)),
                          "test": datasets.Dataset(table)}).save_to_disk(paths["seed_splits"])
    return paths


def _arrow_file(folder):
    return os.path.join(folder, next(n for n in os.listdir(folder) if n.endswith(".arrow")))


def corrupt_offsets_folder(path):
    """A save_to_disk folder (8 rows) whose question column's 5th string offset points far out of bounds."""
    import datasets
    questions = [f"Q{i:03d}?" for i in range(8)]                     # 5 bytes each: offsets 0, 5, ..., 40
    datasets.Dataset.from_dict({"question": questions, "answer": ["a"] * 8}).save_to_disk(os.fspath(path))
    arrow = _arrow_file(path)
    with open(arrow, "rb") as f:
        data = bytearray(f.read())
    at = data.find(struct.pack("<9i", *range(0, 45, 5)))
    if at < 0:
        raise RuntimeError("the question offsets were not found in the Arrow file")
    struct.pack_into("<i", data, at + 4 * 4, 0x7FFF0000)
    with open(arrow, "wb") as f:
        f.write(data)
    return os.fspath(path)


def rle_bomb_parquet(path, rows=30_000_000):
    """`rows` copies of one row; the question column dictionary-encoded (its indices run-length encoded)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    question = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array(["What is 2 + 2?"]))
    answer = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array(["4"]))
    pq.write_table(pa.table({"question": question, "answer": answer}), os.fspath(path), compression="zstd",
                   row_group_size=10 ** 9)
    return os.fspath(path)


def big_cell_parquet(path, nbytes=20_000_000):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"question": ["x" * nbytes], "answer": ["x"]}), os.fspath(path), compression="zstd",
                   use_dictionary=False, compression_level=19)
    return os.fspath(path)


def _varint(n, width=None):
    """Thrift compact varint of n (unsigned), padded with continuation bytes to `width` bytes."""
    out = []
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            break
    while width and len(out) < width:
        out.append(0)
    return bytes(b | 0x80 for b in out[:-1]) + bytes(out[-1:])


def lying_footer_parquet(path, nbytes=629_000_000, claimed=100):
    """One zstd question of nbytes bytes (629 MB: ~20 KB on disk), the footer's total_uncompressed_size of
    its column chunk rewritten to `claimed` (a padded varint of the same width, found after the field
    header 0x16 of ColumnMetaData field 6 and before that of field 7; the page header is left alone)."""
    import pyarrow.parquet as pq
    path = big_cell_parquet(path, nbytes)
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    true, packed = column.total_uncompressed_size, column.total_compressed_size
    data = bytearray(open(path, "rb").read())
    footer_at = len(data) - 8 - struct.unpack("<i", data[-8:-4])[0]
    old = _varint(2 * true)                                       # zigzag of a positive i64
    pattern = b"\x16" + old + b"\x16" + _varint(2 * packed)
    at = data.find(pattern, footer_at)
    assert at > 0 and data.find(pattern, at + 1) < 0, "the footer's size field was not found once"
    data[at + 1:at + 1 + len(old)] = _varint(2 * claimed, len(old))
    with open(path, "wb") as f:
        f.write(data)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).total_uncompressed_size == claimed
    return path


def zstd_arrow_folder(path, nbytes=256 << 20):
    """A save_to_disk folder of one row whose Arrow stream is rewritten zstd-compressed, its question
    nbytes long (datasets itself reads compressed streams)."""
    import datasets
    import pyarrow as pa
    path = os.fspath(path)
    datasets.Dataset.from_dict({"question": ["x"], "answer": ["x"]}).save_to_disk(path)
    arrow = _arrow_file(path)
    with pa.memory_map(arrow) as source:
        schema = pa.ipc.open_stream(source).schema
    table = pa.table({"question": ["x" * nbytes], "answer": ["x"]}, schema=schema)
    options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=19))
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, schema, options=options) as writer:
        writer.write_table(table)
    return path


def _deep(depth):
    return "[" * depth + "1" + "]" * depth


def deep_jsonl(path, depth=100_000):
    """Line 2 holds a choices value nested `depth` lists deep."""
    with open(path, "w") as f:
        f.write(json.dumps(QUESTIONS[1]) + "\n")
        f.write('{"question": "deep?", "answer": "x", "choices": ' + _deep(depth) + "}\n")
    return os.fspath(path)


def deep_json(path, depth=100_000):
    """A .json list whose second item (on line 3) is nested `depth` lists deep."""
    with open(path, "w") as f:
        f.write("[\n" + json.dumps(QUESTIONS[1]) + ",\n" + '{"question": "deep?", "answer": ' + _deep(depth) + "}\n]\n")
    return os.fspath(path)
