"""Peak memory and time of reading each hostile benchmark of issues 20 and 29 (tests/hostile_benchmarks.py),
with the package at two places: this checkout ("after") and, with --before DIR, an export of an
older commit ("before"; e.g. `git archive 43cd91f activation_eval | tar -x -C /tmp/before`).

Each case runs `read_benchmark(path)` (what main.py does first) in a fresh interpreter under
`timeout`; reported: the outcome (rows read, the error's first 100 characters, or the signal),
wall seconds, and the interpreter's peak RSS (VmHWM, read by the child at exit; for a child killed
by a signal, /usr/bin/time's maximum resident set size).

    python perf/benchmark_bombs.py --before /tmp/before --timeout 400 [--cases big_cell zstd_arrow]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = {   # name: (builder in hostile_benchmarks, file name, arguments)
    "segfault_offsets": ("corrupt_offsets_folder", "seg", ()),
    "rle_30M_rows": ("rle_bomb_parquet", "rle.parquet", (30_000_000,)),
    "big_cell_20MB": ("big_cell_parquet", "big.parquet", (20_000_000,)),
    "zstd_arrow_256MB": ("zstd_arrow_folder", "zstd", (256 << 20,)),
    "deep_jsonl": ("deep_jsonl", "deep.jsonl", (100_000,)),
    "lying_footer_629MB": ("lying_footer_parquet", "lie.parquet", (629_000_000,)),   # issue 29 (builds with ~6 GB)
}
CHILD = r"""
import sys, time
t = time.monotonic()
try:
    from activation_eval.eval.benchmark import read_benchmark
    bench = read_benchmark(sys.argv[1])
    outcome = f"read {len(bench.rows)} rows"
except BaseException as e:
    outcome = f"{type(e).__name__}: {str(e)[:100]}"
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024
print("RESULT", repr(outcome), round(time.monotonic() - t, 1), hwm, flush=True)
"""


def build(folder, names):
    """Write the cases' files (in a child: the 30M-row builder needs memory)."""
    code = ("import sys, json; import hostile_benchmarks as h\n"
            "for name, (fn, file, args) in json.loads(sys.argv[1]).items():\n"
            "    getattr(h, fn)(sys.argv[2] + '/' + file, *args)\n")
    subprocess.run([sys.executable, "-c", code, json.dumps({n: CASES[n] for n in names}), folder], check=True,
                   env=dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests"), ROOT])))
    return {n: os.path.join(folder, CASES[n][1]) for n in names}


def measure(path, package_root, timeout):
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", "timeout", str(timeout), sys.executable, "-c", CHILD,
                           path], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=package_root),
                          cwd=tempfile.gettempdir())
    wall = round(time.monotonic() - start, 1)
    maxrss = next((int(line.split()[1]) // 1024 for line in proc.stderr.splitlines() if line.startswith("MAXRSS")),
                  None)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            _, rest = line.split(" ", 1)
            outcome, seconds, hwm = rest.rsplit(" ", 2)
            return {"outcome": eval(outcome), "seconds": float(seconds), "wall": wall, "peak_rss_mb": int(hwm)}
    code = proc.returncode
    what = "timeout" if code == 124 else f"killed (rc {code}: {proc.stderr.strip().splitlines()[:1]})"
    return {"outcome": what, "seconds": wall, "wall": wall, "peak_rss_mb": maxrss}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", help="a folder holding an older activation_eval/ to compare with")
    p.add_argument("--timeout", type=int, default=400, help="seconds per case (default 400)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--out", default=os.path.join(HERE, "out", "benchmark_bombs.json"))
    args = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="bombs-")
    paths = build(folder, args.cases)
    results = {}
    for name, path in paths.items():
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) \
            if os.path.isdir(path) else os.path.getsize(path)
        results[name] = {"file_bytes": size}
        for label, root in (("before", args.before), ("after", ROOT)):
            if root:
                results[name][label] = measure(path, root, args.timeout)
                print(name, label, results[name][label], flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\n{'case':18} {'file':>10}  {'version':7} {'seconds':>8} {'peak MB':>8}  outcome")
    for name, r in results.items():
        for label in ("before", "after"):
            if label in r:
                m = r[label]
                print(f"{name:18} {r['file_bytes']:>10,}  {label:7} {m['seconds']:>8} {str(m['peak_rss_mb']):>8}  "
                      f"{m['outcome'][:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
