"""Hostile benchmark files and messages, round 4 (issue 29, items 2 and 3): a parquet footer that
understates what its page decompresses to is refused from the page headers before any page is
decompressed (pyarrow's own memory pool is the reference for what was allocated); every declared
size of a page header is checked against pyarrow's honest footers; long messages are cut; a limit's
hint names a value that reads the file, or says that none does. Each case reproduces its finding
from a crafted file first; the CLI cases go through main.py's main() (one line, no traceback)."""
import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hostile_benchmarks as hb
from activation_eval.eval.benchmark import BenchmarkError, load_benchmark, read_benchmark
from activation_eval.eval.benchmark_limits import DEPTH_HARD_MAX, parse_limits
from activation_eval.eval.parquet_pages import PageHeaderError, chunk_uncompressed
from activation_eval.run import cli
from helpers import REPO_ROOT

READ_IN_CHILD = """
import sys
import pyarrow as pa
from activation_eval.eval.benchmark import BenchmarkError, read_benchmark
try:
    read_benchmark(sys.argv[1])
except BenchmarkError as e:
    print("REFUSED", e)
print("POOL_PEAK", pa.default_memory_pool().max_memory())
"""


def _read_in_child(path):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", READ_IN_CHILD, os.fspath(path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


# ----------------------------------------------------------------------------- footers that lie

def test_a_footer_understating_its_page_is_refused_before_decompressing(tmp_path):
    path = hb.lying_footer_parquet(tmp_path / "lie.parquet", 64_000_000, claimed=100)
    assert os.path.getsize(path) < 10_000
    out = _read_in_child(path)
    peak = int(out.rsplit("POOL_PEAK ", 1)[1])
    assert "REFUSED" in out and "row group 1, column 'question' (its page headers): decompresses to 64,000,0" in out
    assert peak < 8_000_000, f"pyarrow allocated {peak:,} bytes before refusing"      # the page is 64 MB


def test_the_lie_is_live_without_the_page_check(tmp_path, monkeypatch):
    """The reference: the same file read with the page walk disabled decompresses its 64 MB page."""
    import activation_eval.eval.benchmark_arrow as arrow
    path = hb.lying_footer_parquet(tmp_path / "lie.parquet", 64_000_000, claimed=100)
    monkeypatch.setattr(arrow, "chunk_uncompressed", lambda *a: 0)
    before = pa.default_memory_pool().max_memory()
    with pytest.raises(BenchmarkError, match="field 'question' holds 64,000,000 bytes"):
        load_benchmark(path)
    assert pa.default_memory_pool().max_memory() >= max(before, 64_000_000)


@pytest.mark.parametrize("options", [
    {"compression": "zstd"}, {"compression": "snappy", "use_dictionary": False},
    {"compression": "none", "data_page_version": "2.0"}, {"compression": "gzip", "data_page_size": 1000},
    {"compression": "zstd", "row_group_size": 7, "write_statistics": True, "data_page_size": 200}])
def test_page_headers_add_up_to_an_honest_footer(options):
    """pyarrow's footer (total_uncompressed_size: every page and its header) of files pyarrow wrote is the
    reference for the page walk: dictionary pages, v1 and v2 data pages, statistics, many pages."""
    table = pa.table({"question": [f"question {i} " * (i % 13) for i in range(100)], "n": list(range(100)),
                      "choices": [[str(i), "b" * i] for i in range(100)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    meta = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    checked = 0
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            column = meta.row_group(g).column(c)
            assert chunk_uncompressed(buf, len(buf.getvalue()), column, 1 << 20) == column.total_uncompressed_size
            checked += 1
    assert checked >= 3


def test_a_corrupt_page_header_is_one_error_naming_the_column(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": ["What?"] * 3, "answer": ["x"] * 3}), path, use_dictionary=False)
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    data = bytearray(path.read_bytes())
    data[column.data_page_offset:column.data_page_offset + 8] = b"\x1c" * 8     # nested structs, never closed
    path.write_bytes(data)
    with pytest.raises(BenchmarkError, match=r"bad.parquet: row group 1, column 'question': corrupt page header"):
        load_benchmark(path)
    with pytest.raises(PageHeaderError):
        chunk_uncompressed(io.BytesIO(bytes(data)), len(data), column, 1 << 20)


# ----------------------------------------------------------------------------- messages

def _main_error(capsys, *args):
    code = cli.main([*map(str, args), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and err.count("\n") == 1 and len(err) < 500, err[:2000]
    return err


@pytest.mark.slow
@pytest.mark.parametrize("ids, expected", [
    (lambda i: {"id": f"q{i % 50_000}"}, ["duplicate ids: 'q0' at line 1, line 50001;", "and 49,997 more ids;"]),
    (lambda i: {}, ["duplicate ids: 'q-", "at line 1, line 2, line 3 and 99,997 more;"])])   # one question, 10^5 rows
def test_100000_duplicate_rows_give_one_short_line(tmp_path, capsys, ids, expected):
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps({**ids(i), "question": "Why?", "answer": "x"}) + "\n" for i in range(100_000)))
    err = _main_error(capsys, "--benchmark", path, "--limit", 1, "--output_dir", tmp_path / "out")
    assert all(text in err for text in expected), err


@pytest.mark.parametrize("value", ["100000000", str(DEPTH_HARD_MAX + 1)])
def test_a_depth_beyond_the_parser_is_refused_with_its_maximum(tmp_path, capsys, value):
    path = hb.deep_jsonl(tmp_path / "deep.jsonl", 100_000)
    err = _main_error(capsys, "--benchmark", path, "--benchmark_limits", f"depth={value}",
                      "--output_dir", tmp_path / "out")
    assert f"depth={value} is beyond the most this reader supports, {DEPTH_HARD_MAX}" in err and str(2 * int(value)) not in err


def test_depth_hints_name_a_value_that_works_or_say_none_does(tmp_path):
    deep = hb.deep_jsonl(tmp_path / "deep.jsonl", 100_000)
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(deep, limits=f"depth={DEPTH_HARD_MAX}")
    assert f"no --benchmark_limits depth reads it (at most {DEPTH_HARD_MAX}" in str(e.value)
    assert "raise it" not in str(e.value)
    medium = hb.deep_jsonl(tmp_path / "medium.jsonl", 300)       # 300 levels: depth=200 hints at least 300
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(medium, limits="depth=150")
    hint = str(e.value).rsplit("--benchmark_limits ", 1)[1]
    assert hint.startswith("depth=") and int(hint[6:]) >= 300
    rows = read_benchmark(medium, limits=hint)                   # the hinted value reads it (the row is then
    assert [s["where"] for s in rows.skipped] == ["line 2"]      # skipped as bad choices, in one short line)


def test_a_skipped_rows_warning_is_short_and_many_are_counted(tmp_path, caplog):
    path = tmp_path / "b.jsonl"
    rows = [{"question": f"Q{i}?", "choices": ["a", {"k": "x" * 100_000}], "answer": "a"} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"question": "Ok?", "answer": "y"}))
    read_benchmark(path)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11 and all(len(line) < 600 for line in lines)
    assert "skipping 20 more rows (30 rows in all" in lines[-1]


def test_limits_hint_at_least_what_the_file_needs():
    limits = parse_limits("rows=10")
    assert limits.hint("rows", 1_000) == "if the file is trusted, raise it, e.g. --benchmark_limits rows=1000"
    assert limits.hint("rows", 3) == "if the file is trusted, raise it, e.g. --benchmark_limits rows=20"
    assert parse_limits("depth=400").hint("depth") .endswith(f"depth={DEPTH_HARD_MAX}")
    assert parse_limits("depth=400").hint("depth", DEPTH_HARD_MAX + 1).startswith("no --benchmark_limits depth")


# ----------------------------------------------------------------------------- the benchmark fuzzer's finding

def test_a_lone_surrogate_in_a_row_without_an_id_is_read(tmp_path):
    """Found by tests/fuzz_benchmarks.py (seed 1, 5 minutes): a lone surrogate escape (valid JSON) in the
    choices of a row without an id raised a raw UnicodeEncodeError where the id is hashed."""
    path = tmp_path / "b.tsv"
    path.write_text('question\tchoices\tanswer\nWhat?\t"[""1\\ud800"", ""2""]"\t"[""A""]"\n', encoding="utf-8")
    rows = read_benchmark(path).rows
    assert len(rows) == 1 and rows[0]["id"].startswith("q-") and rows[0]["choices"][0] == "1\ud800"
