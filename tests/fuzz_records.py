"""Fuzz the record loaders (.pkl and .safetensors), the shard readers (--activation_store
shards) and the run-folder readers (results.jsonl, run_config.json, summary.json, a run's shards)
with hypothesis-made mutations of valid and hostile files, for a set time; reports executions and
findings as JSON.

Each case is loaded in a worker subprocess, so a segfault or a hang is a finding, not the end
of the fuzzer: the worker runs load_activations (whole record, then one layer) and, when a
record loads, what `analyze_activations.py --file --json` does with it. Findings: a crash (the
worker dies by a signal), a hang (no answer in --case_timeout s), memory (the worker's peak RSS
passes 1 GB, no ulimit set), a loader bug (an error other than CorruptFileError /
UnsafeFileError, or a message not ending with the path). Each finding's file is saved under
--out. Errors of the analysis on a record that did load are counted by type, not findings.

The seeds are tests/hostile.py's files: valid records in every format a loader version wrote,
valid shards of both format versions (read with iter_shard_records, one record, read_shard_layer),
and one file per attack class of issue 12. Mutations (hypothesis strategies): bit flips,
interesting bytes, inserted bytes or pickle snippets (BUILD, REDUCE, memo gets, deep tuples),
deleted / duplicated / truncated ranges, splices of another seed, and, for .safetensors,
header JSON values replaced by interesting numbers, strings and types.

Run folders (--targets runs): two valid runs of 8 questions (hostile.write_run: the file store
and the shard store); a case mutates ONE of a run's files (results.jsonl, run_config.json,
summary.json or its first shard; also JSON-aware: a row's or setting's value replaced by a deep
list, a huge number, "../" or "/dev/zero" paths, "5", a surrogate, ...) and the worker reads the
folder as every analysis mode does: RunReader rows and records (errors="yield"), read_run_config,
read_summary, load_run_layer, analyze_directory, then merge_results (what --resume does). A
finding is a crash, a hang, memory over 1 GB, or an error other than the documented ones
(CorruptFileError / UnsafeFileError / RecordMismatchError, OSError, or a ValueError naming the run).

It lives next to the tests because it is test tooling that shares their file builders
(hostile.py); test_fuzz.py runs it with a fixed seed and a fixed number of cases in the normal suite
(--cases: the same cases on every machine, however busy; records 600, runs 150, a few seconds each).

The harness (the worker subprocess, the mutations, the report's tally and loop) is fuzz_harness.py, shared with
fuzz_benchmarks.py and fuzz_analysis.py; this module holds what is particular to records and run folders: how
a worker reads a case, the seeds, and the fuzz loop over them.

Public names:
    main(argv=None) -> int       the command line (0: no findings, 1: findings)
    fuzz(seconds, seed, out, loader="safe", seeds=None, targets=("records", "runs"), cases=None) -> report dict
    worker_main(loader)          the worker loop (`--worker`)

Example:
    $ python tests/fuzz_records.py --seconds 600 --seed 1 --out fuzz-findings
    $ python tests/fuzz_records.py --targets runs --seconds 300 --seed 1
    $ python tests/fuzz_records.py --targets records --cases 600 --seed 0      # what test_fuzz.py runs
    {"executions": 41210, "minutes": 10.0, "crashes": 0, "hangs": 0, ..., "peak_rss_mb": 412}
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from fuzz_harness import MEMORY_LIMIT_MB, Worker, finished, mutate, peak_rss_mb, run_rounds, strategies, tally

RUN_FILES = {"results": "results.jsonl", "config": "run_config.json", "summary": "summary.json",
             "runshard": "activations/units/abcdef0.safetensors"}      # what a run case mutates
RUN_STORES = {"results": ("files", "shards"), "config": ("files", "shards"), "summary": ("files",),
              "runshard": ("shards",)}


# ----------------------------------------------------------------------------- worker

def _run_case(path, load_activations, describe_record, jsonable, loader):
    """The outcome of loading `path` as the CLI would: "ok", "refused", ("analysis", type)
    or ("bug", text)."""
    import pickle

    from activation_eval.store.errors import CorruptFileError, UnsafeFileError
    if loader == "plain" and os.path.isdir(path):     # the harness self-test: an unbounded reader
        try:
            with open(os.path.join(path, "results.jsonl"), "rb") as f:
                [json.loads(line) for line in f.read().split(b"\n") if line.strip()]
        except ValueError:
            return "refused"
        except Exception as e:                   # noqa: BLE001 - e.g. RecursionError: a finding
            return "bug", f"rows: {type(e).__name__}: {str(e)[:300]}"
        return "ok"
    if loader == "plain":                        # the harness self-test: an unsafe loader
        with open(path, "rb") as f:
            repr(pickle.load(f))
        return "ok"
    if path.endswith(".shard"):
        return _run_shard_case(path)
    if os.path.isdir(path):
        return _run_folder_case(path)
    record = None
    # one layer: the partial-read path of .safetensors (for .pkl it is the same unpickling)
    for layers in (None, ["layer_0"]) if path.endswith(".safetensors") else (None,):
        try:
            got = load_activations(path, layers=layers)
            if layers is None:
                record = got
        except (CorruptFileError, UnsafeFileError) as e:
            if not str(e).endswith(path):
                return "bug", f"{type(e).__name__} without the path: {str(e)[:300]}"
        except ValueError as e:
            if not (layers and "unknown layer name" in str(e)):
                return "bug", f"ValueError: {str(e)[:300]}"
        except Exception as e:                   # noqa: BLE001 - any other error is a finding
            return "bug", f"{type(e).__name__}: {str(e)[:300]}"
    if record is None:
        return "refused"
    try:
        json.dumps(jsonable(describe_record(record, path)))
    except Exception as e:                       # noqa: BLE001 - counted by type
        return "analysis", type(e).__name__
    return "ok"


def _run_shard_case(path):
    """The shard readers on `path`: every record, one record (its rows' bytes only), one layer of
    all of them: "ok", "refused" or ("bug", text)."""
    from activation_eval.store import shards
    from activation_eval.store.errors import CorruptFileError
    try:
        records = list(shards.iter_shard_records(path))
        list(shards.iter_shard_records(path, [len(records) - 1], layers=["layer_0"]))
        layer = shards.read_shard_layer(path, "layer_0")
        [layer.rows(i) for i in range(len(records))]
    except CorruptFileError as e:
        return ("bug", f"CorruptFileError without the path: {str(e)[:300]}") if not str(e).endswith(path) \
            else "refused"
    except ValueError as e:
        return "refused" if "unknown layer name" in str(e) else ("bug", f"ValueError: {str(e)[:300]}")
    except Exception as e:                       # noqa: BLE001 - any other error is a finding
        return "bug", f"{type(e).__name__}: {str(e)[:300]}"
    return "ok"


def _run_folder_case(folder):
    """A run folder read as every analysis mode reads it, then merged as --resume does: "ok",
    "refused" (a documented error) or ("bug", text)."""
    from activation_eval import load_run_layer
    from activation_eval.analysis.stats import analyze_directory
    from activation_eval.store import run_files, run_folder
    from activation_eval.store.errors import CorruptFileError, UnsafeFileError
    from activation_eval.store.run_reader import RunReader
    refused = False
    steps = [("rows", lambda: RunReader(folder).rows),
             ("records", lambda: [r for _, r in RunReader(folder).records(errors="yield")]),
             ("run_config", lambda: run_folder.read_run_config(folder)),
             ("summary", lambda: run_folder.read_summary(folder)),
             ("load_run_layer", lambda: load_run_layer(folder, "layer_0")),
             ("directory", lambda: analyze_directory(folder, progress=False)),
             ("merge", lambda: run_files.merge_results(folder))]
    for name, step in steps:
        try:
            out = step()
            if name == "records" and any(isinstance(r, Exception) for r in out):
                bad = next(r for r in out if isinstance(r, Exception))
                if not isinstance(bad, (CorruptFileError, UnsafeFileError, OSError)):
                    return "bug", f"records: {type(bad).__name__}: {str(bad)[:300]}"
                refused = True
        except (CorruptFileError, UnsafeFileError, OSError) as e:
            if folder not in str(e) and not isinstance(e, OSError):
                return "bug", f"{name}: {type(e).__name__} without the path: {str(e)[:300]}"
            refused = True
        except ValueError as e:
            if type(e) is not ValueError or folder not in str(e):
                return "bug", f"{name}: {type(e).__name__}: {str(e)[:300]}"
            refused = True
        except Exception as e:                   # noqa: BLE001 - any other error is a finding
            return "bug", f"{name}: {type(e).__name__}: {str(e)[:300]}"
    return "refused" if refused else "ok"


def worker_main(loader):
    """Read case paths from stdin, answer one JSON line per case on stdout."""
    import warnings
    warnings.simplefilter("ignore")
    from activation_eval.analysis.jsonio import to_json
    from activation_eval.analysis.stats import describe_record
    from activation_eval.store.run_reader import load_activations
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        outcome = _run_case(line.rstrip("\n"), load_activations, describe_record, to_json,
                            loader)
        rss = peak_rss_mb()
        out.write(json.dumps({"outcome": outcome, "rss_mb": rss}) + "\n")
        out.flush()
    return 0


# ----------------------------------------------------------------------------- the fuzz loop

def _run_seeds(folder):
    """[(kind, bytes, name)] of the files of two valid runs (file and shard store) that run cases
    mutate, and {store: run folder} of the templates (hostile.write_run)."""
    import hostile
    runs = {store: hostile.write_run(os.path.join(folder, f"run-{store}"), store) for store in ("files", "shards")}
    out = []
    for kind, stores in RUN_STORES.items():
        for store in stores:
            with open(os.path.join(runs[store], RUN_FILES[kind]), "rb") as f:
                out.append((kind, f.read(), f"run {store} {kind}"))
    rows = out[0][1].split(b"\n")                # issue 20's hostile run files, as seeds too
    out += [("results", b"\n".join(rows[:2] + [b"[" * 3000 + b"]" * 3000] + rows[2:]), "run files deep line"),
            ("results", b"\n".join(rows[:2] + [b'{"a":"', b'"}, {"b":1}'] + rows[2:]), "run files torn pair"),
            ("summary", b'{"a": ' * 3000 + b"1" + b"}" * 3000, "run files deep summary"),
            ("config", b'{"activation_save_dir": "/dev"}', "run files outside save dir")]
    return out, runs


def _seeds(folder, names=None, targets=("records",)):
    """([(extension, bytes, name)], {store: template run folder}): tests/hostile.py's valid and
    hostile files (targets "records"), and the files of two valid runs (targets "runs"; kinds
    "results", "config", "summary", "runshard", mutated inside a copy of their run)."""
    import hostile
    out, templates = [], {}
    if "runs" in targets:
        runs, templates = _run_seeds(os.path.join(folder, "runs"))
        out += [s for s in runs if names is None or s[2] in names]
    if "records" not in targets:
        return out, templates
    valid = {**hostile.valid_files(os.path.join(folder, "valid")), **hostile.shard_files(os.path.join(folder, "shards"))}
    for name, path in valid.items():
        with open(path, "rb") as f:
            out.append((os.path.splitext(path)[1][1:], f.read(), name))
    records = [(ext, data, name) for name, (ext, data) in hostile.attacks().items()]
    records += [("pkl", hostile.same_hash_keys(2000), "same-hash dict keys"),
                ("pkl", hostile.same_hash_keys(2000, "set"), "same-hash set members"),
                ("pkl", hostile.huge_shape(3000), "huge shape integers")]
    return [s for s in out + records if names is None or s[2] in names], templates


def fuzz(seconds, seed, out, loader="safe", seeds=None, case_timeout=30.0, rounds_of=50,
         targets=("records", "runs"), cases=None):
    """Fuzz for `seconds` (or until `cases` mutated cases have run, if sooner); returns the report (findings'
    files are saved under `out`: a run case's whole folder). `targets`: "records" (record files and shards),
    "runs" (run folders), or both."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, given, settings
    worker = Worker(loader, script=os.path.abspath(__file__))
    worker.start()                               # imports while the seeds are made
    work = tempfile.mkdtemp(prefix="fuzz-records-")
    seed_files, templates = _seeds(work, seeds, targets)
    if not seed_files:
        worker.stop()
        raise ValueError(f"no seed files named {seeds}")
    worker.wait_ready()                          # (its imports are not fuzzing time)
    report = {"seed": seed, "loader": loader, "targets": list(targets), "hypothesis": hypothesis.__version__,
              "seeds": len(seed_files), "executions": 0, "by_format": {}, "outcomes": {},
              "analysis_errors": {}, "crashes": 0, "hangs": 0, "memory": 0, "loader_bugs": 0,
              "peak_rss_mb": 0, "findings": []}
    start = time.monotonic()

    def execute(ext, data, origin):
        if ext in RUN_FILES:                     # a copy of the seed's run with one file mutated
            path = os.path.join(work, "case-run")
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(templates[origin.split()[1]], path, symlinks=True)
            target = os.path.join(path, RUN_FILES[ext])
        else:
            path = target = os.path.join(work, f"case.{ext}")
        with open(target, "wb") as f:
            f.write(data)
        kind, detail, rss = worker.run(path, case_timeout)
        finding = tally(report, worker, ext, kind, detail, rss, "loader_bugs")
        if finding:
            os.makedirs(out, exist_ok=True)
            saved = os.path.join(out, f"finding-{len(report['findings']):03d}.{ext}")
            if ext in RUN_FILES:
                shutil.copytree(path, saved, symlinks=True)
            else:
                with open(saved, "wb") as f:
                    f.write(data)
            report["findings"].append({"file": saved, "from": origin, "what": finding})

    for ext, data, name in seed_files:           # every seed once, as it is
        execute(ext, data, name)
    seed_strategy, ops_strategy = strategies()

    @settings(max_examples=rounds_of, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(which=seed_strategy, ops=ops_strategy)
    def one_case(which, ops):
        if finished(report, start, seconds, cases):
            return
        ext, data, name = seed_files[which % len(seed_files)]
        execute(ext, mutate(data, ops, seed_files, ext), name)

    return run_rounds(one_case, seed, seconds, start, worker, work, report, cases)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="how long to fuzz (default 60)")
    p.add_argument("--cases", type=int, help="stop after this many mutated cases, if sooner than --seconds (the "
                                             "same cases on every machine for a given --seed)")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    p.add_argument("--out", default="fuzz-findings", help="folder for the findings' files")
    p.add_argument("--loader", choices=["safe", "plain"], default="safe",
                   help="plain: pickle.load, to check that the harness catches crashes")
    p.add_argument("--seeds", nargs="+", metavar="NAME", help="only these seed files")
    p.add_argument("--targets", nargs="+", choices=["records", "runs"], default=["records", "runs"],
                   help="what to fuzz: record files and shards, run folders (default: both)")
    p.add_argument("--case_timeout", type=float, default=30.0, help="seconds per case")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.loader)
    report = fuzz(args.seconds, args.seed, args.out, args.loader, args.seeds, args.case_timeout,
                  targets=tuple(args.targets), cases=args.cases)
    print(json.dumps(report, indent=1))
    print(f"{report['executions']} executions in {report['minutes']} min "
          f"({report['executions_per_second']}/s): {report['crashes']} crashes, "
          f"{report['hangs']} hangs, {report['memory']} over {MEMORY_LIMIT_MB} MB, "
          f"{report['loader_bugs']} loader bugs (errors other than ours); peak RSS {report['peak_rss_mb']} MB",
          file=sys.stderr)
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
