"""Memory: peak resident memory (RSS) of a 20-question and a 200-question capture run of main.py.

    .venv/bin/python perf/memory.py                   # 20 plain, 20 capture, 200 capture (~3 min)
    .venv/bin/python perf/memory.py --sizes 20,200 --positions last_prompt

Each run is a fresh subprocess: `python main.py --limit N --batch_size 8 --max_new_tokens 32
[--capture_activations] --output_dir <temp> --quiet --benchmark <temp JSONL>`. Two question pools:
"mixed" = the built-in questions in order, repeated under new ids past 122 (the 20-question run
takes the first 20); "same" = the first 20 questions repeated 10 times under new ids. Runs keep
every position of every layer, so a batch's records are large and grow with prompt length: the
runner sorts questions by prompt length, the mixed 200-question run ends with the longest
prompts of the benchmark, and its peak includes that larger last batch ("largest batch MB" =
the record files of the largest batch). The "same" pool has the 20-question run's batch sizes,
so any difference there is growth with the number of questions alone. Its peak RSS comes from
os.wait4 (the kernel's ru_maxrss of that child alone); its RSS is also sampled every 0.25 s from
/proc to show whether it grows with the number of questions. Runs go one after another (never
two at once). Target (issue 6): the 20- and 200-question capture runs peak < 50 MB apart.
Writes perf/out/memory.json; prints the table last.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

TARGET_MB = 50
POOLS = {"mixed": "the built-in questions in order, repeated past 122",
         "same": "the first 20 questions repeated"}


def main():
    p = common.base_parser(__doc__, repeats=1)
    p.add_argument("--sizes", default="20,200", help="question counts of the capture runs (default 20,200)")
    p.add_argument("--positions", default="all", help="--positions for the capture runs (default all)")
    p.add_argument("--format", default="pkl", choices=["pkl", "safetensors"])
    p.add_argument("--no_plain", action="store_true", help="skip the 20-question run without capture")
    p.add_argument("--no_same", action="store_true", help="skip the 200-question run that repeats the first 20")
    args = p.parse_args()
    if args.quick:
        args.sizes = "8,40"
    common.setup(args.threads)
    from activation_eval.eval.benchmark import load_benchmark
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="perf-memory-")
    rows = load_benchmark()
    benches = {"mixed": _write_bench(os.path.join(tmp, "mixed.jsonl"), rows, max(sizes)),
               "same": _write_bench(os.path.join(tmp, "same.jsonl"), rows[: sizes[0]], max(sizes))}
    runs = ([] if args.no_plain else [("plain", sizes[0], False, "mixed")]) + \
        [("capture", n, True, "mixed") for n in sizes] + \
        ([] if args.no_same else [("capture", n, True, "same") for n in sizes[1:]])

    results = []
    try:
        for repeat in range(args.repeats):
            for kind, n, capture, pool in runs:
                print(f"run {repeat + 1}/{args.repeats}: {n} questions, {kind}, {pool}", file=sys.stderr, flush=True)
                results.append(run(args, benches[pool], tmp, kind, n, capture, pool))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows_out = _summarize(results)
    verdict = {}
    for pool in ("mixed", "same"):
        cap = [r for r in rows_out if r["kind"] == "capture" and (r["pool"] == pool or r["questions"] == sizes[0])]
        if len(cap) >= 2 and any(r["pool"] == pool and r["questions"] != sizes[0] for r in cap):
            spread = max(r["peak_mb"] for r in cap) - min(r["peak_mb"] for r in cap)
            verdict[pool] = {"spread_mb": spread, "target": f"< {TARGET_MB} MB",
                             "verdict": "PASS" if spread < TARGET_MB else "MISS"}
    path = common.write_json("memory", {"args": vars(args), "runs": results, "rows": rows_out, "verdict": verdict},
                             args.out)
    print(f"\nwrote {path}\n")
    print(common.table(rows_out, [("kind", "run", ""), ("questions", "questions", "d"), ("pool", "questions from", ""),
                                  ("peak_mb", "peak RSS MB", ".0f"), ("largest_batch_mb", "largest batch MB", ".0f"),
                                  ("rss_first_batch_mb", "RSS after 1st batch", ".0f"),
                                  ("rss_last_mb", "RSS at end", ".0f"), ("wall_s", "wall s", ".1f"),
                                  ("files_mb", "files MB", ".0f")]))
    for pool, v in verdict.items():
        print(f"capture runs' peak RSS spread, {sizes[0]} vs {'/'.join(map(str, sizes[1:]))} questions "
              f"({POOLS[pool]}): {v['spread_mb']:.1f} MB, target {v['target']}: {v['verdict']}")


def _write_bench(path, pool, n):
    """n questions cycling through `pool`, each repeat under a new id."""
    with open(path, "w") as f:
        for i in range(n):
            row = dict(pool[i % len(pool)])
            row["id"] = f"{row['id']}-r{i // len(pool)}"
            f.write(json.dumps(row) + "\n")
    return path


def run(args, bench, tmp, kind, n, capture, pool):
    out = os.path.join(tmp, f"{kind}-{n}-{pool}")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, os.path.join(common.ROOT, "main.py"), "--limit", str(n), "--batch_size", "8",
           "--max_new_tokens", "32", "--output_dir", out, "--quiet", "--benchmark", bench]
    if capture:
        cmd += ["--capture_activations", "--positions", args.positions, "--activation_format", args.format]
    env = dict(os.environ, TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    samples = []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_mb(proc.pid)
        if rss is not None:
            samples.append((round(time.perf_counter() - start, 2), rss))
        time.sleep(0.25)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = proc.stdout.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    files_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs) / 1e6
    results_path = os.path.join(out, "results.jsonl")
    with open(results_path) as f:
        result_rows = [json.loads(line) for line in f]
    answered = len(result_rows)
    batches = {}
    for row in result_rows:                      # the runner tags each row with its batch's key
        if row.get("activation_file"):
            size = os.path.getsize(os.path.join(out, row["activation_file"]))
            unit = row.get("unit", row.get("batch", row["id"]))
            batches[unit] = batches.get(unit, 0) + size
    if answered != n:
        raise SystemExit(f"{kind}-{n}: {answered} rows in results.jsonl, expected {n}")
    shutil.rmtree(out, ignore_errors=True)
    return {"kind": kind, "questions": n, "pool": pool, "peak_mb": usage.ru_maxrss / 1024, "wall_s": wall,
            "files_mb": files_mb, "largest_batch_mb": max(batches.values()) / 1e6 if batches else None,
            "rss_samples_mb": samples, "command": " ".join(cmd)}


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _summarize(results):
    rows = []
    for r in results:
        samples = [mb for _, mb in r["rss_samples_mb"]]
        # "after the first batch": the model is loaded and one batch captured; later growth = a leak
        loaded = [mb for mb in samples if mb > 0.6 * max(samples)] if samples else []
        rows.append({"kind": r["kind"], "questions": r["questions"], "pool": r["pool"], "peak_mb": r["peak_mb"],
                     "largest_batch_mb": r["largest_batch_mb"],
                     "rss_first_batch_mb": loaded[0] if loaded else None,
                     "rss_last_mb": samples[-1] if samples else None,
                     "wall_s": r["wall_s"], "files_mb": r["files_mb"]})
    return rows


if __name__ == "__main__":
    sys.exit(main())
