"""End to end: benchmark runs (main.py's run loop) without capture, with capture to .pkl and to
.safetensors, in questions per second and as ratios against the run without capture.

    .venv/bin/python perf/end_to_end.py                         # 24 questions, batch 8, 3 repeats
    .venv/bin/python perf/end_to_end.py --limit 32 --repeats 5 --extra nofsync

Each variant is one `runner.run_benchmark(RunConfig(...))` call into a fresh temporary output
folder (what `python main.py --limit N --batch_size B --max_new_tokens T [--capture_activations
--activation_format F] --output_dir DIR` does after parsing its flags). The model is loaded once
per process, before timing. Variants run interleaved, order rotated every repeat:
    none          no capture
    capture_only  capture of all layers at all positions, records built, saving patched out
                  (the runner's save_activations replaced by a no-op): isolates the capture cost
    pkl           capture, saved as .pkl (atomic write + fsync per file, as runner does)
    safetensors   capture, saved as .safetensors
    --extra nofsync adds pkl_nofsync / safetensors_nofsync with storage's fsync patched out, to show
                  what durability costs on this disk.
Times are wall time around run_benchmark (benchmark loading, length-sorted batching, generation,
grading, saving, results.jsonl rewrite, summary); "cpu" is this process's CPU time. Verdicts use
the CPU ratio at --threads 1 (see perf/common.py); fsync waits show in wall time only, so the wall
ratio is printed next to it. Target (issue 6, CPU, default model): <= 1.15x with saving.
Writes perf/out/end_to_end.json; prints the table last.
"""
import os
import shutil
import sys
import tempfile

import common

TARGET = 1.15


def main():
    p = common.base_parser(__doc__, repeats=3)
    p.add_argument("--limit", type=int, default=24, help="questions per run (default 24)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--model", default=None, help="model name/path (default: the project's default model)")
    p.add_argument("--extra", default="", help="comma-separated extra variants: nofsync")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.limit = min(args.repeats, 2), min(args.limit, 8)
    common.setup(args.threads)
    from activation_eval.models import DEFAULT_MODEL, load_model
    from activation_eval.run import runner
    from activation_eval.run.config import RunConfig
    from activation_eval.store import atomic
    model_name = args.model or DEFAULT_MODEL
    load_model(model_name)                       # cached for the process: no variant pays for it
    tmp_root = tempfile.mkdtemp(prefix="perf-e2e-")
    sizes = {}

    def run(name, capture=False, fmt="pkl", save=True, fsync=True):
        out = os.path.join(tmp_root, name)
        shutil.rmtree(out, ignore_errors=True)
        config = RunConfig(model=model_name, limit=args.limit, batch_size=args.batch_size,
                                  max_new_tokens=args.max_new_tokens, output_dir=out,
                                  capture_activations=capture, activation_format=fmt)
        real_save, real_fsync = runner.save_activations, atomic.fsync_path
        try:
            if not save:
                runner.save_activations = lambda record, path: path
            if not fsync:
                atomic.fsync_path = lambda path: None
            summary = runner.run_benchmark(config)
        finally:
            runner.save_activations, atomic.fsync_path = real_save, real_fsync
        if summary["questions"] != args.limit:
            raise SystemExit(f"{name}: {summary['questions']} questions answered, expected {args.limit}")
        sizes[name] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
        shutil.rmtree(out, ignore_errors=True)

    variants = {
        "none": lambda: run("none"),
        "capture_only": lambda: run("capture_only", capture=True, save=False),
        "pkl": lambda: run("pkl", capture=True, fmt="pkl"),
        "safetensors": lambda: run("safetensors", capture=True, fmt="safetensors"),
    }
    if "nofsync" in args.extra.split(","):
        variants["pkl_nofsync"] = lambda: run("pkl_nofsync", capture=True, fmt="pkl", fsync=False)
        variants["safetensors_nofsync"] = lambda: run("safetensors_nofsync", capture=True, fmt="safetensors", fsync=False)
    try:
        wall, cpu = common.interleaved(variants, args.repeats)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    rows = []
    for name in wall:
        base = None if name == "none" else "none"
        st = common.stats(wall[name], wall[base] if base else None)
        st.update(common.stats(cpu[name], cpu[base] if base else None, prefix="cpu_"))
        row = {"variant": name, "vs": base, "questions_per_s": args.limit / st["median_s"],
               "mb_written": sizes.get(name, 0) / 1e6, **st}
        if name in ("pkl", "safetensors"):
            row["target"] = f"<= {TARGET}"
            row["verdict"] = common.verdict(st["cpu_paired_ratio"], TARGET).split()[0]
        rows.append(row)
    path = common.write_json("end_to_end", {"args": vars(args), "rows": rows}, args.out)
    print(f"\nwrote {path}\n")
    print(f"{args.limit} questions, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
          f"{args.repeats} repeats, {common.machine_info()['torch_threads']} thread(s)")
    print(common.table(rows, [("variant", "variant", ""), ("questions_per_s", "q/s", ".2f"),
                              ("median_s", "wall s", ".2f"), ("cpu_median_s", "cpu s", ".2f"),
                              ("mb_written", "MB written", ".1f"), ("vs", "vs", ""),
                              ("paired_ratio", "wall ratio", ".3f"), ("cpu_paired_ratio", "cpu ratio", ".3f"),
                              ("target", "target", ""), ("verdict", "verdict", "")]))


if __name__ == "__main__":
    sys.exit(main())
