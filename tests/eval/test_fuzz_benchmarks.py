"""A short seeded run of the benchmark-reader fuzzer (tests/fuzz_benchmarks.py) in the normal suite,
and a check that its harness does catch a crash (datasets' own reader on the corrupt-offsets folder)."""
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # the fuzzer runs in its own processes (a few seconds each)
FUZZER = os.path.join(REPO_ROOT, "tests", "fuzz_benchmarks.py")


def run_fuzzer(tmp_path, *args):
    done = subprocess.run([sys.executable, FUZZER, "--out", str(tmp_path / "findings"), *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert done.stdout.startswith("{"), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def test_seeded_benchmark_fuzz_run_finds_nothing(tmp_path):
    """500 mutations (seed 0: the same ones on every machine) of valid and hostile benchmark files of every
    format: no crash, hang, error other than a BenchmarkError naming the path, or peak RSS over 1 GB; every
    format and both outcomes reached. (It ran for 15 s before, ~1500 cases here and fewer on a busy machine;
    longer runs are the fuzzer's own job: python tests/fuzz_benchmarks.py --seconds 300 --seed N.)"""
    code, report = run_fuzzer(tmp_path, "--cases", "500", "--seconds", "300", "--seed", "0")
    print(f"fuzz: {report['executions']} executions in {report['seconds']} s, "
          f"peak RSS {report['peak_rss_mb']} MB, outcomes {report['outcomes']}, by format {report['by_format']}")
    assert report["findings"] == [] and code == 0
    assert report["crashes"] == report["hangs"] == report["memory"] == report["reader_bugs"] == 0
    assert report["executions"] == report["seeds"] + 500
    assert set(report["by_format"]) == {"jsonl", "json", "csv", "tsv", "parquet", "arrow", "state"}
    assert report["outcomes"]["ok"] > 0 and report["outcomes"]["refused"] > 0
    assert 0 < report["peak_rss_mb"] < 1024


def test_the_harness_catches_a_crash(tmp_path):
    """Control: with datasets' load_from_disk().to_list() as the reader, the corrupt-offsets folder kills
    the worker; the fuzzer reports it as a crash, saves the file and goes on (exit 1)."""
    code, report = run_fuzzer(tmp_path, "--seconds", "0", "--reader", "plain", "--seeds", "offsets_dataset",
                              "seed_dataset")
    assert code == 1 and report["executions"] == 4
    assert report["crashes"] == 2 and report["outcomes"] == {"ok": 2}
    assert {f["from"] for f in report["findings"]} == {"offsets_dataset", "offsets_dataset/state.json"}
    assert all(f["what"] in ("crash (SIGSEGV)", "crash (SIGBUS)") for f in report["findings"])
