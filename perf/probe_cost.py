"""What the probe at the field's standard costs on a real run (issue 21): the verdict alone against the
verdict with its side tables, the answer-position table and the transfer matrix.

    PYTHONPATH=. .venv/bin/python perf/probe_cost.py RUN_DIR              # e.g. the folder `make run` wrote
    PYTHONPATH=. .venv/bin/python perf/probe_cost.py RUN_DIR --repeats 3

Variants (probe.probe_run on RUN_DIR, every layer, the default bootstrap), interleaved per repeat:
    last_prompt_1seed   reduce="last_prompt", cv_seeds=1: the sweep of earlier versions plus what every probe
                        now computes (output-side controls, control task, mass-mean family, operating points)
    last_prompt         reduce="last_prompt", the default 3 CV seeds
    auto                the default: reduce="auto" (the answer's first token when generated positions were
                        captured) and with them the layer x position table (4 positions)
    auto_transfer       the default with transfer="category" (what --report computes)
Ratios against last_prompt_1seed (median of per-repeat ratios), CPU and wall time of this process
(one BLAS thread: the probe's own setting). A baseline from an earlier version of the code is timed by
running this script with that version on PYTHONPATH (variants its probe_run cannot run are skipped).
Writes perf/out/probe_cost.json; prints the table last.
"""
import inspect

import common

VARIANTS = {"last_prompt_1seed": {"reduce": "last_prompt", "cv_seeds": 1},
            "last_prompt": {"reduce": "last_prompt"},
            "auto": {"reduce": "auto"},
            "auto_transfer": {"reduce": "auto", "transfer": "category"}}


def main():
    p = common.base_parser(__doc__, repeats=2)
    p.add_argument("run_dir", help="a run folder with records (e.g. results/<timestamp> of `make run`)")
    args = p.parse_args()
    common.setup(args.threads)
    from activation_eval.analysis.probe import probe_run
    accepted = set(inspect.signature(probe_run).parameters)
    runnable = {name: kw for name, kw in VARIANTS.items() if set(kw) <= accepted and
                (kw.get("reduce") != "auto" or "cv_seeds" in accepted)}
    results = {}

    def variant(kwargs):
        def run():
            results.setdefault(str(kwargs), probe_run(args.run_dir, **kwargs))
        return run
    walls, cpus = common.interleaved({name: variant(kw) for name, kw in runnable.items()}, args.repeats, warmup=0)
    base = "last_prompt_1seed" if "last_prompt_1seed" in runnable else next(iter(runnable))
    rows = []
    for name in runnable:
        res = results[str(runnable[name])]
        s = common.stats(cpus[name], cpus[base], "cpu_")
        w = common.stats(walls[name], walls[base], "wall_")
        rows.append({"variant": name, "position": res.position, "n": res.n, "layers": res.layers_tested, **s, **w})
    common.write_json("probe_cost", {"machine": common.machine_info(), "run_dir": args.run_dir,
                                     "repeats": args.repeats, "rows": rows})
    print(common.table(rows, [("variant", "variant", ""), ("position", "position", ""), ("n", "n", "d"),
                              ("layers", "layers", "d"), ("cpu_median_s", "CPU s (median)", ".1f"),
                              ("cpu_paired_ratio", "CPU ratio", ".2f"), ("wall_median_s", "wall s (median)", ".1f"),
                              ("wall_paired_ratio", "wall ratio", ".2f")]))


if __name__ == "__main__":
    main()
