"""Fuzz the benchmark readers (--benchmark: .jsonl, .json, .csv, .tsv, .parquet, save_to_disk
folders) with hypothesis-made mutations of valid and hostile seed files, for a set time; reports
executions and findings as JSON. The harness is tests/fuzz_harness.py's: each case is read in a
worker subprocess (a segfault or hang is a finding, not the end of the fuzzer), mutated with its
byte operations plus text snippets (brackets, quotes, line separators, huge numbers, CSV quotes).

What the worker does with a case: read_benchmark(path) with the default limits (every row
normalized, as main.py does first). Findings: a crash (the worker dies by a signal), a hang (no
answer in --case_timeout s), memory (the worker's peak RSS passes 1 GB), a reader bug (an error
other than BenchmarkError, or a BenchmarkError whose message does not name the path).

Seeds (tests/hostile_benchmarks.py): one valid file per format, a DatasetDict folder, and hostile
ones: 150-deep JSON, a zstd-compressed Arrow stream holding a 4 MB question, a parquet holding a
2 MB question, a folder whose string offsets point out of bounds. A folder case is its seed folder
with the .arrow data file (or state.json) replaced by the mutated bytes.

Public names:
    main(argv=None) -> int       the command line (0: no findings, 1: findings)
    fuzz(seconds, seed, out, reader="ours", seeds=None, case_timeout=30.0, cases=None) -> report dict
    worker_main(reader)          the worker loop (`--worker`)

Example:
    $ python tests/fuzz_benchmarks.py --seconds 300 --seed 1 --out fuzz-findings
    $ python tests/fuzz_benchmarks.py --cases 500 --seed 0          # what test_fuzz_benchmarks.py runs
    {"executions": 9120, "by_format": {"jsonl": ..., "arrow": ...}, "crashes": 0, ...}
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import fuzz_harness  # noqa: E402 - the harness (worker process, byte mutations, peak RSS), in this folder

MEMORY_LIMIT_MB = fuzz_harness.MEMORY_LIMIT_MB
TEXT_SNIPPETS = [b"[", b"]", b"{", b"}", b'"', b"\\", b",", b":", b"\n", b"\r\n", b"\t", b"|", b'""', b"\x00",
                 "\u2028".encode(), "\u0085".encode(), b"\xef\xbb\xbf", b"\xff\xfe", b"[" * 200, b"{\"a\":" * 150,
                 b"9" * 5000, b"1e999999", b"-0", b"NaN", b"null", b"true", b'"answer"', b'"choices": [', b"\\ud800",
                 b'"label": [], "text": ["x"]', b"x" * 70000]
FOLDER_KINDS = ("arrow", "state")


# ----------------------------------------------------------------------------- worker

def _run_case(kind_and_path, reader):
    """The outcome of reading one case: "ok", "refused" or ("bug", text)."""
    kind, path = kind_and_path.split("|", 1)
    from activation_eval.eval.benchmark import BenchmarkError, read_benchmark
    if reader == "plain":                                  # the harness self-test: datasets' own reader
        import datasets
        datasets.load_from_disk(path).to_list()
        return "ok"
    try:
        read_benchmark(path, split="test" if kind == "splits" else None)
    except BenchmarkError as e:
        return "refused" if path in str(e) else ("bug", f"BenchmarkError without the path: {str(e)[:300]}")
    except Exception as e:                                 # noqa: BLE001 - any other error is a finding
        return "bug", f"{type(e).__name__}: {str(e)[:300]}"
    return "ok"


def worker_main(reader):
    """Read "kind|path" lines from stdin, answer one JSON line per case on stdout."""
    import logging
    import warnings
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)                        # skipped-row warnings
    import activation_eval.eval.benchmark  # noqa: F401  (imported before "ready")
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        outcome = _run_case(line.rstrip("\n"), reader)
        out.write(json.dumps({"outcome": outcome, "rss_mb": fuzz_harness.peak_rss_mb()}) + "\n")
        out.flush()
    return 0


class _Worker(fuzz_harness.Worker):
    def start(self):
        import subprocess
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--reader", self.loader],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        self.ready = False


# ----------------------------------------------------------------------------- seeds and cases

def _seeds(folder, names=None):
    """[(kind, bytes, name, template folder or None)]; a folder seed's bytes are its .arrow file
    (kind "arrow") or its state.json (kind "state")."""
    import hostile_benchmarks as hb
    paths = hb.valid_files(os.path.join(folder, "valid"))
    hostile = os.path.join(folder, "hostile")
    os.makedirs(hostile, exist_ok=True)
    paths.update({
        "deep.jsonl": hb.deep_jsonl(os.path.join(hostile, "deep.jsonl"), 150),
        "deep.json": hb.deep_json(os.path.join(hostile, "deep.json"), 150),
        "big_cell.parquet": hb.big_cell_parquet(os.path.join(hostile, "big_cell.parquet"), 2_000_000),
        "zstd_dataset": hb.zstd_arrow_folder(os.path.join(hostile, "zstd_dataset"), 4 << 20),
        "offsets_dataset": hb.corrupt_offsets_folder(os.path.join(hostile, "offsets_dataset")),
    })
    out = []
    for name, path in paths.items():
        if names is not None and name not in names:
            continue
        if os.path.isdir(path):
            data_folder = os.path.join(path, "test") if name == "seed_splits" else path
            with open(hb._arrow_file(data_folder), "rb") as f:
                out.append(("arrow", f.read(), name, path))
            with open(os.path.join(data_folder, "state.json"), "rb") as f:
                out.append(("state", f.read(), name + "/state.json", path))
        else:
            with open(path, "rb") as f:
                out.append((os.path.splitext(path)[1][1:], f.read(), name, None))
    return out


def _write_case(work, kind, data, template):
    """The path of the case to read ("kind|path"): a file, or a copy of the template folder with the
    mutated data file / state.json."""
    import hostile_benchmarks as hb
    if template is None:
        path = os.path.join(work, f"case.{kind}")
        with open(path, "wb") as f:
            f.write(data)
        return f"{kind}|{path}"
    folder = os.path.join(work, "case_dataset")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(template, folder)
    splits = os.path.isfile(os.path.join(folder, "dataset_dict.json"))
    data_folder = os.path.join(folder, "test") if splits else folder
    target = hb._arrow_file(data_folder) if kind == "arrow" else os.path.join(data_folder, "state.json")
    with open(target, "wb") as f:
        f.write(data)
    return f"{'splits' if splits else kind}|{folder}"


def _strategies():
    from hypothesis import strategies as st
    seed_strategy, byte_ops = fuzz_harness.strategies()
    pos = st.floats(0, 1, exclude_max=True)
    text_ops = st.tuples(st.just("insert"), pos, st.sampled_from(TEXT_SNIPPETS))
    return seed_strategy, st.lists(st.one_of(text_ops, byte_ops.filter(bool).map(lambda ops: ops[0])), max_size=6)


# ----------------------------------------------------------------------------- the fuzz loop

def fuzz(seconds, seed, out, reader="ours", seeds=None, case_timeout=30.0, rounds_of=50, cases=None):
    """Fuzz for `seconds` (or until `cases` mutated cases have run, if sooner); returns the report (findings'
    files are saved under `out`)."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, given, settings
    worker = _Worker(reader)
    worker.start()
    work = tempfile.mkdtemp(prefix="fuzz-benchmarks-")
    seed_files = _seeds(work, seeds)
    if not seed_files:
        worker.stop()
        raise ValueError(f"no seed files named {seeds}")
    worker.wait_ready()
    report = {"seed": seed, "reader": reader, "hypothesis": hypothesis.__version__, "seeds": len(seed_files),
              "executions": 0, "by_format": {}, "outcomes": {}, "crashes": 0, "hangs": 0, "memory": 0,
              "reader_bugs": 0, "peak_rss_mb": 0, "findings": []}
    start = time.monotonic()
    case_dir = os.path.join(work, "cases")
    os.makedirs(case_dir)

    def execute(kind, data, origin, template):
        case = _write_case(case_dir, kind, data, template)
        outcome_kind, detail, rss = worker.run(case, case_timeout)
        finding = fuzz_harness.tally(report, worker, kind, outcome_kind, detail, rss, "reader_bugs")
        if finding:
            os.makedirs(out, exist_ok=True)
            saved = os.path.join(out, f"finding-{len(report['findings']):03d}.{kind}")
            with open(saved, "wb") as f:
                f.write(data)
            report["findings"].append({"file": saved, "from": origin, "what": finding})

    for kind, data, name, template in seed_files:          # every seed once, as it is
        execute(kind, data, name, template)
    seed_strategy, ops_strategy = _strategies()
    plain_seeds = [(kind, data, name) for kind, data, name, _ in seed_files]

    @settings(max_examples=rounds_of, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(which=seed_strategy, ops=ops_strategy)
    def one_case(which, ops):
        if fuzz_harness.finished(report, start, seconds, cases):
            return
        kind, data, name, template = seed_files[which % len(seed_files)]
        same_kind = [s for s in plain_seeds if s[0] == kind] or plain_seeds
        execute(kind, fuzz_harness.mutate(data, ops, same_kind, kind), name, template)

    return fuzz_harness.run_rounds(one_case, seed, seconds, start, worker, work, report, cases)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="how long to fuzz (default 60)")
    p.add_argument("--cases", type=int, help="stop after this many mutated cases, if sooner than --seconds (the "
                                             "same cases on every machine for a given --seed)")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    p.add_argument("--out", default="fuzz-findings", help="folder for the findings' files")
    p.add_argument("--reader", choices=["ours", "plain"], default="ours",
                   help="plain: datasets.load_from_disk(...).to_list(), to check that the harness catches crashes")
    p.add_argument("--seeds", nargs="+", metavar="NAME", help="only these seeds (e.g. seed.jsonl offsets_dataset)")
    p.add_argument("--case_timeout", type=float, default=30.0, help="seconds per case")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.reader)
    report = fuzz(args.seconds, args.seed, args.out, args.reader, args.seeds, args.case_timeout, cases=args.cases)
    print(json.dumps(report, indent=1))
    print(f"{report['executions']} executions in {report['minutes']} min ({report['executions_per_second']}/s): "
          f"{report['crashes']} crashes, {report['hangs']} hangs, {report['memory']} over {MEMORY_LIMIT_MB} MB, "
          f"{report['reader_bugs']} reader bugs; peak RSS {report['peak_rss_mb']} MB", file=sys.stderr)
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
