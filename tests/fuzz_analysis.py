"""Fuzz the analysis modes that take two runs (`--probe A --test_run B`, `--probe A --transfer category`,
`--compare F1 F2`) on run folders written by every producer: the run writer of main.py (tests/hostile.py's
write_run, file and shard stores), the lm-eval backend and the Inspect provider (both run here on a tiny
random llama, once, into the seed folder). A case copies one seed run, mutates ONE of its files
(results.jsonl rows, run_config.json, summary.json, a record file or shard: fuzz_harness.mutate, bytes and
JSON-aware values) and runs the three modes through analyze_activations.main() against a second, valid
run (or the other way round), in a worker subprocess. `--producers main` seeds only main.py's two runs
(seconds instead of a minute of harness evaluations): what the short seeded test in make test runs; the
long campaigns keep every producer.

A finding: a crash or a hang of the worker (--case_timeout s), its peak RSS over 1 GB, an exception out
of main(), a traceback on stderr, or a failure whose stderr is not exactly one "error: ..." line of at
most 500 characters (every other stderr line, warnings included, at most 1000 characters). A mode that
exits non-zero with one short line is "refused"; 0 is "ok".

Public names:
    main(argv=None) -> int       the command line (0: no findings, 1: findings)
    fuzz(seconds, seed, out, cases=None, seed_dir=None, case_timeout=120.0, producers=PRODUCERS)
                                 -> report dict (fuzz_records' keys)
    producer_runs(folder, model_dir=None, producers=PRODUCERS) -> {name: run folder}   the seed runs
    PRODUCERS                    ("main", "lm-eval", "inspect"): every producer, the default
    worker_main()                the worker loop (`--worker`)

Example:
    $ OMP_NUM_THREADS=1 python tests/fuzz_analysis.py --seconds 300 --seed 1 --seed_dir /tmp/fuzz-seeds
    $ python tests/fuzz_analysis.py --cases 6 --seed 0 --producers main   # test_hostile_runs_round4.py's run
    {"executions": 150, "minutes": 5.0, "crashes": 0, "hangs": 0, ..., "peak_rss_mb": 640}
"""
import argparse
import contextlib
import glob
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import fuzz_harness  # noqa: E402  (tests/ is not a package: the script's own folder)

MAX_ERROR_CHARS = 500
MAX_LINE_CHARS = 1000
KINDS = {"results": "results.jsonl", "config": "run_config.json", "summary": "summary.json"}
PRODUCERS = ("main", "lm-eval", "inspect")


# ----------------------------------------------------------------------------- the seed runs

def _tiny_model_dir(folder):
    from helpers import make_tokenizer, tiny_model
    tok = make_tokenizer(chat_template=True)
    model, _ = tiny_model("llama", tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _lm_eval_run(model_dir, folder):
    """Two local generate_until tasks of 12 documents; half the targets are the model's own answers."""
    from lm_eval.tasks import TaskManager

    import activation_eval.harness as harness
    from activation_eval.store.run_reader import RunReader
    spec = importlib.util.spec_from_file_location(
        "test_harness_probe", os.path.join(REPO_ROOT, "tests", "harness", "test_harness_probe.py"))
    tasks_of = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks_of)
    tasks = os.path.join(folder, "tasks")
    os.makedirs(tasks, exist_ok=True)

    def evaluate(out, **args):
        harness.simple_evaluate(model="activation-eval", tasks=tasks_of.TASKS, batch_size=4, device="cpu",
                                bootstrap_iters=0, task_manager=TaskManager(include_path=tasks, include_defaults=False),
                                model_args={"pretrained": model_dir, "dtype": "float32", "output_dir": out, **args})
    from pathlib import Path
    tasks_of._write_tasks(Path(tasks), {})
    evaluate(os.path.join(folder, "first"), capture_activations=False)
    own = {row["id"]: row["response"] for row in RunReader(os.path.join(folder, "first")).rows}
    tasks_of._write_tasks(Path(tasks), {k: v for k, v in own.items() if int(k.split("/")[1]) % 2 == 0})
    evaluate(os.path.join(folder, "run"), layers="embeddings;0;-1")
    return os.path.join(folder, "run")


def _inspect_run(model_dir, folder):
    """One Inspect task of 16 samples (match()); half the targets are the model's own answers."""
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.scorer import match
    from inspect_ai.solver import generate

    from activation_eval.store.run_reader import RunReader
    questions = [f"question {i} about {'cats' if i % 2 else 'dogs'}?" for i in range(16)]

    def run(out, targets, **args):
        task = Task(dataset=MemoryDataset([Sample(input=q, target=t, id=f"s{i}")
                                           for i, (q, t) in enumerate(zip(questions, targets))]),
                    solver=generate(), scorer=match(), name="tiny_insp")
        inspect_eval(task, model=f"activation-eval/{model_dir}", display="none", log_dir=os.path.join(folder, "logs"),
                     max_tokens=6, model_args={"output_dir": out, "dtype": "float32", "device": "cpu", **args})
        return RunReader(out).rows
    first = run(os.path.join(folder, "first"), ["never said"] * len(questions), capture_activations=False)
    targets = [row["response"] if i % 2 == 0 else "never said" for i, row in enumerate(first)]
    run(os.path.join(folder, "run"), targets, layers="embeddings;0;-1")
    return os.path.join(folder, "run")


def producer_runs(folder, model_dir=None, producers=PRODUCERS):
    """{name: run folder} of `producers`: main.py's writer ("main": file and shard stores, hidden size of
    tests/hostile.py's records), the lm-eval backend and the Inspect provider (the tiny llama, hidden 64);
    built once into `folder` (a folder built for other producers is refused, not mixed)."""
    import hostile
    unknown = set(producers) - set(PRODUCERS)
    if unknown or not producers:
        raise ValueError(f"producers: {sorted(unknown) or 'none'}; choose among {', '.join(PRODUCERS)}")
    done = os.path.join(folder, "seeds.json")
    if os.path.exists(done):
        with open(done) as f:
            runs = json.load(f)
        if sorted(runs) != sorted(_names(producers)):
            raise ValueError(f"{folder} holds seed runs of {sorted(runs)}, not of {sorted(_names(producers))}: "
                             f"give another --seed_dir")
        return runs
    runs = {}
    with contextlib.redirect_stdout(sys.stderr):     # the harnesses' banners: stdout is the report's JSON
        if "main" in producers:
            runs.update({f"main-{store}": hostile.write_run(os.path.join(folder, f"main-{store}"), store, n=16)
                         for store in ("files", "shards")})
        if "lm-eval" in producers or "inspect" in producers:
            model_dir = model_dir or _tiny_model_dir(os.path.join(folder, "tiny-llama"))
        if "lm-eval" in producers:
            runs["lm-eval"] = _lm_eval_run(model_dir, os.path.join(folder, "lm-eval"))
        if "inspect" in producers:
            runs["inspect"] = _inspect_run(model_dir, os.path.join(folder, "inspect"))
    with open(done, "w") as f:
        json.dump(runs, f)
    return runs


def _names(producers):
    """The run names producer_runs gives `producers`."""
    return [name for p in producers for name in (["main-files", "main-shards"] if p == "main" else [p])]


def _mutable_files(run):
    """[(kind, path relative to the run)] of the files a case may mutate."""
    out = [(kind, name) for kind, name in KINDS.items() if os.path.exists(os.path.join(run, name))]
    records = sorted(glob.glob(os.path.join(run, "activations", "**", "*.*"), recursive=True))
    out += [("runshard" if "units" in path else "safetensors" if path.endswith(".safetensors") else "pkl",
             os.path.relpath(path, run)) for path in records[:2]]
    return out


# ----------------------------------------------------------------------------- worker

def _record_file(run):
    files = [p for p in sorted(glob.glob(os.path.join(run, "activations", "*.*"))) if os.path.isfile(p)]
    return files[0] if files else None


def _modes(a, b, plots):
    probe = ["--cv_seeds", "1", "--bootstrap", "1000", "--folds", "2", "--json", "--no_progress", "--output_dir", plots]
    modes = [("test_run", ["--probe", a, "--test_run", b, "--keep_overlap", *probe]),
             ("transfer", ["--probe", a, "--transfer", "category", *probe])]
    fa, fb = _record_file(a), _record_file(b)
    if fa and fb:
        modes.append(("compare", ["--compare", fa, fb, "--json"]))
    return modes


def _run_mode(aa, argv):
    """("ok" | "refused" | ("bug", text)) of analyze_activations.main(argv), stdout and stderr captured."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = aa.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:                   # noqa: BLE001 - anything out of main() is a finding
            return "bug", f"raised {type(e).__name__}: {str(e)[:300]}"
    text = err.getvalue()
    long = [line for line in text.splitlines() if len(line) > MAX_LINE_CHARS]
    if "Traceback" in text:
        return "bug", f"a traceback: {text[-300:]}"
    if long:
        return "bug", f"a stderr line of {len(long[0]):,} characters: {long[0][:200]}"
    if code == 0:
        return "ok"
    errors = [line for line in text.splitlines() if line.startswith("error")]
    if len(errors) != 1 or len(errors[0]) > MAX_ERROR_CHARS or not text.rstrip("\n").endswith(errors[0]):
        return "bug", f"exit {code} without one short error line: {text[-300:]!r}"
    return "refused"


def _run_case(line, plots):
    import analyze_activations as aa
    a, b = line.split("\t")
    refused = False
    for name, argv in _modes(a, b, plots):
        outcome = _run_mode(aa, argv)
        if isinstance(outcome, tuple):
            return "bug", f"{name}: {outcome[1]}"
        refused = refused or outcome == "refused"
    return "refused" if refused else "ok"


def worker_main():
    """Read "A<TAB>B" lines from stdin, answer one JSON line per case on stdout."""
    import warnings
    warnings.simplefilter("ignore")
    import matplotlib
    matplotlib.use("Agg")
    import analyze_activations  # noqa: F401  (imports are not case time)
    plots = tempfile.mkdtemp(prefix="fuzz-analysis-plots-")
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        outcome = _run_case(line.rstrip("\n"), plots)
        out.write(json.dumps({"outcome": outcome, "rss_mb": fuzz_harness.peak_rss_mb()}) + "\n")
        out.flush()
    return 0


class _Worker(fuzz_harness.Worker):
    def start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True, cwd=REPO_ROOT)
        self.ready = False


# ----------------------------------------------------------------------------- the fuzz loop

def fuzz(seconds, seed, out, cases=None, seed_dir=None, case_timeout=120.0, rounds_of=20, producers=PRODUCERS):
    """Fuzz for `seconds` (or `cases` mutated cases) on the seed runs of `producers`; -> the report
    (fuzz_records' keys; findings' folders saved under `out`)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    worker = _Worker("safe")
    worker.start()
    work = tempfile.mkdtemp(prefix="fuzz-analysis-")
    runs = producer_runs(seed_dir or os.path.join(work, "seeds"), producers=producers)
    names = sorted(runs)
    files = {name: _mutable_files(runs[name]) for name in names}
    seeds = []                                       # (kind, bytes, name) for splices
    for name in names:
        for kind, rel in files[name]:
            with open(os.path.join(runs[name], rel), "rb") as f:
                seeds.append((kind, f.read(), f"{name} {rel}"))
    worker.wait_ready()
    report = {"seed": seed, "targets": ["analysis"], "seeds": len(names) ** 2, "runs": names, "executions": 0,
              "by_format": {}, "outcomes": {}, "crashes": 0, "hangs": 0, "memory": 0, "analysis_bugs": 0,
              "peak_rss_mb": 0, "findings": []}
    start = time.monotonic()

    def execute(a_name, b_name, mutated, swap):
        case = os.path.join(work, "case")
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(runs[a_name], case, symlinks=True)
        label = "as is"
        if mutated is not None:
            (kind, rel), data = mutated
            with open(os.path.join(case, rel), "wb") as f:
                f.write(data)
            label = f"{kind} {rel}"
        a, b = (runs[b_name], case) if swap else (case, runs[b_name])
        kind, detail, rss = worker.run(f"{a}\t{b}", case_timeout)
        finding = fuzz_harness.tally(report, worker, label.split()[0], kind, detail, rss, "analysis_bugs")
        if finding:
            os.makedirs(out, exist_ok=True)
            saved = os.path.join(out, f"finding-{len(report['findings']):03d}")
            shutil.copytree(case, saved, symlinks=True)
            report["findings"].append({"folder": saved, "from": a_name, "other": b_name, "swap": swap,
                                       "mutated": label, "what": finding})

    for a_name in names:                             # every pair once, as it is
        for b_name in names:
            execute(a_name, b_name, None, False)
    _, ops_strategy = fuzz_harness.strategies()

    @settings(max_examples=rounds_of, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(pair=st.tuples(st.integers(0, 10 ** 6), st.integers(0, 10 ** 6), st.integers(0, 10 ** 6)),
           ops=ops_strategy, swap=st.booleans())
    def one_case(pair, ops, swap):
        if fuzz_harness.finished(report, start, seconds, cases):
            return
        a_name, b_name = names[pair[0] % len(names)], names[pair[1] % len(names)]
        kind, rel = files[a_name][pair[2] % len(files[a_name])]
        with open(os.path.join(runs[a_name], rel), "rb") as f:
            data = fuzz_harness.mutate(f.read(), ops, seeds, kind)
        execute(a_name, b_name, ((kind, rel), data), swap)

    return fuzz_harness.run_rounds(one_case, seed, seconds, start, worker, work, report, cases)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="how long to fuzz (default 60)")
    p.add_argument("--cases", type=int, help="stop after this many mutated cases, if sooner than --seconds")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    p.add_argument("--out", default="fuzz-findings", help="folder for the findings' run folders")
    p.add_argument("--seed_dir", help="folder of the seed runs (made once, then reused); default: a temp folder")
    p.add_argument("--case_timeout", type=float, default=120.0, help="seconds per case (three modes)")
    p.add_argument("--producers", default=",".join(PRODUCERS),
                   help=f"comma-separated producers of the seed runs (default: all, {','.join(PRODUCERS)}); "
                        "main: main.py's writer only, no harness evaluation")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main()
    producers = tuple(p.strip() for p in args.producers.split(",") if p.strip())
    if not producers or set(producers) - set(PRODUCERS):
        p.error(f"--producers: choose among {', '.join(PRODUCERS)} (got {args.producers!r})")
    report = fuzz(args.seconds, args.seed, args.out, args.cases, args.seed_dir, args.case_timeout,
                  producers=producers)
    print(json.dumps(report, indent=2))
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
