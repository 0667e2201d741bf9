"""Short seeded runs of the fuzzer (tests/fuzz_records.py) in the normal suite: record loaders and
run-folder readers, and checks that its harness does catch a crash and a reader's raw error."""
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # the fuzzer runs in its own processes (a few seconds each)
ROOT = REPO_ROOT
FUZZER = os.path.join(ROOT, "tests", "fuzz_records.py")


def run_fuzzer(tmp_path, *args):
    done = subprocess.run([sys.executable, FUZZER, "--out", str(tmp_path / "findings"), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.stdout.startswith("{"), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def test_seeded_fuzz_run_finds_nothing(tmp_path):
    """600 mutations (seed 0: the same ones on every machine) of valid and hostile .pkl / .safetensors files
    and shards: no crash, hang, loader error other than ours, or peak RSS over 1 GB; both formats and both
    outcomes reached. (It ran for 20 s before, ~2600 cases here and fewer on a busy machine; longer runs
    are the fuzzer's own job: python tests/fuzz_records.py --seconds 600 --seed N.)"""
    code, report = run_fuzzer(tmp_path, "--cases", "600", "--seconds", "300", "--seed", "0", "--targets", "records")
    print(f"fuzz: {report['executions']} executions in {report['seconds']} s, "
          f"peak RSS {report['peak_rss_mb']} MB, outcomes {report['outcomes']}")
    assert report["findings"] == [] and code == 0
    assert report["crashes"] == report["hangs"] == report["memory"] == 0
    assert report["loader_bugs"] == 0
    assert report["executions"] == report["seeds"] + 600
    assert report["by_format"]["pkl"] > 0 and report["by_format"]["safetensors"] > 0 and report["by_format"]["shard"] > 0
    assert report["outcomes"]["ok"] > 0 and report["outcomes"]["refused"] > 0
    assert 0 < report["peak_rss_mb"] < 1024


def test_the_harness_catches_a_crash(tmp_path):
    """Control: with plain pickle.load as the loader, the object-dtype seed kills the worker;
    the fuzzer reports it as a crash, saves the file and goes on (exit 1)."""
    code, report = run_fuzzer(tmp_path, "--seconds", "0", "--loader", "plain",
                              "--seeds", "object dtype scalar", "ours.pkl")
    assert code == 1 and report["executions"] == 2
    assert report["crashes"] == 1 and report["outcomes"] == {"ok": 1}
    (finding,) = report["findings"]
    assert finding["from"] == "object dtype scalar" and finding["what"] == "crash (SIGSEGV)"
    assert os.path.getsize(finding["file"]) > 0


def test_seeded_run_folder_fuzz_finds_nothing(tmp_path):
    """150 mutations (seed 0) of two valid runs' results.jsonl, run_config.json, summary.json and shards,
    each read as every analysis mode reads a run: no crash, hang, error other than the documented
    ones, or peak RSS over 1 GB; every kind of run file reached; both outcomes. (It ran for 15 s before,
    ~350 cases here.)"""
    code, report = run_fuzzer(tmp_path, "--cases", "150", "--seconds", "300", "--seed", "0", "--targets", "runs")
    print(f"run fuzz: {report['executions']} executions in {report['seconds']} s, "
          f"peak RSS {report['peak_rss_mb']} MB, outcomes {report['outcomes']}")
    assert report["findings"] == [] and code == 0 and report["loader_bugs"] == 0
    assert set(report["by_format"]) == {"results", "config", "summary", "runshard"}
    assert report["outcomes"]["ok"] > 0 and report["outcomes"]["refused"] > 0
    assert report["executions"] == report["seeds"] + 150 and 0 < report["peak_rss_mb"] < 1024


def test_the_harness_catches_a_raw_error_of_a_run_reader(tmp_path):
    """Control: read with an unbounded JSON reader (--loader plain: json.loads per line), the seed run
    whose results.jsonl has a line 3000 brackets deep is a RecursionError, which the fuzzer reports as
    a finding, saving the run folder; our readers drop that line (the seeded run above reads it)."""
    code, report = run_fuzzer(tmp_path, "--seconds", "0", "--loader", "plain", "--targets", "runs",
                              "--seeds", "run files deep line", "run files results")
    assert code == 1 and report["executions"] == 2 and report["outcomes"] == {"ok": 1, "bug": 1}
    (finding,) = report["findings"]
    assert finding["from"] == "run files deep line" and finding["what"].startswith("rows: RecursionError")
    assert os.path.isfile(os.path.join(finding["file"], "results.jsonl"))
