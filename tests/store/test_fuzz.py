"""A short seeded run of the record-loader fuzzer (tests/fuzz_records.py) in the normal suite,
and a check that its harness does catch a crash."""
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # the fuzzer runs in its own processes for tens of seconds
ROOT = REPO_ROOT
FUZZER = os.path.join(ROOT, "tests", "fuzz_records.py")


def run_fuzzer(tmp_path, *args):
    done = subprocess.run([sys.executable, FUZZER, "--out", str(tmp_path / "findings"), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.stdout.startswith("{"), done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)


def test_seeded_fuzz_run_finds_nothing(tmp_path):
    """20 s of mutations of valid and hostile .pkl / .safetensors files and shards: no crash, hang, loader
    error other than ours, or peak RSS over 1 GB; both formats and both outcomes reached."""
    code, report = run_fuzzer(tmp_path, "--seconds", "20", "--seed", "0")
    print(f"fuzz: {report['executions']} executions in {report['seconds']} s, "
          f"peak RSS {report['peak_rss_mb']} MB, outcomes {report['outcomes']}")
    assert report["findings"] == [] and code == 0
    assert report["crashes"] == report["hangs"] == report["memory"] == 0
    assert report["loader_bugs"] == 0
    assert report["executions"] >= report["seeds"] + 50
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
