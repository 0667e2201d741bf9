"""Resume granularity: questions per second with units of 1 batch vs units of 8 batches.

    .venv/bin/python perf/unit_size.py                       # 48 questions, batch 8, 3 repeats, 1 thread
    .venv/bin/python perf/unit_size.py --limit 64 --batch_size 8 --repeats 5

A planned unit is answered whole by one process, and --resume answers a unit again unless all its
rows are written (results depend in the last float bits on which questions share a forward pass,
so a unit is the grain of a bit-identical resume). With continuous batching a unit of G batches
(--unit_batches G)
lets a finished row's slot be refilled from the unit G x batch_size questions long; G = 1 keeps
only the questions in flight at risk of an interruption (the unit is what decodes at once), and
pays for it with the emptying end of every unit. This script measures that price on the default
model (main.py without capture, greedy): run_benchmark with each --unit_batches value, interleaved,
medians.
Writes perf/out/unit_size.json; prints the table last.
"""
import os
import shutil
import tempfile

import common


def main():
    p = common.base_parser(__doc__, repeats=3)
    p.add_argument("--limit", type=int, default=48, help="questions per run (default 48)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--groups", default="8,1", help="--unit_batches values (default 8,1; the first is the baseline)")
    args = p.parse_args()
    common.setup(args.threads)
    from activation_eval.models import DEFAULT_MODEL, load_model
    from activation_eval.run import runner
    from activation_eval.run.config import RunConfig
    load_model(DEFAULT_MODEL)                                  # loaded (and converted) once, before timing
    groups = [int(g) for g in args.groups.split(",")]
    tmp = tempfile.mkdtemp(prefix="unit_size_")

    def variant(group):
        def run():
            out = os.path.join(tmp, f"g{group}")
            shutil.rmtree(out, ignore_errors=True)
            runner.run_benchmark(RunConfig(limit=args.limit, batch_size=args.batch_size, output_dir=out, unit_batches=group,
                                           max_new_tokens=args.max_new_tokens, progress=False))
        return run

    walls, _ = common.interleaved({f"units of {g} batch(es)": variant(g) for g in groups},
                                  args.repeats if not args.quick else 1)
    base = f"units of {groups[0]} batch(es)"
    rows = []
    for name, times in walls.items():
        s = common.stats(times, walls[base])
        rows.append({"variant": name, "qps": args.limit / s["median_s"], "median": s["median_s"],
                     "paired": s["paired_ratio"]})
    print(common.table(rows, [("variant", "variant", ""), ("qps", "q/s", ".2f"), ("median", "median s", ".1f"),
                              ("paired", "time vs baseline (paired median ratio)", ".3f")]))
    common.write_json("unit_size", {"machine": common.machine_info(), "args": vars(args), "walls": walls})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
