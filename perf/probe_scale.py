"""How the probe's cost grows with the number of questions (issue 29): synthetic shard runs of n questions,
31 layers of the default model's width (576), a planted signal from layer 16 on, timed end to end through
`analyze_activations.py --probe RUN --json` (the default settings) in a child process.

    PYTHONPATH=. .venv/bin/python perf/probe_scale.py --sizes 1000 3000 10000       # runs under /tmp/probe_scale
    PYTHONPATH=. .venv/bin/python perf/probe_scale.py --sizes 1000 --keep            # keep the run folders

Each run: question i has category i % 4, a question text, token counts, and `correct` drawn with
probability 1/2 independently of all of them (so no input-side control can find it); its record holds the
last prompt token (--positions last_prompt, the probe's default then reads it) of layers 0..30, independent
standard normal vectors, plus +-STRENGTH along one fixed unit direction by correctness at layers >= 16. The
expected verdict is a planted layer at every size. Shards of SHARD_QUESTIONS questions (float32).

Per size: wall s, CPU s (user + system of the child and its worker processes), peak RSS of the largest
(MB), the verdict and the best layer's AUROC; writes perf/out/probe_scale.json; prints the table last.
Check `df -h` first: a run takes n x 31 x 576 x 4 bytes (71 KB a question: 0.7 GB at 10k, 7 GB at 100k).
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import common
import numpy as np

HIDDEN, LAYERS, PLANT_FROM, STRENGTH = 576, 31, 16, 0.5
SHARD_QUESTIONS = 500
CATEGORIES = ("geography", "arithmetic", "science", "trivia")


def write_run(folder, n, hidden=HIDDEN, layers=LAYERS, seed=0):
    """A shard run of n questions at `folder` (see the module docstring); returns folder."""
    import torch

    from activation_eval.store.atomic import write_text_atomic
    from activation_eval.store.shard_writer import write_shard
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=hidden)
    direction = (direction / np.linalg.norm(direction)).astype(np.float32)
    names = [f"layer_{j}" for j in range(layers)]
    os.makedirs(os.path.join(folder, "activations", "units"), exist_ok=True)
    rows = []
    for start in range(0, n, SHARD_QUESTIONS):
        ids, records = [], []
        for i in range(start, min(n, start + SHARD_QUESTIONS)):
            qid, P, N = f"q{i:07d}", int(rng.integers(8, 40)), int(rng.integers(4, 30))
            correct = bool(rng.random() < 0.5)
            acts = rng.standard_normal(size=(layers, 1, hidden), dtype=np.float32)
            acts[PLANT_FROM:, 0] += (STRENGTH if correct else -STRENGTH) * direction
            rel = f"activations/units/shard{start // SHARD_QUESTIONS:05d}.safetensors"
            rows.append({"id": qid, "category": CATEGORIES[i % 4], "question": f"Question {i} about {i % 97}?",
                         "prompt": f"Question {i} about {i % 97}?", "response": "r", "answer": ["x"], "extracted": "x",
                         "correct": correct, "grader": "exact", "num_prompt_tokens": P, "num_generated_tokens": N,
                         "activation_shard": rel, "activation_row": i - start})
            ids.append(qid)
            records.append({"prompt": rows[-1]["prompt"], "response": "r", "model": "synthetic", "timestamp": "t",
                            "input_ids": torch.arange(P), "output_ids": torch.arange(N),
                            "activations": {name: torch.from_numpy(acts[j]) for j, name in enumerate(names)},
                            "layer_names": names, "positions": "last_prompt", "positions_kept": [P - 1],
                            "num_prompt_tokens": P, "num_generated_tokens": N, "dtype": "float32",
                            "grading": {"id": qid, "correct": correct}})
        write_shard(os.path.join(folder, rel), ids, records)
    write_text_atomic(os.path.join(folder, "results.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    write_text_atomic(os.path.join(folder, "run_config.json"), json.dumps({
        "model": "synthetic", "capture_activations": True, "positions": "last_prompt",
        "activation_store": "shards"}))
    return folder


def time_probe(run_dir, extra=(), code=common.ROOT):
    """(wall s, CPU s of the child and every process under it, peak RSS MB of the largest, parsed --json output)
    of `analyze_activations.py --probe run_dir` in checkout `code`. The probe's worker processes are children of
    a forkserver that the child never waits for, so their CPU time is read from /proc while they run (every 0.2
    s; the last 0.2 s of a worker's life may be missed)."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=code)
    with open(os.devnull, "w") as quiet:
        child = subprocess.Popen([sys.executable, os.path.join(code, "analyze_activations.py"), "--probe", run_dir,
                                  "--json", *extra], stdout=subprocess.PIPE, stderr=quiet, text=True, cwd=code, env=env)
        seen, peak = {}, {}
        reader = threading.Thread(target=lambda: seen.setdefault("out", child.stdout.read()))
        reader.start()
        while child.poll() is None:
            for pid, (cpu, rss) in _tree(child.pid).items():
                seen[pid] = max(seen.get(pid, 0.0), cpu)
                peak[pid] = max(peak.get(pid, 0.0), rss)
            time.sleep(0.2)
        reader.join()
    wall = time.perf_counter() - t0
    out = seen.pop("out")
    if child.returncode:
        raise SystemExit(f"--probe failed on {run_dir} (exit {child.returncode})")
    return wall, sum(seen.values()), max(peak.values(), default=0.0), json.loads(out)


def _tree(root):
    """{pid: (CPU s, RSS MB)} of `root` and every process under it (Linux /proc)."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
                                 int(fields[21]) * page / 2**20)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid][1:]
            todo += [p for p, (parent, _, _) in stats.items() if parent == pid]
    return out


def main():
    p = common.base_parser(__doc__, repeats=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    p.add_argument("--root", default="/tmp/probe_scale", help="where the synthetic runs are written")
    p.add_argument("--keep", action="store_true", help="keep the run folders (reused when present)")
    p.add_argument("--label", default="now", help="names this code version in the JSON (e.g. 'before')")
    p.add_argument("--probe_args", default="", help="more arguments for --probe, e.g. '--probe_workers 1'")
    p.add_argument("--code", default=common.ROOT, help="the checkout whose analyze_activations.py runs (a baseline "
                   "worktree, e.g. one at an older commit)")
    args = p.parse_args()
    common.setup(args.threads)
    rows = []
    for n in args.sizes:
        folder = os.path.join(args.root, f"n{n}")
        t0 = time.perf_counter()
        if not os.path.exists(os.path.join(folder, "results.jsonl")):
            write_run(folder, n)
        written = time.perf_counter() - t0
        wall, cpu, rss, res = time_probe(folder, args.probe_args.split(), args.code)
        best = res.get("best_layer")
        auroc = (res.get("layers") or {}).get(best, {}).get("auroc") if best else None
        load = os.getloadavg()[0]
        rows.append({"questions": n, "write_s": written, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss,
                     "verdict": res.get("verdict"), "best_layer": best, "auroc": auroc, "load_before": load,
                     "probe_args": args.probe_args, "code": args.code})
        print(rows[-1], flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    common.write_json(f"probe_scale_{args.label}", {"machine": common.machine_info(), "label": args.label,
                                                   "rows": rows})
    print(common.table(rows, [("questions", "questions", "d"), ("wall_s", "wall s", ".1f"), ("cpu_s", "CPU s", ".1f"),
                              ("load_before", "load", ".1f"),
                              ("peak_rss_mb", "peak RSS MB", ".0f"), ("verdict", "verdict", ""),
                              ("auroc", "best AUROC", ".3f")]))


if __name__ == "__main__":
    main()
