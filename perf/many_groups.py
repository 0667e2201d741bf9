"""Does analysis cost grow with the number of groups? (issue 29) Wall time and peak RSS of the group-wise
analyses against the number of groups and rows, this code against an earlier commit's.

    PYTHONPATH=. .venv/bin/python perf/many_groups.py                   # the full table (about 15 minutes)
    PYTHONPATH=. .venv/bin/python perf/many_groups.py --quick           # 30 and 300 groups, 1,200 rows
    PYTHONPATH=. .venv/bin/python perf/many_groups.py --old 0bbae40     # the baseline commit (default)

Each case runs in its own process (so its peak RSS is its own), with a time limit (--limit, default 120 s):
synthetic questions (hidden size 16, one shared direction planted in every group, groups of equal size,
the category field holding the group) and
    transfer   transfer_matrix(..., by="category") as --transfer category calls it (2000 resamples)
    folds      make_folds(groups="category") (GroupKFold, --probe_groups) and permutation_labels
    stratify   stratified_difference(values, correct, the groups) (--stratify, 2000 resamples)
The old variant runs the same calls on the modules as they were at --old (read with git show), transfer and
stratify only. Peak RSS: ru_maxrss of the case's process; "added" subtracts the RSS before the timed call
(imports and data). Writes perf/out/many_groups.json; prints the table last.
"""
import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

GROUPS = (30, 100, 300, 1000)
ROWS = (1_200, 10_000, 100_000)
HIDDEN = 16
OLD = "0bbae40"


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _old_module(rev, path, name):
    """The module at `path` as of git revision `rev`, importable beside the current package (relative imports
    resolve to the current package's modules)."""
    source = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    package = path.rsplit("/", 1)[0].replace("/", ".")
    spec = importlib.util.spec_from_loader(f"{package}._old_{name}", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module


def _data(n_groups, n_rows, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_rows)
    group = np.array([f"category {i % n_groups}" for i in range(n_rows)])
    X = rng.normal(size=(n_rows, HIDDEN))
    X[:, 0] += 1.0 * (2 * y - 1)                              # shared by every group: it transfers
    rows = [{"id": f"q{i}", "category": str(group[i]), "question": f"question {i}?", "correct": bool(y[i])}
            for i in range(n_rows)]
    return X, y, group, rows


def case(analysis, variant, n_groups, n_rows, rev):
    from activation_eval.analysis.probe.models import make_probe
    X, y, group, rows = _data(n_groups, n_rows)
    before = _rss_mb()
    t0 = time.perf_counter()
    if analysis == "transfer":
        mod = (_old_module(rev, "activation_eval/analysis/probe/transfer.py", "transfer") if variant == "old"
               else importlib.import_module("activation_eval.analysis.probe.transfer"))
        res = mod.transfer_matrix(X, y, group, rows, lambda: make_probe("logistic"), by="category")
        extra = {"kept": len(res.groups)}
    elif analysis == "folds":
        from activation_eval.analysis.probe.folds import make_folds, permutation_labels
        splits, _ = make_folds(y, rows, 5, 0, "category", [])
        permutation_labels(y, rows, 0)
        extra = {"kept": len(splits)}
    else:
        mod = (_old_module(rev, "activation_eval/analysis/stratify.py", "stratify") if variant == "old"
               else importlib.import_module("activation_eval.analysis.stratify"))
        res = mod.stratified_difference(X[:, 0], y.astype(bool).tolist(), group.tolist(), by="category")
        extra = {"kept": res.strata_used}
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "peak_rss_mb": peak, "added_rss_mb": max(0.0, peak - before), **extra}


def _run_case(analysis, variant, g, n, rev, limit):
    cmd = [sys.executable, __file__, "--case", analysis, variant, str(g), str(n), "--old", rev]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                             env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return {"status": f"> {limit} s"}
    if out.returncode != 0:
        return {"status": "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1][:80]}
    return {"status": "ok", **json.loads(out.stdout.strip().splitlines()[-1])}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", nargs=4, metavar=("ANALYSIS", "VARIANT", "GROUPS", "ROWS"))
    p.add_argument("--old", default=OLD, help=f"git revision of the baseline (default {OLD})")
    p.add_argument("--limit", type=int, default=120, help="seconds per case (default 120)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "many_groups.json"))
    args = p.parse_args()
    if args.case:
        a, v, g, n = args.case
        print(json.dumps(case(a, v, int(g), int(n), args.old)))
        return
    import common
    sizes = [(30, 1_200), (300, 1_200)] if args.quick else [(g, n) for n in ROWS for g in GROUPS]
    results = []
    for g, n in sizes:
        for analysis in ("transfer", "folds", "stratify"):
            row = {"analysis": analysis, "groups": g, "rows": n}
            new = _run_case(analysis, "new", g, n, args.old, args.limit)
            row.update({f"new_{k}": v for k, v in new.items()})
            if analysis != "folds" and (n <= 1_200 or g <= 30 or analysis == "stratify" and n <= 10_000):
                old = _run_case(analysis, "old", g, n, args.old, args.limit)
                row.update({f"old_{k}": v for k, v in old.items()})
                if old.get("status") == "ok" and new.get("status") == "ok":
                    row["time_ratio"] = old["wall_s"] / new["wall_s"]
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    common.write_json("many_groups", {"hidden": HIDDEN, "old": args.old,
                                      "limit_s": args.limit, "results": results}, args.out)
    print(common.table(results, [("analysis", "analysis", ""), ("groups", "groups", ""), ("rows", "rows", ","),
                                 ("new_kept", "kept", ""), ("new_wall_s", "new s", ".2f"),
                                 ("new_peak_rss_mb", "new peak MB", ".0f"), ("new_added_rss_mb", "added MB", ".0f"),
                                 ("old_status", "old", ""), ("old_wall_s", "old s", ".2f"),
                                 ("old_peak_rss_mb", "old peak MB", ".0f"), ("time_ratio", "old/new", ".1f")]))


if __name__ == "__main__":
    main()
